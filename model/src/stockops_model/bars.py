"""The one bar schema of stockops, for single bars and for DataFrames of bars.

A bar is one closed 1-minute interval of one symbol: `ts` is the bar's START in UTC, on a
minute boundary. Prices are finite and positive, `low <= open, close <= high`, volume is
finite and non-negative, and `source` says where the bar came from (yahoo, replay, ...).

`Bar` validates one bar (messages, API input); `validate_frame` checks a whole DataFrame
in vectorised form and `normalise_frame` gives any frame the canonical column order,
dtypes, sort order and uniqueness on (symbol, ts).

Limits: the schema knows nothing about trading sessions (pre/regular/post market) or
calendars; `stockops_model.loaders.regular_hours_mask` answers that for US equities.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stockops_model.errors import BarValidationError

BAR_COLUMNS: tuple[str, ...] = ("symbol", "ts", "open", "high", "low", "close", "volume", "source")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,14}$"
SOURCE_MAX_LENGTH = 32
_STR_DTYPE = pd.StringDtype(na_value=np.nan)  # pandas' default `str` dtype


def _require_number(value: object) -> object:
    # pydantic's lax mode would turn "1.5" and True into floats; a price on the wire or in
    # a file that is a string or a boolean is a producer bug worth surfacing.
    if isinstance(value, bool | str | bytes):
        raise ValueError(f"must be a number, got {type(value).__name__} {value!r}")
    # Checked here because pydantic's `gt` runs first and calls NaN "not greater than 0".
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


Price = Annotated[float, BeforeValidator(_require_number), Field(gt=0, allow_inf_nan=False)]
Volume = Annotated[float, BeforeValidator(_require_number), Field(ge=0, allow_inf_nan=False)]


class Bar(BaseModel):
    """One closed bar. Build it with `Bar.parse(...)` to get a `BarValidationError`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(pattern=SYMBOL_PATTERN, description="Ticker, upper case, e.g. AAPL")
    ts: datetime = Field(description="Bar start, timezone-aware, normalised to UTC")
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume
    source: str = Field(min_length=1, max_length=SOURCE_MAX_LENGTH)

    @field_validator("ts")
    @classmethod
    def _utc_minute(cls, ts: datetime) -> datetime:
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError("timestamp must carry a time zone (UTC expected)")
        ts = ts.astimezone(UTC)
        if ts.second or ts.microsecond:
            raise ValueError(f"timestamp {ts.isoformat()} is not on a minute boundary")
        return ts

    @model_validator(mode="after")
    def _ohlc_order(self) -> Bar:
        if not self.low <= min(self.open, self.close):
            raise ValueError(f"low {self.low} is above open {self.open} or close {self.close}")
        if not max(self.open, self.close) <= self.high:
            raise ValueError(f"high {self.high} is below open {self.open} or close {self.close}")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Bar:
        """Validate a mapping into a Bar, raising `BarValidationError` with a readable reason."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise BarValidationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """Render pydantic errors as `field: reason; field: reason`."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "bar"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def empty_frame() -> pd.DataFrame:
    """An empty DataFrame with the canonical bar columns and dtypes."""
    return normalise_frame(pd.DataFrame({c: [] for c in BAR_COLUMNS}))


def bars_to_frame(bars: list[Bar]) -> pd.DataFrame:
    """Turn validated bars into a canonical frame (sorted, unique on symbol and ts)."""
    if not bars:
        return empty_frame()
    return normalise_frame(pd.DataFrame([b.model_dump() for b in bars]))


def frame_to_bars(frame: pd.DataFrame) -> list[Bar]:
    """Turn a frame with the bar columns into Bar objects, validating each.

    Raises:
        BarValidationError: a column is missing or a row breaks the schema.
    """
    _require_columns(frame)
    out = []
    for rec in frame.loc[:, list(BAR_COLUMNS)].to_dict("records"):
        data = {str(k): v for k, v in rec.items()}
        if isinstance(data["ts"], pd.Timestamp):
            data["ts"] = data["ts"].to_pydatetime()
        out.append(Bar.parse(data))
    return out


def normalise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and dtypes, sorted by (symbol, ts), last duplicate wins.

    `ts` becomes `datetime64[ns, UTC]` (naive values are taken as UTC), prices and volume
    `float64`, symbol and source pandas' `str` dtype. The result has a fresh RangeIndex.
    Extra columns are dropped. This does not check the schema's rules: chain
    `validate_frame` for that.

    Raises:
        BarValidationError: a column is missing, or a value cannot be converted.
    """
    _require_columns(frame)
    out = frame.loc[:, list(BAR_COLUMNS)].copy()
    # Each conversion is skipped when the column already has its canonical dtype: loaders
    # and the sink call this on every frame, and the conversions dominate their time.
    if str(out["ts"].dtype) != "datetime64[ns, UTC]":
        try:
            out["ts"] = pd.to_datetime(out["ts"], utc=True).astype("datetime64[ns, UTC]")
        except (ValueError, TypeError) as exc:
            raise BarValidationError(f"ts: cannot be read as timestamps: {exc}") from None
    for col in (*PRICE_COLUMNS, "volume"):
        if out[col].dtype == np.float64:
            continue
        try:
            out[col] = pd.to_numeric(out[col], errors="raise").astype("float64")
        except (ValueError, TypeError) as exc:
            raise BarValidationError(f"{col}: not numeric: {exc}") from None
    for col in ("symbol", "source"):
        if out[col].isna().any():
            raise BarValidationError(f"{col}: {int(out[col].isna().sum())} missing value(s)")
        if out[col].dtype != _STR_DTYPE:
            out[col] = out[col].astype(object).astype(str)
    out = out.drop_duplicates(subset=["symbol", "ts"], keep="last")
    return out.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


def validate_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Check every rule of the schema on a canonical frame, vectorised.

    Returns:
        The same frame, for chaining.

    Raises:
        BarValidationError: naming how many rows break a rule, the first offending row
            (symbol, ts) and the rule.
    """
    _require_columns(frame)
    if frame.empty:
        return frame
    prices = frame.loc[:, list(PRICE_COLUMNS)].to_numpy(dtype="float64")
    open_, high, low, close = prices.T
    volume = frame["volume"].to_numpy(dtype="float64")
    ts = pd.DatetimeIndex(frame["ts"])
    # NaN compares False everywhere, so each rule is written as "not ok" to catch it too.
    with np.errstate(invalid="ignore"):
        checks: list[tuple[str, npt.NDArray[np.bool_]]] = [
            ("timestamp is missing", np.asarray(ts.isna())),
            (
                "timestamp must be on a minute boundary",
                np.asarray((ts.second != 0) | (ts.microsecond != 0) | (ts.nanosecond != 0)),
            ),
            (
                "prices must be finite and positive",
                ~(np.isfinite(prices).all(axis=1) & (prices > 0).all(axis=1)),
            ),
            ("volume must be finite and >= 0", ~(np.isfinite(volume) & (volume >= 0))),
            ("low must be <= open and close", ~(low <= np.minimum(open_, close))),
            ("high must be >= open and close", ~(high >= np.maximum(open_, close))),
            (
                f"symbol must match {SYMBOL_PATTERN}",
                _bad_values(frame["symbol"], lambda v: re.fullmatch(SYMBOL_PATTERN, v) is None),
            ),
            (
                f"source must be 1..{SOURCE_MAX_LENGTH} characters",
                _bad_values(frame["source"], lambda v: not 1 <= len(v) <= SOURCE_MAX_LENGTH),
            ),
        ]
    for reason, bad in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = frame.iloc[i]
            raise BarValidationError(
                f"{int(bad.sum())} bar(s) invalid, first {row['symbol']} at {row['ts']}: {reason}"
            )
    return frame


def _bad_values(column: pd.Series, is_bad: Callable[[str], bool]) -> npt.NDArray[np.bool_]:
    # A frame has few distinct symbols and sources: check each once, not once a row.
    bad = [v for v in column.unique() if not isinstance(v, str) or is_bad(v)]
    if not bad:
        return np.zeros(len(column), dtype=bool)
    return np.asarray(column.isin(bad).to_numpy(dtype=bool))


def _require_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise BarValidationError(f"bar frame lacks column(s) {', '.join(missing)}")
