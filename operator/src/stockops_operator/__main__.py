"""`python -m stockops_operator`: run the operator with the settings' namespace and peering.

Logs are JSON lines unless `STOCKOPS_LOG_JSON=false`. With `STOCKOPS_PEERING_NAME` set (the
default), the peering is mandatory: of several replicas only the one with the highest
priority (random unless `STOCKOPS_PEERING_PRIORITY` is set) acts; the others pause until its
peering record expires (`STOCKOPS_PEERING_LIFETIME`). `STOCKOPS_PEERING_ID` (the chart: the
Pod's name) keeps a restarted process's identity, so it does not wait for its own old record.
"""

from __future__ import annotations

import secrets
from typing import Any, cast

import kopf

from stockops_operator import main as handlers
from stockops_operator.settings import load_settings


def run() -> None:
    settings = load_settings()
    kopf.configure(
        verbose=settings.log_level.upper() == "DEBUG",
        log_format=kopf.LogFormat.JSON if settings.log_json else kopf.LogFormat.FULL,
    )
    assert handlers.SETTINGS is not None  # importing registers the handlers
    # Equal priorities would pause every replica; a random one lets the highest act alone.
    priority = settings.peering_priority or 1 + secrets.randbelow(2**31 - 2)
    kopf.run(
        standalone=not settings.peering_name,
        peering_name=settings.peering_name or None,
        priority=priority,
        # kopf types it as its NewType of str, which it does not export.
        identity=cast(Any, settings.peering_id) or None,
        clusterwide=not settings.namespace,
        namespaces=[settings.namespace] if settings.namespace else (),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
    )


if __name__ == "__main__":
    run()
