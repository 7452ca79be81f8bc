"""Day objects: where a symbol's trading day is stored, and its deterministic Parquet bytes.

Layout (DESIGN.md): ``{prefix}/{symbol}/{yyyy}/{mm}/{dd}.parquet``. The day is the
**US/Eastern trading day** of the bar (``America/New_York`` calendar date of the bar start),
so a whole session, pre- and post-market included, lands in one object whatever the UTC
offset of the season. Beside the days, under names no symbol can take (symbols start with
a letter): ``{prefix}/_quarantine/...`` for unreadable day objects copied aside, and
``{prefix}/_dead-letters/{topic}/{partition}/{offset}`` for malformed messages too large
for the sink's dead-letter topic.

The Parquet bytes are a pure function of the day's rows (fixed schema, one row group, no
pandas metadata, fixed codec), so replaying bars that are already stored yields the same
bytes; `merge_day` is the union that a write applies (the incoming row wins a tie on
``ts``). Decoding never guesses: bytes that are not Parquet of bars raise
`CorruptObjectError` naming the object.

Pure functions, no I/O: `stockops_model.store` reads and writes these objects. Limit: the
bytes depend on the Parquet writer version too, so a pyarrow upgrade can rewrite a day
once (same rows, new bytes).
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stockops_model.backends import OBJECT_SUFFIX
from stockops_model.bars import BAR_COLUMNS, normalise_frame, validate_frame
from stockops_model.errors import BarValidationError, CorruptObjectError

MARKET_TZ = ZoneInfo("America/New_York")
SCHEMA_TAG = "stockops.bar/v1"

ARROW_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ],
    metadata={b"stockops.schema": SCHEMA_TAG.encode()},
)

# Where unreadable day objects are copied before their day is rewritten. Symbols start with
# a letter (SYMBOL_PATTERN), so this folder can never be taken for a symbol's.
QUARANTINE_DIR = "_quarantine"
# Where the sink keeps a malformed message too large for its dead-letter topic.
DEAD_LETTER_DIR = "_dead-letters"


def trading_day(ts: datetime | pd.Timestamp) -> date:
    """The US/Eastern calendar date of a bar start (its trading day)."""
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(UTC)
    return stamp.tz_convert(MARKET_TZ).date()


def day_object_name(prefix: str, symbol: str, day: date) -> str:
    """``{prefix}/{symbol}/{yyyy}/{mm}/{dd}.parquet`` (no leading slash when prefix is empty)."""
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{head}{symbol}/{day:%Y}/{day:%m}/{day:%d}{OBJECT_SUFFIX}"


def parse_day_object_name(prefix: str, name: str) -> tuple[str, date] | None:
    """Inverse of `day_object_name`; None for names that are not day objects."""
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    if not name.startswith(head) or not name.endswith(OBJECT_SUFFIX):
        return None
    parts = name[len(head) : -len(OBJECT_SUFFIX)].split("/")
    if len(parts) != 4:
        return None
    symbol, yyyy, mm, dd = parts
    try:
        return symbol, date(int(yyyy), int(mm), int(dd))
    except ValueError:
        return None


def quarantine_object_name(prefix: str, name: str, data: bytes) -> str:
    """Where the unreadable bytes `data` of object `name` are kept.

    ``{prefix}/_quarantine/{rest of name}.{sha256[:16]}``: the same bytes always get the
    same name (copying twice is harmless), different corrupt versions never collide.
    """
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    rest = name[len(head) :] if name.startswith(head) else name
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{head}{QUARANTINE_DIR}/{rest}.{digest}"


def dead_letter_object_name(prefix: str, topic: str, partition: int, offset: int) -> str:
    """``{prefix}/_dead-letters/{topic}/{partition}/{offset}``: one name per Kafka record."""
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{head}{DEAD_LETTER_DIR}/{topic}/{partition}/{offset}"


# --------------------------------------------------------------------------- Parquet codec


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """A canonical bar frame as an Arrow table with the fixed day-object schema."""
    return pa.Table.from_pandas(
        frame.loc[:, list(BAR_COLUMNS)], schema=ARROW_SCHEMA, preserve_index=False
    ).replace_schema_metadata(ARROW_SCHEMA.metadata)


def encode_table(table: pa.Table) -> bytes:
    """Deterministic Parquet bytes of a day table (same rows -> same bytes).

    One row group, fixed codec and dictionary columns, no Arrow/pandas schema blob: the
    bytes depend only on the rows (and the Parquet writer version).
    """
    buf = io.BytesIO()
    pq.write_table(
        table.combine_chunks(),
        buf,
        compression="zstd",
        compression_level=3,
        use_dictionary=["symbol", "source"],
        write_statistics=True,
        row_group_size=max(1, table.num_rows),
        store_schema=False,
    )
    return buf.getvalue()


def decode_table(data: bytes, name: str = "a day object") -> pa.Table:
    """Parquet bytes of a day object -> Arrow table with the day-object schema.

    Raises:
        CorruptObjectError: the bytes are not Parquet, are truncated, or lack a bar column
            (or hold one that cannot be cast); the message names `name`.
    """
    try:
        table = pq.read_table(io.BytesIO(data))
        return table.select(list(BAR_COLUMNS)).cast(ARROW_SCHEMA)
    except (pa.ArrowException, KeyError, ValueError, TypeError, OSError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise CorruptObjectError(
            f"{name} is not readable Parquet of bars ({len(data)} bytes): {reason}", name=name
        ) from exc


def encode_day(frame: pd.DataFrame) -> bytes:
    """Deterministic Parquet bytes of the bars of one day object."""
    return encode_table(frame_to_table(normalise_frame(frame)))


def decode_day(data: bytes) -> pd.DataFrame:
    """Parquet bytes of a day object -> canonical frame."""
    return normalise_frame(decode_table(data).to_pandas())


def merge_day(existing: pa.Table | None, incoming: pa.Table) -> pa.Table:
    """Union of two tables of one symbol's day, sorted by ts, the incoming row winning ties.

    Done on Arrow/NumPy arrays rather than pandas: the sink merges hundreds of day objects
    per batch, and this is ~100x cheaper than a DataFrame concat/dedupe/sort.
    """
    combined = incoming if existing is None else pa.concat_tables([existing, incoming])
    ts = combined.column("ts").combine_chunks().cast(pa.int64()).to_numpy()
    order = np.argsort(ts, kind="stable")
    ordered = ts[order]
    # After a stable sort equal stamps sit together in arrival order: keep each run's last.
    keep = np.ones(len(ordered), dtype=bool)
    keep[:-1] = ordered[:-1] != ordered[1:]
    return combined.take(pa.array(order[keep])).combine_chunks()


def validate_storable(frame: pd.DataFrame) -> pd.DataFrame:
    """`validate_frame` plus what filing needs: every bar's US/Eastern trading day.

    Lets a caller (the sink) find the bars `BarStore.write` would refuse before writing.

    Returns:
        The canonical, validated frame.

    Raises:
        BarValidationError: a bar breaks the schema or cannot be filed by day.
    """
    frame = validate_frame(normalise_frame(frame))
    factorize_days(frame["ts"])
    return frame


def factorize_days(ts: pd.Series) -> tuple[npt.NDArray[np.intp], list[date]]:
    """Codes of each bar's US/Eastern trading day, and the days they index.

    Raises:
        BarValidationError: a bar's US/Eastern day is outside pandas' range.
    """
    try:
        codes, days = pd.factorize(ts.dt.tz_convert(MARKET_TZ).dt.normalize())
    except pd.errors.OutOfBoundsDatetime as exc:
        # A bar in the first hours of pandas' range (1677-09-21 UTC) has a local day
        # pandas cannot represent; the schema accepts it, the store cannot name it.
        raise BarValidationError(f"ts: cannot be filed by US/Eastern day: {exc}") from None
    return codes, [pd.Timestamp(d).date() for d in days]
