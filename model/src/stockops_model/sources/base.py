"""What every bar source provides, and the pacing shared by the finite ones.

A `BarSource` yields closed, validated `Bar`s in bar-time order per symbol. Finite sources
(replay, synthetic with a fixed number of days) end their iterator; live ones (yahoo) run
until cancelled. `Pacer` turns bar time into waiting on a `Clock` for the replayed and
synthetic sources, and `iterate_frame` turns a canonical bar frame into that stream.

Accelerated pacing: at `speed` S, the wait before the bars of time t is (t - t_prev) / S,
so `speed=60` plays one trading hour in one minute. Gaps between sessions (overnight,
weekends, holidays: any two bar times on different US/Eastern calendar dates) count as a
single bar interval, so a replay never sleeps for hours between a close and the next
open. Gaps inside a session (thin minutes, sparse pre-market prints) are kept as they are.
`speed` None or 0 plays as fast as possible, only yielding to the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import pandas as pd

from stockops_model.bars import BAR_COLUMNS, Bar
from stockops_model.clock import Clock

BAR_INTERVAL = timedelta(minutes=1)
_EASTERN = ZoneInfo("America/New_York")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@runtime_checkable
class BarSource(Protocol):
    """A stream of closed 1-minute bars."""

    name: str

    def stream(self) -> AsyncIterator[Bar]:
        """Yield closed, validated bars, in bar-time order per symbol."""
        ...


class Pacer:
    """Waits on a clock between bar times, compressing the gaps between sessions.

    Args:
        clock: where to sleep.
        speed: simulated seconds per real second; None or 0 means no waiting at all.
    """

    def __init__(self, clock: Clock, speed: float | None) -> None:
        if speed is not None and speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self._clock = clock
        self._speed = speed or None
        self._previous: datetime | None = None

    def gap(self, ts: datetime) -> timedelta:
        """The simulated time between the previous bar time and `ts` (compressed)."""
        previous = self._previous
        if previous is None or ts <= previous:
            return timedelta(0)
        if previous.astimezone(_EASTERN).date() != ts.astimezone(_EASTERN).date():
            return BAR_INTERVAL
        return ts - previous

    async def wait_for(self, ts: datetime) -> None:
        """Wait until the bars starting at `ts` are due, then remember `ts`."""
        gap = self.gap(ts)
        self._previous = ts if self._previous is None else max(ts, self._previous)
        if self._speed is None:
            await asyncio.sleep(0)
        elif gap:
            await self._clock.sleep(gap.total_seconds() / self._speed)


async def iterate_frame(frame: pd.DataFrame, pacer: Pacer) -> AsyncIterator[Bar]:
    """Yield the bars of a canonical frame in (ts, symbol) order, paced by `pacer`.

    Every row is validated again as it becomes a `Bar` (a few microseconds a bar), so a
    frame that skipped `validate_frame` cannot leak a bad bar.
    """
    if frame.empty:
        return
    ordered = frame.sort_values(["ts", "symbol"], kind="stable")
    seconds = ordered["ts"].to_numpy(dtype="datetime64[s]").astype("int64").tolist()
    columns = {c: ordered[c].tolist() for c in BAR_COLUMNS if c != "ts"}
    current: int | None = None
    when = _EPOCH
    for i, second in enumerate(seconds):
        if second != current:
            current = second
            when = _EPOCH + timedelta(seconds=second)
            await pacer.wait_for(when)
        yield Bar.parse({"ts": when, **{c: values[i] for c, values in columns.items()}})
