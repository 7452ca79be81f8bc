"""A real Azurite blob emulator (npm `azurite`, pinned) on 127.0.0.1 for tests.

Installed once with `npm install --prefix <cache>/azurite/<version> azurite@<version>` and
run as `node .../azurite-blob --blobHost 127.0.0.1 --blobPort N --location DIR
--disableTelemetry --skipApiVersionCheck` (the last flag lets the current azure-storage-blob
SDK, whose API version is newer than the emulator's, through). The account is Azurite's
well-known development account, `devstoreaccount1`, whose key is public in Azurite's docs.

`in_memory=True` swaps `--location DIR` for `--inMemoryPersistence` (Azurite refuses both
at once): with its default on-disk metadata database Azurite re-saves the whole database as
the blob count grows, which slows tens of thousands of small blobs down several-fold.

Limits: blob service only (no queues or tables); 3.35.0 is the last release that supports
Node 20 (3.36+ declare Node >= 22); data lives in a temporary folder (or, in memory, in the
process) and dies with the handle.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stockops_model.errors import ServiceUnavailableError
from stockops_model.testing.cache import cache_dir, install_once
from stockops_model.testing.ports import LOOPBACK, pick_free_port
from stockops_model.testing.processes import (
    LocalService,
    ServiceProcess,
    run_logged,
    start_in_folder,
)

# A guard against a hang, not a speed target, sized for 2 busy cores:
# ready in 1-3 s (0.8 CPU-s), 4.5 s at a load of 13.
READY_TIMEOUT = 120.0

AZURITE_VERSION = "3.35.0"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's documented development key; it opens nothing outside a local emulator.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise ServiceUnavailableError(f"`{tool}` is not on PATH: Azurite needs Node.js and npm")
    return found


def install_azurite(cache: Path | None = None, version: str = AZURITE_VERSION) -> Path:
    """Install the pinned Azurite into the cache once; return the `azurite-blob` script.

    Raises:
        ServiceUnavailableError: npm is missing or could not install the package.
    """
    root = (cache or cache_dir()) / "azurite"
    target = root / version

    def build(staging: Path) -> None:
        run_logged(
            [
                _require("npm"),
                "install",
                "--prefix",
                str(staging),
                f"azurite@{version}",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
            ],
            root / "install.log",
            what=f"installing azurite@{version} with npm",
            timeout=900,
        )

    install_once(target, build)
    return target / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"


class Azurite(LocalService):
    """A running Azurite blob service: its endpoint, connection string and stop/close."""

    ready_timeout = READY_TIMEOUT
    stop_timeout = 15.0

    def __init__(
        self,
        script: Path,
        run_dir: Path,
        *,
        remove_run_dir: bool = False,
        in_memory: bool = False,
    ) -> None:
        self.run_dir = run_dir
        self.port = pick_free_port()
        # Where blobs and metadata live on disk; None when they live in Azurite's memory.
        self.location: Path | None = None if in_memory else run_dir / "data"
        self.log_path = run_dir / "azurite.log"
        self._remove_run_dir = remove_run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.location is None:
            persistence = ["--inMemoryPersistence"]
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            persistence = ["--location", str(self.location)]
        self.process = ServiceProcess(
            "azurite",
            [
                _require("node"),
                str(script),
                "--blobHost",
                LOOPBACK,
                "--blobPort",
                str(self.port),
                *persistence,
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ],
            self.log_path,
        )

    @property
    def account_name(self) -> str:
        """The storage account every request goes to."""
        return ACCOUNT_NAME

    @property
    def account_key(self) -> str:
        """The account's shared key (Azurite's public development key)."""
        return ACCOUNT_KEY

    @property
    def blob_endpoint(self) -> str:
        """Account URL for `BlobServiceClient(account_url=...)`."""
        return f"http://{LOOPBACK}:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        """Connection string for `BlobServiceClient.from_connection_string`."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def address(self) -> str:
        """The blob endpoint (see `blob_endpoint`)."""
        return self.blob_endpoint

    def _ready(self) -> bool:
        import httpx  # here, so that importing the harness (every conftest does) stays light

        # Any HTTP answer, even 403 to this unsigned request, means the server is serving.
        try:
            httpx.get(f"{self.blob_endpoint}?comp=list", timeout=2.0)
        except httpx.HTTPError:
            return False
        return True


def start_azurite(
    run_dir: Path | None = None,
    *,
    cache: Path | None = None,
    timeout: float = READY_TIMEOUT,
    wait: bool = True,
    in_memory: bool = False,
) -> Azurite:
    """Install if needed, then start a fresh, empty Azurite and wait until it answers.

    Args:
        run_dir: where its data and log go; kept afterwards. None: a temporary folder that
            `close()` deletes.
        cache: the install cache (default: `cache_dir()`).
        timeout: seconds to wait for it to answer.
        wait: False returns as soon as the process is launched; then call
            `wait_until_ready()` (and `close()` if that fails) yourself.
        in_memory: keep blobs in Azurite's memory (`--inMemoryPersistence`) instead of
            under `run_dir`; much faster with tens of thousands of blobs.
    """
    script = install_azurite(cache)
    return start_in_folder(
        lambda folder, remove: Azurite(script, folder, remove_run_dir=remove, in_memory=in_memory),
        run_dir,
        prefix="stockops-azurite-",
        timeout=timeout,
        wait=wait,
    )
