"""Windows, targets and the chronological split: equal to naive loops, no overlap, no leak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockops_model.errors import DataError
from stockops_model.features import build_features, feature_columns
from stockops_model.spec import default_indicators
from stockops_model.windows import (
    Dataset,
    build_dataset,
    chronological_split,
    make_target,
    sliding_windows,
    to_price,
)

DATA = Path(__file__).parents[2] / "data" / "features" / "bars-amzn-axp-2018-02-21-23.csv"
TICKERS = ["AMZN", "AXP"]
MINUTE = np.timedelta64(1, "m")


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    bars = pd.read_csv(DATA, parse_dates=["ts"])
    return build_features(bars, default_indicators(), TICKERS)


@pytest.fixture(scope="module")
def columns() -> list[str]:
    return feature_columns(default_indicators(), TICKERS)


def _frame(symbol: str, minutes: list[int], closes: list[float]) -> pd.DataFrame:
    """A tiny features frame: bars at the given minutes after 14:30 UTC, one feature."""
    ts = pd.Timestamp("2024-01-02 14:30", tz="UTC") + pd.to_timedelta(minutes, unit="min")
    return pd.DataFrame(
        {"symbol": symbol, "ts": ts, "close": closes, "f": np.arange(len(minutes), dtype=float)}
    )


# --------------------------------------------------------------------------- sliding windows


def test_sliding_windows_equal_a_naive_loop() -> None:
    values = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    windows = sliding_windows(values, 4)
    naive = np.stack([values[i : i + 4] for i in range(7 - 4 + 1)])
    np.testing.assert_array_equal(windows, naive)


def test_sliding_windows_are_a_read_only_view() -> None:
    values = np.random.default_rng(0).normal(size=(50, 5))
    windows = sliding_windows(values, 8)
    assert np.shares_memory(windows, values)
    assert not windows.flags.writeable


def test_sliding_windows_of_too_short_input_are_empty() -> None:
    assert sliding_windows(np.ones((3, 2)), 5).shape == (0, 5, 2)


# --------------------------------------------------------------------------- dataset


def test_dataset_windows_and_targets_equal_a_naive_loop(
    features: pd.DataFrame, columns: list[str]
) -> None:
    window, horizon = 8, 1
    ds = build_dataset(features, columns, window, horizon, "return")
    assert ds.X.dtype == np.float32
    assert ds.X.shape == (len(ds), window, len(columns))
    # Naive reference: for every row, the window of rows ending there and the next bar
    # of the same session, by explicit iteration.
    expected_x, expected_future = [], []
    for _, group in features.groupby("symbol", sort=True):
        rows = group.reset_index(drop=True)
        values = rows[columns].to_numpy(np.float32)
        for end in range(window - 1, len(rows) - 1):
            gap = rows["ts"].iloc[end + 1] - rows["ts"].iloc[end]
            if gap > pd.Timedelta(minutes=30):
                continue  # the next bar is the next session
            if gap > pd.Timedelta(minutes=horizon):
                # a minute without trade: the last traded price stands
                expected_future.append(rows["close"].iloc[end])
            else:
                expected_future.append(rows["close"].iloc[end + 1])
            expected_x.append(values[end - window + 1 : end + 1])
    np.testing.assert_array_equal(ds.X, np.stack(expected_x))
    np.testing.assert_array_equal(ds.future_close, np.array(expected_future))
    np.testing.assert_allclose(ds.y, ds.future_close / ds.last_close - 1.0)


def test_no_target_spans_a_session_boundary(features: pd.DataFrame, columns: list[str]) -> None:
    ds = build_dataset(features, columns, 16, 5, "return")
    assert ((ds.target_ts - ds.end_ts) <= 5 * MINUTE).all()
    # No 16:00 ET bar (21:00 UTC in February) ends a window: it has no next minute.
    assert not (pd.DatetimeIndex(ds.end_ts).hour >= 21).any()
    # but windows may start in the previous session
    assert ((ds.end_ts - ds.start_ts) > np.timedelta64(12, "h")).any()


def test_a_minute_without_trade_keeps_the_last_close() -> None:
    # Bars at minutes 0..5 and 7..9: nothing traded in minute 6.
    minutes = [0, 1, 2, 3, 4, 5, 7, 8, 9]
    frame = _frame("AAA", minutes, [10.0 + m for m in minutes])
    ds = build_dataset(frame, ["f"], 2, 1, "level")
    by_end = dict(zip(pd.DatetimeIndex(ds.end_ts).minute - 30, ds.y, strict=True))
    assert by_end[5] == 15.0  # the close at 14:36 is the 14:35 close
    assert by_end[4] == 15.0
    assert by_end[7] == 18.0
    assert 9 not in by_end  # the last bar has no future
    ds2 = build_dataset(frame, ["f"], 2, 2, "level")
    assert dict(zip(pd.DatetimeIndex(ds2.end_ts).minute - 30, ds2.y, strict=True))[5] == 17.0


def test_times_are_utc_whatever_zone_the_bars_carry() -> None:
    frame = _frame("AMZN", [0, 1, 2, 3], [10.0, 11.0, 12.0, 13.0])
    utc = build_dataset(frame, ["f"], window=2, horizon=1, target="return")
    local = frame.assign(ts=frame["ts"].dt.tz_convert("America/New_York"))
    naive = frame.assign(ts=frame["ts"].dt.tz_localize(None))
    for other in (local, naive):
        ds = build_dataset(other, ["f"], window=2, horizon=1, target="return")
        np.testing.assert_array_equal(ds.end_ts, utc.end_ts)
        np.testing.assert_array_equal(ds.target_ts, utc.target_ts)
    assert utc.end_ts[0] == np.datetime64("2024-01-02T14:31")


def test_level_and_return_targets_invert_to_the_future_close(
    features: pd.DataFrame, columns: list[str]
) -> None:
    for target in ("return", "level"):
        ds = build_dataset(features, columns, 8, 3, target)
        np.testing.assert_allclose(to_price(ds.y, ds.last_close, target), ds.future_close)
    np.testing.assert_allclose(make_target(np.array([110.0]), np.array([100.0]), "return"), [0.1])


def test_dataset_subset_keeps_arrays_aligned(features: pd.DataFrame, columns: list[str]) -> None:
    ds = build_dataset(features, columns, 8, 1, "return")
    index = np.array([0, 5, len(ds) - 1])
    part = ds.subset(index)
    assert isinstance(part, Dataset)
    np.testing.assert_array_equal(part.X, ds.X[index])
    np.testing.assert_array_equal(part.symbol, ds.symbol[index])
    np.testing.assert_array_equal(part.end_ts, ds.end_ts[index])


def test_missing_columns_are_refused(features: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="nope"):
        build_dataset(features, ["close", "nope"], 8, 1, "return")


# --------------------------------------------------------------------------- split


def _check_split(
    ds: Dataset, window: int, horizon: int, validation_bps: int, test_bps: int
) -> None:
    split = chronological_split(
        ds.end_ts,
        window,
        horizon,
        validation_bps,
        test_bps,
        start_ts=ds.start_ts,
        target_ts=ds.target_ts,
    )
    parts = [split.train, split.validation, split.test]
    # disjoint and each non-empty
    assert all(len(p) for p in parts)
    assert len(np.unique(np.concatenate(parts))) == sum(len(p) for p in parts)
    # chronological, with cut points shared by every ticker
    assert (
        ds.end_ts[split.train].max() < split.validation_start <= ds.end_ts[split.validation].min()
    )
    assert ds.end_ts[split.validation].max() < split.test_start <= ds.end_ts[split.test].min()
    # no window or target of one part overlaps a window or target of a later part
    for earlier, later in [(split.train, split.validation), (split.validation, split.test)]:
        assert ds.target_ts[earlier].max() < ds.start_ts[later].min()
    # at least window + horizon distinct end times between the parts
    times = np.unique(ds.end_ts)
    for earlier, later in [(split.train, split.validation), (split.validation, split.test)]:
        gap = np.searchsorted(times, ds.end_ts[later].min()) - np.searchsorted(
            times, ds.end_ts[earlier].max()
        )
        assert gap >= window + horizon
    # the shares are the asked ones, less what purging takes from the start of the later
    # parts: at most about window + horizon samples per ticker
    n, tickers = len(ds), len(np.unique(ds.symbol))
    slack = (window + horizon + 2) * tickers
    assert 0 <= n * test_bps / 10_000 - len(split.test) <= slack
    assert 0 <= n * validation_bps / 10_000 - len(split.validation) <= slack


@pytest.mark.parametrize(("window", "horizon"), [(32, 1), (16, 5), (60, 3)])
def test_split_on_real_bars_has_no_overlap_and_holds_the_purge_gap(
    features: pd.DataFrame, columns: list[str], window: int, horizon: int
) -> None:
    ds = build_dataset(features, columns, window, horizon, "return")
    _check_split(ds, window, horizon, 1500, 1500)
    _check_split(ds, window, horizon, 2000, 1000)


def test_split_purges_by_time_when_a_ticker_misses_bars() -> None:
    # BBB traded only every other minute: its windows of 4 bars span 7 minutes, so a purge
    # counted in distinct end times alone would let its validation windows reach into
    # training targets; start_ts / target_ts close that hole.
    a = _frame("AAA", list(range(200)), [100.0] * 200)
    b = _frame("BBB", list(range(0, 200, 2)), [50.0] * 100)
    ds = build_dataset(pd.concat([a, b]), ["f"], 4, 1, "return")
    _check_split(ds, 4, 1, 2000, 2000)
    by_count_only = chronological_split(ds.end_ts, 4, 1, 2000, 2000)
    leak = ds.target_ts[by_count_only.train].max() >= ds.start_ts[by_count_only.validation].min()
    assert leak, "the example no longer needs the time purge; make BBB sparser"


def test_split_refuses_too_few_samples() -> None:
    ds = build_dataset(_frame("AAA", list(range(12)), [1.0] * 12), ["f"], 4, 1, "return")
    with pytest.raises(DataError, match="too few"):
        chronological_split(ds.end_ts, 4, 1, 1500, 1500)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    window=st.integers(2, 12),
    horizon=st.integers(1, 4),
    validation_bps=st.integers(1000, 3000),
    test_bps=st.integers(1000, 3000),
)
def test_split_invariants_hold_on_irregular_bars(
    seed: int, window: int, horizon: int, validation_bps: int, test_bps: int
) -> None:
    # Three tickers over four sessions of 120 minutes, each missing a random 0-30 % of
    # its minutes: any window, horizon and shares give disjoint parts, no overlap.
    rng = np.random.default_rng(seed)
    frames = []
    for symbol in ("AAA", "BBB", "CCC"):
        minutes = [
            day * 24 * 60 + m
            for day in range(4)
            for m in range(120)
            if rng.random() > rng.uniform(0.0, 0.3)
        ]
        closes = 100.0 + rng.normal(size=len(minutes)).cumsum() * 0.01
        frames.append(_frame(symbol, minutes, closes.tolist()))
    ds = build_dataset(pd.concat(frames), ["f"], window, horizon, "return")
    assert ((ds.target_ts - ds.end_ts) <= horizon * MINUTE).all()
    _check_split(ds, window, horizon, validation_bps, test_bps)
