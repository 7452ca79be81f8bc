"""Recent bars from a real (directory) bar store for /v1/forecast, and their short cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stockops_model.server.recent import StoreBars
from stockops_model.store import BarStore, FileBackend

from .conftest import TICKERS


class FakeClock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stored(tmp_path: Path, bars: pd.DataFrame) -> BarStore:
    store = BarStore(FileBackend(tmp_path), "bars")
    await store.write(bars.assign(source="replay"))
    return store


async def test_latest_bars_are_the_stores_last_bars(stored: BarStore, bars: pd.DataFrame) -> None:
    source = StoreBars(stored)
    got = await source.latest("AXP", 500)
    axp = bars[bars["symbol"] == "AXP"].tail(500)
    assert got is not None
    assert got.symbol == "AXP"
    np.testing.assert_array_equal(got.close, axp["close"].to_numpy())
    expected_ts = axp["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    np.testing.assert_array_equal(got.ts, expected_ts)


async def test_a_store_with_fewer_bars_gives_what_it_has(
    stored: BarStore, bars: pd.DataFrame
) -> None:
    got = await StoreBars(stored).latest("AMZN", 100_000)
    assert got is not None
    assert len(got.close) == int((bars["symbol"] == "AMZN").sum())
    assert await StoreBars(stored).latest("MSFT", 10) is None


async def test_reads_are_cached_for_a_few_seconds(stored: BarStore) -> None:
    clock = FakeClock()
    source = StoreBars(stored, cache_seconds=5.0, clock=clock)
    for symbol in TICKERS:
        await source.latest(symbol, 300)
    await source.latest("AMZN", 300)
    await source.latest("AMZN", 50)
    assert source.reads == 2  # once per ticker
    clock.now += 6.0
    await source.latest("AMZN", 300)
    assert source.reads == 3
