"""`python -m stockops_operator`: run the operator with the settings' namespace and peering.

Logs are JSON lines unless `STOCKOPS_LOG_JSON=false`. With `STOCKOPS_PEERING_NAME` set (the
default), the peering is mandatory: of several replicas only one acts at a time.
"""

from __future__ import annotations

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
    kopf.run(
        standalone=not settings.peering_name,
        peering_name=settings.peering_name or None,
        clusterwide=not settings.namespace,
        namespaces=[settings.namespace] if settings.namespace else (),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
    )


if __name__ == "__main__":
    run()
