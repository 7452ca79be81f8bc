"""The cache folder where the test harness installs services once, shared by every run.

`STOCKOPS_CACHE` names the folder (default `~/.cache/stockops`). Each install lands in its own
subfolder that is published by an atomic rename only once it is complete, under an exclusive
`flock` on a sibling lock file: two processes that race (two pytest runs, `make services`
beside a bench) never see a half-installed service, and the second one simply waits and
reuses the first one's result. Limits: locks are advisory and local to this machine (fine for
a cache on a local disk, not for one shared over NFS); nothing is ever evicted, so an old
version stays until someone deletes its folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "STOCKOPS_CACHE"
_COMPLETE = ".complete"


def cache_dir() -> Path:
    """Return the cache folder named by `STOCKOPS_CACHE`, or `~/.cache/stockops`."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    # Absolute, because services get paths inside it while running in other folders.
    return Path(raw).expanduser().absolute() if raw else Path.home() / ".cache" / "stockops"


def is_installed(target: Path) -> bool:
    """Tell whether `target` was published complete by `install_once`."""
    return (target / _COMPLETE).is_file()


def install_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Make sure `target` exists complete, building it at most once across processes.

    Args:
        target: the folder to publish, e.g. `<cache>/kafka/4.3.1-ab12cd34`.
        build: fills an empty staging folder (a sibling of `target`) with the install; any
            exception it raises leaves no trace in the cache and propagates.

    Returns:
        `target`, complete.
    """
    if is_installed(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if is_installed(target):
                return target
            if target.exists():
                # Only a folder renamed into place is trusted; anything else is debris.
                shutil.rmtree(target)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the install from other users
            try:
                build(staging)
                (staging / _COMPLETE).write_text("")
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
