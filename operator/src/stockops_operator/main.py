"""The kopf entry module: registers the handlers, nothing else.

Run it with `kopf run -m stockops_operator.main` (add `--standalone` or `--peering`), or with
`python -m stockops_operator`, which takes namespace and peering from the settings. Each
handler only hands the object to `handlers/`, where the work is done.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import kopf

from stockops_model.spec import GROUP, VERSION
from stockops_operator import appliers, logs, metrics
from stockops_operator.builders import LABEL_MODEL
from stockops_operator.handlers import schedules, stockmodels
from stockops_operator.kubeapi import KubeApi
from stockops_operator.runtime import Runtime
from stockops_operator.settings import load_settings

SETTINGS = load_settings()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations under stockops.io, open the clients."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="stockops.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="stockops.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    logs.quiet_ticks()
    settings.watching.server_timeout = 300
    if SETTINGS.peering_name:
        settings.peering.name = SETTINGS.peering_name
    # Startup handlers run before peering begins, so the first record carries this lifetime.
    settings.peering.lifetime = SETTINGS.peering_lifetime
    metrics.serve(SETTINGS.metrics_port)
    memo.runtime = Runtime(
        settings=SETTINGS,
        kube=KubeApi.from_environment(),
        http=httpx.AsyncClient(timeout=SETTINGS.mlflow_timeout_seconds),
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.close()


@kopf.on.create(GROUP, VERSION, "stockmodels")
@kopf.on.update(GROUP, VERSION, "stockmodels")
@kopf.on.resume(GROUP, VERSION, "stockmodels")
async def stockmodel_changed(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await stockmodels.reconcile(body, memo.runtime, logger, event=True)


# The first tick waits a full period: create/resume handlers have just reconciled.
@kopf.timer(
    GROUP,
    VERSION,
    "stockmodels",
    interval=SETTINGS.model_poll_seconds,
    initial_delay=SETTINGS.model_poll_seconds,
)
async def stockmodel_tick(body: kopf.Body, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
    # The indexes below; kopf passes them by their names.
    known = appliers.Workloads(
        configmaps=kwargs["stockmodel_configmaps"], deployments=kwargs["stockmodel_deployments"]
    )
    await stockmodels.reconcile(body, memo.runtime, logger, event=False, known=known)


# What the StockModels own, as the watches see it: a tick checks its workloads without GETs.
@kopf.index("", "v1", "configmaps", labels={LABEL_MODEL: kopf.PRESENT})
async def stockmodel_configmaps(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(namespace, name): appliers.workload_snapshot(body)}


@kopf.index("apps", "v1", "deployments", labels={LABEL_MODEL: kopf.PRESENT})
async def stockmodel_deployments(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(namespace, name): appliers.workload_snapshot(body)}


@kopf.index(GROUP, VERSION, "stockmodels")
async def stockmodel_specs(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    """The StockModels as kopf's watch last saw them, so a schedule need not GET its model."""
    return {(namespace, name): schedules.model_snapshot(body)}


@kopf.on.create(GROUP, VERSION, "retrainschedules")
@kopf.on.update(GROUP, VERSION, "retrainschedules")
@kopf.on.resume(GROUP, VERSION, "retrainschedules")
async def schedule_changed(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **kwargs: Any
) -> None:
    await schedules.reconcile(
        body,
        memo.runtime,
        logger,
        event=True,
        patch=patch,
        # The indexes above; kopf passes them by their names.
        models=kwargs["stockmodel_specs"],
        configmaps=kwargs["stockmodel_configmaps"],
    )


@kopf.timer(
    GROUP,
    VERSION,
    "retrainschedules",
    interval=SETTINGS.schedule_tick_seconds,
    initial_delay=SETTINGS.schedule_tick_seconds,
)
async def schedule_tick(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **kwargs: Any
) -> None:
    await schedules.reconcile(
        body,
        memo.runtime,
        logger,
        event=False,
        patch=patch,
        models=kwargs["stockmodel_specs"],
        configmaps=kwargs["stockmodel_configmaps"],
    )


@kopf.on.delete(GROUP, VERSION, "stockmodels", optional=True)
@kopf.on.delete(GROUP, VERSION, "retrainschedules", optional=True)
async def forget(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Owned objects go through the garbage collector; only the in-memory lock is dropped."""
    memo.runtime.forget(uid)
