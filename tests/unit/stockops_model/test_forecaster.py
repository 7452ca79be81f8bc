"""The forecasters' contract: raw bars in, forecast close per ticker out, clear input errors.

A tiny untrained network (random weights, scalers fitted on the slice) is enough here: these
tests are about preprocessing, shapes, persistence and validation, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stockops_model.errors import DataError
from stockops_model.forecaster import (
    InputSpec,
    NaiveForecaster,
    NetworkForecaster,
    load_forecaster,
)
from stockops_model.loaders import load_bars
from stockops_model.scalers import fit_standard
from stockops_model.spec import IndicatorName, IndicatorSpec
from stockops_model.training import prepare_dataset

DATA = Path(__file__).parents[2] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars(DATA, symbols=TICKERS).loc[:, COLUMNS]


@pytest.fixture(scope="module")
def forecaster(bars: pd.DataFrame) -> NetworkForecaster:
    from stockops_model.network import build_network

    inputs = InputSpec(
        tickers=TICKERS,
        indicators=(
            IndicatorSpec(name=IndicatorName.CLOSE),
            IndicatorSpec(name=IndicatorName.MACD),
            IndicatorSpec(name=IndicatorName.RSI, period=14),
            IndicatorSpec(name=IndicatorName.SMA, period=10),
        ),
        window=8,
        horizon=1,
        target="return",
    )
    dataset = prepare_dataset(bars, inputs)
    network = build_network(inputs.window, len(inputs.columns), 4, 0.001, seed=1)
    return NetworkForecaster(
        inputs, fit_standard(dataset.X), fit_standard(dataset.y.reshape(-1, 1)), network
    )


def tail(bars: pd.DataFrame, n: int) -> pd.DataFrame:
    return bars.groupby("symbol", sort=True).tail(n).reset_index(drop=True)


def test_one_forecast_per_ticker_from_the_last_bar(
    forecaster: NetworkForecaster, bars: pd.DataFrame
) -> None:
    out = forecaster.predict(bars)
    assert list(out.columns) == ["symbol", "ts", "forecast_close", "horizon"]
    assert out["symbol"].tolist() == list(TICKERS)
    last = bars.groupby("symbol")["ts"].max()
    assert out.set_index("symbol")["ts"].equals(last.rename("ts").rename_axis("symbol"))
    assert (out["horizon"] == 1).all()
    closes = bars.groupby("symbol")["close"].last()
    # Untrained, but a return target keeps the forecast near the last close, in price units.
    ratio = out.set_index("symbol")["forecast_close"] / closes
    assert ((ratio > 0.9) & (ratio < 1.1)).all()


def test_all_origins_ends_with_the_last_forecast(
    forecaster: NetworkForecaster, bars: pd.DataFrame
) -> None:
    every = forecaster.predict(bars, origins="all")
    last = forecaster.predict(bars)
    counts = every.groupby("symbol").size()
    expected = bars.groupby("symbol").size() - forecaster.min_bars + 1
    assert counts.to_dict() == expected.to_dict()
    final = every.groupby("symbol").tail(1).reset_index(drop=True)
    np.testing.assert_allclose(final["forecast_close"], last["forecast_close"], rtol=1e-9)


def test_minimum_history_gives_the_full_history_forecast(
    forecaster: NetworkForecaster, bars: pd.DataFrame
) -> None:
    full = forecaster.predict(bars)
    short = forecaster.predict(tail(bars, forecaster.min_bars))
    # The indicator warm-up leaves at most 0.1 % of an EWM's weight on dropped bars.
    np.testing.assert_allclose(short["forecast_close"], full["forecast_close"], rtol=1e-4)


def test_forecasts_from_raw_bars_equal_the_training_windows_forecasts(
    forecaster: NetworkForecaster, bars: pd.DataFrame
) -> None:
    # The pyfunc's preprocessing (raw bars in) and training's (prepare_dataset) must give
    # the same network input for the same origin, or serving would see other features.
    served = forecaster.predict(bars, origins="all")
    dataset = prepare_dataset(bars, forecaster.inputs)
    trained = pd.DataFrame(
        {
            "symbol": dataset.symbol.astype(str),
            "ts": pd.to_datetime(dataset.end_ts).tz_localize("UTC"),
            "training": forecaster.forecast_windows(dataset.X, dataset.last_close),
        }
    )
    joined = served.merge(trained, on=["symbol", "ts"])
    # Every training sample's origin is served (the rest lack a target, e.g. session ends).
    assert len(joined) == len(dataset)
    # Equal up to float32 rounding of the network, which varies with how windows are batched.
    np.testing.assert_allclose(joined["forecast_close"], joined["training"], rtol=1e-9)


def test_save_and_load_round_trip(
    forecaster: NetworkForecaster, bars: pd.DataFrame, tmp_path: Path
) -> None:
    forecaster.save(tmp_path / "f")
    loaded = load_forecaster(tmp_path / "f")
    assert isinstance(loaded, NetworkForecaster)
    assert loaded.inputs == forecaster.inputs
    pd.testing.assert_frame_equal(loaded.predict(bars), forecaster.predict(bars))


def test_json_records_with_iso_strings_equal_a_frame(
    forecaster: NetworkForecaster, bars: pd.DataFrame
) -> None:
    small = tail(bars, forecaster.min_bars)
    records = small.assign(ts=small["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")).to_dict("records")
    pd.testing.assert_frame_equal(forecaster.predict(records), forecaster.predict(small))


def test_too_few_bars_names_the_ticker_and_the_need(
    forecaster: NetworkForecaster, bars: pd.DataFrame
) -> None:
    with pytest.raises(DataError, match=rf"ts: .* of AMZN, need at least {forecaster.min_bars}"):
        forecaster.predict(tail(bars, forecaster.min_bars - 1))


def test_unknown_ticker(forecaster: NetworkForecaster, bars: pd.DataFrame) -> None:
    other = tail(bars, forecaster.min_bars).assign(
        symbol=lambda d: d["symbol"].replace("AXP", "MSFT")
    )
    with pytest.raises(DataError, match=r"symbol: unknown ticker.*MSFT"):
        forecaster.predict(other)


def test_unsorted_and_repeated_timestamps(
    forecaster: NetworkForecaster, bars: pd.DataFrame
) -> None:
    small = tail(bars, forecaster.min_bars + 2)
    swapped = small.copy()
    swapped.loc[[3, 4]] = swapped.loc[[4, 3]].to_numpy()
    with pytest.raises(DataError, match="ts: not in time order for AMZN"):
        forecaster.predict(swapped)
    repeated = pd.concat([small, small.iloc[[5]]]).sort_values(["symbol", "ts"], kind="stable")
    with pytest.raises(DataError, match=r"ts: repeated timestamp .* for AMZN"):
        forecaster.predict(repeated)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("close", np.nan, "close: 1 value.* not finite and positive"),
        ("low", -1.0, "low: 1 value.* not finite and positive"),
        ("open", 0.0, "open: 1 value.* not finite and positive"),
        ("volume", -5.0, "volume: 1 value.* not finite and >= 0"),
    ],
)
def test_bad_prices_name_the_field(
    forecaster: NetworkForecaster, bars: pd.DataFrame, field: str, value: float, message: str
) -> None:
    small = tail(bars, forecaster.min_bars)
    small.loc[7, field] = value
    with pytest.raises(DataError, match=message):
        forecaster.predict(small)


def test_missing_column(forecaster: NetworkForecaster, bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"lack column.*volume"):
        forecaster.predict(bars.drop(columns=["volume"]))


def test_naive_forecast_is_the_last_close(bars: pd.DataFrame, tmp_path: Path) -> None:
    naive = NaiveForecaster(TICKERS, horizon=3)
    out = naive.predict(bars)
    closes = bars.groupby("symbol")["close"].last()
    assert out.set_index("symbol")["forecast_close"].to_dict() == closes.to_dict()
    assert (out["horizon"] == 3).all()
    every = naive.predict(bars, origins="all")
    np.testing.assert_array_equal(every["forecast_close"], bars["close"])
    naive.save(tmp_path / "n")
    loaded = load_forecaster(tmp_path / "n")
    assert isinstance(loaded, NaiveForecaster)
    pd.testing.assert_frame_equal(loaded.predict(bars), out)
