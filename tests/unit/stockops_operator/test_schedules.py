"""Schedule timing: cron in time zones across DST, intervals, missed runs, Job names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from stockops_model.errors import SpecError
from stockops_model.spec import RetrainScheduleSpec
from stockops_model.timing import CronTiming, IntervalTiming, build_timing
from stockops_operator.schedules import (
    MAX_NAME,
    deploy_job_name,
    format_time,
    manual_job_name,
    parse_time,
    plan_run,
    scheduled_job_name,
)

NY = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def spec(**fields: object) -> RetrainScheduleSpec:
    return RetrainScheduleSpec.model_validate({"modelRef": {"name": "demo"}, **fields})


def test_cron_reads_the_schedule_in_its_time_zone() -> None:
    timing = CronTiming("0 9 * * *", NY)
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
    assert timing.next_after(utc(2026, 1, 5, 0, 0)) == utc(2026, 1, 5, 14, 0)
    assert timing.next_after(utc(2026, 7, 6, 0, 0)) == utc(2026, 7, 6, 13, 0)


def test_cron_time_in_the_spring_forward_gap_runs_once_after_the_gap() -> None:
    timing = CronTiming("30 2 * * *", NY)  # 02:30 does not exist on 2026-03-08 in New York
    first = timing.next_after(utc(2026, 3, 8, 5, 0))  # 00:00 EST
    second = timing.next_after(first)
    assert first == datetime(2026, 3, 8, 3, 0, tzinfo=NY).astimezone(UTC)
    assert second == datetime(2026, 3, 9, 2, 30, tzinfo=NY).astimezone(UTC)


def test_cron_time_repeated_at_fall_back_runs_once() -> None:
    timing = CronTiming("30 1 * * *", NY)  # 01:30 happens twice on 2026-11-01
    first = timing.next_after(utc(2026, 11, 1, 4, 0))  # 00:00 EDT
    second = timing.next_after(first)
    assert first == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert second == utc(2026, 11, 2, 6, 30)  # the next day, 01:30 EST
    # Looking back from after the repeated hour also finds the first instant only.
    assert timing.latest_at_or_before(utc(2026, 11, 1, 7, 0)) == utc(2026, 11, 1, 5, 30)


def test_cron_latest_includes_an_instant_equal_to_now() -> None:
    timing = CronTiming("*/15 * * * *", ZoneInfo("UTC"))
    assert timing.latest_at_or_before(utc(2026, 1, 1, 12, 15)) == utc(2026, 1, 1, 12, 15)
    assert timing.latest_at_or_before(utc(2026, 1, 1, 12, 14, 59)) == utc(2026, 1, 1, 12, 0)


def test_interval_counts_from_creation() -> None:
    timing = IntervalTiming(anchor=utc(2026, 1, 1, 10, 7, 30), seconds=900)
    assert timing.latest_at_or_before(utc(2026, 1, 1, 10, 20)) is None
    assert timing.latest_at_or_before(utc(2026, 1, 1, 10, 40)) == utc(2026, 1, 1, 10, 37, 30)
    assert timing.next_after(utc(2026, 1, 1, 10, 40)) == utc(2026, 1, 1, 10, 52, 30)


@given(
    offset=hs.integers(min_value=0, max_value=10**7),
    seconds=hs.integers(min_value=1, max_value=10**5),
)
def test_interval_latest_and_next_bracket_now(offset: int, seconds: int) -> None:
    anchor = utc(2026, 1, 1)
    now = anchor + timedelta(seconds=offset)
    timing = IntervalTiming(anchor=anchor, seconds=seconds)
    latest = timing.latest_at_or_before(now)
    nxt = timing.next_after(now)
    assert now < nxt <= now + timedelta(seconds=seconds)
    if latest is not None:
        assert latest <= now < latest + timedelta(seconds=seconds)
        assert nxt - latest == timedelta(seconds=seconds)


def test_build_timing_rejects_a_bad_cron_expression() -> None:
    with pytest.raises(SpecError, match=r"spec\.schedule"):
        build_timing(spec(schedule="61 * * * *"), utc(2026, 1, 1))


def test_build_timing_picks_interval_or_cron() -> None:
    assert isinstance(build_timing(spec(interval="15m"), utc(2026, 1, 1)), IntervalTiming)
    assert isinstance(build_timing(spec(schedule="0 * * * *"), utc(2026, 1, 1)), CronTiming)


HOURLY = CronTiming("0 * * * *", ZoneInfo("UTC"))
CREATED = utc(2026, 1, 1, 0, 30)


def test_nothing_due_before_the_first_instant() -> None:
    plan = plan_run(
        HOURLY,
        last_scheduled=None,
        created=CREATED,
        now=utc(2026, 1, 1, 0, 59),
        starting_deadline_seconds=None,
    )
    assert plan.due is None
    assert plan.next_run == utc(2026, 1, 1, 1, 0)


def test_due_at_the_scheduled_instant_and_not_again() -> None:
    now = utc(2026, 1, 1, 1, 0, 5)
    first = plan_run(
        HOURLY, last_scheduled=None, created=CREATED, now=now, starting_deadline_seconds=None
    )
    assert first.due == utc(2026, 1, 1, 1, 0)
    again = plan_run(
        HOURLY, last_scheduled=first.due, created=CREATED, now=now, starting_deadline_seconds=None
    )
    assert again.due is None


def test_long_downtime_gives_exactly_one_catch_up_run_the_latest() -> None:
    # The operator was down for three days: 72 hourly runs were missed.
    last = utc(2026, 1, 1, 1, 0)
    now = utc(2026, 1, 4, 1, 20)
    plan = plan_run(
        HOURLY, last_scheduled=last, created=CREATED, now=now, starting_deadline_seconds=None
    )
    assert plan.due == utc(2026, 1, 4, 1, 0)
    # Once that run started, nothing else is due: no storm of the other 71.
    after = plan_run(
        HOURLY, last_scheduled=plan.due, created=CREATED, now=now, starting_deadline_seconds=None
    )
    assert after.due is None
    assert after.skipped is None


def test_missed_run_past_the_starting_deadline_is_skipped() -> None:
    plan = plan_run(
        HOURLY,
        last_scheduled=utc(2026, 1, 1, 1, 0),
        created=CREATED,
        now=utc(2026, 1, 1, 5, 10),
        starting_deadline_seconds=300,
    )
    assert plan.due is None
    assert plan.skipped == utc(2026, 1, 1, 5, 0)
    assert plan.next_run == utc(2026, 1, 1, 6, 0)


def test_missed_run_within_the_starting_deadline_still_starts() -> None:
    plan = plan_run(
        HOURLY,
        last_scheduled=utc(2026, 1, 1, 1, 0),
        created=CREATED,
        now=utc(2026, 1, 1, 5, 4),
        starting_deadline_seconds=300,
    )
    assert plan.due == utc(2026, 1, 1, 5, 0)


def test_job_names_are_deterministic_and_valid_dns_labels() -> None:
    when = utc(2026, 1, 1, 1, 0)
    assert scheduled_job_name("demo-hourly", when) == f"demo-hourly-{int(when.timestamp())}"
    assert scheduled_job_name("demo-hourly", when) == scheduled_job_name("demo-hourly", when)
    assert scheduled_job_name("demo-hourly", when) != scheduled_job_name(
        "demo-hourly", when + timedelta(minutes=1)
    )
    assert manual_job_name("demo", "2026-01-01T10:00") == manual_job_name(
        "demo", "2026-01-01T10:00"
    )
    assert manual_job_name("demo", "a") != manual_job_name("demo", "b")
    assert deploy_job_name("Demo_Model", "12") == "demo-model-deploy-v12"


@given(name=hs.from_regex(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", fullmatch=True))
def test_long_names_are_cut_to_63_characters_and_stay_distinct(name: str) -> None:
    job = scheduled_job_name(name, utc(2026, 1, 1))
    assert len(job) <= MAX_NAME
    assert job[0].isalnum()
    assert job[-1].isalnum()
    assert set(job) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    other = scheduled_job_name(name + "x", utc(2026, 1, 1))
    assert other != job


def test_times_round_trip_in_kubernetes_format() -> None:
    when = utc(2026, 3, 8, 7, 30)
    assert format_time(when) == "2026-03-08T07:30:00Z"
    assert parse_time(format_time(when)) == when
    assert parse_time(None) is None
