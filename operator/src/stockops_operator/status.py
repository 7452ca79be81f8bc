"""Status of the custom resources: conditions, Job outcomes and train results. Pure.

Conditions follow the Kubernetes API conventions (`type`, `status` True/False/Unknown,
`reason` in CamelCase, `message`, `lastTransitionTime`, `observedGeneration`): the transition
time changes only when the status does, so `kubectl wait --for=condition=Ready` and GitOps
health checks behave.

The train Job reports one JSON line (its last stdout line, also written to the Pod's
termination message). `parse_train_result` reads it tolerantly and keeps what a user needs:
promoted or kept, the version, and the challenger's metrics beside the naive forecast's.
The deploy Job does the same; `parse_deploy_result` reads which version serves where.

Limits: nothing here talks to the API server; callers pass the objects they read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from stockops_operator.schedules import format_time

READY = "Ready"
INGESTING = "Ingesting"
MODEL_AVAILABLE = "ModelAvailable"
DEPLOYED = "Deployed"
STOCKMODEL_CONDITIONS = (READY, INGESTING, MODEL_AVAILABLE, DEPLOYED)

Condition = dict[str, Any]


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Return `conditions` with the condition `type_` set; other conditions are kept.

    `status` None means Unknown. The transition time is kept when the status is unchanged.
    """
    text = "Unknown" if status is None else ("True" if status else "False")
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        same = cond.get("status") == text
        out.append(
            {
                "type": type_,
                "status": text,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": cond.get("lastTransitionTime", format_time(now))
                if same
                else format_time(now),
            }
        )
    if not found:
        out.append(
            {
                "type": type_,
                "status": text,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": format_time(now),
            }
        )
    return out


def find_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of type `type_`, or None."""
    return next((c for c in conditions if c.get("type") == type_), None)


def changed_conditions(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions of `after` whose status or reason differ from `before`: each one an Event."""
    out = []
    for cond in after:
        old = find_condition(before, str(cond["type"]))
        if old is None or (old.get("status"), old.get("reason")) != (
            cond["status"],
            cond["reason"],
        ):
            out.append(cond)
    return out


class JobPhase(StrEnum):
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def job_phase(job: Mapping[str, Any]) -> JobPhase:
    """A Job's phase from its status conditions (Complete / Failed), as `kubectl` shows it."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobPhase.SUCCEEDED
        if cond.get("type") == "Failed":
            return JobPhase.FAILED
    return JobPhase.ACTIVE


def job_failure_message(job: Mapping[str, Any]) -> str:
    """Reason and message of a failed Job's Failed condition ('' if there is none)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return ""


class Decision(StrEnum):
    PROMOTED = "promoted"
    KEPT = "kept"


# The metrics the CRDs' status schema keeps (spec.py `Metrics`); others would be pruned.
METRIC_KEYS = {
    "rmse": "rmse",
    "mae": "mae",
    "mase": "mase",
    "directional_accuracy": "directionalAccuracy",
    "directionalAccuracy": "directionalAccuracy",
}
SIDES = ("model", "naive", "champion")


@dataclass(frozen=True)
class TrainResult:
    """What one train run decided, as recorded in status.

    Attributes:
        decision: promoted (the production alias moved) or kept.
        version: the registered model version of the challenger, if any.
        run_id: the MLflow run, if given.
        metrics: per side (`model` = the challenger, `naive`, `champion`) the metrics as
            decimal strings, e.g. {"model": {"rmse": "0.0123"}, "naive": {"rmse": "0.013"}}.
        reason: the gate's explanation, if given.
    """

    decision: Decision
    version: str | None
    run_id: str | None
    metrics: dict[str, dict[str, str]]
    reason: str

    def to_status(self) -> dict[str, Any]:
        """The fields shared by `lastRun` and `lastTraining` (camelCase, no floats)."""
        out: dict[str, Any] = {"decision": str(self.decision)}
        if self.reason:
            out["reason"] = self.reason[:1024]
        if self.metrics:
            out["metrics"] = self.metrics
        return out


def _decimal(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return str(value) if isinstance(value, int) else format(number, ".6g")


def _metric_set(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for key, raw in value.items():
        name = METRIC_KEYS.get(str(key))
        text = _decimal(raw)
        if name is not None and text is not None:
            out[name] = text
    return out


def _sides(payload: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    sides: dict[str, dict[str, str]] = {}
    gate = payload.get("gate")
    nested = next(
        (
            m
            for m in (payload.get("metrics"), payload.get("test"))
            if isinstance(m, Mapping) and any(isinstance(m.get(s), Mapping) for s in SIDES)
        ),
        None,
    )
    if isinstance(gate, Mapping) and isinstance(gate.get("challenger"), Mapping):
        # The gate's figures are the ones the decision was made on: prefer them.
        sides = {
            "model": _metric_set(gate.get("challenger")),
            "naive": _metric_set(gate.get("naive")),
            "champion": _metric_set(gate.get("champion")),
        }
    elif nested is not None:  # {"metrics"|"test": {"model": {...}, "naive": {...}}}
        sides = {side: _metric_set(nested.get(side)) for side in SIDES}
    elif isinstance(payload.get("metrics"), Mapping):  # {"metrics": {"rmse", "naive_rmse"}}
        flat: Mapping[str, Any] = payload["metrics"]
        own = {k: v for k, v in flat.items() if not k.startswith(("naive_", "champion_"))}
        sides["model"] = _metric_set(own)
        for side in ("naive", "champion"):
            prefix = side + "_"
            sides[side] = _metric_set(
                {k.removeprefix(prefix): v for k, v in flat.items() if k.startswith(prefix)}
            )
    for side in ("naive", "champion"):  # {"naive": {...}, "champion": {...}} at the top
        if not sides.get(side):
            sides[side] = _metric_set(payload.get(side))
    return {k: v for k, v in sides.items() if v}


def parse_train_result(text: str) -> TrainResult | None:
    """Read the train Job's JSON line: the last line of `text` that is a JSON object.

    The line `stockops train` prints has `promoted`, `reason`, `run_id`,
    `challenger_version`, `test` (metrics per side: `model`, `naive`) and `gate` (the metrics
    the decision was made on: `challenger`, `champion`, `naive`); the gate's are preferred.
    Also accepted: `decision` ("promoted"/"kept"), `version`, `runId`, `metrics` per side or
    flat with `naive_`/`champion_` prefixes. Metric names kept (the CRDs' status schema):
    rmse, mae, mase, directional_accuracy.

    Returns:
        The result, or None when no line is a JSON object (a run that crashed early).
    """
    payload = last_json_object(text)
    return None if payload is None else _result_from(payload)


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last line of `text` that is a JSON object (a Job's result line), if any."""
    for line in reversed(text.strip().splitlines()):
        try:
            payload = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(payload, dict):
            return payload
    return None


def _result_from(payload: Mapping[str, Any]) -> TrainResult:
    promoted = payload.get("promoted")
    if not isinstance(promoted, bool):
        promoted = str(payload.get("decision", "")).lower() == Decision.PROMOTED
    version = next(
        (
            payload[k]
            for k in ("challenger_version", "challengerVersion", "version")
            if payload.get(k)
        ),
        None,
    )
    run_id = payload.get("runId", payload.get("run_id"))
    return TrainResult(
        decision=Decision.PROMOTED if promoted else Decision.KEPT,
        version=None if version is None else str(version),
        run_id=None if run_id is None else str(run_id),
        metrics=_sides(payload),
        reason=str(payload.get("reason", "")),
    )


@dataclass(frozen=True)
class DeployResult:
    """What one deploy Job did, from the JSON line `stockops deploy` prints.

    Attributes:
        target: azureml, kserve or local.
        requested_version: the version the rollout was asked to serve.
        serving_version: the version serving afterwards (the old one after a rollback).
        endpoint_url: the scoring URL clients call, if the target reported one.
        traffic: percent per model version afterwards.
        rolled_back: whether the previous version was restored.
        message: the deploy Job's own words.
    """

    target: str | None
    requested_version: str | None
    serving_version: str | None
    endpoint_url: str | None
    traffic: dict[str, int]
    rolled_back: bool
    message: str

    def to_status(self) -> dict[str, Any]:
        """The `lastRollout` fields this result fills (camelCase, no floats, no nulls)."""
        out: dict[str, Any] = {
            "target": self.target,
            "requestedVersion": self.requested_version,
            "servingVersion": self.serving_version,
            "rolledBack": self.rolled_back,
            "traffic": self.traffic or None,
            "message": self.message[:1024] or None,
        }
        return {k: v for k, v in out.items() if v is not None}


def _text(value: Any, limit: int) -> str | None:
    return None if value is None or value == "" else str(value)[:limit]


def parse_deploy_result(text: str) -> DeployResult | None:
    """Read the deploy Job's JSON line: the last line of `text` that is a JSON object.

    Keys (see `stockops_model.deploy`): target, requested_version, serving_version,
    previous_version, endpoint_url, traffic, rolled_back, message; camelCase is accepted too.

    Returns:
        The result, or None when no line is a JSON object (a Job that crashed early).
    """
    payload = last_json_object(text)
    # With FallbackToLogsOnError a crashed Job's message is its last log lines, which may be
    # JSON log records: only a line naming its target is a result.
    if payload is None or not payload.get("target"):
        return None

    def get(snake: str, camel: str) -> Any:
        return payload.get(snake, payload.get(camel))

    shares = get("traffic", "traffic")
    traffic: dict[str, int] = {}
    for version, percent in (shares if isinstance(shares, dict) else {}).items():
        if isinstance(percent, int | float) and not isinstance(percent, bool):
            traffic[str(version)[:32]] = int(percent)
    return DeployResult(
        target=_text(get("target", "target"), 16),
        requested_version=_text(get("requested_version", "requestedVersion"), 32),
        serving_version=_text(get("serving_version", "servingVersion"), 32),
        endpoint_url=_text(get("endpoint_url", "endpointUrl"), 2048),
        traffic=traffic,
        rolled_back=get("rolled_back", "rolledBack") is True,
        message=str(get("message", "message") or ""),
    )


def termination_message(pod: Mapping[str, Any]) -> str:
    """The termination message of a Pod's first terminated container ('' if none)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated.get("message"):
            return str(terminated["message"])
    return ""
