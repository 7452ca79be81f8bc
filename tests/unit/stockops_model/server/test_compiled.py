"""The XLA-compiled network serves the forecasts the plain network gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockops_model.forecaster import NetworkForecaster
from stockops_model.server import compiled
from stockops_model.server.compiled import CompiledNetwork, compile_network
from stockops_model.server.runtime import ServerConfig
from stockops_model.server.slot import compiled_runner

from .conftest import TICKERS, build_app, records, serving_client, ticker_bars


@pytest.fixture(scope="module")
def network_compiled(network: NetworkForecaster) -> CompiledNetwork:
    runner = compile_network(network)
    assert runner is not None, "XLA did not compile the network on this machine"
    return runner


@pytest.mark.parametrize("origins", [1, 3, 70, 150])
def test_compiled_forecasts_equal_the_plain_network(
    network: NetworkForecaster,
    network_compiled: CompiledNetwork,
    bars: pd.DataFrame,
    origins: int,
) -> None:
    # 1..150 origins per ticker: padded buckets, exact buckets and chunks of the largest.
    windows = network.prepare_windows([ticker_bars(bars, s) for s in TICKERS], origins)
    plain = network.forecast_windows(windows.x, windows.last_close)
    fast = network_compiled.forecast_windows(windows.x, windows.last_close)
    assert fast.shape == plain.shape == (2 * origins,)
    np.testing.assert_allclose(fast, plain, rtol=1e-6)


def test_a_platform_without_xla_serves_the_plain_network(
    network: NetworkForecaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: CompiledNetwork) -> None:
        raise RuntimeError("XLA is not available")

    monkeypatch.setattr(compiled.CompiledNetwork, "compile", refuse)
    assert compiled_runner(network) is network


async def test_the_app_serves_through_the_compiled_network(
    network: NetworkForecaster, bars: pd.DataFrame
) -> None:
    app = build_app({"1": network}, config=ServerConfig(poll_seconds=None))
    payload = records(bars, network.min_bars)
    async with serving_client(app) as client:
        reply = await client.post("/v1/predict", json={"bars": payload})
    assert isinstance(app.state.runtime.slot.current.runner, CompiledNetwork)
    expected = network.predict(payload)["forecast_close"]
    got = [f["forecast_close"] for f in reply.json()["forecasts"]]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_any_forward_pass_gets_the_forecasters_scaling_chunks_and_prices(
    network: NetworkForecaster, bars: pd.DataFrame
) -> None:
    # The compiled network and the plain one share this path; only the call differs.
    from stockops_model.network import inference_function

    plain_call = inference_function(network.network)
    chunks: list[int] = []

    def recording_call(batch: np.ndarray) -> np.ndarray:
        chunks.append(len(batch))
        return np.asarray(plain_call(batch), dtype=np.float32)

    windows = network.prepare_windows([ticker_bars(bars, s) for s in TICKERS], 5)
    assert windows.x is not None
    got = network.forecast_windows_with(recording_call, 4, windows.x, windows.last_close)
    assert chunks == [4, 4, 2]
    np.testing.assert_allclose(got, network.forecast_windows(windows.x, windows.last_close))
