"""The `RetrainSchedule` spec: when to retrain one StockModel, with CronJob semantics.

A cron `schedule` (in `timeZone`) or a fixed `interval`, exactly one; `concurrencyPolicy`,
`startingDeadlineSeconds`, `suspend`, history limits and the run's deadline as in a CronJob.
`parse_duration` reads the interval (``15m``, ``1h30m``, ``45s``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, field_validator, model_validator

from stockops_model.schema import (
    CRON_PATTERN,
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    TIME_ZONE_PATTERN,
    SpecModel,
    cel,
    k8s,
)
from stockops_model.spec.base import STOCKMODEL_NAME_MAX


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class ModelRef(SpecModel):
    """A reference to a StockModel in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=STOCKMODEL_NAME_MAX,
        pattern=DNS_LABEL_PATTERN,
        description="Name of the StockModel.",
    )


class RetrainScheduleSpec(SpecModel):
    """When to retrain one StockModel; CronJob semantics where they apply."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "has(self.schedule) != has(self.interval)",
                "set exactly one of schedule and interval",
            )
        )
    )

    model_ref: ModelRef = Field(description="The StockModel to retrain (same namespace).")
    schedule: str | None = Field(
        default=None,
        pattern=CRON_PATTERN,
        max_length=128,
        description="Cron expression (5 fields); exactly one of schedule, interval.",
    )
    interval: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        max_length=32,
        description="Fixed interval such as 15m or 1h30m; exactly one of schedule, interval.",
        json_schema_extra=k8s(cel("self.matches('[1-9]')", "interval must be positive, e.g. 15m")),
    )
    time_zone: str = Field(
        default="UTC",
        pattern=TIME_ZONE_PATTERN,
        max_length=64,
        description="IANA time zone of the cron schedule, e.g. America/New_York.",
        json_schema_extra=k8s(
            # Evaluating getHours in the zone fails for a zone CEL does not know; the API server
            # then reports "unknown time zone" on this field.
            cel(
                "self != 'Local' && timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0",
                "timeZone must be an IANA time zone such as America/New_York",
            )
        ),
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.FORBID, description="What to do when a run is still active."
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="A run missed by more than this is skipped; at most one catch-up run.",
    )
    suspend: bool = Field(default=False, description="Pause scheduling (active runs go on).")
    successful_runs_history_limit: int = Field(
        default=3, ge=0, le=100, description="Finished successful runs to keep."
    )
    failed_runs_history_limit: int = Field(
        default=1, ge=0, le=100, description="Finished failed runs to keep."
    )
    active_deadline_seconds: int = Field(
        default=3600, ge=60, le=86400, description="Kill a run after this long."
    )
    backoff_limit: int = Field(default=1, ge=0, le=10, description="Retries of a failed run.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @field_validator("schedule")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5 and not value.startswith("@"):
            raise ValueError("cron schedule must have 5 fields (minute hour dom month dow)")
        return value

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) <= 0:
            raise ValueError("interval must be positive, e.g. 15m")
        return value

    @model_validator(mode="after")
    def _schedule_xor_interval(self) -> Self:
        if (self.schedule is None) == (self.interval is None):
            raise ValueError("set exactly one of schedule and interval")
        return self


def parse_duration(text: str) -> int:
    """Seconds in a duration such as `1h30m`, `15m` or `45s`."""
    match = re.fullmatch(DURATION_PATTERN, text)
    if match is None or not text:
        raise ValueError(f"{text!r} is not a duration like 15m or 1h30m")
    hours, minutes, seconds = (int(g[:-1]) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
