"""Connecting to MLflow: which tracking URI applies, and failing fast when it is down.

Every workload that talks to MLflow (`train`, `deploy`, `serve`) resolves the tracking URI
the same way: the command-line flag, else `MLFLOW_TRACKING_URI`, else the StockModel's
`spec.mlflow.trackingUri`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from stockops_model.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from stockops_model.spec import StockModelSpec

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# MLflow's error codes for a registered model, version or alias that does not exist (the
# file and SQL stores and the REST client differ).
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def is_not_found(exc: Exception) -> bool:
    """Whether an MLflow error says the registered model, version or alias does not exist."""
    return getattr(exc, "error_code", "") in NOT_FOUND_CODES


def resolve_tracking_uri(explicit: str | None, spec: StockModelSpec | None = None) -> str:
    """The flag, else `MLFLOW_TRACKING_URI`, else the spec's; raises if none is given."""
    uri = explicit or os.environ.get(TRACKING_URI_ENV) or (spec and spec.mlflow.tracking_uri)
    if not uri:
        from stockops_model.errors import SettingsError

        raise SettingsError(f"no MLflow tracking URI: give --tracking-uri or {TRACKING_URI_ENV}")
    return uri


def connect_mlflow(tracking_uri: str) -> MlflowClient:
    """Point MLflow at `tracking_uri`, failing fast when an HTTP server does not answer.

    Raises:
        ServiceUnavailableError: the tracking server is unreachable or unhealthy.
    """
    import httpx
    import mlflow

    if tracking_uri.startswith(("http://", "https://")):
        try:
            reply = httpx.get(tracking_uri.rstrip("/") + "/health", timeout=10.0)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"MLflow tracking server {tracking_uri} is unreachable: {exc}"
            ) from None
        if reply.status_code != 200:
            raise ServiceUnavailableError(
                f"MLflow tracking server {tracking_uri} answered {reply.status_code} on /health"
            )
    elif tracking_uri.startswith("sqlite:///"):
        # Local mode: SQLite creates the file but not its folder.
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri)
