"""Object backends of the bar store: a directory or a Blob container, with compare-and-swap.

The bar store (`stockops_model.store`) needs only four operations of where its day
objects live: get (bytes + ETag), a conditional put (``If-Match`` / ``If-None-Match: *``),
a prefix listing and close. `ObjectBackend` names them; `FileBackend` (a local directory,
for local mode) and `BlobBackend` (Azure Blob Storage, Azurite included) implement them.
`StoreLocation` parses the store URLs that pick one, and `connect_backend` builds it.

Locations are URLs:

* ``file:///abs/path`` - a local directory; the whole path is the store root. Writes are
  serialised per object with ``flock`` and land by atomic rename after ``fsync``; the ETag
  is a SHA-256 of the bytes.
* ``azblob://<container>/<prefix>`` - Azure Blob Storage. Credentials come from a
  connection string (Azurite, local use) or, failing that, an account URL with
  ``DefaultAzureCredential`` (workload identity in a cluster).

Limits: the file backend's locks are advisory and only work on one host (not on NFS);
its listing reads every listed file to compute its ETag, fine for one store's day objects
of a symbol, slow for a huge directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from stockops_model.errors import StoreError

OBJECT_SUFFIX = ".parquet"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
CONTAINER_PATTERN = r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]"


# --------------------------------------------------------------------------- backends


class PreconditionFailedError(Exception):
    """A conditional write lost a race (ETag changed or the object appeared meanwhile)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as a listing sees it."""

    name: str
    etag: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)


class ObjectBackend(Protocol):
    """The few object-store operations the bar store needs; both backends implement them."""

    async def get(self, name: str) -> tuple[bytes, str] | None:
        """Bytes and ETag of an object, or None when it does not exist."""
        ...

    async def put(
        self,
        name: str,
        data: bytes,
        *,
        if_match: str | None,
        metadata: dict[str, str],
        content_type: str = PARQUET_CONTENT_TYPE,
    ) -> str:
        """Write if the object still has ETag `if_match` (None: only if it does not exist).

        Returns the new ETag; raises `PreconditionFailedError` when the condition fails.
        `content_type` matters to Blob Storage only (day objects are Parquet; quarantined
        and dead-lettered payloads are opaque bytes).
        """
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Objects whose name starts with `prefix`."""
        ...

    async def close(self) -> None: ...

    @property
    def url(self) -> str:
        """Where this backend points, for logs and lineage."""
        ...


class FileBackend:
    """Objects as files under a root directory, with ETag-like compare-and-swap.

    A per-object ``flock`` serialises writers (processes and threads); the bytes land in a
    temporary file in the same directory, are fsynced, then renamed over the target, so a
    reader sees either the old or the new object, never a torn one.
    """

    LOCK_DIR = ".stockops-locks"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise StoreError(f"object name {name!r} escapes the store root {self.root}")
        return path

    @staticmethod
    def _etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'

    def _get_sync(self, name: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(name).read_bytes()
        except FileNotFoundError:
            return None
        return data, self._etag(data)

    def _put_sync(self, name: str, data: bytes, if_match: str | None) -> str:
        path = self._path(name)
        lock_path = self.root / self.LOCK_DIR / (name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            current = self._get_sync(name)
            if if_match is None and current is not None:
                raise PreconditionFailedError(f"{name} already exists")
            if if_match is not None and (current is None or current[1] != if_match):
                raise PreconditionFailedError(f"{name} changed since it was read")
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self._etag(data)

    def _list_sync(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        if not self.root.exists():
            return out
        # Walk only the directory the prefix names, not the whole store.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                path = Path(dirpath) / fname
                name = path.relative_to(self.root).as_posix()
                if not name.startswith(prefix):
                    continue
                data = path.read_bytes()
                metadata: dict[str, str] = {}
                if fname.endswith(OBJECT_SUFFIX):
                    with contextlib.suppress(pa.ArrowInvalid, OSError):
                        metadata["rows"] = str(pq.read_metadata(io.BytesIO(data)).num_rows)
                out.append(ObjectInfo(name, self._etag(data), len(data), metadata))
        return out

    async def get(self, name: str) -> tuple[bytes, str] | None:
        return await asyncio.to_thread(self._get_sync, name)

    async def put(
        self,
        name: str,
        data: bytes,
        *,
        if_match: str | None,
        metadata: dict[str, str],
        content_type: str = PARQUET_CONTENT_TYPE,
    ) -> str:
        return await asyncio.to_thread(self._put_sync, name, data, if_match)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for info in await asyncio.to_thread(self._list_sync, prefix):
            yield info

    async def close(self) -> None:
        return None


class BlobBackend:
    """Objects as block blobs in one container (``azure-storage-blob`` asyncio client).

    Each day object is small, so every write is one Put Blob request, atomic on the server;
    ``If-Match``/``If-None-Match`` make it a compare-and-swap.
    """

    def __init__(self, container_client: Any, credential: Any = None) -> None:
        self._container = container_client
        self._credential = credential

    @classmethod
    def connect(
        cls,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
    ) -> BlobBackend:
        """A backend on `container`, from a connection string or an account URL + AAD."""
        from azure.storage.blob.aio import ContainerClient

        # aiohttp's default pool (100 connections) is wider than the store's concurrency.
        if connection_string:
            client = ContainerClient.from_connection_string(
                connection_string, container_name=container
            )
            return cls(client)
        if account_url:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
            client = ContainerClient(account_url, container_name=container, credential=credential)
            return cls(client, credential)
        raise StoreError(
            "Blob store needs a connection string (STOCKOPS_BLOB_CONNECTION_STRING or "
            "AZURE_STORAGE_CONNECTION_STRING) or an account URL (STOCKOPS_BLOB_ACCOUNT_URL)"
        )

    @property
    def url(self) -> str:
        return str(self._container.url)

    async def ensure_container(self) -> None:
        """Create the container if it is missing (idempotent)."""
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await self._container.create_container()

    async def get(self, name: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            stream = await self._container.get_blob_client(name).download_blob()
            data: bytes = await stream.readall()
        except ResourceNotFoundError:
            return None
        return data, str(stream.properties.etag)

    async def put(
        self,
        name: str,
        data: bytes,
        *,
        if_match: str | None,
        metadata: dict[str, str],
        content_type: str = PARQUET_CONTENT_TYPE,
    ) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import ContentSettings

        blob = self._container.get_blob_client(name)
        settings = ContentSettings(content_type=content_type)
        try:
            if if_match is None:
                # overwrite=False sends If-None-Match: * (create only).
                result = await blob.upload_blob(
                    data, overwrite=False, metadata=metadata, content_settings=settings
                )
            else:
                result = await blob.upload_blob(
                    data,
                    overwrite=True,
                    etag=if_match,
                    match_condition=MatchConditions.IfNotModified,
                    metadata=metadata,
                    content_settings=settings,
                )
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise PreconditionFailedError(f"{name}: {exc.reason}") from None
        return str(result["etag"])

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for props in self._container.list_blobs(
            name_starts_with=prefix, include=["metadata"]
        ):
            yield ObjectInfo(
                name=props.name,
                etag=str(props.etag),
                size=int(props.size or 0),
                metadata=dict(props.metadata or {}),
            )

    async def close(self) -> None:
        await self._container.close()
        if self._credential is not None:
            await self._credential.close()


# --------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store URL: ``file:///path`` or ``azblob://container/prefix``.

    For ``file://`` the whole path is the store root and the prefix is empty; for
    ``azblob://`` the first path segment after the scheme is the container and the rest
    is the prefix inside it.
    """

    scheme: str
    container: str = ""
    prefix: str = ""
    root: Path | None = None

    @classmethod
    def parse(cls, url: str) -> StoreLocation:
        """Parse a store URL.

        Raises:
            StoreError: the URL has another scheme or lacks a container/path.
        """
        parsed = urlparse(url)
        if parsed.scheme == "file":
            path = unquote(parsed.path)
            if parsed.netloc not in ("", "localhost") or not path.startswith("/"):
                raise StoreError(f"store URL {url!r}: use file:///absolute/path")
            return cls(scheme="file", root=Path(path))
        if parsed.scheme == "azblob":
            if not parsed.netloc:
                raise StoreError(f"store URL {url!r}: use azblob://<container>/<prefix>")
            if not re.fullmatch(CONTAINER_PATTERN, parsed.netloc):
                raise StoreError(
                    f"store URL {url!r}: {parsed.netloc!r} is not a valid container name "
                    "(3-63 lower-case letters, digits and single hyphens)"
                )
            return cls(scheme="azblob", container=parsed.netloc, prefix=parsed.path.strip("/"))
        raise StoreError(
            f"store URL {url!r}: unsupported scheme; use file:///path or azblob://container/prefix"
        )

    def __str__(self) -> str:
        if self.scheme == "file":
            assert self.root is not None
            return self.root.as_uri()
        return f"azblob://{self.container}/{self.prefix}".rstrip("/")


@dataclass(frozen=True)
class BlobCredentials:
    """How to reach Blob Storage: a connection string, else an account URL with AAD."""

    connection_string: str | None = None
    account_url: str | None = None


def connect_backend(
    location: StoreLocation, credentials: BlobCredentials | None = None
) -> ObjectBackend:
    """The backend a location names (no I/O yet)."""
    if location.scheme == "file":
        if location.root is None:
            # Only a hand-built StoreLocation can lack it; `parse` always sets it.
            raise StoreError(f"store location {location!r} has scheme file but no root path")
        return FileBackend(location.root)
    creds = credentials or BlobCredentials()
    return BlobBackend.connect(
        location.container,
        connection_string=creds.connection_string,
        account_url=creds.account_url,
    )
