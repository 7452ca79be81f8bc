"""A real `stockops serve` process for tests and benchmarks, on a free 127.0.0.1 port.

    with scoring_server("models:/demo@serving", tracking_uri, folder) as server:
        httpx.get(f"{server.url}/v1/models")

The server starts answering `/healthz` before any model is loaded (it polls the alias in
the background), so by default this waits for `/healthz` only; pass `ready="/readyz"` to
wait until a model serves. Its output goes to `folder / "serve.log"`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from stockops_model.testing.ports import LOOPBACK, pick_free_port
from stockops_model.testing.processes import ServiceProcess

START_TIMEOUT_S = 300.0  # imports and a first model load on a busy 2-core machine


@dataclass(frozen=True)
class ScoringServer:
    """A running `stockops serve`: its base URL (no trailing slash) and its process."""

    url: str
    port: int
    process: ServiceProcess

    @property
    def log_path(self) -> Path:
        return self.process.log_path


@contextlib.contextmanager
def scoring_server(
    model_uri: str,
    tracking_uri: str,
    folder: Path,
    *,
    api_key: str | None = None,
    store_url: str | None = None,
    poll_seconds: float | None = None,
    ready: str = "/healthz",
    timeout: float = START_TIMEOUT_S,
) -> Iterator[ScoringServer]:
    """Start `stockops serve --model model_uri`, wait for `ready` to answer 200, stop at exit.

    Args:
        model_uri: what to serve (`models:/NAME@ALIAS` is followed).
        tracking_uri: the MLflow registry; the parent's `MLFLOW_TRACKING_URI` is not passed on.
        folder: where the log goes (and the working directory).
        api_key: `STOCKOPS_API_KEY` of the server; None serves without a key.
        store_url: `--store` for `/v1/forecast`, if any.
        poll_seconds: `--poll-seconds` (a large value leaves alias moves to explicit reloads).
        ready: the path that must answer 200 before this yields.
        timeout: how long to wait for it.
    """
    port = pick_free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "STOCKOPS_SPEC_JSON")
    }
    env.pop("STOCKOPS_API_KEY", None)
    if api_key is not None:
        env["STOCKOPS_API_KEY"] = api_key
    argv = [
        sys.executable,
        "-m",
        "stockops_model.cli",
        "serve",
        "--model",
        model_uri,
        "--tracking-uri",
        tracking_uri,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    if store_url is not None:
        argv += ["--store", store_url]
    if poll_seconds is not None:
        argv += ["--poll-seconds", str(poll_seconds)]
    folder.mkdir(parents=True, exist_ok=True)
    process = ServiceProcess("stockops-serve", argv, folder / "serve.log", env=env, cwd=folder)
    url = f"http://{LOOPBACK}:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}{ready}", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    process.start()
    try:
        process.wait_ready(answers, timeout=timeout, interval=0.5)
        yield ScoringServer(url=url, port=port, process=process)
    finally:
        process.stop()
