"""Features: equal to the stockstats oracle on real bars, causal, finite, serving-consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stockstats import wrap

from stockops_model.errors import DataError
from stockops_model.features import (
    build_features,
    compute_indicators,
    feature_columns,
    warmup_bars,
)
from stockops_model.spec import IndicatorName, IndicatorSpec, default_indicators

DATA = Path(__file__).parents[2] / "data" / "features" / "bars-amzn-axp-2018-02-21-23.csv"
TICKERS = ["AMZN", "AXP"]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.read_csv(DATA, parse_dates=["ts"])


def _ticker(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    return bars[bars["symbol"] == symbol].sort_values("ts").reset_index(drop=True)


def _stockstats_column(frame: pd.DataFrame, indicator: IndicatorSpec) -> np.ndarray:
    """The same indicator computed by stockstats, named its way."""
    stock = wrap(frame.loc[:, ["ts", "open", "high", "low", "close", "volume"]].copy())
    period = indicator.effective_period
    name = indicator.name
    if name in (IndicatorName.BOLL_UPPER, IndicatorName.BOLL_LOWER):
        stock[f"boll_{period}"]  # computes boll, boll_ub and boll_lb together
        key = f"boll_{'ub' if name == IndicatorName.BOLL_UPPER else 'lb'}_{period}"
    else:
        key = {
            IndicatorName.CLOSE: "close",
            IndicatorName.MACD: "macd",
            IndicatorName.RSI: f"rsi_{period}",
            IndicatorName.CCI: f"cci_{period}",
            IndicatorName.DX: f"dx_{period}",
            IndicatorName.SMA: f"close_{period}_sma",
            IndicatorName.AROON: f"aroon_{period}",
        }[name]
    return np.asarray(stock[key], dtype=np.float64)


ORACLE_CASES = [
    *default_indicators(),
    IndicatorSpec(name=IndicatorName.RSI, period=14),
    IndicatorSpec(name=IndicatorName.CCI, period=14),
    IndicatorSpec(name=IndicatorName.DX, period=7),
    IndicatorSpec(name=IndicatorName.BOLL_UPPER, period=10),
    IndicatorSpec(name=IndicatorName.AROON, period=14),
    IndicatorSpec(name=IndicatorName.SMA, period=5),
]


@pytest.mark.parametrize("indicator", ORACLE_CASES, ids=lambda i: i.column)
@pytest.mark.parametrize("symbol", TICKERS)
def test_indicator_equals_stockstats_after_warmup(
    bars: pd.DataFrame, indicator: IndicatorSpec, symbol: str
) -> None:
    frame = _ticker(bars, symbol)
    ours = compute_indicators(frame, [indicator])[indicator.column].to_numpy()
    oracle = _stockstats_column(frame, indicator)
    skip = warmup_bars([indicator])
    np.testing.assert_allclose(ours[skip:], oracle[skip:], rtol=1e-9, atol=1e-8)


def test_build_features_rows_are_the_oracle_rows_after_the_warmup(bars: pd.DataFrame) -> None:
    indicators = default_indicators()
    features = build_features(bars, indicators, TICKERS)
    skip = warmup_bars(indicators)
    for symbol in TICKERS:
        frame = _ticker(bars, symbol)
        rows = features[features["symbol"] == symbol]
        assert rows["ts"].tolist() == frame["ts"].iloc[skip:].tolist()
        for indicator in indicators:
            np.testing.assert_allclose(
                rows[indicator.column].to_numpy(),
                _stockstats_column(frame, indicator)[skip:],
                rtol=1e-9,
                atol=1e-8,
            )


def test_columns_are_indicators_then_one_hot_tickers() -> None:
    columns = feature_columns(default_indicators(), TICKERS)
    assert columns == [
        "close",
        "macd",
        "bollUpper_20",
        "bollLower_20",
        "rsi_30",
        "cci_30",
        "dx_30",
        "sma_30",
        "sma_60",
        "aroon_25",
        "ticker_AMZN",
        "ticker_AXP",
    ]


def test_frame_is_finite_with_one_hot_per_ticker(bars: pd.DataFrame) -> None:
    indicators = default_indicators()
    columns = feature_columns(indicators, TICKERS)
    features = build_features(bars, indicators, TICKERS)
    assert list(features.columns[:3]) == ["symbol", "ts", "close"]
    assert set(columns) <= set(features.columns)
    assert np.isfinite(features[columns].to_numpy()).all()
    for symbol in TICKERS:
        rows = features[features["symbol"] == symbol]
        assert (rows[f"ticker_{symbol}"] == 1.0).all()
        others = [f"ticker_{t}" for t in TICKERS if t != symbol]
        assert (rows[others] == 0.0).all().all()


def test_missing_minutes_are_not_filled(bars: pd.DataFrame) -> None:
    # AXP has no bar at 13:24 and 13:27 ET on 2018-02-23 (no trade): no row appears there.
    features = build_features(bars, default_indicators(), TICKERS)
    axp = features[features["symbol"] == "AXP"]
    assert len(axp) == len(_ticker(bars, "AXP")) - warmup_bars(default_indicators())
    missing = pd.Timestamp("2018-02-23 13:24", tz="America/New_York").tz_convert("UTC")
    assert missing not in set(axp["ts"])


@pytest.mark.parametrize("position", [300, 700, 1100])
def test_changing_a_later_bar_never_changes_an_earlier_row(
    bars: pd.DataFrame, position: int
) -> None:
    indicators = default_indicators()
    before = build_features(bars, indicators, TICKERS)
    amzn = bars[bars["symbol"] == "AMZN"].sort_values("ts").index
    changed_at = bars.loc[amzn[position], "ts"]
    perturbed = bars.copy()
    perturbed.loc[amzn[position], ["high", "close"]] *= 1.05
    perturbed.loc[amzn[position], "low"] *= 0.95
    after = build_features(perturbed, indicators, TICKERS)

    columns = feature_columns(indicators, TICKERS)
    earlier = (before["symbol"] == "AMZN") & (before["ts"] < changed_at)
    pd.testing.assert_frame_equal(before.loc[earlier, columns], after.loc[earlier, columns])
    other = before["symbol"] == "AXP"
    pd.testing.assert_frame_equal(before.loc[other, columns], after.loc[other, columns])
    # The perturbed row itself does change: the test can fail.
    at = (before["symbol"] == "AMZN") & (before["ts"] == changed_at)
    assert not np.allclose(before.loc[at, columns], after.loc[at, columns])


def test_recent_bars_give_the_full_history_features_within_a_hundredth_of_a_std(
    bars: pd.DataFrame,
) -> None:
    # The pyfunc sees only window + warmup bars; its rows must match training's rows.
    indicators = default_indicators()
    columns = feature_columns(indicators, TICKERS)
    window = 32
    full = build_features(bars, indicators, TICKERS)
    spread = full[columns].std().replace(0.0, 1.0)
    need = window + warmup_bars(indicators)
    for end in (500, 800, 1150):
        recent = pd.concat(_ticker(bars, s).iloc[end - need + 1 : end + 1] for s in TICKERS).sample(
            frac=1.0, random_state=end
        )
        served = build_features(recent, indicators, TICKERS)
        for symbol in TICKERS:
            got = served[served["symbol"] == symbol].set_index("ts")[columns]
            assert len(got) == window
            want = full[full["symbol"] == symbol].set_index("ts").loc[got.index, columns]
            assert ((got - want).abs() / spread).to_numpy().max() < 0.02


def test_input_order_does_not_matter(bars: pd.DataFrame) -> None:
    indicators = default_indicators()
    sorted_result = build_features(bars, indicators, TICKERS)
    shuffled_result = build_features(bars.sample(frac=1.0, random_state=3), indicators, TICKERS)
    pd.testing.assert_frame_equal(sorted_result, shuffled_result)


def test_warmup_covers_the_longest_lookback() -> None:
    sma = IndicatorSpec(name=IndicatorName.SMA, period=60)
    assert warmup_bars([sma]) == 59
    assert warmup_bars([IndicatorSpec(name=IndicatorName.CLOSE)]) == 0
    rsi = IndicatorSpec(name=IndicatorName.RSI, period=30)
    # Wilder's smoothing leaves at most 0.1 % of its weight on older bars after the warm-up.
    assert (29 / 30) ** (warmup_bars([rsi]) - 1) <= 1e-3
    assert warmup_bars(default_indicators()) == max(warmup_bars([i]) for i in default_indicators())


def test_too_few_bars_give_an_empty_frame_with_the_columns(bars: pd.DataFrame) -> None:
    indicators = default_indicators()
    few = _ticker(bars, "AMZN").head(warmup_bars(indicators))
    features = build_features(few, indicators, TICKERS)
    assert features.empty
    assert set(feature_columns(indicators, TICKERS)) <= set(features.columns)


def test_unknown_ticker_is_refused(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="AXP"):
        build_features(bars, default_indicators(), ["AMZN"])


def test_duplicate_bars_are_refused(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="repeat"):
        build_features(pd.concat([bars, bars.head(5)]), default_indicators(), TICKERS)


def test_a_missing_price_is_refused(bars: pd.DataFrame) -> None:
    broken = bars.copy()
    broken.loc[broken.index[-1], ["high", "low", "close"]] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        build_features(broken, default_indicators(), TICKERS)
