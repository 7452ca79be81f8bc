"""Service subprocesses for the test harness: own process group, log file, clean stop.

Each service runs in a new session (so a process group of its own): stopping it signals the
whole group, which also reaches the workers a server forks (MLflow's uvicorn worker), and a
Ctrl-C in the terminal does not hit the services before the harness stops them in order. Its
stdout and stderr go to one log file, appended across restarts, whose tail is quoted in every
start-up failure. On Linux, a service started from the main thread also receives SIGTERM if the
Python process that started it dies, and an `atexit` hook stops what is still running, so a
crashed test session leaves no broker behind. `LocalService` is the handle Kafka, Azurite and
MLflow share (launch, wait until it answers, stop, close), and `start_in_folder` starts one in
a given or temporary folder. Limits: POSIX only.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, TypeVar

from stockops_model.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Strong references: a handle dropped without stop() must still be stopped at exit.
_LIVE: set[ServiceProcess] = set()


def tail(path: Path, lines: int = 40) -> str:
    """Return the last `lines` lines of a text file, or a note that it is missing."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def run_logged(
    argv: Sequence[str],
    log_path: Path,
    *,
    what: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run an install step to completion with its output in `log_path`.

    Raises:
        ServiceUnavailableError: the command failed or ran out of time; the message quotes the
            tail of its log (a registry that cannot be reached shows up here).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            code = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
        except FileNotFoundError as exc:
            raise ServiceUnavailableError(
                f"{what}: {argv[0]!r} is not installed or not on PATH ({exc})"
            ) from exc
    if code != 0:
        outcome = f"timed out after {timeout:.0f} s" if code is None else f"exited with {code}"
        raise ServiceUnavailableError(
            f"{what} {outcome}; last lines of {log_path}:\n{tail(log_path)}"
        )


def _load_prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved once in the parent: the child, between fork and exec, must not dlopen anything
# (another thread may have held the loader's lock at fork time).
_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM it when the thread
    # that forked it (the main thread, see `start`) exits.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class ServiceProcess:
    """One service command, restartable, in its own process group with a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the running service (also its process group id), or None."""
        return self._popen.pid if self.running and self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last run (negative: killed by that signal); None while running."""
        return None if self._popen is None else self._popen.poll()

    @property
    def running(self) -> bool:
        """Tell whether the service process is alive."""
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        """Start the command; it is an error to start a service that is already running."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # PR_SET_PDEATHSIG fires when the forking *thread* ends, so only the main thread,
        # which lives as long as the process, may ask for it.
        on_main_thread = threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if _PRCTL is not None and on_main_thread else None,
            )
        _LIVE.add(self)

    def wait_ready(
        self, probe: Callable[[], bool], *, timeout: float, interval: float = 0.2
    ) -> float:
        """Call `probe` until it returns True; return the seconds waited.

        Raises:
            ServiceUnavailableError: the process exited, or `probe` did not succeed within
                `timeout` seconds (the service is then killed). The message quotes its log.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if not self.running:
                code = None if self._popen is None else self._popen.returncode
                raise ServiceUnavailableError(
                    f"{self.name} exited with code {code} while starting; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            if probe():
                return time.monotonic() - started
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceUnavailableError(
                    f"{self.name} did not answer within {timeout:.0f} s and was killed; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(interval)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, wait up to `timeout` s, then SIGKILL what is left."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            self._signal_group(popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=timeout)
        # Also reaps workers the leader left behind in its group.
        self._signal_group(popen.pid, signal.SIGKILL)
        popen.wait()
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, as far as the service knows)."""
        popen = self._popen
        if popen is None:
            return
        self._signal_group(popen.pid, signal.SIGKILL)
        popen.wait()
        _LIVE.discard(self)

    def rss_bytes(self) -> int:
        """Resident memory of every process in the service's group, in bytes (Linux; else 0)."""
        pgid = self.pid
        if pgid is None or not Path("/proc").is_dir():
            return 0
        page = os.sysconf("SC_PAGE_SIZE")
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # The command name may contain spaces; fields after its ')' are fixed.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    total += int(fields[21]) * page
        return total

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


class LocalService(abc.ABC):
    """A service with a run folder and one `ServiceProcess`: launch, wait, stop, close.

    Subclasses set `process`, `run_dir`, `log_path` and `_remove_run_dir` in `__init__`, say
    how to tell that the service answers (`_ready`) and where it answers (`address`), and
    may extend `launch`, `wait_until_ready` or `stop` for what only they do.
    """

    ready_timeout: ClassVar[float]
    """Default seconds `start` and `wait_until_ready` wait: a guard against a hang."""
    ready_interval: ClassVar[float] = 0.2
    """Seconds between two readiness probes."""
    stop_timeout: ClassVar[float] = 30.0
    """Default seconds `stop` gives the service after SIGTERM before it SIGKILLs it."""

    process: ServiceProcess
    run_dir: Path
    log_path: Path
    _remove_run_dir: bool

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where clients reach the service (for logs)."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Tell whether the launched service answers requests."""

    @property
    def running(self) -> bool:
        """Tell whether the service process is alive."""
        return self.process.running

    def launch(self) -> None:
        """Start the service process; do not wait."""
        self.process.start()

    def wait_until_ready(self, timeout: float | None = None) -> float:
        """Wait until the launched service answers; return the seconds waited.

        Raises:
            ServiceUnavailableError: it exited or did not answer within `timeout` seconds
                (default `ready_timeout`; it is then killed); the message quotes its log.
        """
        return self.process.wait_ready(
            self._ready,
            timeout=self.ready_timeout if timeout is None else timeout,
            interval=self.ready_interval,
        )

    def start(self, timeout: float | None = None) -> float:
        """Launch the service and wait until it answers; return the seconds waited."""
        self.launch()
        return self.wait_until_ready(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the service (SIGTERM, then SIGKILL), keeping its run folder for a restart."""
        self.process.stop(timeout=self.stop_timeout if timeout is None else timeout)

    def close(self) -> None:
        """Stop it and delete its run folder if the harness created it."""
        self.stop()
        if self._remove_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def rss_bytes(self) -> int:
        """Resident memory of the service's processes in bytes (0 when it is not running)."""
        return self.process.rss_bytes()


_S = TypeVar("_S", bound=LocalService)


def start_in_folder(
    create: Callable[[Path, bool], _S],
    run_dir: Path | None,
    *,
    prefix: str,
    timeout: float | None = None,
    wait: bool = True,
) -> _S:
    """Create a service in `run_dir` (or a new temporary folder), launch it, and wait.

    Args:
        create: builds the handle from its run folder and whether `close()` deletes it.
        run_dir: kept afterwards; None: a temporary folder named `prefix...` that `close()`
            deletes.
        timeout: seconds to wait for it to answer (default: the service's `ready_timeout`).
        wait: False returns as soon as the process is launched; the caller then calls
            `wait_until_ready()` (and `close()` if that fails) itself.

    Raises:
        ServiceUnavailableError: it did not come up; it is closed first.
    """
    remove = run_dir is None
    folder = Path(tempfile.mkdtemp(prefix=prefix)) if run_dir is None else run_dir
    try:
        service = create(folder, remove)
    except BaseException:
        # No handle, so no close(): a missing Java or npm must not leave a folder behind.
        if remove:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        service.launch()
        if not wait:
            return service
        seconds = service.wait_until_ready(timeout)
    except BaseException:
        service.close()
        raise
    log.info(
        "%s %s ready in %.1f s (log %s)",
        service.process.name,
        service.address,
        seconds,
        service.log_path,
    )
    return service


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_LIVE):
        service.stop(timeout=10.0)
