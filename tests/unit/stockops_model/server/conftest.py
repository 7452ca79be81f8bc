"""Fixtures of the scoring-server tests: real bars, a tiny network, a fake registry.

The apps are driven through `httpx.ASGITransport` (no socket). Its transport does not run
the app's lifespan, so `serving_client` loads the model by calling the slot itself and
stops the batching worker at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from fastapi import FastAPI

from stockops_model.forecaster import (
    Forecaster,
    InputSpec,
    NaiveForecaster,
    NetworkForecaster,
    TickerBars,
    Windows,
)
from stockops_model.loaders import load_bars
from stockops_model.scalers import fit_standard
from stockops_model.server.app import create_app
from stockops_model.server.recent import BarSource
from stockops_model.server.runtime import ServerConfig
from stockops_model.server.slot import ModelSource
from stockops_model.spec import IndicatorName, IndicatorSpec
from stockops_model.training import prepare_dataset

DATA = Path(__file__).parents[3] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]
MODEL = "stocks"
SOURCE = ModelSource.parse(f"models:/{MODEL}@production")


class FakeLoader:
    """A fake model registry: forecasters (or the error loading them raises) by version,
    and the version the alias points at now."""

    def __init__(self, versions: dict[str, Forecaster | Exception], alias: str) -> None:
        self.versions = versions
        self.alias: str | Exception = alias  # an exception: the registry is unreachable
        self.loads: list[str | None] = []

    def resolve(self) -> str | None:
        if isinstance(self.alias, Exception):
            raise self.alias
        return self.alias

    def load(self, version: str | None) -> Forecaster:
        self.loads.append(version)
        found = self.versions[str(version)]
        if isinstance(found, Exception):
            raise found
        return found


class GatedForecaster(NaiveForecaster):
    """A fake network: persistence, but after `hold()` its network call (in the batching
    worker) waits until `gate` is set, so a test can keep a request in flight. `started` is
    set when a call begins; `batch_sizes` records the windows of each call since `hold()`."""

    def __init__(self, tickers: tuple[str, ...]) -> None:
        super().__init__(tickers)
        self.gate = threading.Event()
        self.gate.set()  # open, so the slot's warm-up passes
        self.started = threading.Event()
        self.batch_sizes: list[int] = []

    def hold(self) -> None:
        self.gate.clear()
        self.started.clear()
        self.batch_sizes.clear()

    def prepare_windows(self, bars: Sequence[TickerBars], origins: int = 1) -> Windows:
        windows = super().prepare_windows(bars, origins)
        x = np.zeros((len(windows), 1, 1), dtype=np.float32)
        return Windows(windows.symbols, windows.ts, windows.last_close, x)

    def forecast_windows(
        self, x: npt.NDArray[np.floating] | None, last_close: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        self.started.set()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        self.batch_sizes.append(len(last_close))
        return np.array(last_close, dtype=np.float64)


class FakeBars:
    """A fake bar store: fixed bars per ticker, counting reads."""

    def __init__(self, bars: dict[str, TickerBars]) -> None:
        self.bars = bars
        self.reads = 0

    async def latest(self, symbol: str, count: int) -> TickerBars | None:
        self.reads += 1
        found = self.bars.get(symbol)
        if found is None:
            return None
        return TickerBars(
            symbol,
            found.ts[-count:],
            found.high[-count:],
            found.low[-count:],
            found.close[-count:],
        )

    async def close(self) -> None:
        return None


@pytest.fixture(scope="session")
def bars() -> pd.DataFrame:
    return load_bars(DATA, symbols=TICKERS).loc[:, COLUMNS]


@pytest.fixture(scope="session")
def network(bars: pd.DataFrame) -> NetworkForecaster:
    """An untrained network (random weights), enough for shapes and equality checks."""
    return small_network(bars)


def small_network(bars: pd.DataFrame) -> NetworkForecaster:
    """A small untrained network forecaster of `TICKERS` (window 8, four indicators)."""
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
    net = build_network(inputs.window, len(inputs.columns), 4, 0.001, seed=1)
    return NetworkForecaster(
        inputs, fit_standard(dataset.X), fit_standard(dataset.y.reshape(-1, 1)), net
    )


def ticker_bars(bars: pd.DataFrame, symbol: str) -> TickerBars:
    one = bars[bars["symbol"] == symbol]
    return TickerBars(
        symbol,
        one["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]"),
        one["high"].to_numpy(np.float64),
        one["low"].to_numpy(np.float64),
        one["close"].to_numpy(np.float64),
    )


def records(bars: pd.DataFrame, per_ticker: int) -> list[dict[str, Any]]:
    """The last `per_ticker` bars of each ticker as the JSON records clients send."""
    tail = bars.groupby("symbol", sort=True).tail(per_ticker)
    tail = tail.assign(ts=tail["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return [{str(k): v for k, v in row.items()} for row in tail.to_dict("records")]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition()` holds (checked every 10 ms; fails after 30 s saying `what`)."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def build_app(
    versions: dict[str, Forecaster | Exception],
    alias: str = "1",
    config: ServerConfig | None = None,
    bar_source: BarSource | None = None,
) -> FastAPI:
    # XLA compiles 7 batch sizes per network load (seconds); test_compiled.py covers it.
    config = config or ServerConfig(poll_seconds=None, compile_network=False)
    return create_app(SOURCE, FakeLoader(versions, alias), config, bar_source)


@contextlib.asynccontextmanager
async def serving_client(app: FastAPI, load: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app, with the model loaded first (unless `load` is False)."""
    runtime = app.state.runtime
    if load:
        await runtime.slot.refresh()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as client:
            yield client
    finally:
        runtime.batcher.stop()
