"""The serving fast path gives what `predict` gives: numpy features, windows, forecasts.

The scoring server never builds a DataFrame per request; these tests hold its path
(`features.feature_matrix`, `Forecaster.prepare_windows` + `forecast_windows`) to the
pandas path the model was trained and registered with, on real bars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stockops_model.features import _ewm_mean, build_features, feature_matrix
from stockops_model.forecaster import (
    InputSpec,
    NaiveForecaster,
    NetworkForecaster,
    TickerBars,
)
from stockops_model.loaders import load_bars
from stockops_model.scalers import fit_standard
from stockops_model.spec import IndicatorName, IndicatorSpec, default_indicators
from stockops_model.training import prepare_dataset

DATA = Path(__file__).parents[3] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]

INDICATOR_SETS = {
    "default": tuple(default_indicators()),
    "short": (
        IndicatorSpec(name=IndicatorName.CLOSE),
        IndicatorSpec(name=IndicatorName.MACD),
        IndicatorSpec(name=IndicatorName.RSI, period=14),
        IndicatorSpec(name=IndicatorName.SMA, period=10),
    ),
    "bands-and-oscillators": (
        IndicatorSpec(name=IndicatorName.BOLL_LOWER, period=7),
        IndicatorSpec(name=IndicatorName.DX, period=7),
        IndicatorSpec(name=IndicatorName.CCI, period=14),
        IndicatorSpec(name=IndicatorName.AROON, period=14),
        IndicatorSpec(name=IndicatorName.BOLL_UPPER, period=40),
    ),
}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars(DATA, symbols=TICKERS).loc[:, COLUMNS]


def ticker_bars(bars: pd.DataFrame) -> list[TickerBars]:
    out = []
    for symbol, group in bars.groupby("symbol", sort=False):
        out.append(
            TickerBars(
                symbol=str(symbol),
                ts=group["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]"),
                high=group["high"].to_numpy(np.float64),
                low=group["low"].to_numpy(np.float64),
                close=group["close"].to_numpy(np.float64),
            )
        )
    return out


def network(bars: pd.DataFrame, indicators: tuple[IndicatorSpec, ...]) -> NetworkForecaster:
    from stockops_model.network import build_network

    inputs = InputSpec(TICKERS, indicators, window=8, horizon=1, target="return")
    dataset = prepare_dataset(bars, inputs)
    net = build_network(inputs.window, len(inputs.columns), 4, 0.001, seed=3)
    return NetworkForecaster(
        inputs, fit_standard(dataset.X), fit_standard(dataset.y.reshape(-1, 1)), net
    )


@pytest.mark.parametrize("alpha", [2 / 13, 2 / 27, 1 / 30, 1 / 7])
def test_numpy_ewm_equals_pandas(alpha: float) -> None:
    rng = np.random.default_rng(5)
    x = 100 + np.cumsum(rng.normal(size=5000))
    expected = pd.Series(x).ewm(alpha=alpha, adjust=True).mean().to_numpy()
    np.testing.assert_allclose(_ewm_mean(x, alpha), expected, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(INDICATOR_SETS))
@pytest.mark.parametrize("symbol", TICKERS)
def test_feature_matrix_equals_build_features(bars: pd.DataFrame, name: str, symbol: str) -> None:
    indicators = INDICATOR_SETS[name]
    expected = build_features(bars, indicators, TICKERS)
    expected = expected[expected["symbol"] == symbol]
    columns = [i.column for i in indicators] + [f"ticker_{t}" for t in TICKERS]
    one = bars[bars["symbol"] == symbol]
    got = feature_matrix(
        one["high"].to_numpy(),
        one["low"].to_numpy(),
        one["close"].to_numpy(),
        indicators,
        TICKERS,
        symbol,
    )
    assert got.shape == (len(expected), len(columns))
    np.testing.assert_allclose(got, expected.loc[:, columns].to_numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(INDICATOR_SETS))
@pytest.mark.parametrize("last", [1, 40, 10_000])
def test_the_last_rows_alone_equal_the_whole_matrix_tail(
    bars: pd.DataFrame, name: str, last: int
) -> None:
    one = bars[bars["symbol"] == "AXP"].tail(400)
    arrays = (one["high"].to_numpy(), one["low"].to_numpy(), one["close"].to_numpy())
    whole = feature_matrix(*arrays, INDICATOR_SETS[name], TICKERS, "AXP")
    tail = feature_matrix(*arrays, INDICATOR_SETS[name], TICKERS, "AXP", last=last)
    np.testing.assert_allclose(tail, whole[-last:], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(INDICATOR_SETS))
@pytest.mark.parametrize("origins", [1, 50])
def test_network_fast_path_equals_predict(bars: pd.DataFrame, name: str, origins: int) -> None:
    forecaster = network(bars, INDICATOR_SETS[name])
    # The request's worth of bars the server sees: a few hundred per ticker.
    recent = bars.groupby("symbol").tail(forecaster.min_bars + 60).reset_index(drop=True)
    expected = forecaster.predict(recent, origins="all").groupby("symbol").tail(origins)
    windows = forecaster.prepare_windows(ticker_bars(recent), origins)
    forecast = forecaster.forecast_windows(windows.x, windows.last_close)
    assert windows.symbols == expected["symbol"].tolist()
    expected_ts = expected["ts"].dt.tz_localize(None).to_numpy("datetime64[ns]")
    assert (windows.ts == expected_ts).all()
    # float32 network: batching the windows differently may move the last bits.
    np.testing.assert_allclose(forecast, expected["forecast_close"].to_numpy(), rtol=1e-6)


def test_naive_fast_path_equals_predict(bars: pd.DataFrame) -> None:
    naive = NaiveForecaster(TICKERS, horizon=5)
    expected = naive.predict(bars)
    windows = naive.prepare_windows(ticker_bars(bars))
    assert windows.symbols == list(TICKERS)
    np.testing.assert_array_equal(
        naive.forecast_windows(windows.x, windows.last_close), expected["forecast_close"]
    )
