"""The bar store: one Parquet object per symbol and trading day, in Blob Storage or a directory.

Layout (DESIGN.md): ``{prefix}/{symbol}/{yyyy}/{mm}/{dd}.parquet``, one object per
**US/Eastern trading day** of a symbol; the names, the deterministic Parquet codec and the
merge live in `stockops_model.dayobjects` (pure, no I/O) and are re-exported here for
existing callers. This module does the I/O.

Writes are read-merge-write with optimistic concurrency: the day object is read with its
ETag, the new bars are merged in (deduplicated on ``ts``; an incoming bar replaces a stored
one with the same timestamp), and the result is written with ``If-Match: <etag>`` (or
``If-None-Match: *`` when the object is new). A 412/409 means another writer got there
first: re-read, re-merge, retry. Two sinks therefore never lose each other's bars.
The Parquet bytes are a pure function of the day's rows, so replaying bars that are already
stored rewrites nothing: the merge yields the same rows and the write is skipped. A store
remembers the last version it wrote of each object (ETag and rows), so a sink's next merge
into the same day needs no GET; the write stays conditional, so a stale memory only costs a
412 and a re-read.

A day object that exists but cannot be decoded (truncated, not Parquet, a schema without
the bar columns) would otherwise fail every write to its day, and a sink would retry that
batch for ever. Policy: **quarantine, then rewrite**. The writer copies the unreadable bytes
unchanged to ``{prefix}/_quarantine/{symbol}/{yyyy}/{mm}/{dd}.parquet.{sha256[:16]}``
(the digest makes the copy idempotent and keeps every distinct corrupt version), logs an
error naming both objects and the decoder's reason, then writes the day from the incoming
bars, still conditional on the corrupt version's ETag so a writer that repaired it
meanwhile is not overwritten. `DayWrite.quarantined` names the copy, so the sink counts it
(``stockops_sink_quarantined_objects_total``). Nothing is lost: the bars the corrupt object
held are in the quarantined copy (repair it, or replay the topic over that day; the merge
is idempotent). Readers (`read`, `read_with_lineage`) never guess: an unreadable object is
a `CorruptObjectError` naming the blob, not a bare pyarrow error. Limit: an object written
by a future, incompatible schema would also be quarantined by this version of the writer.

Store locations are URLs, ``file:///abs/path`` (a local directory with the same layout,
for local mode) or ``azblob://<container>/<prefix>`` (Azure Blob Storage); the object
backends behind them, with their compare-and-swap, live in `stockops_model.backends` and
are re-exported here for existing callers.

Limits: the merge holds one day of one symbol in memory (a few hundred rows for 1-minute
bars); see `stockops_model.backends` for the limits of each backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from stockops_model.backends import (
    CONTAINER_PATTERN,
    OBJECT_SUFFIX,
    PARQUET_CONTENT_TYPE,
    BlobBackend,
    BlobCredentials,
    FileBackend,
    ObjectBackend,
    ObjectInfo,
    PreconditionFailedError,
    StoreLocation,
    connect_backend,
)
from stockops_model.bars import SYMBOL_PATTERN, empty_frame, normalise_frame, validate_frame
from stockops_model.dayobjects import (
    ARROW_SCHEMA,
    DEAD_LETTER_DIR,
    MARKET_TZ,
    QUARANTINE_DIR,
    SCHEMA_TAG,
    day_object_name,
    dead_letter_object_name,
    decode_day,
    decode_table,
    encode_day,
    encode_table,
    factorize_days,
    frame_to_table,
    merge_day,
    parse_day_object_name,
    quarantine_object_name,
    trading_day,
    validate_storable,
)
from stockops_model.errors import CorruptObjectError, StoreError

# The object backends and store locations live in `stockops_model.backends`, the day
# objects' names and codec in `stockops_model.dayobjects`; they are listed here too so
# existing `from stockops_model.store import ...` keeps working.
__all__ = [
    "ARROW_SCHEMA",
    "CONTAINER_PATTERN",
    "DEAD_LETTER_DIR",
    "MARKET_TZ",
    "MAX_WRITE_ATTEMPTS",
    "OBJECT_SUFFIX",
    "PARQUET_CONTENT_TYPE",
    "QUARANTINE_DIR",
    "SCHEMA_TAG",
    "BarStore",
    "BlobBackend",
    "BlobCredentials",
    "DayObject",
    "DayWrite",
    "FileBackend",
    "ObjectBackend",
    "ObjectInfo",
    "PreconditionFailedError",
    "StoreLocation",
    "TimeLike",
    "connect_backend",
    "day_object_name",
    "dead_letter_object_name",
    "decode_day",
    "decode_table",
    "encode_day",
    "encode_table",
    "frame_to_table",
    "merge_day",
    "open_store",
    "parse_day_object_name",
    "quarantine_object_name",
    "read_bars",
    "trading_day",
    "validate_storable",
]

log = logging.getLogger(__name__)

# A bound of a read: a timestamp (naive = UTC), an ISO string, or a date (its trading day).
TimeLike = datetime | date | pd.Timestamp | str

# Retries of a conditional write that lost a race; each retry re-reads the object.
MAX_WRITE_ATTEMPTS = 12

OPAQUE_CONTENT_TYPE = "application/octet-stream"


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class DayObject:
    """One day object, for lineage: training logs the name and ETag of every object read."""

    symbol: str
    day: date
    name: str
    etag: str
    rows: int | None
    size: int


@dataclass(frozen=True)
class DayWrite:
    """The outcome of merging bars into one day object."""

    symbol: str
    day: date
    name: str
    etag: str
    rows: int
    added: int
    written: bool
    attempts: int
    # The quarantine copy of an unreadable object this write replaced, if any.
    quarantined: str | None = None


class BarStore:
    """Read and write bars as day objects; one instance per event loop.

    Use `open_store` to build one from a URL. `write` merges a frame of bars into the day
    objects concurrently; `read` downloads the day objects of a time range concurrently and
    returns one canonical frame; `list_days` gives the objects (with ETags) for lineage.
    """

    def __init__(self, backend: ObjectBackend, prefix: str = "", *, concurrency: int = 32) -> None:
        self.backend = backend
        self.prefix = prefix.strip("/")
        self.concurrency = concurrency
        # Last version this process wrote or read of each day object: lets the next
        # merge skip the GET. Safe because the write is still conditional on the ETag.
        self._cache: OrderedDict[str, tuple[str, pa.Table]] = OrderedDict()
        self._cache_size = 4096

    @property
    def url(self) -> str:
        return self.backend.url + (f"/{self.prefix}" if self.prefix else "")

    async def close(self) -> None:
        await self.backend.close()

    # ---- write

    async def write(self, frame: pd.DataFrame) -> list[DayWrite]:
        """Merge bars into their day objects (idempotent); returns one result per object.

        Raises:
            BarValidationError: a bar breaks the schema (nothing is written).
            StoreError: the store cannot be reached or keeps losing races.
        """
        if frame.empty:
            return []
        frame = validate_frame(normalise_frame(frame))
        day_codes, day_dates = factorize_days(frame["ts"])
        table = frame_to_table(frame)
        symbols, symbol_index = pd.factorize(frame["symbol"])
        symbol_names = [str(s) for s in symbol_index]
        key = symbols.astype(np.int64) * (len(day_dates) + 1) + day_codes
        order = np.argsort(key, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(key[order])) + 1)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(rows: npt.NDArray[np.intp]) -> DayWrite:
            first = rows[0]
            symbol, day = symbol_names[symbols[first]], day_dates[day_codes[first]]
            async with sem:
                return await self._merge_day(symbol, day, table.take(pa.array(rows)))

        return list(await asyncio.gather(*(one(g) for g in groups)))

    async def _merge_day(self, symbol: str, day: date, incoming: pa.Table) -> DayWrite:
        name = day_object_name(self.prefix, symbol, day)
        cached = self._cache.get(name)
        quarantined: str | None = None
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            existing: pa.Table | None
            etag: str | None
            if cached is None:
                current = await self._get(name)
                if current is None:
                    etag, existing = None, None
                else:
                    data, etag = current
                    try:
                        existing = decode_table(data, self._where(name))
                    except CorruptObjectError as exc:
                        # Keep the bytes, then rewrite the day from the new bars; the
                        # put below stays conditional on the corrupt version's ETag.
                        quarantined = await self._quarantine(name, data, str(exc))
                        existing = None
            else:
                etag, existing = cached
            merged = merge_day(existing, incoming)
            before = 0 if existing is None else existing.num_rows
            if existing is not None and merged.equals(existing, check_metadata=False):
                assert etag is not None
                self._remember(name, etag, existing)
                return DayWrite(symbol, day, name, etag, before, 0, False, attempt, quarantined)
            data = encode_table(merged)
            try:
                new_etag = await self.backend.put(
                    name,
                    data,
                    if_match=etag,
                    metadata={"rows": str(merged.num_rows), "schema": "bar-v1"},
                )
            except PreconditionFailedError:
                self._cache.pop(name, None)
                cached = None
                log.debug("lost a write race on %s (attempt %d), re-reading", name, attempt)
                await asyncio.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
                continue
            except StoreError:
                raise
            except Exception as exc:
                self._cache.pop(name, None)
                raise StoreError(f"cannot write {name} to {self.backend.url}: {exc}") from exc
            self._remember(name, new_etag, merged)
            rows = merged.num_rows
            return DayWrite(
                symbol, day, name, new_etag, rows, rows - before, True, attempt, quarantined
            )
        raise StoreError(
            f"gave up writing {name} after {MAX_WRITE_ATTEMPTS} conflicting concurrent writes"
        )

    def _where(self, name: str) -> str:
        return f"{self.backend.url}/{name}"

    async def put_dead_letter(
        self, topic: str, partition: int, offset: int, data: bytes, metadata: dict[str, str]
    ) -> str:
        """Keep the raw bytes of one dead message; returns where (a URL to put in a header).

        The name is the record's topic/partition/offset, so writing it again after a crash
        is harmless: an existing object holds the same record's bytes and is left as is.

        Raises:
            StoreError: the store cannot be written (retry: nothing was lost yet).
        """
        name = dead_letter_object_name(self.prefix, topic, partition, offset)
        try:
            await self.backend.put(
                name, data, if_match=None, metadata=metadata, content_type=OPAQUE_CONTENT_TYPE
            )
        except PreconditionFailedError:
            pass
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot write {name} to {self.backend.url}: {exc}") from exc
        return self._where(name)

    async def _quarantine(self, name: str, data: bytes, reason: str) -> str:
        """Copy the unreadable bytes of `name` aside (idempotently); returns the copy's name."""
        target = quarantine_object_name(self.prefix, name, data)
        try:
            await self.backend.put(
                target,
                data,
                if_match=None,
                metadata={"quarantined_from": name},
                content_type=OPAQUE_CONTENT_TYPE,
            )
        except PreconditionFailedError:
            pass  # the same bytes are already there: the name is their digest
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(
                f"cannot quarantine unreadable {name} to {target} in {self.backend.url}: {exc}"
            ) from exc
        log.error(
            "%s; its bytes are kept as %s and the day is rewritten from the incoming bars "
            "(repair that copy or replay the topic over that day to restore its other bars)",
            reason,
            self._where(target),
        )
        return target

    def _remember(self, name: str, etag: str, table: pa.Table) -> None:
        self._cache[name] = (etag, table)
        self._cache.move_to_end(name)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _get(self, name: str) -> tuple[bytes, str] | None:
        try:
            return await self.backend.get(name)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot read {name} from {self.backend.url}: {exc}") from exc

    # ---- read

    async def list_days(
        self,
        symbols: Sequence[str],
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> list[DayObject]:
        """The day objects of `symbols` whose trading day overlaps ``[start, end)``.

        Without `start`/`end` every stored day is listed. Sorted by (symbol, day).
        """
        first, last = _day_bounds(start, end)
        out: list[DayObject] = []
        for symbol in _check_symbols(symbols):
            head = day_object_name(self.prefix, symbol, date(2000, 1, 1)).rsplit("/", 3)[0] + "/"
            try:
                async for info in self.backend.list(head):
                    parsed = parse_day_object_name(self.prefix, info.name)
                    if parsed is None or parsed[0] != symbol:
                        continue
                    day = parsed[1]
                    if (first and day < first) or (last and day > last):
                        continue
                    rows = info.metadata.get("rows")
                    out.append(
                        DayObject(
                            symbol,
                            day,
                            info.name,
                            info.etag,
                            int(rows) if rows and rows.isdigit() else None,
                            info.size,
                        )
                    )
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"cannot list {head} in {self.backend.url}: {exc}") from exc
        return sorted(out, key=lambda d: (d.symbol, d.day))

    async def read_with_lineage(
        self,
        symbols: Sequence[str],
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> tuple[pd.DataFrame, list[DayObject]]:
        """Bars of `symbols` with ``start <= ts < end`` and the exact objects they came from.

        The ETags returned are those of the versions actually downloaded.
        """
        listed = await self.list_days(symbols, start, end)
        sem = asyncio.Semaphore(self.concurrency)

        async def fetch(obj: DayObject) -> tuple[DayObject, pa.Table] | None:
            async with sem:
                got = await self._get(obj.name)
            if got is None:  # deleted between list and get
                return None
            data, etag = got
            table = decode_table(data, self._where(obj.name))
            return DayObject(obj.symbol, obj.day, obj.name, etag, table.num_rows, len(data)), table

        results = [r for r in await asyncio.gather(*(fetch(o) for o in listed)) if r is not None]
        if not results:
            return empty_frame(), []
        frame = pa.concat_tables([t for _, t in results]).to_pandas()
        lo, hi = _ts_bounds(start, end)
        if lo is not None:
            frame = frame[frame["ts"] >= lo]
        if hi is not None:
            frame = frame[frame["ts"] < hi]
        return normalise_frame(frame), [o for o, _ in results]

    async def read(
        self,
        symbols: Sequence[str],
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> pd.DataFrame:
        """Bars of `symbols` with ``start <= ts < end`` as one canonical frame.

        `start`/`end` are timestamps (naive ones are UTC) or dates; a date means midnight
        US/Eastern of that trading day, so ``read(s, date(2018, 3, 9), date(2018, 3, 13))``
        returns the trading days 9 to 12 March whole.

        Day objects are downloaded concurrently (`concurrency` at a time).

        Raises:
            CorruptObjectError: a day object in the range cannot be decoded; the message
                names the blob (a sink quarantines it on its next write to that day).
            StoreError: the store cannot be reached.
        """
        frame, _ = await self.read_with_lineage(symbols, start, end)
        return frame


def _check_symbols(symbols: Iterable[str]) -> list[str]:
    out = []
    for s in symbols:
        if not re.fullmatch(SYMBOL_PATTERN, s):
            raise StoreError(f"invalid symbol {s!r}: expected {SYMBOL_PATTERN}")
        out.append(s)
    return out


def _as_utc(value: TimeLike | None) -> pd.Timestamp | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        # A bare date means that trading day: it starts at midnight US/Eastern.
        return pd.Timestamp(value).tz_localize(MARKET_TZ).tz_convert(UTC)
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def _ts_bounds(
    start: TimeLike | None, end: TimeLike | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    return _as_utc(start), _as_utc(end)


def _day_bounds(start: TimeLike | None, end: TimeLike | None) -> tuple[date | None, date | None]:
    lo, hi = _ts_bounds(start, end)
    first = trading_day(lo) if lo is not None else None
    last = trading_day(hi - timedelta(microseconds=1)) if hi is not None else None
    return first, last


# --------------------------------------------------------------------------- opening
@contextlib.asynccontextmanager
async def open_store(
    url: str | StoreLocation,
    credentials: BlobCredentials | None = None,
    *,
    create: bool = False,
    concurrency: int = 32,
) -> AsyncIterator[BarStore]:
    """Open a `BarStore` on a store URL; closes the clients on exit.

    Args:
        url: ``file:///path`` or ``azblob://container/prefix``.
        credentials: for ``azblob://``; None reads nothing from the environment.
        create: create the Blob container if it is missing.
        concurrency: day objects downloaded or written at once.
    """
    location = url if isinstance(url, StoreLocation) else StoreLocation.parse(url)
    backend = connect_backend(location, credentials)
    store = BarStore(backend, location.prefix, concurrency=concurrency)
    try:
        if create and isinstance(backend, BlobBackend):
            try:
                await backend.ensure_container()
            except Exception as exc:
                raise StoreError(f"cannot reach Blob container {backend.url}: {exc}") from exc
        yield store
    finally:
        await store.close()


def read_bars(
    url: str | StoreLocation,
    symbols: Sequence[str],
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    credentials: BlobCredentials | None = None,
) -> tuple[pd.DataFrame, list[DayObject]]:
    """Blocking convenience for synchronous callers (training): bars plus their lineage.

    Must not be called from inside a running event loop; use `BarStore.read` there.
    """

    async def go() -> tuple[pd.DataFrame, list[DayObject]]:
        async with open_store(url, credentials) as store:
            return await store.read_with_lineage(symbols, start, end)

    return asyncio.run(go())
