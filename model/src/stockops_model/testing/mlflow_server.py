"""A real MLflow tracking server on 127.0.0.1 for tests, from the mlflow in this venv.

Runs `python -m mlflow server --backend-store-uri sqlite:///DIR/mlflow.db
--artifacts-destination DIR/artifacts --host 127.0.0.1 --port N --workers 1` with
`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`: one worker and no job runner start in a few
seconds and a fraction of the memory of the defaults. Artifacts are proxied by the server
(`mlflow-artifacts:` URIs), as in a cluster where clients cannot see the server's disk.

A fresh database needs some eighty schema migrations, a quarter of a start-up here; so the
first server to come up leaves a copy of its still-empty database in the cache
(`<cache>/mlflow/empty-<mlflow version>.db`), and later servers start from that copy. The copy
is path-free: the Default experiment's artifact location is `mlflow-artifacts:/0`.

Limits: nothing to install (mlflow is a dependency of the `ml` extra); the server answers 403
to Host headers other than localhost/127.0.0.1, so clients must use `tracking_uri` as given.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import sqlite3
import sys
from pathlib import Path

from stockops_model.testing.cache import cache_dir
from stockops_model.testing.ports import LOOPBACK, pick_free_port
from stockops_model.testing.processes import LocalService, ServiceProcess, start_in_folder

log = logging.getLogger(__name__)

# A guard against a hang, not a speed target, sized for 2 busy cores:
# about 15 CPU-s to ready, mostly imports in two processes: 24 s at a load of 6, 87 s at 13.
READY_TIMEOUT = 300.0


class MlflowServer(LocalService):
    """A running MLflow tracking server: its URI, and stop/close."""

    ready_timeout = READY_TIMEOUT
    ready_interval = 0.3
    stop_timeout = 20.0

    def __init__(
        self, run_dir: Path, *, cache: Path | None = None, remove_run_dir: bool = False
    ) -> None:
        self.run_dir = run_dir
        self.port = pick_free_port()
        self.db_path = run_dir / "mlflow.db"
        self.backend_store_uri = f"sqlite:///{self.db_path}"
        version = importlib.metadata.version("mlflow")
        self._empty_db = (cache or cache_dir()) / "mlflow" / f"empty-{version}.db"
        self._keep_empty_db = False
        self.artifacts_dir = run_dir / "artifacts"
        self.log_path = run_dir / "mlflow.log"
        self._remove_run_dir = remove_run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        # The server must not pick up a tracking URI meant for clients of this process.
        env.pop("MLFLOW_TRACKING_URI", None)
        self.process = ServiceProcess(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                self.backend_store_uri,
                "--artifacts-destination",
                str(self.artifacts_dir),
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            self.log_path,
            env=env,
            cwd=run_dir,
        )

    @property
    def tracking_uri(self) -> str:
        """URI for `mlflow.set_tracking_uri` / `MlflowClient(tracking_uri=...)`."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        """The tracking URI (see `tracking_uri`)."""
        return self.tracking_uri

    def _ready(self) -> bool:
        import httpx  # here, so that importing the harness (every conftest does) stays light

        try:
            return httpx.get(f"{self.tracking_uri}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def launch(self) -> None:
        """Start the server process; do not wait."""
        if not self.db_path.exists():
            if self._empty_db.is_file():
                shutil.copyfile(self._empty_db, self.db_path)
            else:
                self._keep_empty_db = True
        super().launch()

    def wait_until_ready(self, timeout: float | None = None) -> float:
        """Wait until /health answers 200; return the seconds waited."""
        seconds = super().wait_until_ready(timeout)
        if self._keep_empty_db:
            self._keep_empty_db = False
            self._save_empty_db()
        return seconds

    def _save_empty_db(self) -> None:
        # Nothing has written to the database yet: the only request so far was /health. The
        # backup API copies a consistent state; the rename publishes it whole.
        self._empty_db.parent.mkdir(parents=True, exist_ok=True)
        draft = self._empty_db.with_name(f".{self._empty_db.name}.{os.getpid()}")
        try:
            with (
                contextlib.closing(sqlite3.connect(self.db_path)) as source,
                contextlib.closing(sqlite3.connect(draft)) as copy,
            ):
                source.backup(copy)
            os.replace(draft, self._empty_db)
        except (OSError, sqlite3.Error) as exc:
            log.warning("could not keep an empty MLflow database in the cache: %s", exc)
            draft.unlink(missing_ok=True)


def start_mlflow_server(
    run_dir: Path | None = None,
    *,
    cache: Path | None = None,
    timeout: float = READY_TIMEOUT,
    wait: bool = True,
) -> MlflowServer:
    """Start a fresh MLflow server with an empty store and wait until it is healthy.

    Args:
        run_dir: where its database, artifacts and log go; kept afterwards. None: a temporary
            folder that `close()` deletes.
        cache: where the empty-database template is kept (default: `cache_dir()`).
        timeout: seconds to wait for /health.
        wait: False returns as soon as the process is launched; then call
            `wait_until_ready()` (and `close()` if that fails) yourself.
    """
    return start_in_folder(
        lambda folder, remove: MlflowServer(folder, cache=cache, remove_run_dir=remove),
        run_dir,
        prefix="stockops-mlflow-",
        timeout=timeout,
        wait=wait,
    )
