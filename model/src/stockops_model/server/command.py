"""The command line of `stockops serve`: flags, then one uvicorn process.

    stockops serve [--model URI] [-f stockmodel.yaml] [--tracking-uri URI] [--host 127.0.0.1]
                   [--port 8080] [--poll-seconds 30] [--store URL] [--max-body-bytes N]
                   [--max-bars N] [--no-xla]

The model is `--model`, else `models:/<spec.mlflow.modelName>@production` from the spec
(`-f` or `STOCKOPS_SPEC_JSON`). The tracking URI is the flag, else `MLFLOW_TRACKING_URI`,
else the spec's. The API key is `STOCKOPS_API_KEY` (unset: no authentication, with a
warning). The store for `/v1/forecast` is `--store`, else `STOCKOPS_STORE`, else the spec's.

The server starts answering at once (`/healthz` 200, `/readyz` 503) and loads the model in
the background. While no model is loaded, a failed load is retried at each poll (a pinned
`models:/NAME/V` too) and reported by `/readyz`, `GET /v1/models` and the log, so a registry
outage at start neither crash-loops the pod nor leaves it 503 forever. A new version that
fails while another serves is retried with backoff (see `stockops_model.server.slot`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import TYPE_CHECKING

from stockops_model.errors import ExitCode, SettingsError

if TYPE_CHECKING:
    from stockops_model.server.recent import StoreBars
    from stockops_model.spec import StockModel

log = logging.getLogger(__name__)

API_KEY_ENV = "STOCKOPS_API_KEY"  # the server's key; clients (deploy/local) read it too
API_KEY_HEADER = "X-API-Key"  # the header clients send it in (or Authorization: Bearer)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `stockops serve` (see the module docstring)."""
    from stockops_model.server.runtime import (
        DEFAULT_MAX_BARS,
        DEFAULT_MAX_BODY_BYTES,
        DEFAULT_POLL_SECONDS,
    )

    parser.add_argument(
        "--model",
        help="MLflow model URI; models:/NAME@ALIAS is followed (default with -f: "
        "models:/<spec.mlflow.modelName>@production)",
    )
    parser.add_argument("-f", "--file", help="StockModel manifest (default: $STOCKOPS_SPEC_JSON)")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else spec.mlflow.trackingUri)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        help=f"check the model alias this often (default {DEFAULT_POLL_SECONDS:g})",
    )
    parser.add_argument(
        "--store",
        help="bar store for /v1/forecast: file:///path or azblob://container/prefix "
        "(default: STOCKOPS_STORE, else spec.storage)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body; larger gets 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--max-bars",
        type=int,
        default=DEFAULT_MAX_BARS,
        help=f"most bars in one request; more gets 413 (default {DEFAULT_MAX_BARS})",
    )

    parser.add_argument(
        "--no-xla",
        action="store_true",
        help="run a network model's plain tf.function instead of its XLA-compiled forward pass",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    import uvicorn

    from stockops_model.server.app import create_app
    from stockops_model.server.runtime import ServerConfig
    from stockops_model.server.slot import MlflowLoader, ModelSource

    if args.poll_seconds <= 0 or args.max_body_bytes <= 0 or args.max_bars <= 0:
        raise SettingsError("--poll-seconds, --max-body-bytes and --max-bars must be positive")
    spec = _load_spec(args.file)
    uri = args.model
    if uri is None:
        if spec is None:
            raise SettingsError("no model: pass --model URI or -f stockmodel.yaml")
        uri = f"models:/{spec.spec.mlflow.model_name}@production"
    source = ModelSource.parse(uri)
    tracking_uri = _tracking_uri(args.tracking_uri, spec, uri)
    api_key = os.environ.get(API_KEY_ENV) or None
    if api_key is None:
        log.warning("%s is not set: every route is open to anyone who can reach it", API_KEY_ENV)
    config = ServerConfig(
        api_key=api_key,
        max_body_bytes=args.max_body_bytes,
        max_bars=args.max_bars,
        poll_seconds=args.poll_seconds,
        compile_network=not args.no_xla,
    )
    bars = _bar_source(args.store, spec)
    app = create_app(source, MlflowLoader(source, tracking_uri), config, bars)
    log.info(
        "serving %s on http://%s:%d (poll every %gs, store %s)",
        uri,
        args.host,
        args.port,
        args.poll_seconds,
        "on" if bars is not None else "off",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            access_log=False,  # one line per request costs more than a forecast
            log_config=None,  # keep the logging `stockops` configured
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again to the
    # handler that was installed before it; this one notes it, so a pod stopped by
    # Kubernetes exits 0 after draining instead of dying of the re-raised signal.
    stopped: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, _: stopped.append(sig))
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopped:
        log.info("stopped by SIGTERM after a graceful shutdown")
    return int(ExitCode.OK)


def _load_spec(path: str | None) -> StockModel | None:
    from stockops_model.spec import SPEC_ENV, load_stockmodel

    if path is None and not os.environ.get(SPEC_ENV):
        return None
    return load_stockmodel(path)


def _tracking_uri(explicit: str | None, spec: StockModel | None, uri: str) -> str | None:
    """The tracking URI, required only for registry and run URIs."""
    from stockops_model.tracking import TRACKING_URI_ENV, resolve_tracking_uri

    if uri.startswith(("models:/", "runs:/")):
        return resolve_tracking_uri(explicit, spec.spec if spec else None)
    return explicit or os.environ.get(TRACKING_URI_ENV) or None


def _bar_source(url: str | None, spec: StockModel | None) -> StoreBars | None:
    """The store for /v1/forecast, or None when none is configured anywhere."""
    from stockops_model.server.recent import StoreBars
    from stockops_model.settings import DataPlaneSettings, store_target

    settings = DataPlaneSettings.from_env()
    storage = spec.spec.storage if spec else None
    if not (url or settings.store or storage):
        return None
    location, credentials = store_target(settings, storage, url=url)
    return StoreBars.open(location, credentials)
