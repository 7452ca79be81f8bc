"""Loaders for the real 1-minute bar files the project ships or benchmarks with.

Two formats, each normalised to the canonical bar frame of `stockops_model.bars`
(bar START in UTC, sorted by symbol and time, unique on (symbol, ts), validated):

* Alpha Vantage intraday CSV (the 2018 set, one file per ticker, e.g. `AMZN.csv`):
  header `date,ToD,open,high,low,close,volume`, naive US/Eastern wall clock, stamps are
  bar starts from 09:30 to 16:00 inclusive. The symbol is the file name's stem.
* NinjaTrader minute export (the SPY 2011 set, e.g. `nt-spy-minute-2011-01.csv`):
  no header, `yyyyMMdd HHmmss;open;high;low;close;volume`, UTC, stamped at the END of
  the bar (so bar start = stamp - 1 minute), extended hours included.

The 16:00 closing-auction print of the Alpha Vantage files is kept as its own bar
stamped 16:00 US/Eastern. It is a real trade print with real volume (often the largest
of the day), so dropping it by default would lose data; folding it into the 15:59 bar
would invent a price path. It lies outside the regular session `[09:30, 16:00)`, exactly
like a 16:00 bar from a live feed that includes extended hours, so `regular_hours=True`
drops it together with pre- and post-market bars.

Duplicate timestamps (the DIS file repeats ten days of rows) are dropped, keeping the
first row seen, and the count is logged. Limits: the regular-hours rule knows weekends
but no exchange holidays or half days (the files simply have no bars on holidays);
parsing is vectorised pandas and reads whole files into memory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from stockops_model.bars import (
    BAR_COLUMNS,
    SYMBOL_PATTERN,
    empty_frame,
    normalise_frame,
    validate_frame,
)
from stockops_model.errors import BarValidationError, DataError

log = logging.getLogger(__name__)

EASTERN = "America/New_York"
REGULAR_OPEN = time(9, 30)
REGULAR_CLOSE = time(16, 0)
_OPEN_MINUTE = REGULAR_OPEN.hour * 60 + REGULAR_OPEN.minute
_CLOSE_MINUTE = REGULAR_CLOSE.hour * 60 + REGULAR_CLOSE.minute

DataFormat = Literal["alphavantage", "ninjatrader"]
PathLike = str | Path
DateLike = date | str

_ALPHAVANTAGE_HEADER = "date,ToD,open,high,low,close,volume"
_NINJATRADER_LINE = re.compile(r"^\d{8} \d{6};")
_NINJATRADER_NAME = re.compile(r"^nt-([A-Za-z0-9.\-]+)-minute", re.IGNORECASE)
_PRICE_DTYPES: dict[str, Any] = {c: "float64" for c in ("open", "high", "low", "close", "volume")}


def detect_format(path: PathLike) -> DataFormat:
    """Tell which of the two supported formats a file is in, from its first line.

    Raises:
        DataError: the file is missing, empty or in neither format.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline().strip()
    except OSError as exc:
        raise DataError(f"cannot read bar file {path}: {exc.strerror or exc}") from None
    if first.replace(" ", "") == _ALPHAVANTAGE_HEADER:
        return "alphavantage"
    if _NINJATRADER_LINE.match(first):
        return "ninjatrader"
    raise DataError(
        f"{path}: unknown bar file format (first line {first[:60]!r}); expected an Alpha "
        f"Vantage CSV with header {_ALPHAVANTAGE_HEADER!r} or NinjaTrader "
        "'yyyyMMdd HHmmss;open;high;low;close;volume' lines"
    )


def symbol_from_path(path: PathLike, fmt: DataFormat) -> str | None:
    """The ticker a file name implies (`AMZN.csv` -> AMZN, `nt-spy-minute-...` -> SPY)."""
    stem = Path(path).stem
    if fmt == "ninjatrader":
        match = _NINJATRADER_NAME.match(stem)
        return match.group(1).upper() if match else None
    return stem.upper()


def load_alphavantage_csv(
    path: PathLike, symbol: str | None = None, *, source: str = "replay"
) -> pd.DataFrame:
    """Load one Alpha Vantage intraday file (naive US/Eastern, bar-start stamps).

    Args:
        path: the CSV file.
        symbol: the ticker; by default the file name's stem in upper case.
        source: the `source` label of every bar.

    Returns:
        A canonical, validated bar frame, including the 16:00 closing-auction bar.

    Raises:
        DataError: unreadable file, bad columns, or wall-clock times that do not exist
            or are ambiguous in US/Eastern.
        BarValidationError: a row breaks the bar schema (the message names the file).
    """
    path = Path(path)
    symbol = symbol or path.stem.upper()
    _check_symbol(symbol, path)
    try:
        raw = pd.read_csv(path, dtype={"date": str, "ToD": str, **_PRICE_DTYPES})
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse as Alpha Vantage CSV: {exc}") from None
    missing = [c for c in _ALPHAVANTAGE_HEADER.split(",") if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        wall = pd.to_datetime(raw["date"] + " " + raw["ToD"], format="%Y-%m-%d %H:%M:%S")
        ts = wall.dt.tz_localize(EASTERN, ambiguous="raise", nonexistent="raise")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: bad date/ToD values: {exc}") from None
    return _finish(raw, ts.dt.tz_convert("UTC"), symbol, source, path)


def load_ninjatrader_csv(
    path: PathLike, symbol: str = "SPY", *, source: str = "replay"
) -> pd.DataFrame:
    """Load one NinjaTrader minute file (UTC, end-of-bar stamps, extended hours).

    Args:
        path: the `;`-separated file without a header.
        symbol: the ticker (the files do not say).
        source: the `source` label of every bar.

    Returns:
        A canonical, validated bar frame; `ts` is the bar start (stamp - 1 minute).

    Raises:
        DataError: unreadable file or malformed lines.
        BarValidationError: a row breaks the bar schema (the message names the file).
    """
    path = Path(path)
    _check_symbol(symbol, path)
    try:
        raw = pd.read_csv(
            path,
            sep=";",
            header=None,
            names=["stamp", "open", "high", "low", "close", "volume"],
            dtype={"stamp": str, **_PRICE_DTYPES},
        )
        ends = pd.to_datetime(raw["stamp"], format="%Y%m%d %H%M%S", utc=True)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: cannot parse as NinjaTrader minute bars: {exc}") from None
    return _finish(raw, ends - pd.Timedelta(minutes=1), symbol, source, path)


def load_bars(
    path_or_dir: PathLike | Sequence[PathLike],
    symbols: Iterable[str] | None = None,
    start: DateLike | None = None,
    end: DateLike | None = None,
    regular_hours: bool = False,
    *,
    source: str = "replay",
) -> pd.DataFrame:
    """Load bars from files or directories in either format, detected per file.

    Args:
        path_or_dir: a file, a directory (every bar file `*.csv` in it and its
            subdirectories; other CSVs are skipped with a warning), or a list of either.
            The symbol comes from each file's name (`AMZN.csv`,
            `nt-spy-minute-2011-01.csv` -> SPY; other NinjaTrader names -> SPY).
        symbols: keep only these tickers; files of other tickers are not even read.
        start: first trading date to keep (US/Eastern calendar date, inclusive).
        end: last trading date to keep (inclusive).
        regular_hours: keep only bars starting in [09:30, 16:00) US/Eastern on weekdays.
        source: the `source` label of every bar.

    Returns:
        One canonical, validated frame of all the bars, sorted by (symbol, ts).

    Raises:
        DataError: no file found, a requested symbol has no file, or a file is unusable.
    """
    wanted = {s.upper() for s in symbols} if symbols is not None else None
    frames: list[pd.DataFrame] = []
    found: set[str] = set()
    for path, fmt in _csv_files(path_or_dir):
        symbol = symbol_from_path(path, fmt) or "SPY"
        if wanted is not None and symbol not in wanted:
            continue
        found.add(symbol)
        if fmt == "alphavantage":
            frames.append(load_alphavantage_csv(path, symbol, source=source))
        else:
            frames.append(load_ninjatrader_csv(path, symbol, source=source))
    if wanted is not None and wanted - found:
        raise DataError(
            f"no bar file for symbol(s) {', '.join(sorted(wanted - found))} in {path_or_dir}"
        )
    if not frames:
        return empty_frame()
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= (frame["ts"] >= _eastern_midnight(start)).to_numpy()
    if end is not None:
        keep &= (frame["ts"] < _eastern_midnight(end, days_after=1)).to_numpy()
    if regular_hours:
        keep &= regular_hours_mask(frame["ts"])
    if not keep.all():
        frame = frame.loc[keep]
    # Several files of one symbol (two SPY months) may overlap; normalise dedupes and sorts.
    return validate_frame(normalise_frame(frame))


def regular_hours_mask(
    ts: pd.Series | pd.DatetimeIndex | Sequence[datetime],
) -> npt.NDArray[np.bool_]:
    """True where a bar starts in the US regular session: weekdays, 09:30 <= ET < 16:00.

    DST aware (the session is fixed in US/Eastern wall clock). Naive timestamps are taken
    as UTC. Exchange holidays and half days are not known.
    """
    idx = pd.DatetimeIndex(ts if isinstance(ts, pd.Series | pd.DatetimeIndex) else list(ts))
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    local = idx.tz_convert(EASTERN)
    minute = np.asarray(local.hour * 60 + local.minute)
    weekday = np.asarray(local.dayofweek)
    return np.asarray((minute >= _OPEN_MINUTE) & (minute < _CLOSE_MINUTE) & (weekday < 5))


def is_regular_hours(ts: datetime) -> bool:
    """`regular_hours_mask` for one timezone-aware timestamp."""
    if ts.tzinfo is None:
        raise ValueError("is_regular_hours needs a timezone-aware timestamp")
    return bool(regular_hours_mask(pd.DatetimeIndex([ts]))[0])


def _finish(raw: pd.DataFrame, ts: pd.Series, symbol: str, source: str, path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts": ts,
            "open": raw["open"],
            "high": raw["high"],
            "low": raw["low"],
            "close": raw["close"],
            "volume": raw["volume"],
            "source": source,
        },
        columns=list(BAR_COLUMNS),
    )
    dup_ts = frame["ts"].duplicated(keep="first")
    duplicates = int(dup_ts.sum())
    if duplicates:
        # Exact repeats are a harmless export quirk; rows that disagree deserve a warning.
        exact = frame.duplicated(keep="first")
        conflicting = int((dup_ts & ~exact).sum())
        frame = frame.loc[~dup_ts]
        if conflicting:
            log.warning(
                "%s: dropped %d duplicate bar(s), %d of them with different values "
                "(kept the first row of each timestamp)",
                path,
                duplicates,
                conflicting,
            )
        else:
            log.info("%s: dropped %d exact duplicate bar(s)", path, duplicates)
    try:
        frame = validate_frame(normalise_frame(frame))
    except BarValidationError as exc:
        raise BarValidationError(f"{path}: {exc}") from None
    log.debug("%s: loaded %d %s bars", path, len(frame), symbol)
    return frame


def _csv_files(path_or_dir: PathLike | Sequence[PathLike]) -> list[tuple[Path, DataFormat]]:
    items = [path_or_dir] if isinstance(path_or_dir, str | Path) else list(path_or_dir)
    files: list[tuple[Path, DataFormat]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            for found in sorted(path.rglob("*.csv")):
                # A data directory may hold other CSVs (notes, exports); a file named
                # explicitly must be a bar file, one met while scanning need not.
                try:
                    files.append((found, detect_format(found)))
                except DataError as exc:
                    log.warning("skipping %s", exc)
        elif path.is_file():
            files.append((path, detect_format(path)))
        else:
            raise DataError(f"bar data path {path} does not exist")
    if not files:
        raise DataError(f"no bar files (*.csv in a known format) in {path_or_dir}")
    return files


def _check_symbol(symbol: str, path: Path) -> None:
    if not re.fullmatch(SYMBOL_PATTERN[1:-1], symbol):
        raise DataError(f"{path}: symbol {symbol!r} does not match {SYMBOL_PATTERN}")


def _eastern_midnight(day: DateLike, days_after: int = 0) -> pd.Timestamp:
    try:
        d = date.fromisoformat(day) if isinstance(day, str) else day
    except ValueError:
        raise DataError(f"bad date {day!r}, expected YYYY-MM-DD") from None
    if isinstance(d, datetime):
        d = d.date()
    return pd.Timestamp(d + timedelta(days=days_after)).tz_localize(EASTERN)
