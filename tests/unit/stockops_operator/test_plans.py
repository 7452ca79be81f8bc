"""Reconcile decisions: concurrency policies, restarts, run-now, history, StockModel status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from stockops_model.spec import RetrainScheduleSpec, StockModelSpec
from stockops_model.timing import CronTiming
from stockops_operator import plans
from stockops_operator.builders import (
    ANNOTATION_RUN_NOW,
    ANNOTATION_SCHEDULED,
    ANNOTATION_VERSION,
    Owner,
    build_spec_configmap,
)
from stockops_operator.schedules import (
    format_time,
    manual_job_name,
    scheduled_job_name,
)
from stockops_operator.status import (
    DeployResult,
    TrainResult,
    parse_deploy_result,
    parse_train_result,
)

HOURLY = CronTiming("0 * * * *", ZoneInfo("UTC"))
CREATED = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
T2 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def spec(**fields: object) -> RetrainScheduleSpec:
    return RetrainScheduleSpec.model_validate(
        {"modelRef": {"name": "demo"}, "schedule": "0 * * * *", **fields}
    )


def job(
    name: str,
    *,
    scheduled: datetime | None = None,
    phase: str | None = None,
    finished: datetime | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    notes = dict(annotations or {})
    if scheduled is not None:
        notes[ANNOTATION_SCHEDULED] = format_time(scheduled)
    conditions = []
    if phase is not None:
        conditions.append(
            {
                "type": phase,
                "status": "True",
                "lastTransitionTime": format_time(finished or T1),
                "reason": "BackoffLimitExceeded" if phase == "Failed" else "",
                "message": "Job has reached the specified backoff limit"
                if phase == "Failed"
                else "",
            }
        )
    return {
        "metadata": {
            "name": name,
            "annotations": notes,
            "creationTimestamp": format_time(scheduled or T1),
        },
        "status": {"conditions": conditions},
    }


def applied(notes: Mapping[str, str | None]) -> dict[str, str]:
    """Annotations after a merge patch of `notes` onto none (None removes a key)."""
    return {k: v for k, v in notes.items() if v is not None}


def plan(
    *,
    now: datetime,
    jobs: list[dict[str, Any]] | None = None,
    status: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    model: plans.ModelState = plans.MODEL_READY,
    **fields: object,
) -> plans.SchedulePlan:
    return plans.plan_schedule(
        name="hourly",
        spec=spec(**fields),
        timing=HOURLY,
        generation=3,
        created=CREATED,
        annotations=annotations or {},
        status=status or {},
        jobs=jobs or [],
        model=model,
        now=now,
    )


def test_first_scheduled_run_is_created_with_its_deterministic_name() -> None:
    p = plan(now=T1 + timedelta(seconds=3))
    assert [r.name for r in p.create] == [scheduled_job_name("hourly", T1)]
    assert p.create[0].scheduled == T1
    assert p.status["lastScheduleTime"] == format_time(T1)
    assert p.status["nextScheduleTime"] == format_time(T2)
    assert p.status["active"] == [
        {"name": scheduled_job_name("hourly", T1), "scheduledTime": format_time(T1)}
    ]
    assert p.status["observedGeneration"] == 3
    assert [e.reason for e in p.events] == ["RunStarted"]


def test_restart_after_job_created_but_before_status_written_creates_nothing() -> None:
    # The operator died right after creating the Job: status knows nothing, the Job does.
    running = job(scheduled_job_name("hourly", T1), scheduled=T1)
    p = plan(now=T1 + timedelta(minutes=5), jobs=[running], status={})
    assert p.create == []
    assert p.status["lastScheduleTime"] == format_time(T1)
    assert [a["name"] for a in p.status["active"]] == [running["metadata"]["name"]]


def test_forbid_does_not_start_a_second_run_and_reports_it_once() -> None:
    running = job(scheduled_job_name("hourly", T1), scheduled=T1)
    p = plan(now=T2 + timedelta(seconds=1), jobs=[running], concurrencyPolicy="Forbid")
    assert p.create == []
    assert p.delete == []
    assert p.status["lastScheduleTime"] == format_time(T1)  # the T2 run is still owed
    assert [e.reason for e in p.events] == ["RunBlocked"]
    assert p.notes[plans.NOTE_BLOCKED] == running["metadata"]["name"]
    again = plan(
        now=T2 + timedelta(seconds=20),
        jobs=[running],
        status=p.status,
        annotations=applied(p.notes),
        concurrencyPolicy="Forbid",
    )
    assert again.events == []
    # A later instant blocked by the same run is not reported again either.
    later = plan(
        now=T2 + timedelta(hours=1, seconds=1),
        jobs=[running],
        status=p.status,
        annotations=applied(p.notes),
        concurrencyPolicy="Forbid",
    )
    assert later.events == []
    assert later.create == []


def test_forbid_starts_the_owed_run_when_the_active_one_ends() -> None:
    done = job(scheduled_job_name("hourly", T1), scheduled=T1, phase="Complete", finished=T2)
    p = plan(now=T2 + timedelta(minutes=10), jobs=[done], concurrencyPolicy="Forbid")
    assert [r.scheduled for r in p.create] == [T2]


def test_replace_deletes_the_active_run_and_starts_the_new_one() -> None:
    running = job(scheduled_job_name("hourly", T1), scheduled=T1)
    p = plan(now=T2 + timedelta(seconds=1), jobs=[running], concurrencyPolicy="Replace")
    assert p.delete == [running["metadata"]["name"]]
    assert [r.name for r in p.create] == [scheduled_job_name("hourly", T2)]
    assert [a["name"] for a in p.status["active"]] == [scheduled_job_name("hourly", T2)]


def test_allow_runs_beside_the_active_run() -> None:
    running = job(scheduled_job_name("hourly", T1), scheduled=T1)
    p = plan(now=T2 + timedelta(seconds=1), jobs=[running], concurrencyPolicy="Allow")
    assert p.delete == []
    assert len(p.create) == 1
    assert len(p.status["active"]) == 2


def test_suspend_stops_scheduled_runs_but_not_run_now() -> None:
    suspended = plan(now=T2 + timedelta(seconds=1), suspend=True)
    assert suspended.create == []
    assert suspended.status["nextScheduleTime"] is None
    asked = plan(
        now=T2 + timedelta(seconds=1), suspend=True, annotations={ANNOTATION_RUN_NOW: "please-1"}
    )
    assert [r.name for r in asked.create] == [manual_job_name("hourly", "please-1")]
    assert asked.notes[plans.NOTE_RUN_NOW_HANDLED] == "please-1"


def test_run_now_is_handled_once_per_annotation_value() -> None:
    now = T1 - timedelta(minutes=10)
    first = plan(now=now, annotations={ANNOTATION_RUN_NOW: "x"})
    assert len(first.create) == 1
    again = plan(now=now, annotations={ANNOTATION_RUN_NOW: "x", **applied(first.notes)})
    assert again.create == []


def test_run_now_waits_under_forbid_and_is_not_lost() -> None:
    running = job(scheduled_job_name("hourly", T1), scheduled=T1)
    now = T1 + timedelta(minutes=5)
    p = plan(now=now, jobs=[running], annotations={ANNOTATION_RUN_NOW: "x"})
    assert p.create == []
    assert plans.NOTE_RUN_NOW_HANDLED not in p.notes
    done = job(running["metadata"]["name"], scheduled=T1, phase="Complete", finished=now)
    later = plan(
        now=now,
        jobs=[done],
        annotations={ANNOTATION_RUN_NOW: "x", **applied(p.notes)},
        status=p.status,
    )
    assert [r.run_now for r in later.create] == ["x"]


MISSING = plans.ModelState(plans.MODEL_NOT_FOUND, "StockModel demo does not exist")
INVALID = plans.ModelState(plans.MODEL_INVALID, "StockModel demo has an invalid spec: x")
PENDING = plans.ModelState(plans.MODEL_SPEC_PENDING, "ConfigMap demo-spec does not hold ...")


def ready_condition(p: plans.SchedulePlan) -> tuple[str, str, str]:
    (ready,) = p.status["conditions"]
    return ready["status"], ready["reason"], ready["message"]


def test_no_run_while_the_model_is_missing_and_one_warning_not_one_per_tick() -> None:
    p = plan(now=T1 + timedelta(seconds=1), model=MISSING)
    assert p.create == []
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "ModelNotFound")]
    assert ready_condition(p)[:2] == ("False", "ModelNotFound")
    assert "the run of " + format_time(T1) in ready_condition(p)[2]
    # The next tick, still missing: the same run is held, nothing new to say.
    again = plan(
        now=T1 + timedelta(seconds=11),
        model=MISSING,
        status=p.status,
        annotations=applied(p.notes),
    )
    assert again.create == []
    assert again.events == []


def test_a_run_now_request_waits_for_an_invalid_model_then_starts_once_it_is_fixed() -> None:
    request = {ANNOTATION_RUN_NOW: "try-it"}
    p = plan(now=T1 - timedelta(minutes=10), model=INVALID, annotations=request)
    assert p.create == []
    assert plans.NOTE_RUN_NOW_HANDLED not in p.notes  # still pending
    assert p.notes[plans.NOTE_HELD] == "the run-now request 'try-it'"
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "ModelInvalid")]
    assert "waiting: the run-now request 'try-it'" in p.events[0].message
    assert ready_condition(p)[:2] == ("False", "ModelInvalid")
    # Held: every tick looks again, although the next instant is far.
    noted = {**request, **applied(p.notes)}
    assert plans.tick_needed(generation=3, annotations=noted, status=p.status, now=p_now(p))

    fixed = plan(now=T1 - timedelta(minutes=9), annotations=noted, status=p.status)
    assert [r.run_now for r in fixed.create] == ["try-it"]
    assert fixed.notes[plans.NOTE_RUN_NOW_HANDLED] == "try-it"
    assert fixed.notes[plans.NOTE_HELD] is None
    assert ready_condition(fixed)[:2] == ("True", "Scheduling")


def p_now(p: plans.SchedulePlan) -> datetime:
    """A moment before the plan's next instant: a tick that would otherwise be idle."""
    nxt = p.status["nextScheduleTime"]
    return datetime.fromisoformat(nxt.replace("Z", "+00:00")) - timedelta(minutes=1)


def test_a_held_scheduled_run_starts_late_within_the_starting_deadline() -> None:
    held = plan(now=T1 + timedelta(seconds=1), model=PENDING, startingDeadlineSeconds=300)
    assert held.create == []
    assert held.status["lastScheduleTime"] is None  # not started: still due
    assert [(e.type, e.reason) for e in held.events] == [("Normal", "ModelSpecPending")]
    later = plan(
        now=T1 + timedelta(seconds=30),
        status=held.status,
        annotations=applied(held.notes),
        startingDeadlineSeconds=300,
    )
    assert [r.scheduled for r in later.create] == [T1]


def test_a_held_scheduled_run_past_the_starting_deadline_is_missed() -> None:
    held = plan(now=T1 + timedelta(seconds=1), model=INVALID, startingDeadlineSeconds=60)
    fixed = plan(
        now=T1 + timedelta(minutes=5),
        status=held.status,
        annotations=applied(held.notes),
        startingDeadlineSeconds=60,
    )
    assert fixed.create == []
    assert fixed.notes[plans.NOTE_SKIPPED] == format_time(T1)
    assert "MissedSchedule" in [e.reason for e in fixed.events]


def test_replace_deletes_nothing_while_the_new_run_cannot_start() -> None:
    running = job(scheduled_job_name("hourly", T1), scheduled=T1)
    p = plan(
        now=T2 + timedelta(seconds=1), jobs=[running], concurrencyPolicy="Replace", model=INVALID
    )
    assert p.delete == []
    assert p.create == []


def test_a_spec_configmap_not_applied_yet_matters_only_to_a_run_that_would_start() -> None:
    idle = plan(now=T1 - timedelta(minutes=10), model=PENDING)
    assert idle.events == []
    assert ready_condition(idle)[:2] == ("True", "Scheduling")
    assert plans.NOTE_HELD not in idle.notes


def test_model_state_checks_existence_validity_and_the_current_spec_configmap() -> None:
    model = {
        "metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
        "spec": {
            "tickers": ["AAPL"],
            "source": {"type": "synthetic"},
            "storage": {"path": "bars"},
            "mlflow": {"trackingUri": "http://127.0.0.1:9", "modelName": "demo"},
        },
    }
    owner = Owner(kind="StockModel", name="demo", namespace="ns", uid="u")
    wire = StockModelSpec.model_validate(model["spec"]).to_wire()
    current = build_spec_configmap(owner, wire)
    stale = build_spec_configmap(owner, {**wire, "tickers": ["MSFT"]})
    invalid = {**model, "spec": {**model["spec"], "tickers": []}}

    assert plans.model_state("demo", None, current).reason == plans.MODEL_NOT_FOUND
    bad = plans.model_state("demo", invalid, current)
    assert bad.reason == plans.MODEL_INVALID
    assert "StockModel/demo tickers" in bad.message
    assert plans.model_state("demo", model, None).reason == plans.MODEL_SPEC_PENDING
    assert plans.model_state("demo", model, stale).reason == plans.MODEL_SPEC_PENDING
    assert plans.model_state("demo", model, current).ready


def test_starting_deadline_skips_a_late_run_with_a_warning() -> None:
    p = plan(
        now=T2 + timedelta(minutes=30),
        status={"lastScheduleTime": format_time(T1)},
        startingDeadlineSeconds=60,
    )
    assert p.create == []
    assert p.notes[plans.NOTE_SKIPPED] == format_time(T2)
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "MissedSchedule")]
    # Reported once: the skipped instant now counts as handled.
    again = plan(
        now=T2 + timedelta(minutes=31),
        status=p.status,
        annotations=applied(p.notes),
        startingDeadlineSeconds=60,
    )
    assert again.events == []
    assert again.create == []


def test_the_newest_finished_run_is_recorded_once() -> None:
    a = job("hourly-a", scheduled=T1, phase="Complete", finished=T1 + timedelta(minutes=5))
    b = job("hourly-b", scheduled=T2, phase="Failed", finished=T2 + timedelta(minutes=5))
    now = T2 + timedelta(minutes=6)
    p = plan(now=now, jobs=[a, b], status={"lastScheduleTime": format_time(T2)})
    assert p.record == "hourly-b"
    assert p.status["lastSuccessfulTime"] == format_time(T1 + timedelta(minutes=5))
    again = plan(
        now=now,
        jobs=[a, b],
        status={"lastScheduleTime": format_time(T2), "lastRun": {"jobName": "hourly-b"}},
    )
    assert again.record is None


def test_history_limits_delete_the_oldest_finished_runs() -> None:
    base = T1
    jobs = [
        job(f"ok-{i}", scheduled=base, phase="Complete", finished=base + timedelta(minutes=i))
        for i in range(5)
    ] + [
        job(f"bad-{i}", scheduled=base, phase="Failed", finished=base + timedelta(minutes=10 + i))
        for i in range(3)
    ]
    p = plan(
        now=base + timedelta(minutes=30),
        jobs=jobs,
        status={"lastScheduleTime": format_time(base), "lastRun": {"jobName": "bad-2"}},
        successfulRunsHistoryLimit=2,
        failedRunsHistoryLimit=1,
    )
    assert sorted(p.prune) == ["bad-0", "bad-1", "ok-0", "ok-1", "ok-2"]
    assert p.delete == []  # pruned after the status write, not before it


def test_run_record_puts_metrics_beside_the_naive_forecast() -> None:
    done = job("hourly-a", scheduled=T1, phase="Complete", finished=T1 + timedelta(minutes=5))
    result = parse_train_result(
        'epoch 30/30\n{"promoted": true, "version": 4, "runId": "abc", "metrics": '
        '{"model": {"rmse": 0.0123, "mae": 0.01}, "naive": {"rmse": 0.0131}, '
        '"champion": {"rmse": 0.0129}}, "reason": "beats champion and naive"}'
    )
    assert isinstance(result, TrainResult)
    record = plans.run_record(done, result)
    assert record == {
        "jobName": "hourly-a",
        "outcome": "Succeeded",
        "finishedAt": format_time(T1 + timedelta(minutes=5)),
        "decision": "promoted",
        "reason": "beats champion and naive",
        "metrics": {
            "model": {"rmse": "0.0123", "mae": "0.01"},
            "naive": {"rmse": "0.0131"},
            "champion": {"rmse": "0.0129"},
        },
    }
    training = plans.training_record(done, result)
    assert training["challengerVersion"] == "4"
    assert training["runId"] == "abc"
    assert training["metrics"] == record["metrics"]


def test_run_record_of_a_failed_run_says_why() -> None:
    failed = job("hourly-a", scheduled=T1, phase="Failed")
    record = plans.run_record(failed, None)
    assert record["outcome"] == "Failed"
    assert "backoff limit" in record["reason"]
    assert "decision" not in record


# --------------------------------------------------------------------------- StockModel

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
AVAILABLE = {"status": {"availableReplicas": 1}}


def deploy_job(version: str, phase: str | None = None) -> dict[str, Any]:
    return job(f"demo-deploy-v{version}", phase=phase, annotations={ANNOTATION_VERSION: version})


def model_plan(
    *,
    registry: plans.Registry,
    deploy_jobs: list[dict[str, Any]] | None = None,
    status: Mapping[str, Any] | None = None,
    deployments: Mapping[str, Any] | None = None,
    rollout: DeployResult | None = None,
) -> plans.ModelPlan:
    return plans.plan_stockmodel(
        name="demo",
        generation=2,
        status=status or {},
        deployments=deployments
        if deployments is not None
        else {"feed": AVAILABLE, "sink": AVAILABLE},
        registry=registry,
        deploy_jobs=deploy_jobs or [],
        now=NOW,
        rollout=rollout,
    )


def conditions(p: plans.ModelPlan) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in p.status["conditions"]}


def test_a_new_production_version_launches_one_deploy_job() -> None:
    p = model_plan(registry=plans.Registry("3"), status={"servingVersion": "2"})
    assert p.deploy == "3"
    assert conditions(p)["Deployed"] == ("False", "Deploying")
    assert conditions(p)["Ready"][0] == "False"
    assert "DeployStarted" in [e.reason for e in p.events]
    running = model_plan(registry=plans.Registry("3"), deploy_jobs=[deploy_job("3")])
    assert running.deploy is None


def test_a_finished_deploy_makes_the_model_ready() -> None:
    p = model_plan(registry=plans.Registry("3"), deploy_jobs=[deploy_job("3", "Complete")])
    assert p.deploy is None
    assert p.status["servingVersion"] == "3"
    assert p.status["productionVersion"] == "3"
    assert all(c[0] == "True" for c in conditions(p).values())
    assert all(c["observedGeneration"] == 2 for c in p.status["conditions"])


def test_a_failed_deploy_is_not_retried_and_says_why() -> None:
    p = model_plan(
        registry=plans.Registry("3"),
        status={"servingVersion": "2"},
        deploy_jobs=[deploy_job("3", "Failed")],
    )
    assert p.deploy is None
    assert conditions(p)["Deployed"] == ("False", "RolloutFailed")
    assert p.status["servingVersion"] == "2"


def test_no_production_model_yet() -> None:
    p = model_plan(registry=plans.Registry(None))
    assert p.deploy is None
    assert conditions(p)["ModelAvailable"] == ("False", "NoProductionModel")


def test_unreachable_registry_is_unknown_and_keeps_the_last_known_version() -> None:
    p = model_plan(
        registry=plans.Registry(None, "connection refused"),
        status={"productionVersion": "2", "servingVersion": "2"},
    )
    assert conditions(p)["ModelAvailable"] == ("Unknown", "RegistryUnreachable")
    assert p.deploy is None
    assert p.status["productionVersion"] == "2"


def test_ingesting_waits_for_both_deployments() -> None:
    p = model_plan(registry=plans.Registry(None), deployments={"feed": AVAILABLE, "sink": None})
    assert conditions(p)["Ingesting"] == ("False", "WorkloadsNotAvailable")


def test_events_only_when_a_condition_changes_and_transition_time_is_kept() -> None:
    first = model_plan(registry=plans.Registry("3"), deploy_jobs=[deploy_job("3", "Complete")])
    later = plans.plan_stockmodel(
        name="demo",
        generation=2,
        status=first.status,
        deployments={"feed": AVAILABLE, "sink": AVAILABLE},
        registry=plans.Registry("3"),
        deploy_jobs=[deploy_job("3", "Complete")],
        now=NOW + timedelta(hours=1),
    )
    assert later.events == []
    # The status patch is a merge: applying the later plan changes nothing.
    assert {**first.status, **later.status} == first.status


def test_invalid_spec_status_names_the_reason() -> None:
    status = plans.invalid_spec_status(
        {}, generation=4, message="StockModel/demo spec.tickers: Field required", now=NOW
    )
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "spec.tickers" in ready["message"]
    assert status["observedGeneration"] == 4


def test_a_tick_before_the_next_instant_with_nothing_active_does_nothing() -> None:
    p = plan(now=T1 + timedelta(seconds=3))
    quiet: dict[str, Any] = {**p.status, "active": [], "conditions": [{"type": "Ready"}]}
    early = T1 + timedelta(minutes=30)

    def needed(
        status: Mapping[str, Any] = quiet,
        generation: int = 3,
        annotations: Mapping[str, str] | None = None,
        now: datetime = early,
    ) -> bool:
        return plans.tick_needed(
            generation=generation, annotations=annotations or {}, status=status, now=now
        )

    assert not needed()
    assert needed(now=T2)  # the next instant has come
    assert needed(status=p.status)  # a run is active: its end must be noticed
    assert needed(generation=4)  # the spec changed and was not reconciled yet
    assert needed(annotations={ANNOTATION_RUN_NOW: "x"})  # a run-now request to handle
    assert not needed(annotations={ANNOTATION_RUN_NOW: "x", plans.NOTE_RUN_NOW_HANDLED: "x"})


def test_a_suspended_schedule_ticks_quietly() -> None:
    p = plan(now=T1 + timedelta(seconds=3), suspend=True)
    status = {**p.status, "conditions": [{"type": "Ready"}]}
    assert p.status["nextScheduleTime"] is None
    assert not plans.tick_needed(generation=3, annotations={}, status=status, now=T2)
    assert plans.tick_needed(generation=3, annotations={}, status={}, now=T2)


def test_a_new_model_gets_one_summary_event_then_one_per_change() -> None:
    first = model_plan(registry=plans.Registry(None))
    assert [e.reason for e in first.events] == ["Reconciled"]
    assert "ModelAvailable=False (NoProductionModel)" in first.events[0].message
    promoted = plans.plan_stockmodel(
        name="demo",
        generation=2,
        status=first.status,
        deployments={"feed": AVAILABLE, "sink": AVAILABLE},
        registry=plans.Registry("1"),
        deploy_jobs=[],
        now=NOW,
    )
    reasons = [e.reason for e in promoted.events]
    assert "ProductionModel" in reasons
    assert "DeployStarted" in reasons
    assert "Reconciled" not in reasons


def test_a_run_now_job_is_listed_with_its_start_time_as_soon_as_it_is_created() -> None:
    # The status written right after the create call must equal the one the next reconcile
    # plans from the listed Job, or every run-now request costs a second status write.
    now = T1 - timedelta(minutes=10)
    first = plan(now=now, annotations={ANNOTATION_RUN_NOW: "x"})
    (run,) = first.create
    created_at = "2026-01-01T00:50:02Z"
    written = plans.with_start_times(first.status["active"], {run.name: created_at})

    listed = job(run.name)
    listed["metadata"]["creationTimestamp"] = created_at
    later = plan(
        now=now + timedelta(seconds=10),
        jobs=[listed],
        status={**first.status, "active": written},
        annotations={ANNOTATION_RUN_NOW: "x", **applied(first.notes)},
    )
    assert written == [{"name": run.name, "scheduledTime": created_at}]
    assert later.status["active"] == written


def test_start_times_leave_scheduled_runs_and_unknown_jobs_alone() -> None:
    active = [{"name": "a", "scheduledTime": "2026-01-01T01:00:00Z"}, {"name": "b"}]
    filled = plans.with_start_times(active, {"a": "2026-01-01T01:00:05Z", "c": None})
    assert filled == active


def created_at(j: dict[str, Any], when: datetime) -> dict[str, Any]:
    j["metadata"]["creationTimestamp"] = format_time(when)
    return j


def test_runs_finished_in_the_same_second_rank_by_scheduled_or_requested_time() -> None:
    # Requested by hand before T2, the scheduled run of T2 started after it; both end in the
    # same second. By name the run-now Job would sort last ("hourly-now-..." > "hourly-17...").
    same_second = T2 + timedelta(minutes=5)
    early = created_at(
        job(
            manual_job_name("hourly", "x"),
            phase="Complete",
            finished=same_second,
            annotations={ANNOTATION_RUN_NOW: "x"},
        ),
        T2 - timedelta(minutes=1),
    )
    late = job(
        scheduled_job_name("hourly", T2), scheduled=T2, phase="Complete", finished=same_second
    )
    for listed in ([early, late], [late, early]):
        p = plan(
            now=T2 + timedelta(minutes=6),
            jobs=listed,
            status={"lastScheduleTime": format_time(T2)},
            successfulRunsHistoryLimit=1,
        )
        assert p.record == late["metadata"]["name"]
        assert p.prune == [early["metadata"]["name"]]


def test_a_tie_in_finish_and_start_goes_to_the_later_created_then_to_the_name() -> None:
    a = created_at(job("hourly-now-a", phase="Complete", finished=T2), T1)
    b = created_at(job("hourly-now-b", phase="Complete", finished=T2), T1)
    c = created_at(job("hourly-now-0", phase="Complete", finished=T2), T1 + timedelta(seconds=1))
    ranked = sorted([c, b, a], key=plans.recency)
    assert [j["metadata"]["name"] for j in ranked] == [
        "hourly-now-a",
        "hourly-now-b",
        "hourly-now-0",
    ]


def test_deploys_finished_in_the_same_second_serve_the_later_created_version() -> None:
    old = created_at(deploy_job("9", "Complete"), T1)
    new = created_at(deploy_job("10", "Complete"), T1 + timedelta(seconds=30))
    for listed in ([old, new], [new, old]):
        p = model_plan(registry=plans.Registry("10"), deploy_jobs=listed)
        assert p.status["servingVersion"] == "10"
        assert p.deploy is None


def test_a_finished_rollout_records_its_result_and_endpoint_once() -> None:
    jobs = [deploy_job("3", "Complete")]
    assert plans.rollout_to_read({}, jobs) is jobs[0]
    line = (
        '{"target":"local","requested_version":"3","serving_version":"3",'
        '"endpoint_url":"http://127.0.0.1:8080/v1/predict","traffic":{"3":100},'
        '"rolled_back":false,"message":"version 3 serves"}'
    )
    p = model_plan(
        registry=plans.Registry("3"), deploy_jobs=jobs, rollout=parse_deploy_result(line)
    )
    assert p.status["endpointUrl"] == "http://127.0.0.1:8080/v1/predict"
    assert p.status["lastRollout"]["jobName"] == "demo-deploy-v3"
    assert p.status["lastRollout"]["outcome"] == "Succeeded"
    assert p.status["lastRollout"]["traffic"] == {"3": 100}
    assert p.status["lastRollout"]["target"] == "local"
    # Recorded: the next tick reads nothing and leaves lastRollout and endpointUrl alone.
    assert plans.rollout_to_read(p.status, jobs) is None
    again = model_plan(registry=plans.Registry("3"), deploy_jobs=jobs, status=p.status)
    assert "lastRollout" not in again.status
    assert "endpointUrl" not in again.status


def test_a_rolled_back_rollout_says_why_in_the_condition() -> None:
    jobs = [deploy_job("2", "Complete"), deploy_job("3", "Failed")]
    jobs[1]["status"]["conditions"][0]["lastTransitionTime"] = format_time(T2)
    line = (
        '{"target":"kserve","requested_version":"3","serving_version":"2","rolled_back":true,'
        '"traffic":{"2":100},"message":"revision of version 3 not ready in 600 s; rolled back"}'
    )
    result = parse_deploy_result(line)
    p = model_plan(
        registry=plans.Registry("3"),
        status={"servingVersion": "2"},
        deploy_jobs=jobs,
        rollout=result,
    )
    assert conditions(p)["Deployed"] == ("False", "RolloutFailed")
    deployed = next(c for c in p.status["conditions"] if c["type"] == "Deployed")
    assert "not ready in 600 s; rolled back" in deployed["message"]
    assert p.status["lastRollout"]["outcome"] == "Failed"
    assert p.status["lastRollout"]["rolledBack"] is True
    assert p.status["servingVersion"] == "2"
    # Later ticks keep the Job's words from status, without reading the Pod again.
    later = model_plan(registry=plans.Registry("3"), status=p.status, deploy_jobs=jobs)
    deployed = next(c for c in later.status["conditions"] if c["type"] == "Deployed")
    assert "rolled back" in deployed["message"]


def test_a_deploy_job_without_a_result_line_is_still_recorded() -> None:
    jobs = [deploy_job("3", "Complete")]
    p = model_plan(registry=plans.Registry("3"), deploy_jobs=jobs, rollout=None)
    assert p.status["lastRollout"]["jobName"] == "demo-deploy-v3"
    assert "endpointUrl" not in p.status
