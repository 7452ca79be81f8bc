"""How a reconcile ends, the same for every kind: serialised per object, timed, counted.

`reconciling` holds the object's lock, maps API trouble to kopf's retry semantics
(`TemporaryError` with a delay when the API server may recover, `PermanentError` when it
will not) and records the outcome in the Prometheus metrics.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import kopf

from stockops_operator import metrics
from stockops_operator.kubeapi import KubeApiError
from stockops_operator.runtime import Runtime

RETRY_DELAY_S = 10


@contextlib.asynccontextmanager
async def reconciling(kind: str, rt: Runtime, uid: str) -> AsyncIterator[None]:
    """Run the body as one reconcile of object `uid` of `kind`."""
    started = time.monotonic()
    async with rt.lock(uid):
        try:
            yield
        except kopf.PermanentError:
            metrics.RECONCILES.labels(kind, "invalid").inc()
            raise
        except kopf.TemporaryError:
            metrics.RECONCILES.labels(kind, "retry").inc()
            raise
        except KubeApiError as exc:
            metrics.RECONCILES.labels(kind, "retry" if exc.retryable else "error").inc()
            if exc.retryable:
                raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc
            raise kopf.PermanentError(str(exc)) from exc
        else:
            metrics.RECONCILES.labels(kind, "ok").inc()
        finally:
            metrics.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)
