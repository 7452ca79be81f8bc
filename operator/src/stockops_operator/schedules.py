"""When a RetrainSchedule runs: cron or interval timing, missed runs, and Job names. Pure.

The semantics are those of a Kubernetes CronJob, so users need learn nothing new:

* A run is due at the most recent scheduled time after the last one started (or after the
  schedule was created). However many times were missed (operator down, Forbid blocking),
  at most ONE catch-up run starts: never a storm after downtime.
* With `startingDeadlineSeconds`, a scheduled time older than that is not started any more;
  it is reported as skipped.
* Cron schedules are read in `timeZone`. A wall-clock time that does not exist (spring
  forward) runs at the first instant after the gap; a wall-clock time that occurs twice
  (fall back) runs once, at its first occurrence, as Vixie cron does.
* Interval schedules (`15m`) run at creation + k * interval, independent of time zones.
* Job names are derived from the schedule's name and the scheduled instant (or the value
  of the run-now annotation), so a restarted operator computes the same name and the API
  server's AlreadyExists turns a second attempt into a no-op.

Limits: cron resolution is one minute (croniter); times are handled as aware datetimes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stockops_model.timing import Timing

MAX_NAME = 63  # a Job's name is copied into a label value of its Pods


@dataclass(frozen=True)
class RunPlan:
    """What the schedule should do now.

    Attributes:
        due: the scheduled instant whose run should start now, if any.
        skipped: a missed instant not started because it is past startingDeadlineSeconds.
        next_run: the next scheduled instant after now.
    """

    due: datetime | None
    skipped: datetime | None
    next_run: datetime


def plan_run(
    timing: Timing,
    *,
    last_scheduled: datetime | None,
    created: datetime,
    now: datetime,
    starting_deadline_seconds: int | None,
) -> RunPlan:
    """Decide whether a scheduled run is due, with CronJob's missed-run rules.

    Args:
        timing: the schedule's instants.
        last_scheduled: the scheduled instant of the last run started (None if never).
        created: the schedule's creation time; no run is due for an instant before it.
        now: the current time.
        starting_deadline_seconds: the spec's startingDeadlineSeconds, if set.

    Returns:
        The due instant (only the most recent one, whatever was missed), a skipped instant
        if the most recent one is already too late, and the next instant.
    """
    earliest = last_scheduled if last_scheduled is not None else created
    latest = timing.latest_at_or_before(now)
    next_run = timing.next_after(now)
    if latest is None or latest <= earliest:
        return RunPlan(due=None, skipped=None, next_run=next_run)
    if starting_deadline_seconds is not None and now - latest > timedelta(
        seconds=starting_deadline_seconds
    ):
        return RunPlan(due=None, skipped=latest, next_run=next_run)
    return RunPlan(due=latest, skipped=None, next_run=next_run)


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label or "x"


def _bounded(base: str, suffix: str) -> str:
    # Keep names unique when the base is too long: cut it and add a hash of the full base.
    base = _dns_label(base)
    room = MAX_NAME - len(suffix) - 1
    if len(base) > room:
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        base = base[: room - 9].rstrip("-") + "-" + digest
    return f"{base}-{suffix}"


def scheduled_job_name(schedule_name: str, scheduled: datetime) -> str:
    """The train Job of `schedule_name` for the instant `scheduled`: `<name>-<epoch seconds>`."""
    return _bounded(schedule_name, str(int(scheduled.astimezone(UTC).timestamp())))


def manual_job_name(schedule_name: str, request: str) -> str:
    """The train Job started by the run-now annotation whose value is `request`."""
    return _bounded(schedule_name, "now-" + hashlib.sha256(request.encode()).hexdigest()[:10])


def deploy_job_name(model_name: str, version: str) -> str:
    """The deploy Job that rolls `version` of `model_name` out: one per version."""
    return _bounded(model_name, "deploy-v" + _dns_label(version))


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """Parse a Kubernetes time (`2026-01-01T00:00:00Z`); None stays None."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
