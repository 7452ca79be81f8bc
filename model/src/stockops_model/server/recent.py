"""The latest bars of a ticker from the bar store, cached briefly: input of `/v1/forecast`.

`StoreBars.latest(symbol, count)` lists the ticker's day objects, reads the most recent
days until they hold at least `count` bars (the object metadata gives row counts; a day
without one counts as a full session) and returns the last bars as `TickerBars`.

The page polls every few seconds per ticker; a store read costs a list and a few GETs, so
each ticker's bars are kept for `cache_seconds` and concurrent requests for the same ticker
share one read. A bar that lands meanwhile shows up at most `cache_seconds` later.

Limits: reads whole trading days (a few hundred rows each); a store with fewer than
`count` bars of the ticker returns what it has, and the caller decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stockops_model.forecaster import TickerBars
from stockops_model.store import BarStore, BlobCredentials, StoreLocation, connect_backend

# 09:30 .. 16:00 inclusive: a full session of 1-minute bars.
SESSION_BARS = 391
DEFAULT_CACHE_SECONDS = 5.0


class BarSource(Protocol):
    """Recent bars of a ticker (the store in production, a fake in tests)."""

    async def latest(self, symbol: str, count: int) -> TickerBars | None:
        """The last `count` bars of `symbol` (fewer if there are fewer; None if none)."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Entry:
    read_at: float
    bars: TickerBars
    complete: bool  # the store holds no more bars than these


class StoreBars:
    """`BarSource` over a `BarStore` with a short per-ticker cache (module docstring)."""

    def __init__(
        self,
        store: BarStore,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.reads = 0  # store reads done, for tests and logs
        self._cache: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def open(
        cls,
        location: StoreLocation,
        credentials: BlobCredentials | None = None,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> StoreBars:
        return cls(BarStore(connect_backend(location, credentials), location.prefix), cache_seconds)

    async def close(self) -> None:
        await self.store.close()

    async def latest(self, symbol: str, count: int) -> TickerBars | None:
        lock = self._locks.setdefault(symbol, asyncio.Lock())
        async with lock:
            entry = self._cache.get(symbol)
            fresh = entry is not None and self.clock() - entry.read_at < self.cache_seconds
            if entry is None or not fresh or (len(entry.bars.close) < count and not entry.complete):
                bars, complete = await self._read(symbol, count)
                if bars is None:
                    self._cache.pop(symbol, None)
                    return None
                entry = _Entry(self.clock(), bars, complete)
                self._cache[symbol] = entry
        return _tail(entry.bars, count)

    async def _read(self, symbol: str, count: int) -> tuple[TickerBars | None, bool]:
        days = await self.store.list_days([symbol])
        if not days:
            return None, True
        chosen, rows = [], 0
        for day in reversed(days):
            chosen.append(day)
            rows += day.rows if day.rows is not None else SESSION_BARS
            if rows >= count:
                break
        frame = await self.store.read([symbol], start=chosen[-1].day)
        self.reads += 1
        frame = frame[frame["symbol"] == symbol]
        if frame.empty:
            return None, True
        bars = TickerBars(
            symbol=symbol,
            ts=frame["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]"),
            high=frame["high"].to_numpy(np.float64),
            low=frame["low"].to_numpy(np.float64),
            close=frame["close"].to_numpy(np.float64),
        )
        return bars, len(chosen) == len(days)


def _tail(bars: TickerBars, count: int) -> TickerBars:
    if len(bars.close) <= count:
        return bars
    return TickerBars(
        bars.symbol, bars.ts[-count:], bars.high[-count:], bars.low[-count:], bars.close[-count:]
    )
