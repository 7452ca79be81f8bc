"""The `replay` source: real bar files played through the `BarSource` interface.

Files in either supported format (see `stockops_model.loaders`) are loaded once, filtered
(symbols, dates, regular hours), then emitted in bar-time order across all symbols, as
fast as possible or on an accelerated clock (see `Pacer` for how gaps between sessions
are compressed). Limits: the whole selection is held in memory (the full 2018 set, 30
tickers x 44 days, is about 0.5 M bars, ~40 MB); the iterator ends after the last bar.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import date
from pathlib import Path

import pandas as pd

from stockops_model.bars import Bar
from stockops_model.clock import Clock, SystemClock
from stockops_model.loaders import load_bars
from stockops_model.sources.base import Pacer, iterate_frame

log = logging.getLogger(__name__)


class ReplaySource:
    """Replay bar files.

    Args:
        path: a bar file, a directory of them, or a list of either.
        symbols: tickers to replay; None replays every file found.
        clock: what to sleep on when `speed` is set (default the system clock).
        speed: None or 0 = as fast as possible; S > 0 = S simulated seconds per second
            (60 = one trading hour a minute).
        start: first US/Eastern trading date to replay (inclusive, date or YYYY-MM-DD).
        end: last trading date to replay (inclusive).
        regular_hours: only bars starting in 09:30 <= ET < 16:00 on weekdays.
        source: the `source` label the bars carry.
    """

    name = "replay"

    def __init__(
        self,
        path: str | Path | Sequence[str | Path],
        *,
        symbols: Sequence[str] | None = None,
        clock: Clock | None = None,
        speed: float | None = None,
        start: date | str | None = None,
        end: date | str | None = None,
        regular_hours: bool = False,
        source: str = "replay",
    ) -> None:
        if speed is not None and speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.path = path
        self.symbols = list(symbols) if symbols else None
        self.clock: Clock = clock or SystemClock()
        self.speed = speed
        self.start = start
        self.end = end
        self.regular_hours = regular_hours
        self.source = source

    def load(self) -> pd.DataFrame:
        """Load and filter the bars this source will play (a canonical frame)."""
        return load_bars(
            self.path,
            symbols=self.symbols,
            start=self.start,
            end=self.end,
            regular_hours=self.regular_hours,
            source=self.source,
        )

    async def stream(self) -> AsyncIterator[Bar]:
        """Yield every selected bar in (ts, symbol) order, then end."""
        frame = await asyncio.to_thread(self.load)
        log.info(
            "replaying %d bars of %s from %s at %s",
            len(frame),
            ", ".join(sorted(frame["symbol"].unique())) or "no symbol",
            self.path,
            f"speed {self.speed}" if self.speed else "full speed",
        )
        async for bar in iterate_frame(frame, Pacer(self.clock, self.speed)):
            yield bar
