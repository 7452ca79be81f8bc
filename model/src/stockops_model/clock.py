"""Time as the bar sources see it: what time it is, and how to wait.

Sources never call `datetime.now()` or `asyncio.sleep()` directly; they take a `Clock`.
`SystemClock` is the real one. `FakeClock` is for tests: its time only moves when code
sleeps on it or a test calls `advance`, so a test of a poller, a replay at `--speed 60`
or a retry with backoff runs in milliseconds and can assert on the sleeps requested.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of the current UTC time and of waiting."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (0 just yields to the event loop)."""
        ...


class SystemClock:
    """The wall clock and `asyncio.sleep`."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock for tests: sleeping advances time at once and is recorded.

    Args:
        start: the initial time; must be timezone-aware (it is converted to UTC).
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self._now += timedelta(seconds=seconds)
        # Still hand control to the loop, as a real sleep would, so other tasks progress.
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping (for example between two polls)."""
        self._now += timedelta(seconds=seconds)
