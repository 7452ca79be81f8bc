"""When a RetrainSchedule fires: cron (in its time zone) or fixed-interval timing. Pure.

Shared by the operator (`stockops_operator.schedules`, CronJob semantics on top) and local
mode (`stockops up`), so a schedule fires at the same instants in a cluster and on a laptop.

* Cron schedules are read in `timeZone`. A wall-clock time that does not exist (spring
  forward) runs at the first instant after the gap; a wall-clock time that occurs twice
  (fall back) runs once, at its first occurrence, as Vixie cron does.
* Interval schedules (`15m`) run at anchor + k * interval, independent of time zones.

Limits: cron resolution is one minute (croniter); times are handled as aware datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from croniter import croniter

from stockops_model.errors import SpecError
from stockops_model.spec import RetrainScheduleSpec, parse_duration


class Timing(Protocol):
    """Scheduled instants of one schedule."""

    def latest_at_or_before(self, now: datetime) -> datetime | None:
        """The most recent scheduled instant not after `now` (None if there is none)."""
        ...

    def next_after(self, now: datetime) -> datetime:
        """The first scheduled instant strictly after `now`."""
        ...


@dataclass(frozen=True)
class CronTiming:
    """A 5-field cron expression read in an IANA time zone."""

    expression: str
    zone: ZoneInfo

    def _is_repeat(self, when: datetime) -> bool:
        # An ambiguous wall time (fall back) whose second instant this is: the first one
        # matched the same cron fields an hour earlier, so this one must not run again.
        wall = when.astimezone(self.zone).replace(tzinfo=None)
        first = wall.replace(tzinfo=self.zone, fold=0)
        second = wall.replace(tzinfo=self.zone, fold=1)
        if first.utcoffset() == second.utcoffset():
            return False
        return when.astimezone(UTC) == second.astimezone(UTC)

    def latest_at_or_before(self, now: datetime) -> datetime | None:
        # croniter's get_prev excludes its start, so start one second later to include `now`.
        it = croniter(self.expression, now.astimezone(self.zone) + timedelta(seconds=1))
        for _ in range(3):
            when: datetime = it.get_prev(datetime)
            if not self._is_repeat(when):
                return when.astimezone(UTC)
        return None

    def next_after(self, now: datetime) -> datetime:
        it = croniter(self.expression, now.astimezone(self.zone))
        while True:
            when: datetime = it.get_next(datetime)
            if not self._is_repeat(when):
                return when.astimezone(UTC)


@dataclass(frozen=True)
class IntervalTiming:
    """Every `seconds`, counted from `anchor` (the schedule's creation)."""

    anchor: datetime
    seconds: int

    def latest_at_or_before(self, now: datetime) -> datetime | None:
        if now < self.anchor + timedelta(seconds=self.seconds):
            return None
        periods = int((now - self.anchor).total_seconds()) // self.seconds
        return (self.anchor + timedelta(seconds=periods * self.seconds)).astimezone(UTC)

    def next_after(self, now: datetime) -> datetime:
        if now < self.anchor:
            return (self.anchor + timedelta(seconds=self.seconds)).astimezone(UTC)
        periods = int((now - self.anchor).total_seconds()) // self.seconds + 1
        return (self.anchor + timedelta(seconds=periods * self.seconds)).astimezone(UTC)


def build_timing(spec: RetrainScheduleSpec, created: datetime) -> Timing:
    """The timing of a schedule spec; `created` anchors interval schedules.

    Raises:
        SpecError: the cron expression does not parse.
    """
    if spec.interval is not None:
        return IntervalTiming(anchor=created.astimezone(UTC), seconds=parse_duration(spec.interval))
    assert spec.schedule is not None  # the spec model enforces exactly one of the two
    if not croniter.is_valid(spec.schedule):
        raise SpecError(f"spec.schedule: {spec.schedule!r} is not a valid cron expression")
    return CronTiming(expression=spec.schedule, zone=ZoneInfo(spec.time_zone))
