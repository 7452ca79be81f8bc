"""What a reconcile should do, decided from what was read. Pure.

`plan_schedule` takes a RetrainSchedule, the Jobs it owns and the clock, and returns the Jobs
to create and delete, the Job whose result to record, the status to write and the Events to
post. `plan_stockmodel` does the same for a StockModel from its Deployments, its deploy Jobs
and the production version in MLflow. The handlers read, call a plan, and apply it; all the
decisions (CronJob semantics, concurrency policy, history limits, conditions) live here and
are unit-tested without an API server.

Limits: the plans trust the Jobs they are given to be the ones the object owns (the handlers
list them by label and owner uid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from stockops_model.spec import (
    ConcurrencyPolicy,
    RetrainScheduleSpec,
    StockModelSpec,
    describe_spec_error,
)
from stockops_model.timing import Timing
from stockops_operator import status as st
from stockops_operator.builders import (
    ANNOTATION_RUN_NOW,
    ANNOTATION_SCHEDULED,
    ANNOTATION_SPEC_HASH,
    ANNOTATION_VERSION,
    build_spec_manifest,
    spec_configmap_name,
    spec_hash,
)
from stockops_operator.schedules import (
    deploy_job_name,
    format_time,
    manual_job_name,
    parse_time,
    plan_run,
    scheduled_job_name,
)

# Bookkeeping of a RetrainSchedule kept in its annotations (the status schema has no place for
# it): the run-now value already acted on, the last instant skipped as too late, and the run
# reported as blocked by Forbid. Each one keeps an Event or a run from being repeated.
NOTE_RUN_NOW_HANDLED = "stockops.io/run-now-handled"
NOTE_SKIPPED = "stockops.io/last-skipped-time"
NOTE_BLOCKED = "stockops.io/blocked-by"
# The runs held back because the StockModel cannot take one yet (see `ModelState`): while set,
# every timer tick re-examines the schedule, so a held run starts as soon as it can.
NOTE_HELD = "stockops.io/held-runs"

# Why a schedule's StockModel cannot take a train run now (the Ready condition's reason).
MODEL_NOT_FOUND = "ModelNotFound"
MODEL_INVALID = "ModelInvalid"
MODEL_SPEC_PENDING = "ModelSpecPending"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the reconciled object."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class NewRun:
    """A train Job to create: for a scheduled instant, or for a run-now request."""

    name: str
    scheduled: datetime | None
    run_now: str | None


@dataclass(frozen=True)
class ModelState:
    """Whether the schedule's StockModel can take a train run now, and if not, why.

    A train Job mounts the StockModel's spec ConfigMap (`<model>-spec`); a Job created while
    the model is missing or invalid, or before that ConfigMap holds the model's current spec,
    would sit in ContainerCreating (or train on a stale spec). So no run starts then.

    Attributes:
        reason: None when a run can start; else MODEL_NOT_FOUND, MODEL_INVALID or
            MODEL_SPEC_PENDING (the ConfigMap does not hold the current spec yet).
        message: what a user should read in the Ready condition and the Event.
    """

    reason: str | None = None
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.reason is None


MODEL_READY = ModelState()


def model_state(
    name: str, model: Mapping[str, Any] | None, configmap: Mapping[str, Any] | None
) -> ModelState:
    """Whether StockModel `name` can take a train run, from the model and its spec ConfigMap.

    Args:
        name: the StockModel the schedule refers to.
        model: the StockModel (at least identity and spec) or None if it does not exist.
        configmap: its `<name>-spec` ConfigMap as read (at least metadata.annotations), or
            None. It is current when its spec hash is that of the model's spec as given, so
            a spec changed a moment ago waits for the operator to apply it.
    """
    if model is None:
        return ModelState(MODEL_NOT_FOUND, f"StockModel {name} does not exist")
    try:
        spec = StockModelSpec.model_validate(model.get("spec") or {})
    except ValidationError as exc:
        problem = describe_spec_error(f"StockModel/{name}", exc).replace("\n", "; ")
        return ModelState(MODEL_INVALID, f"invalid spec: {problem}")
    meta = model.get("metadata") or {}
    manifest = build_spec_manifest(
        name, str(meta.get("namespace")), meta.get("uid"), spec.to_wire()
    )
    found = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
    if found.get(ANNOTATION_SPEC_HASH) != spec_hash(manifest):
        return ModelState(
            MODEL_SPEC_PENDING,
            f"ConfigMap {spec_configmap_name(name)} does not hold StockModel {name}'s "
            "current spec yet",
        )
    return MODEL_READY


@dataclass
class SchedulePlan:
    """The outcome of `plan_schedule`.

    `delete` (runs Replace ends) is applied before `create`; `prune` (finished runs past the
    history limits) only after the status write, so an observer never sees a run gone while
    `lastRun` still names an older one. A prune lost to a crash is planned again next time.
    """

    create: list[NewRun] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    prune: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # runs waiting for the StockModel, in words
    record: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str | None] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def _meta(job: Mapping[str, Any]) -> Mapping[str, Any]:
    return job.get("metadata") or {}


def _name(job: Mapping[str, Any]) -> str:
    return str(_meta(job)["name"])


def _finished_at(job: Mapping[str, Any]) -> str:
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond.get("lastTransitionTime") or "")
    return str(status.get("completionTime") or _meta(job).get("creationTimestamp") or "")


def _started_at(job: Mapping[str, Any]) -> str:
    annotations = _meta(job).get("annotations") or {}
    return str(annotations.get(ANNOTATION_SCHEDULED) or _meta(job).get("creationTimestamp") or "")


_NEVER = datetime.min.replace(tzinfo=UTC)


def recency(job: Mapping[str, Any]) -> tuple[datetime, datetime, datetime, str]:
    """Sort key of finished Jobs, oldest first.

    Kubernetes writes times to the second, so two runs often finish "at once": the tie goes
    to the run scheduled (for a run-now Job: created) later, then to the one created later,
    then to the name, never to the order in which the API server listed them.
    """
    return (
        parse_time(_finished_at(job)) or _NEVER,
        parse_time(_started_at(job)) or _NEVER,
        parse_time(_meta(job).get("creationTimestamp")) or _NEVER,
        _name(job),
    )


def plan_schedule(
    *,
    name: str,
    spec: RetrainScheduleSpec,
    timing: Timing,
    generation: int,
    created: datetime,
    annotations: Mapping[str, str],
    status: Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    model: ModelState,
    now: datetime,
) -> SchedulePlan:
    """Decide the next step of one RetrainSchedule.

    Scheduled runs follow `schedules.plan_run` (at most one catch-up run; missed runs past
    startingDeadlineSeconds are skipped with an Event). The concurrency policy applies to
    scheduled and run-now runs alike: Forbid waits for the active run to end (the run is not
    lost: it starts after, if still within the deadline), Replace deletes the active runs,
    Allow starts beside them. `suspend` stops scheduled runs only; a run-now request still
    starts, as `kubectl create job --from=cronjob/...` does for a suspended CronJob.

    While `model` is not ready, no run starts: a run-now request stays pending and a due
    instant stays due (still subject to startingDeadlineSeconds); both start at the first
    reconcile after the model is ready. The Ready condition says why, and one Event is
    posted per change of what is held.
    """
    plan = SchedulePlan()
    by_name = {_name(j): j for j in jobs}
    phases = {n: st.job_phase(j) for n, j in by_name.items()}
    active = sorted(n for n, p in phases.items() if p == st.JobPhase.ACTIVE)

    # The newest scheduled instant the Jobs or the status know of: after a crash between
    # "Job created" and "status written", the Job's annotation still tells.
    started = [parse_time(status.get("lastScheduleTime"))] + [
        parse_time((_meta(j).get("annotations") or {}).get(ANNOTATION_SCHEDULED)) for j in jobs
    ]
    last_schedule_time = max((t for t in started if t is not None), default=None)
    skipped = parse_time(annotations.get(NOTE_SKIPPED))
    last_scheduled = max((t for t in (last_schedule_time, skipped) if t is not None), default=None)

    held = plan.held

    def start(run: NewRun) -> bool:
        """Apply the concurrency policy; True if the run is (or already was) started."""
        if run.name in by_name:
            return True
        if not model.ready:
            held.append(_describe(run))
            return False
        if active and spec.concurrency_policy == ConcurrencyPolicy.FORBID:
            return False
        if active and spec.concurrency_policy == ConcurrencyPolicy.REPLACE:
            for old in active:
                if old not in plan.delete:
                    plan.delete.append(old)
                    plan.events.append(
                        Event("Normal", "RunReplaced", f"deleted active run {old} (Replace)")
                    )
            active.clear()
        plan.create.append(run)
        active.append(run.name)
        what = "run-now request" if run.scheduled is None else format_time(run.scheduled)
        plan.events.append(Event("Normal", "RunStarted", f"started train Job {run.name} ({what})"))
        return True

    def _describe(run: NewRun) -> str:
        if run.scheduled is None:
            return f"the run-now request {run.run_now!r}"
        return f"the run of {format_time(run.scheduled)}"

    blocked: str | None = None  # what waits behind the active runs (Forbid)
    handled_run_now = annotations.get(NOTE_RUN_NOW_HANDLED)
    request = annotations.get(ANNOTATION_RUN_NOW)
    if request and request != handled_run_now:
        if start(NewRun(manual_job_name(name, request), None, request)):
            handled_run_now = request
        elif model.ready:
            blocked = f"the run-now request {request!r}"

    next_run = None
    if not spec.suspend:
        run_plan = plan_run(
            timing,
            last_scheduled=last_scheduled,
            created=created,
            now=now,
            starting_deadline_seconds=spec.starting_deadline_seconds,
        )
        next_run = run_plan.next_run
        if run_plan.skipped is not None:
            plan.notes[NOTE_SKIPPED] = format_time(run_plan.skipped)
            plan.events.append(
                Event(
                    "Warning",
                    "MissedSchedule",
                    f"missed the run of {format_time(run_plan.skipped)}: more than "
                    f"startingDeadlineSeconds={spec.starting_deadline_seconds} late",
                )
            )
        if run_plan.due is not None:
            run = NewRun(scheduled_job_name(name, run_plan.due), run_plan.due, None)
            if start(run):
                last_schedule_time = max(run_plan.due, last_schedule_time or run_plan.due)
            elif model.ready:
                blocked = f"the run of {format_time(run_plan.due)}"

    # One Event per active run that blocks, not one per instant it blocks.
    blocking = ",".join(active) if blocked is not None else None
    if blocking is not None and annotations.get(NOTE_BLOCKED) != blocking:
        plan.events.append(
            Event(
                "Normal",
                "RunBlocked",
                f"{blocked} waits for {blocking} (concurrencyPolicy Forbid); only the latest "
                "missed run starts once it ends",
            )
        )

    # Record the newest finished run once; its result is read by the handler.
    finished = sorted(
        (n for n, p in phases.items() if p != st.JobPhase.ACTIVE and n not in plan.delete),
        key=lambda n: recency(by_name[n]),
    )
    last_run = status.get("lastRun") or {}
    if finished and last_run.get("jobName") != finished[-1]:
        plan.record = finished[-1]

    # History limits: keep the newest N finished runs of each outcome.
    for outcome, limit in (
        (st.JobPhase.SUCCEEDED, spec.successful_runs_history_limit),
        (st.JobPhase.FAILED, spec.failed_runs_history_limit),
    ):
        done = [n for n in finished if phases[n] == outcome and n != plan.record]
        keep = limit - (1 if plan.record is not None and phases[plan.record] == outcome else 0)
        for old in done[: max(0, len(done) - max(keep, 0))]:
            plan.prune.append(old)

    succeeded_times = [
        _finished_at(by_name[n]) for n in finished if phases[n] == st.JobPhase.SUCCEEDED
    ]
    last_success = max(
        [t for t in [status.get("lastSuccessfulTime"), *succeeded_times] if t], default=None
    )
    scheduled_of = {r.name: r.scheduled for r in plan.create}
    scheduled_of.update({n: parse_time(_started_at(j)) for n, j in by_name.items()})
    plan.status.update(
        {
            "observedGeneration": generation,
            "active": [_job_reference(n, scheduled_of.get(n)) for n in sorted(active)],
            "lastScheduleTime": format_time(last_schedule_time) if last_schedule_time else None,
            "lastSuccessfulTime": last_success,
            "nextScheduleTime": format_time(next_run) if next_run else None,
        }
    )
    if handled_run_now != annotations.get(NOTE_RUN_NOW_HANDLED):
        plan.notes[NOTE_RUN_NOW_HANDLED] = handled_run_now
    if blocking != annotations.get(NOTE_BLOCKED):
        plan.notes[NOTE_BLOCKED] = blocking
    _model_readiness(plan, model, held, annotations, status)
    if model.ready or (model.reason == MODEL_SPEC_PENDING and not held):
        # A spec ConfigMap not applied yet matters only to a run that would start now.
        ready, reason = True, "Scheduling"
        message = "suspended" if spec.suspend else f"next run {plan.status.get('nextScheduleTime')}"
    else:
        ready, reason, message = False, str(model.reason), model.message
        if held:
            message += "; waiting: " + ", ".join(held)
    plan.status["conditions"] = st.set_condition(
        status.get("conditions") or [],
        type_=st.READY,
        status=ready,
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    return plan


def _model_readiness(
    plan: SchedulePlan,
    model: ModelState,
    held: Sequence[str],
    annotations: Mapping[str, str],
    status: Mapping[str, Any],
) -> None:
    """The held-runs note and one Event per change: not one per reconcile while it lasts."""
    held_note = ", ".join(held) or None
    if held_note != annotations.get(NOTE_HELD):
        plan.notes[NOTE_HELD] = held_note
    before = st.find_condition(status.get("conditions") or [], st.READY) or {}
    newly_unready = model.reason in (MODEL_NOT_FOUND, MODEL_INVALID) and (
        before.get("reason") != model.reason
    )
    newly_held = held_note is not None and held_note != annotations.get(NOTE_HELD)
    if not (newly_unready or newly_held):
        return
    # A spec ConfigMap not applied yet is the moment between creating a StockModel and the
    # operator applying its workloads: worth a Normal Event, not a Warning.
    kind = "Normal" if model.reason == MODEL_SPEC_PENDING else "Warning"
    text = model.message + (f"; waiting: {held_note}" if held_note else "")
    plan.events.append(Event(kind, str(model.reason), text))


def with_start_times(
    active: Sequence[Mapping[str, Any]], created: Mapping[str, str | None]
) -> list[dict[str, Any]]:
    """`status.active` with the start time of Jobs just created that have no scheduled instant.

    A run-now Job is listed with its creation time once the Job can be read back (see
    `plan_schedule`); filling it in from the create call's answer writes the same status at
    once, rather than a second time at the next reconcile.

    Args:
        active: `status.active` as planned.
        created: name -> `metadata.creationTimestamp` of the Jobs this reconcile created.
    """
    out: list[dict[str, Any]] = []
    for ref in active:
        started = parse_time(created.get(str(ref["name"])))
        if "scheduledTime" not in ref and started is not None:
            out.append(_job_reference(str(ref["name"]), started))
        else:
            out.append(dict(ref))
    return out


def _job_reference(name: str, scheduled: datetime | None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name}
    if scheduled is not None:
        ref["scheduledTime"] = format_time(scheduled)
    return ref


def tick_needed(
    *,
    generation: int,
    annotations: Mapping[str, str],
    status: Mapping[str, Any],
    now: datetime,
) -> bool:
    """Whether a timer tick of a RetrainSchedule has anything to do.

    Nothing can happen before the announced next instant while no run is active, the status
    is of the current generation, the run-now request (if any) was handled and no run is held
    for its StockModel (`NOTE_HELD`): the tick is
    then answered from the object kopf already holds, without one API call. Most ticks of
    a schedule that runs every 15 minutes are of that kind.
    """
    if status.get("active") or status.get("observedGeneration") != generation:
        return True
    request = annotations.get(ANNOTATION_RUN_NOW)
    if request and request != annotations.get(NOTE_RUN_NOW_HANDLED):
        return True
    if annotations.get(NOTE_HELD):
        return True  # a run waits for its StockModel: look again at every tick
    next_run = parse_time(status.get("nextScheduleTime"))
    if next_run is None:
        return not bool(status.get("conditions"))  # suspended (quiet) or never reconciled
    return now >= next_run


def run_record(job: Mapping[str, Any], result: st.TrainResult | None) -> dict[str, Any]:
    """The schedule's `status.lastRun` for a finished train Job and its result (if any)."""
    phase = st.job_phase(job)
    record: dict[str, Any] = {
        "jobName": _name(job),
        "outcome": str(phase),
        "finishedAt": _finished_at(job),
    }
    if result is not None:
        record.update(result.to_status())
    if phase == st.JobPhase.FAILED:
        record["reason"] = (st.job_failure_message(job) or "the train Job failed")[:1024]
    return record


def training_record(job: Mapping[str, Any], result: st.TrainResult) -> dict[str, Any]:
    """The StockModel's `status.lastTraining` for a train Job that reported a result."""
    record: dict[str, Any] = {"jobName": _name(job), "finishedAt": _finished_at(job)}
    record.update(result.to_status())
    if result.version is not None:
        record["challengerVersion"] = result.version
    if result.run_id is not None:
        record["runId"] = result.run_id
    return record


# --------------------------------------------------------------------------- StockModel


@dataclass(frozen=True)
class Registry:
    """What MLflow said about the production alias: a version, none, or unreachable."""

    version: str | None
    error: str | None = None


@dataclass
class ModelPlan:
    """The outcome of `plan_stockmodel`."""

    deploy: str | None = None  # the production version to roll out now
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def _available(deployment: Mapping[str, Any] | None) -> bool:
    if deployment is None:
        return False
    return int((deployment.get("status") or {}).get("availableReplicas") or 0) >= 1


def plan_stockmodel(
    *,
    name: str,
    generation: int,
    status: Mapping[str, Any],
    deployments: Mapping[str, Mapping[str, Any] | None],
    registry: Registry,
    deploy_jobs: Sequence[Mapping[str, Any]],
    now: datetime,
    rollout: st.DeployResult | None = None,
) -> ModelPlan:
    """Decide conditions, serving version and whether to launch a deploy Job.

    Args:
        name: the StockModel's name.
        generation: its metadata.generation.
        status: its current status.
        deployments: the `feed` and `sink` Deployments as read (None when missing).
        registry: the production alias in MLflow.
        deploy_jobs: the deploy Jobs the model owns.
        now: the clock.
        rollout: the result line of `latest_finished_deploy(deploy_jobs)`, when that Job is
            not yet recorded in `status.lastRollout` (see `rollout_to_read`).
    """
    plan = ModelPlan()
    unread = rollout_to_read(status, deploy_jobs)
    conditions: list[st.Condition] = [dict(c) for c in status.get("conditions") or []]

    def put(type_: str, ok: bool | None, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = st.set_condition(
            conditions,
            type_=type_,
            status=ok,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )

    missing = [w for w in ("feed", "sink") if not _available(deployments.get(w))]
    if missing:
        put(
            st.INGESTING, False, "WorkloadsNotAvailable", f"not available yet: {', '.join(missing)}"
        )
    else:
        put(st.INGESTING, True, "WorkloadsAvailable", "feed and sink are running")

    production = registry.version
    if registry.error is not None:
        put(st.MODEL_AVAILABLE, None, "RegistryUnreachable", registry.error)
        production = status.get("productionVersion")
    elif production is None:
        put(st.MODEL_AVAILABLE, False, "NoProductionModel", "no version has the production alias")
    else:
        put(st.MODEL_AVAILABLE, True, "ProductionModel", f"production is version {production}")

    by_version: dict[str, Mapping[str, Any]] = {}
    for job in sorted(deploy_jobs, key=lambda j: str(_meta(j).get("creationTimestamp") or "")):
        version = (_meta(job).get("annotations") or {}).get(ANNOTATION_VERSION)
        if version is not None:
            by_version[str(version)] = job
    serving = status.get("servingVersion")
    succeeded = [
        (recency(j), v) for v, j in by_version.items() if st.job_phase(j) == st.JobPhase.SUCCEEDED
    ]
    if succeeded:
        serving = max(succeeded)[1]

    if production is None:
        put(st.DEPLOYED, False, "NoProductionModel", "nothing to serve yet")
    elif serving == production:
        put(st.DEPLOYED, True, "Serving", f"version {serving} is serving")
    else:
        deploy_job = by_version.get(str(production))
        if deploy_job is None:
            plan.deploy = str(production)
            put(st.DEPLOYED, False, "Deploying", f"rolling out version {production}")
            plan.events.append(
                Event(
                    "Normal",
                    "DeployStarted",
                    f"production version {production} differs from serving version "
                    f"{serving or 'none'}: started {deploy_job_name(name, str(production))}",
                )
            )
        elif st.job_phase(deploy_job) == st.JobPhase.FAILED:
            message = (
                _rollout_message(status, unread, rollout, deploy_job)
                or st.job_failure_message(deploy_job)
                or "the deploy Job failed"
            )
            put(st.DEPLOYED, False, "RolloutFailed", f"version {production}: {message}")
        else:
            put(st.DEPLOYED, False, "Deploying", f"rolling out version {production}")

    ready = all(
        (st.find_condition(conditions, t) or {}).get("status") == "True"
        for t in (st.INGESTING, st.MODEL_AVAILABLE, st.DEPLOYED)
    )
    if ready:
        put(st.READY, True, "Ready", f"ingesting and serving version {serving}")
    else:
        waiting = [
            t
            for t in (st.INGESTING, st.MODEL_AVAILABLE, st.DEPLOYED)
            if (st.find_condition(conditions, t) or {}).get("status") != "True"
        ]
        put(st.READY, False, "NotReady", f"waiting for: {', '.join(waiting)}")

    before = status.get("conditions") or []
    if not before:
        # First look at a new object: one Event with every condition, not one per condition.
        summary = "; ".join(f"{c['type']}={c['status']} ({c['reason']})" for c in conditions)
        plan.events.append(Event("Normal", "Reconciled", summary))
    else:
        for cond in st.changed_conditions(before, conditions):
            kind = "Normal" if cond["status"] == "True" else "Warning"
            if cond["reason"] in ("Deploying", "WorkloadsNotAvailable", "NoProductionModel"):
                kind = "Normal"
            message = f"{cond['type']}: {cond['message']}"
            plan.events.append(Event(kind, str(cond["reason"]), message))

    plan.status = {
        "observedGeneration": generation,
        "conditions": conditions,
        "productionVersion": production,
        "servingVersion": serving,
    }
    if unread is not None:
        # First look at this finished deploy Job: record it even when its Pod left no line.
        plan.status["lastRollout"] = {
            "jobName": _name(unread),
            "outcome": "Succeeded" if st.job_phase(unread) == st.JobPhase.SUCCEEDED else "Failed",
            "finishedAt": _finished_at(unread) or None,
            **(rollout.to_status() if rollout is not None else {}),
        }
        if rollout is not None and rollout.endpoint_url:
            plan.status["endpointUrl"] = rollout.endpoint_url
    return plan


def _rollout_message(
    status: Mapping[str, Any],
    unread: Mapping[str, Any] | None,
    rollout: st.DeployResult | None,
    job: Mapping[str, Any],
) -> str | None:
    """What the deploy Job `job` said about its rollout, read now (`rollout`, the line of the
    `unread` Job) or recorded before."""
    if rollout is not None and unread is job:
        return rollout.message or None
    recorded = status.get("lastRollout") or {}
    if recorded.get("jobName") == _name(job) and recorded.get("message"):
        return str(recorded["message"])
    return None


def latest_finished_deploy(deploy_jobs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The deploy Job that finished last (succeeded or failed), if any."""
    finished = [j for j in deploy_jobs if st.job_phase(j) != st.JobPhase.ACTIVE]
    return max(finished, key=recency) if finished else None


def rollout_to_read(
    status: Mapping[str, Any], deploy_jobs: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The finished deploy Job whose result line is not in `status.lastRollout` yet, if any.

    Reading a result costs a Pod list, so it is read once per Job, not on every tick.
    """
    latest = latest_finished_deploy(deploy_jobs)
    if latest is None:
        return None
    recorded = (status.get("lastRollout") or {}).get("jobName")
    return None if recorded == _name(latest) else latest


def invalid_spec_status(
    status: Mapping[str, Any], *, generation: int, message: str, now: datetime
) -> dict[str, Any]:
    """Status of a StockModel whose spec does not validate: Ready False, reason InvalidSpec."""
    conditions = st.set_condition(
        status.get("conditions") or [],
        type_=st.READY,
        status=False,
        reason="InvalidSpec",
        message=message,
        generation=generation,
        now=now,
    )
    return {"observedGeneration": generation, "conditions": conditions}
