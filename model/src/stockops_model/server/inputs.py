"""Request bodies to validated `TickerBars`, without a DataFrame: the server's input path.

`bars_from_records` reads `POST /v1/predict`'s `{"bars": [{symbol, ts, open, high, low,
close, volume}, ...]}`, `bars_from_columns` the columns of an Open Inference Protocol v2
request; both check what `forecaster.prepare_bars` checks, with numpy, and raise
`InputError` naming the JSON path of the first culprit (`bars[3].close`,
`inputs[5].data[3]`):

- the shape: an object with a list of objects, each with the seven fields;
- symbol: a string, one of the model's tickers;
- ts: an ISO 8601 string (naive means UTC) within datetime64[ns]'s range (1677-09-21 to
  2262-04-11), strictly increasing per ticker (no repeats);
- open/high/low/close: numbers, finite and > 0; volume: a number, finite and >= 0;
- at least `min_bars` bars per ticker and at most `max_bars` in all.

`require_finite` checks what the model made of valid bars: prices finite and positive can
still overflow a network's float32 features or its forecast.

The body is parsed with orjson (with the standard library where orjson is not installed:
the Azure ML scoring script, `stockops_model.deploy.score`, validates with this module in
the model's own environment). orjson refuses the `NaN`/`Infinity` literals some clients
write; such a body is parsed again with the standard library, so the answer names the field
holding the non-finite value instead of calling the whole body malformed.

Limits: extra fields of a bar are ignored; open and volume are validated but not used by
the features.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from stockops_model.forecaster import INPUT_COLUMNS, PRICE_FIELDS, TickerBars
from stockops_model.server.problems import ApiError, InputError

try:
    import orjson
except ImportError:  # the Azure ML scoring environment has only the model's requirements
    orjson = None  # type: ignore[assignment]

FieldOf = Callable[[str, int], str]
DEFAULT_MAX_BARS = 20_000
NUMERIC_FIELDS: tuple[str, ...] = (*PRICE_FIELDS, "volume")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS = operator.itemgetter(*INPUT_COLUMNS)
_NS_PER_US = 1000
# datetime64[ns]'s range; int64's minimum is NaT.
_MIN_NS = int(np.iinfo(np.int64).min) + 1
_MAX_NS = int(np.iinfo(np.int64).max)


def parse_json(body: bytes) -> Any:
    """The JSON document of a request body (see the module docstring about NaN)."""
    if not body.strip():
        raise InputError("body: empty; send a JSON object", field=None, reason="empty_body")
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InputError(
            f"body: not valid JSON: {exc}", field=None, reason="invalid_json"
        ) from None


def bars_from_records(
    document: Any, tickers: Sequence[str], min_bars: int, max_bars: int
) -> list[TickerBars]:
    """Validated bars per ticker from a `{"bars": [...]}` document (module docstring)."""
    if not isinstance(document, dict):
        raise InputError(
            'body: must be a JSON object {"bars": [...]}', field=None, reason="invalid_shape"
        )
    records = document.get("bars")
    if not isinstance(records, list):
        raise InputError(
            "bars: missing, or not a list of bar objects", field="bars", reason="invalid_shape"
        )
    _check_count(len(records), "bars", max_bars)
    try:
        # One C-level pass per bar, then a transpose: about half the cost of a list
        # comprehension per column on a few hundred bars.
        rows = list(map(_FIELDS, records))
    except (TypeError, KeyError):
        raise _record_shape_error(records) from None
    columns = dict(zip(INPUT_COLUMNS, map(list, zip(*rows, strict=True)), strict=True))
    return bars_from_columns(columns, tickers, min_bars, max_bars, _record_field, "bars")


def bars_from_columns(
    columns: dict[str, list[Any]],
    tickers: Sequence[str],
    min_bars: int,
    max_bars: int,
    field_of: FieldOf,
    collection: str,
) -> list[TickerBars]:
    """Validated bars per ticker from equally long columns.

    `field_of(name, i)` names a cell in the request, `collection` the whole list of bars.
    """
    _check_count(len(columns["symbol"]), collection, max_bars)
    symbols = _symbols(columns["symbol"], tickers, field_of)
    ts = parse_timestamps(columns["ts"], field_of)
    numbers = {name: _numbers(columns[name], name, field_of) for name in NUMERIC_FIELDS}
    for name, values in numbers.items():
        bad = ~np.isfinite(values) | ((values < 0) if name == "volume" else (values <= 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            rule = "finite and >= 0" if name == "volume" else "finite and positive"
            raise InputError(
                f"{field_of(name, i)}: must be {rule}, got {float(values[i])!r} ({symbols[i]} at "
                f"{columns['ts'][i][:64]})",
                field=field_of(name, i),
                reason="invalid_price" if name != "volume" else "invalid_volume",
            )
    out: list[TickerBars] = []
    distinct = sorted(set(symbols))
    symbol_array = np.asarray(symbols, dtype=object) if len(distinct) > 1 else None
    for symbol in distinct:
        if symbol_array is None:  # one ticker, the usual request: every row is its
            rows = np.arange(len(symbols))
        else:
            rows = np.flatnonzero(symbol_array == symbol)
        stamps = ts[rows]
        steps = np.diff(stamps.view(np.int64))
        if (steps <= 0).any():
            step = int(np.flatnonzero(steps <= 0)[0])
            at = int(rows[step + 1])
            repeated = bool(steps[step] == 0)
            what = "repeats the timestamp before it" if repeated else "is not in time order"
            raise InputError(
                f"{field_of('ts', at)}: {what} for {symbol} ({columns['ts'][at][:64]}); send "
                "each ticker's bars sorted by ts, once each",
                field=field_of("ts", at),
                reason="duplicate_timestamp" if repeated else "unsorted_timestamps",
            )
        if len(rows) < min_bars:
            raise InputError(
                f"{collection}: {len(rows)} bar(s) of {symbol}, need at least {min_bars} (window "
                "plus indicator warm-up)",
                field=collection,
                reason="too_few_bars",
            )
        out.append(
            TickerBars(
                symbol=symbol,
                ts=stamps,
                high=numbers["high"][rows],
                low=numbers["low"][rows],
                close=numbers["close"][rows],
            )
        )
    return out


def parse_timestamps(values: list[Any], field_of: FieldOf) -> npt.NDArray[np.datetime64]:
    """ISO 8601 strings to datetime64[ns] UTC (naive strings are UTC)."""
    if set(map(type, values)) - {str}:
        i = next(i for i, v in enumerate(values) if type(v) is not str)
        raise InputError(
            f"{field_of('ts', i)}: must be an ISO 8601 string, got {_kind(values[i])}",
            field=field_of("ts", i),
            reason="invalid_timestamp",
        )
    fast = _parse_utc_z(values)
    if fast is not None:
        return fast
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        try:
            stamp = datetime.fromisoformat(value)
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            delta = stamp - _EPOCH
        except (ValueError, OverflowError):
            raise InputError(
                f"{field_of('ts', i)}: cannot be read as an ISO 8601 timestamp: {value[:64]!r}",
                field=field_of("ts", i),
                reason="invalid_timestamp",
            ) from None
        ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + (
            delta.microseconds * _NS_PER_US
        )
        if not _MIN_NS <= ns <= _MAX_NS:
            raise InputError(
                f"{field_of('ts', i)}: {value[:64]!r} is outside the supported range "
                "1677-09-21 to 2262-04-11",
                field=field_of("ts", i),
                reason="invalid_timestamp",
            )
        out[i] = ns
    return out.view("datetime64[ns]")


def _parse_utc_z(values: list[str]) -> npt.NDArray[np.datetime64] | None:
    # The common wire form, "2018-03-08T14:30:00Z", parsed by numpy in one call (a few
    # times faster than fromisoformat per value). Anything else takes the careful path:
    # numpy also reads words such as "now" or "NaT" (the length check), wraps years outside
    # datetime64[ns]'s range silently (9999 becomes 1816: the year bounds, compared as
    # strings) and reads an offset before the Z (only the two dashes of the date allowed).
    if not values or min(map(len, values)) < 17:
        return None
    stripped = [v[:-1] for v in values if v[-1] == "Z"]
    if len(stripped) != len(values):
        return None
    if min(stripped) < "1678" or max(stripped) >= "2262":
        return None
    joined = "".join(stripped)
    if "+" in joined or joined.count("-") != 2 * len(stripped):
        return None
    try:
        parsed = np.array(stripped, dtype="datetime64[ns]")
    except (ValueError, OverflowError):
        return None
    if np.isnat(parsed).any():
        return None
    return parsed


def require_finite(
    values: npt.NDArray[np.floating], symbols: Sequence[str], field: str | None, what: str
) -> None:
    """Refuse the request when a window's features or forecast are not finite.

    `values` has one row per window (features (N, window, F) or forecasts (N,)) and
    `symbols` the ticker of each; `what` says which went wrong.

    Raises:
        InputError: 422 invalid_price naming the ticker of the first such window; `field`
            is the request's collection of bars.
    """
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if finite.all():
        return
    symbol = symbols[int(np.flatnonzero(~finite)[0])]
    raise InputError(
        f"{field + ': ' if field else ''}the prices of {symbol} are too large for this model "
        f"({what}); send prices of a realistic size",
        field=field,
        reason="invalid_price",
    )


def format_timestamps(ts: npt.NDArray[np.datetime64]) -> list[str]:
    """datetime64[ns] UTC to ISO 8601 strings with a Z, to the second unless finer is needed."""
    if len(ts) == 0:
        return []
    whole = bool((ts.view(np.int64) % 1_000_000_000 == 0).all())
    text = np.datetime_as_string(ts, unit="s" if whole else "us")
    return [f"{t}Z" for t in text.tolist()]


def _check_count(count: int, field: str, max_bars: int) -> None:
    if count == 0:
        raise InputError(f"{field}: no bars; send at least one", field=field, reason="no_bars")
    if count > max_bars:
        raise ApiError(
            413,
            "too_many_bars",
            f"{field}: {count} bars, this server takes at most {max_bars} per request",
            field=field,
        )


def _symbols(values: list[Any], tickers: Sequence[str], field_of: FieldOf) -> list[str]:
    known = set(tickers)
    if set(map(type, values)) - {str}:
        i = next(i for i, v in enumerate(values) if type(v) is not str)
        raise InputError(
            f"{field_of('symbol', i)}: must be a string, got {_kind(values[i])}",
            field=field_of("symbol", i),
            reason="invalid_symbol",
        )
    unknown = set(values) - known
    if unknown:
        first = next(i for i, v in enumerate(values) if v in unknown)
        names = ", ".join(sorted(u[:32] for u in unknown)[:10])
        raise InputError(
            f"{field_of('symbol', first)}: unknown ticker(s) {names}; this model forecasts "
            f"{', '.join(tickers)}",
            field=field_of("symbol", first),
            reason="unknown_ticker",
        )
    return values


def _numbers(values: list[Any], name: str, field_of: FieldOf) -> npt.NDArray[np.float64]:
    # bool is an int to Python; a price of `true` is a client bug, not 1.0.
    if set(map(type, values)) - {float, int}:
        i = next(i for i, v in enumerate(values) if type(v) not in (float, int))
        raise InputError(
            f"{field_of(name, i)}: must be a number, got {_kind(values[i])}",
            field=field_of(name, i),
            reason="invalid_number",
        )
    try:
        return np.asarray(values, dtype=np.float64)
    except OverflowError:
        i = next(i for i, v in enumerate(values) if type(v) is int and abs(v) > 1e308)
        raise InputError(
            f"{field_of(name, i)}: number out of range",
            field=field_of(name, i),
            reason="invalid_number",
        ) from None


def _record_field(name: str, i: int) -> str:
    return f"bars[{i}].{name}"


def _record_shape_error(records: list[Any]) -> InputError:
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            return InputError(
                f"bars[{i}]: must be an object with {', '.join(INPUT_COLUMNS)}, got "
                f"{_kind(record)}",
                field=f"bars[{i}]",
                reason="invalid_shape",
            )
        for name in INPUT_COLUMNS:
            if name not in record:
                return InputError(
                    f"bars[{i}].{name}: missing", field=f"bars[{i}].{name}", reason="missing_field"
                )
    return InputError("bars: not a list of bar objects", field="bars", reason="invalid_shape")


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)
