"""Install and run every real service the tests and benchmarks use; also a small CLI.

`running(kafka=..., azurite=..., mlflow=...)` starts the services asked for, each on a free
port of 127.0.0.1, yields their handles and stops them on exit: the test fixtures in
`tests/conftest.py` and every `bench/*.py` use the same code, so a bench runs on its own from a
fresh checkout. `install_all()` fills the cache (`STOCKOPS_CACHE`, default
`~/.cache/stockops`) and also calls `stockops_model.testing.kube.install(cache_dir)` when that
module exists.

CLI (what `make services` calls)::

    python -m stockops_model.testing.services install [--only kafka azurite ...]
    python -m stockops_model.testing.services up [--no-kafka] [--no-azurite] [--no-mlflow]

`up` prints the addresses and keeps the services running until Ctrl-C or SIGTERM.

Limits: the services are launched together and awaited in turn, so the slowest one sets the
start-up time; a handle that was not asked for raises on access rather than returning None.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from stockops_model.errors import ServiceUnavailableError, StockopsError
from stockops_model.testing.azurite import Azurite, install_azurite, start_azurite
from stockops_model.testing.cache import cache_dir
from stockops_model.testing.kafka import KafkaBroker, install_kafka, start_kafka
from stockops_model.testing.mlflow_server import MlflowServer, start_mlflow_server

log = logging.getLogger(__name__)

KUBE_MODULE = "stockops_model.testing.kube"
SERVICE_NAMES = ("kafka", "azurite", "mlflow", "kube")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Services:
    """Handles of the services `running()` started; asking for one not started raises."""

    _kafka: KafkaBroker | None = None
    _azurite: Azurite | None = None
    _mlflow: MlflowServer | None = None

    @property
    def kafka(self) -> KafkaBroker:
        """The Kafka broker (`.bootstrap`)."""
        return _require(self._kafka, "kafka")

    @property
    def azurite(self) -> Azurite:
        """The Azurite blob emulator (`.connection_string`, `.blob_endpoint`)."""
        return _require(self._azurite, "azurite")

    @property
    def mlflow(self) -> MlflowServer:
        """The MLflow tracking server (`.tracking_uri`)."""
        return _require(self._mlflow, "mlflow")


def _require(handle: _T | None, name: str) -> _T:
    if handle is None:
        raise RuntimeError(f"{name} was not started: pass {name}=True to running()")
    return handle


@contextlib.contextmanager
def running(
    *,
    kafka: bool = True,
    azurite: bool = True,
    mlflow: bool = False,
    cache: Path | None = None,
    run_dir: Path | None = None,
    azurite_in_memory: bool = False,
) -> Iterator[Services]:
    """Start the services asked for, yield their handles, stop them all on exit.

    Args:
        kafka, azurite, mlflow: which services to start.
        cache: the install cache (default: `cache_dir()`); missing installs happen first.
        run_dir: a folder to keep each service's data and log in (`<run_dir>/<name>`); None:
            temporary folders, deleted on exit.
        azurite_in_memory: Azurite keeps its blobs in memory (see `start_azurite`).

    Raises:
        ServiceUnavailableError: a service could not be installed or did not come up; the
            ones already started are stopped.
    """

    def folder(name: str) -> Path | None:
        return None if run_dir is None else run_dir / name

    with contextlib.ExitStack() as stack:
        broker = emulator = server = None
        if kafka:
            broker = start_kafka(folder("kafka"), cache=cache, wait=False)
            stack.callback(broker.close)
        if azurite:
            emulator = start_azurite(
                folder("azurite"), cache=cache, wait=False, in_memory=azurite_in_memory
            )
            stack.callback(emulator.close)
        if mlflow:
            server = start_mlflow_server(folder("mlflow"), cache=cache, wait=False)
            stack.callback(server.close)
        # All are launched before any is awaited, so their slow starts (a JVM, MLflow's
        # imports) overlap.
        for handle in (broker, emulator, server):
            if handle is not None:
                seconds = handle.wait_until_ready()
                name, log_path = handle.process.name, handle.log_path
                log.info("%s ready after %.1f s more (log %s)", name, seconds, log_path)
        yield Services(broker, emulator, server)


def _install_mlflow(_cache: Path) -> None:
    if importlib.util.find_spec("mlflow") is None:
        raise ServiceUnavailableError(
            "mlflow is not installed in this environment: run `uv sync --all-packages`"
        )


def _install_kube(cache: Path) -> None:
    try:
        module = importlib.import_module(KUBE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == KUBE_MODULE:
            log.info("no %s module: skipping the kube-apiserver install", KUBE_MODULE)
            return
        raise
    install: Callable[[Path], None] | None = getattr(module, "install", None)
    if install is None:
        log.warning("%s has no install(cache_dir) function: skipped", KUBE_MODULE)
        return
    install(cache)


def install_all(cache: Path | None = None, only: Sequence[str] = SERVICE_NAMES) -> dict[str, float]:
    """Install every service (or those in `only`) into the cache; idempotent.

    Returns:
        seconds each install took (near zero when it was already cached).
    """
    folder = cache or cache_dir()
    steps: dict[str, Callable[[Path], object]] = {
        "kafka": install_kafka,
        "azurite": install_azurite,
        "mlflow": _install_mlflow,
        "kube": _install_kube,
    }
    seconds: dict[str, float] = {}
    for name in only:
        started = time.monotonic()
        steps[name](folder)
        seconds[name] = time.monotonic() - started
    return seconds


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _cmd_install(args: argparse.Namespace) -> int:
    folder = cache_dir()
    print(f"cache: {folder}")
    for name, seconds in install_all(folder, args.only).items():
        print(f"{name:8} ok ({seconds:.1f} s)")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    # SIGTERM (a supervisor, `kill`) must clean up like Ctrl-C; SIGINT is set explicitly as a
    # shell that starts us in the background leaves it ignored.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
        signal.signal(signal.SIGINT, _raise_interrupt)
    started = time.monotonic()
    with running(kafka=args.kafka, azurite=args.azurite, mlflow=args.mlflow) as services:
        print(f"all up in {time.monotonic() - started:.1f} s; Ctrl-C stops them")
        if args.kafka:
            broker = services.kafka
            print(f"kafka    bootstrap={broker.bootstrap}  (log {broker.log_path})")
        if args.azurite:
            emulator = services.azurite
            print(f"azurite  blob_endpoint={emulator.blob_endpoint}  (log {emulator.log_path})")
            print(f"         connection_string={emulator.connection_string}")
        if args.mlflow:
            server = services.mlflow
            print(f"mlflow   tracking_uri={server.tracking_uri}  (log {server.log_path})")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (`install` and `up`)."""
    parser = argparse.ArgumentParser(
        prog="python -m stockops_model.testing.services",
        description="Install and run the real services the stockops tests use.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="install every service into the cache")
    install.add_argument(
        "--only", nargs="+", choices=SERVICE_NAMES, default=list(SERVICE_NAMES), metavar="NAME"
    )
    install.set_defaults(handler=_cmd_install)
    up = commands.add_parser("up", help="start the services and print their addresses")
    for name in ("kafka", "azurite", "mlflow"):
        up.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=True)
    up.set_defaults(handler=_cmd_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except StockopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    return code


if __name__ == "__main__":
    sys.exit(main())
