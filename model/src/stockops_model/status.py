"""Status of the custom resources: what the operator observed of a StockModel or RetrainSchedule.

`StockModelStatus` and `RetrainScheduleStatus` are written by the operator to the status
subresource and read back by it and by `stockops up`; their CRD schemas are generated from
these models by `stockops_model.crds`, like the specs in `stockops_model.spec`. Following the
Kubernetes API conventions, metrics are decimal strings, not floats.

Limits: unknown fields are ignored on read (a newer operator may have written them), so a
status round-tripped through an older version loses them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from stockops_model.schema import CONDITION_REASON_PATTERN, DECIMAL_PATTERN, StatusModel, k8s


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class StockModelConditionType(StrEnum):
    """The condition types of a StockModel."""

    READY = "Ready"
    INGESTING = "Ingesting"
    MODEL_AVAILABLE = "ModelAvailable"
    DEPLOYED = "Deployed"


class Condition(StatusModel):
    """One observation of the object's state (the shape of metav1.Condition)."""

    type: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=316, description="Condition type."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        pattern=CONDITION_REASON_PATTERN,
        max_length=1024,
        description="CamelCase reason of the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was set for."
    )


def _conditions_field() -> Any:
    return Field(
        default=None,
        max_length=16,
        description="Current conditions, one per type.",
        json_schema_extra=k8s(list_type="map", list_map_keys=["type"]),
    )


class Decision(StrEnum):
    PROMOTED = "promoted"
    KEPT = "kept"


class Metrics(StatusModel):
    """Forecast errors of one model on the evaluation bars, as decimal strings."""

    rmse: str | None = Field(
        default=None, pattern=DECIMAL_PATTERN, max_length=32, description="Root mean square error."
    )
    mae: str | None = Field(
        default=None, pattern=DECIMAL_PATTERN, max_length=32, description="Mean absolute error."
    )
    mase: str | None = Field(
        default=None,
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description="Mean absolute scaled error (against the naive forecast).",
    )
    directional_accuracy: str | None = Field(
        default=None,
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description="Share of bars whose direction of move was forecast right (0-1).",
    )


class TrainingMetrics(StatusModel):
    """The challenger's metrics side by side with the naive forecast and the champion."""

    model: Metrics | None = Field(default=None, description="The newly trained challenger.")
    naive: Metrics | None = Field(default=None, description="The last-close (naive) forecast.")
    champion: Metrics | None = Field(
        default=None, description="The production model before the run, if there was one."
    )


class LastTraining(StatusModel):
    """The result of the latest finished training run."""

    run_id: str | None = Field(default=None, max_length=64, description="MLflow run ID.")
    job_name: str | None = Field(default=None, max_length=63, description="The train Job.")
    challenger_version: str | None = Field(
        default=None, max_length=32, description="Registered model version of the challenger."
    )
    decision: Decision | None = Field(default=None, description="promoted or kept.")
    reason: str | None = Field(
        default=None, max_length=1024, description="Why the gate decided so."
    )
    metrics: TrainingMetrics | None = Field(default=None, description="Metrics side by side.")
    finished_at: datetime | None = Field(default=None, description="When the run finished.")


class RunOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class LastRollout(StatusModel):
    """The result of the latest finished deploy Job (the line `stockops deploy` prints)."""

    job_name: str = Field(max_length=63, description="The deploy Job.")
    outcome: RunOutcome = Field(description="Succeeded, or Failed (rolled back or not).")
    target: str | None = Field(
        default=None, max_length=16, description="Serving target: azureml, kserve or local."
    )
    requested_version: str | None = Field(
        default=None, max_length=32, description="The version the rollout was asked to serve."
    )
    serving_version: str | None = Field(
        default=None, max_length=32, description="The version serving after the rollout."
    )
    rolled_back: bool | None = Field(
        default=None, description="Whether the previous version was restored."
    )
    traffic: dict[str, int] | None = Field(
        default=None, description="Traffic percent per model version after the rollout."
    )
    message: str | None = Field(
        default=None, max_length=1024, description="What happened, in the deploy Job's words."
    )
    finished_at: datetime | None = Field(default=None, description="When the Job finished.")


class StockModelStatus(StatusModel):
    """What the operator observed of a StockModel."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last reconciled."
    )
    conditions: list[Condition] | None = _conditions_field()
    production_version: str | None = Field(
        default=None, max_length=32, description="Version under the MLflow `production` alias."
    )
    serving_version: str | None = Field(
        default=None, max_length=32, description="Version the serving target answers with."
    )
    last_training: LastTraining | None = Field(
        default=None, description="The latest finished training run."
    )
    endpoint_url: str | None = Field(
        default=None, max_length=2048, description="Scoring URL of the serving target."
    )
    last_rollout: LastRollout | None = Field(
        default=None, description="The latest finished rollout (deploy Job)."
    )


class JobReference(StatusModel):
    """A Job started for a schedule."""

    name: str = Field(max_length=63, description="Job name.")
    uid: str | None = Field(default=None, max_length=64, description="Job UID.")
    scheduled_time: datetime | None = Field(
        default=None, description="The schedule time the Job runs for."
    )


class LastRun(StatusModel):
    """The latest finished run of a RetrainSchedule."""

    job_name: str = Field(max_length=63, description="The train Job.")
    outcome: RunOutcome = Field(description="Succeeded or Failed.")
    decision: Decision | None = Field(
        default=None, description="promoted or kept (Succeeded runs)."
    )
    reason: str | None = Field(
        default=None, max_length=1024, description="The gate's reason, or why the run failed."
    )
    metrics: TrainingMetrics | None = Field(default=None, description="Metrics side by side.")
    finished_at: datetime | None = Field(default=None, description="When the run finished.")


class RetrainScheduleStatus(StatusModel):
    """What the operator observed of a RetrainSchedule (CronJob's status, plus the result)."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last reconciled."
    )
    conditions: list[Condition] | None = _conditions_field()
    last_schedule_time: datetime | None = Field(
        default=None, description="Scheduled time of the latest started run."
    )
    last_successful_time: datetime | None = Field(
        default=None, description="When the latest successful run finished."
    )
    next_schedule_time: datetime | None = Field(
        default=None, description="Next scheduled run (none while suspended)."
    )
    active: list[JobReference] | None = Field(
        default=None,
        max_length=100,
        description="Runs in progress.",
        json_schema_extra=k8s(list_type="map", list_map_keys=["name"]),
    )
    last_run: LastRun | None = Field(default=None, description="The latest finished run.")
