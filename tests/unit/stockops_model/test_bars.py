"""The bar schema: one Bar and whole frames, with the errors a user reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockops_model.bars import (
    BAR_COLUMNS,
    Bar,
    bars_to_frame,
    empty_frame,
    frame_to_bars,
    normalise_frame,
    validate_frame,
)
from stockops_model.errors import BarValidationError, ExitCode

T0 = datetime(2018, 2, 16, 14, 30, tzinfo=UTC)


def bar_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "symbol": "AAPL",
        "ts": T0,
        "open": 172.36,
        "high": 172.47,
        "low": 172.19,
        "close": 172.25,
        "volume": 1667756.0,
        "source": "replay",
    }
    data.update(changes)
    return data


def frame_of(n: int = 3, **changes: Any) -> pd.DataFrame:
    rows = [bar_data(ts=T0 + timedelta(minutes=i)) for i in range(n)]
    frame = pd.DataFrame(rows)
    for col, value in changes.items():
        frame[col] = value
    return frame


def test_a_valid_bar_keeps_its_values_and_is_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    bar = Bar.parse(bar_data(ts=datetime(2018, 2, 16, 9, 30, tzinfo=eastern)))
    assert bar.ts == T0
    assert bar.ts.utcoffset() == timedelta(0)
    assert (bar.open, bar.high, bar.low, bar.close) == (172.36, 172.47, 172.19, 172.25)


def test_an_iso_string_with_z_is_accepted() -> None:
    assert Bar.parse(bar_data(ts="2018-02-16T14:30:00Z")).ts == T0


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"open": float("nan")}, "open", "must be a finite number, got nan"),
        ({"high": float("inf")}, "high", "must be a finite number, got inf"),
        ({"close": 0.0}, "close", "greater than 0"),
        ({"low": -1.0}, "low", "greater than 0"),
        ({"volume": -1.0}, "volume", "greater than or equal to 0"),
        ({"volume": float("nan")}, "volume", "must be a finite number"),
        ({"open": "172.36"}, "open", "must be a number"),
        ({"open": True}, "open", "must be a number"),
        ({"low": 172.30}, "bar", "low 172.3 is above open 172.36 or close 172.25"),
        ({"high": 172.30}, "bar", "high 172.3 is below open 172.36"),
        ({"ts": datetime(2018, 2, 16, 14, 30)}, "ts", "must carry a time zone"),
        ({"ts": T0 + timedelta(seconds=30)}, "ts", "not on a minute boundary"),
        ({"ts": T0 + timedelta(microseconds=1)}, "ts", "not on a minute boundary"),
        ({"symbol": "aapl"}, "symbol", "pattern"),
        ({"symbol": ""}, "symbol", "pattern"),
        ({"source": ""}, "source", "at least 1"),
        ({"extra": 1}, "extra", "Extra inputs are not permitted"),
    ],
)
def test_each_rule_gives_a_clear_error(changes: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(BarValidationError) as info:
        Bar.parse(bar_data(**changes))
    message = str(info.value)
    assert message.startswith(f"{field}: "), message
    assert reason in message
    assert "Value error" not in message
    assert info.value.exit_code is ExitCode.INVALID_DATA


def test_errors_on_several_fields_are_all_listed() -> None:
    with pytest.raises(BarValidationError, match=r"open: .*; volume: "):
        Bar.parse(bar_data(open=-1.0, volume=-5.0))


def test_a_bar_is_immutable() -> None:
    bar = Bar.parse(bar_data())
    with pytest.raises(Exception, match="frozen"):
        bar.close = 1.0  # type: ignore[misc]


def test_frame_round_trip_keeps_every_value() -> None:
    bars = [
        Bar.parse(bar_data(ts=T0 + timedelta(minutes=i), close=172.2 + i / 100)) for i in (2, 0, 1)
    ]
    frame = bars_to_frame(bars)
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert frame["ts"].is_monotonic_increasing
    assert frame_to_bars(frame) == sorted(bars, key=lambda b: b.ts)


def test_normalise_gives_canonical_dtypes_order_and_uniqueness() -> None:
    raw = frame_of(3).iloc[::-1]
    raw = pd.concat([raw, raw.iloc[[0]].assign(close=172.3)], ignore_index=True)
    raw["ts"] = raw["ts"].map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S"))  # naive strings = UTC
    raw["extra"] = 1
    out = normalise_frame(raw)
    assert list(out.columns) == list(BAR_COLUMNS)
    assert str(out["ts"].dtype) == "datetime64[ns, UTC]"
    assert all(out[c].dtype == np.float64 for c in ("open", "high", "low", "close", "volume"))
    assert len(out) == 3
    assert out["ts"].is_monotonic_increasing
    assert out["close"].iloc[-1] == 172.3  # the last duplicate wins
    assert list(out.index) == [0, 1, 2]


def test_normalise_sorts_by_symbol_then_time() -> None:
    frame = pd.concat([frame_of(2, symbol="MSFT"), frame_of(2, symbol="AAPL")])
    out = normalise_frame(frame)
    assert list(out["symbol"]) == ["AAPL", "AAPL", "MSFT", "MSFT"]


def test_normalise_names_missing_columns_and_bad_values() -> None:
    with pytest.raises(BarValidationError, match=r"lacks column.*volume"):
        normalise_frame(frame_of().drop(columns=["volume"]))
    with pytest.raises(BarValidationError, match="open: not numeric"):
        normalise_frame(frame_of(open="abc"))
    with pytest.raises(BarValidationError, match="symbol: 1 missing"):
        normalise_frame(frame_of().assign(symbol=["AAPL", None, "AAPL"]))


def test_empty_frame_is_canonical_and_valid() -> None:
    frame = empty_frame()
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert validate_frame(frame) is frame
    assert frame_to_bars(frame) == []


def test_validate_accepts_good_frames() -> None:
    frame = normalise_frame(frame_of(5))
    assert validate_frame(frame) is frame


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("open", np.nan, "prices must be finite and positive"),
        ("close", -1.0, "prices must be finite and positive"),
        ("volume", -1.0, "volume must be finite and >= 0"),
        ("volume", np.inf, "volume must be finite and >= 0"),
        ("low", 172.40, "low must be <= open and close"),
        ("high", 172.30, "high must be >= open and close"),
        ("symbol", "aapl", "symbol must match"),
        ("source", "x" * 33, "source must be 1..32 characters"),
    ],
)
def test_validate_names_count_first_row_and_rule(column: str, value: Any, reason: str) -> None:
    frame = normalise_frame(frame_of(4))
    frame.loc[[1, 3], column] = value
    with pytest.raises(BarValidationError) as info:
        validate_frame(frame)
    message = str(info.value)
    assert message.startswith("2 bar(s) invalid, first ")
    assert "2018-02-16 14:31:00+00:00" in message
    assert reason in message


def test_validate_rejects_off_minute_and_missing_timestamps() -> None:
    frame = normalise_frame(frame_of(3))
    frame.loc[2, "ts"] = frame.loc[2, "ts"] + pd.Timedelta(seconds=1)
    with pytest.raises(BarValidationError, match=r"1 bar.*minute boundary"):
        validate_frame(frame)
    frame.loc[2, "ts"] = pd.NaT
    with pytest.raises(BarValidationError, match="timestamp is missing"):
        validate_frame(frame)


prices = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(a=prices, b=prices, c=prices, d=prices, volume=st.floats(0, 1e9))
def test_frame_and_bar_validation_agree(
    a: float, b: float, c: float, d: float, volume: float
) -> None:
    """Whatever four prices: the vectorised check accepts exactly what Bar accepts."""
    data = bar_data(open=a, high=b, low=c, close=d, volume=volume)
    try:
        Bar.parse(data)
        single_ok = True
    except BarValidationError:
        single_ok = False
    try:
        validate_frame(normalise_frame(pd.DataFrame([data])))
        frame_ok = True
    except BarValidationError:
        frame_ok = False
    assert single_ok == frame_ok
    assert single_ok == (c <= min(a, d) and max(a, d) <= b)
