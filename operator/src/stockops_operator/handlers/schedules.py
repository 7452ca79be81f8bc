"""Reconcile one RetrainSchedule: start, replace and prune train Jobs; record their results.

Read (the StockModel, the Jobs the schedule owns) -> `plans.plan_schedule` -> apply: delete
(Replace), create (deterministic names: AlreadyExists is a no-op, so a restarted operator
never duplicates a run), record the newest finished run's result (Pod termination message,
else the MLflow run tagged with the Job's name) in the schedule's and the StockModel's
status, write status, then delete the runs past the history limits, post Events.

The StockModel is read from kopf's index of the StockModels it watches (no API call), and
fetched only when the index does not hold it yet (a model created a moment ago) or when its
status is to be written. The bookkeeping annotations go into kopf's own patch of the object,
which kopf sends after the handler together with its progress annotations: one request and
one watch event fewer per reconcile.

Called on create/update (a run-now annotation starts a run at once) and by a timer every
`STOCKOPS_SCHEDULE_TICK_SECONDS`, so a scheduled run starts at most one tick late.

No run starts while the StockModel is missing or invalid, or while its spec ConfigMap (which
the train Job mounts) does not hold the model's current spec: the run is held
(`plans.ModelState`), status and one Event say why, and every tick looks again. The
ConfigMap is read from kopf's index of the owned ConfigMaps, and fetched only when the index
does not show it current (created or changed a moment ago). A StockModel and a schedule
applied together are the common case of a ConfigMap not applied yet, so a create/update
event that held a run is retried after `SPEC_PENDING_RETRY_S` rather than at the next tick.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from stockops_model.errors import SpecError
from stockops_model.spec import (
    RetrainScheduleSpec,
    RuntimeSpec,
    StockModelSpec,
    describe_spec_error,
)
from stockops_model.timing import build_timing
from stockops_operator import appliers, builders, metrics, plans, status
from stockops_operator.handlers.outcomes import reconciling
from stockops_operator.handlers.stockmodels import record_training
from stockops_operator.kubeapi import CONFIGMAPS, RETRAINSCHEDULES, STOCKMODELS
from stockops_operator.runtime import Runtime
from stockops_operator.schedules import parse_time

KIND = "RetrainSchedule"
Logger = logging.Logger | logging.LoggerAdapter[Any]
SPEC_PENDING_RETRY_S = 1.0  # the StockModel's handler applies its ConfigMap within moments


def model_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a schedule needs of its StockModel (identity and spec), detached from kopf's body."""
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
    }


async def check_model(
    rt: Runtime,
    configmaps: appliers.ObjectIndex,
    namespace: str,
    name: str,
    model: Mapping[str, Any] | None,
) -> plans.ModelState:
    """Whether StockModel `name` can take a run: its spec ConfigMap from kopf's index, else
    (not there, or not current yet) from the API server."""
    cm_name = builders.spec_configmap_name(name)
    indexed = next(iter(configmaps.get((namespace, cm_name), ())), None)
    state = plans.model_state(name, model, indexed)
    if state.reason == plans.MODEL_SPEC_PENDING:
        state = plans.model_state(name, model, await rt.kube.get(CONFIGMAPS, namespace, cm_name))
    return state


async def reconcile(
    body: kopf.Body,
    rt: Runtime,
    logger: Logger,
    *,
    event: bool,
    patch: kopf.Patch,
    models: appliers.ObjectIndex,
    configmaps: appliers.ObjectIndex,
) -> None:
    """Bring one RetrainSchedule's Jobs and status in line with its spec and the clock.

    `models` and `configmaps` are kopf's indexes of the StockModels and of their ConfigMaps.

    Raises:
        kopf.TemporaryError: on an event, a run was held for a spec ConfigMap not applied yet.
    """
    meta = body["metadata"]
    if not event and not plans.tick_needed(
        generation=int(meta.get("generation") or 0),
        annotations=meta.get("annotations") or {},
        status=body.get("status") or {},
        now=datetime.now(UTC),
    ):
        metrics.RECONCILES.labels(KIND, "idle").inc()
        return
    async with reconciling(KIND, rt, meta["uid"]):
        await _reconcile(
            body, rt, logger, event=event, patch=patch, models=models, configmaps=configmaps
        )


async def _invalid(
    body: kopf.Body, rt: Runtime, logger: Logger, message: str, *, event: bool
) -> None:
    meta = body["metadata"]
    conditions = status.set_condition(
        (body.get("status") or {}).get("conditions") or [],
        type_=status.READY,
        status=False,
        reason="InvalidSpec",
        message=message,
        generation=int(meta.get("generation") or 0),
        now=datetime.now(UTC),
    )
    if await appliers.write_status(rt.kube, RETRAINSCHEDULES, body, {"conditions": conditions}):
        appliers.post_events(body, [plans.Event("Warning", "InvalidSpec", message)])
    logger.warning("invalid spec: %s", message)
    if event:
        raise kopf.PermanentError(message)


def _runtime_of(model: Mapping[str, Any] | None) -> RuntimeSpec | None:
    """The StockModel's `spec.runtime` for the train Jobs; None if absent or not valid."""
    if model is None:
        return None
    try:
        return StockModelSpec.model_validate(model.get("spec") or {}).runtime
    except ValidationError:
        return None


async def _reconcile(
    body: kopf.Body,
    rt: Runtime,
    logger: Logger,
    *,
    event: bool,
    patch: kopf.Patch,
    models: appliers.ObjectIndex,
    configmaps: appliers.ObjectIndex,
) -> None:
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = int(meta.get("generation") or 0)
    created = parse_time(meta.get("creationTimestamp")) or datetime.now(UTC)
    try:
        spec = RetrainScheduleSpec.model_validate(body.get("spec") or {})
        timing = build_timing(spec, created)
    except ValidationError as exc:
        await _invalid(body, rt, logger, describe_spec_error(f"{KIND}/{name}", exc), event=event)
        return
    except SpecError as exc:
        await _invalid(body, rt, logger, f"{KIND}/{name} {exc}", event=event)
        return

    model = await appliers.read_indexed(rt, STOCKMODELS, models, namespace, spec.model_ref.name)
    readiness = await check_model(rt, configmaps, namespace, spec.model_ref.name, model)
    runtime = _runtime_of(model)
    jobs = await appliers.owned_jobs(rt.kube, namespace, f"{builders.LABEL_SCHEDULE}={name}", uid)
    current = body.get("status") or {}
    plan = plans.plan_schedule(
        name=name,
        spec=spec,
        timing=timing,
        generation=generation,
        created=created,
        annotations=meta.get("annotations") or {},
        status=current,
        jobs=jobs,
        model=readiness,
        now=datetime.now(UTC),
    )

    await appliers.delete_jobs(rt.kube, namespace, plan.delete)
    owner = builders.Owner.from_body(body)
    started: dict[str, str | None] = {}  # Job name -> creationTimestamp, of those created now
    for run in plan.create:
        job = builders.build_train_job(
            name=run.name,
            schedule=owner,
            spec=spec,
            settings=rt.settings,
            scheduled=run.scheduled,
            run_now=run.run_now,
            runtime=runtime,
        )
        made = await appliers.create_job(rt.kube, job)
        if made is not None:
            started[run.name] = (made.get("metadata") or {}).get("creationTimestamp")
            trigger = "manual" if run.run_now is not None else "scheduled"
            metrics.JOBS_CREATED.labels("train", trigger).inc()
            logger.info("created train Job %s", run.name)

    desired = dict(plan.status)
    desired["active"] = plans.with_start_times(desired["active"], started)
    if plan.record is not None:
        job = next(j for j in jobs if j["metadata"]["name"] == plan.record)
        result = await appliers.read_train_result(rt, job, model)
        record = plans.run_record(job, result)
        desired["lastRun"] = record
        metrics.JOB_OUTCOMES.labels("train", record["outcome"]).inc()
        if result is not None:
            metrics.PROMOTIONS.labels(str(result.decision)).inc()
        outcome = record["outcome"]
        summary = f"run {plan.record} {outcome.lower()}"
        if result is not None:
            summary += f": {result.decision}; " + ", ".join(
                f"{side} {values}" for side, values in result.metrics.items()
            )
        elif outcome == "Failed":
            summary += f": {record.get('reason', '')}"
        plan.events.append(
            plans.Event("Normal" if outcome == "Succeeded" else "Warning", f"Run{outcome}", summary)
        )
        if model is not None and result is not None:
            # The index holds no status: read the model as it is before writing to it.
            fresh = await rt.kube.get(STOCKMODELS, namespace, spec.model_ref.name)
            if fresh is not None:
                await record_training(rt, fresh, plans.training_record(job, result))
    for key, value in plan.notes.items():
        patch.metadata.annotations[key] = value
    await appliers.write_status(rt.kube, RETRAINSCHEDULES, body, desired)
    # After the status write: lastRun names the newest run before older ones disappear.
    await appliers.delete_jobs(rt.kube, namespace, plan.prune)
    appliers.post_events(body, plan.events)
    for ev in plan.events:
        logger.info("%s: %s", ev.reason, ev.message)
    if event and readiness.reason == plans.MODEL_SPEC_PENDING and plan.held:
        raise kopf.TemporaryError(readiness.message, delay=SPEC_PENDING_RETRY_S)
