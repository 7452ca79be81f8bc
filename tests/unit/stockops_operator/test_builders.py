"""Manifests built for the StockModel's workloads and the schedule's Jobs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockops_model.spec import (
    RetrainScheduleSpec,
    RolloutSpec,
    RuntimeSpec,
    ServingTarget,
    StockModelSpec,
)
from stockops_operator import builders
from stockops_operator.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "local"
MODEL = builders.Owner(kind="StockModel", name="demo", namespace="prod", uid="uid-1")
SCHEDULE = builders.Owner(kind="RetrainSchedule", name="demo-hourly", namespace="prod", uid="uid-2")


@pytest.fixture
def spec() -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / "stockmodel.yaml").read_text())
    wire: dict[str, Any] = StockModelSpec.model_validate(doc["spec"]).to_wire()
    return wire


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    (only,) = manifest["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def test_spec_configmap_holds_a_manifest_the_workloads_can_load(spec: dict[str, Any]) -> None:
    from stockops_model.spec import parse_resource

    cm = builders.build_spec_configmap(MODEL, spec)
    assert cm["metadata"]["name"] == "demo-spec"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    loaded = parse_resource(json.loads(cm["data"][builders.SPEC_KEY]))
    assert loaded.metadata.name == "demo"
    assert loaded.metadata.namespace == "prod"
    assert loaded.spec.to_wire() == spec
    # The uid travels too: a workload can make what it creates owned by the model.
    assert (loaded.metadata.model_extra or {})["uid"] == "uid-1"


def test_spec_hash_changes_with_the_spec(spec: dict[str, Any]) -> None:
    a = builders.build_spec_configmap(MODEL, spec)
    b = builders.build_spec_configmap(MODEL, {**spec, "horizon": 5})
    key = builders.ANNOTATION_SPEC_HASH
    assert a["metadata"]["annotations"][key] != b["metadata"]["annotations"][key]
    assert a == builders.build_spec_configmap(MODEL, spec)


@pytest.mark.parametrize("workload", ["feed", "sink"])
def test_deployments_run_the_workload_on_the_mounted_spec(workload: str) -> None:
    build = getattr(builders, f"build_{workload}_deployment")
    dep = build(MODEL, Settings(workload_image="img:1"), "abc")
    assert dep["metadata"]["name"] == f"demo-{workload}"
    assert dep["metadata"]["ownerReferences"] == [MODEL.reference()]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for key, value in dep["spec"]["selector"]["matchLabels"].items():
        assert labels[key] == value
    assert (
        dep["spec"]["template"]["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH] == "abc"
    )
    c = container(dep)
    assert c["image"] == "img:1"
    assert [c["command"][0], *c["args"]] == [
        "stockops",
        "--log-json",
        workload,
        "-f",
        builders.SPEC_FILE,
    ]
    assert c["resources"] == Settings().resources[workload]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[builders.SPEC_DIR] == "spec"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spec"]["configMap"]["name"] == "demo-spec"


def test_pods_are_restricted() -> None:
    dep = builders.build_feed_deployment(MODEL, Settings(), "abc")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(dep)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_workload_identity_label_only_when_enabled() -> None:
    off = builders.build_feed_deployment(MODEL, Settings(), "h")
    on = builders.build_feed_deployment(MODEL, Settings(azure_workload_identity=True), "h")
    assert builders.AZURE_IDENTITY_LABEL not in off["spec"]["template"]["metadata"]["labels"]
    assert on["spec"]["template"]["metadata"]["labels"][builders.AZURE_IDENTITY_LABEL] == "true"
    # The selector must not depend on the setting, or toggling it would orphan Pods.
    assert on["spec"]["selector"] == off["spec"]["selector"]


def test_train_job_carries_schedule_limits_owner_and_its_own_name() -> None:
    spec = RetrainScheduleSpec.model_validate(
        {
            "modelRef": {"name": "demo"},
            "interval": "15m",
            "activeDeadlineSeconds": 900,
            "backoffLimit": 2,
        }
    )
    when = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    job = builders.build_train_job(
        name="demo-hourly-1767229200",
        schedule=SCHEDULE,
        spec=spec,
        settings=Settings(),
        scheduled=when,
    )
    assert job["metadata"]["ownerReferences"] == [SCHEDULE.reference()]
    assert job["metadata"]["annotations"] == {builders.ANNOTATION_SCHEDULED: "2026-01-01T01:00:00Z"}
    assert job["metadata"]["labels"][builders.LABEL_SCHEDULE] == "demo-hourly"
    assert job["metadata"]["labels"][builders.LABEL_MODEL] == "demo"
    assert job["metadata"]["labels"][builders.LABEL_TRIGGER] == "scheduled"
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert job["spec"]["ttlSecondsAfterFinished"] == Settings().job_ttl_seconds
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    assert sorted(rule["onExitCodes"]["values"]) == [3, 4]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = container(job)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["STOCKOPS_JOB_NAME"] == "demo-hourly-1767229200"
    assert c["args"][1] == "train"
    assert c["terminationMessagePath"] == builders.TERMINATION_LOG
    # The spec mounted is the StockModel's (the schedule has none of its own).
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["spec"]["configMap"]["name"] == "demo-spec"


def test_manual_train_job_is_marked_as_such() -> None:
    spec = RetrainScheduleSpec.model_validate({"modelRef": {"name": "demo"}, "interval": "15m"})
    job = builders.build_train_job(
        name="x", schedule=SCHEDULE, spec=spec, settings=Settings(), scheduled=None, run_now="r1"
    )
    assert job["metadata"]["annotations"] == {builders.ANNOTATION_RUN_NOW: "r1"}
    assert job["metadata"]["labels"][builders.LABEL_TRIGGER] == "manual"


def test_deploy_job_names_the_version() -> None:
    job = builders.build_deploy_job(
        name="demo-deploy-v3", model=MODEL, version="3", settings=Settings()
    )
    assert job["metadata"]["annotations"][builders.ANNOTATION_VERSION] == "3"
    assert job["metadata"]["ownerReferences"] == [MODEL.reference()]
    assert container(job)["args"][1] == "deploy"
    env = {e["name"]: e["value"] for e in container(job)["env"]}
    assert env["STOCKOPS_TARGET_VERSION"] == "3"
    # Only a target inside the cluster (KServe) gets the ServiceAccount token mounted.
    assert "automountServiceAccountToken" not in job["spec"]["template"]["spec"]
    kserve = builders.build_deploy_job(
        name="demo-deploy-v3",
        model=MODEL,
        version="3",
        settings=Settings(),
        target=ServingTarget.KSERVE,
    )
    assert kserve["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    # A KServe predictor runs the workload image: the deploy Job passes it on.
    assert env["STOCKOPS_WORKLOAD_IMAGE"] == Settings().workload_image
    # A rollout that failed (and was rolled back) is not run again by the Job controller.
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert sorted(rule["onExitCodes"]["values"]) == [3, 4, 6]


def test_deploy_deadline_covers_the_whole_rollout_policy() -> None:
    settings = Settings()
    small = RolloutSpec.model_validate({"canarySteps": [100], "readinessTimeoutSeconds": 60})
    assert builders.deploy_deadline_seconds(settings, small) == (
        settings.deploy_active_deadline_seconds
    )
    slow = RolloutSpec.model_validate(
        {"canarySteps": [10, 50, 100], "readinessTimeoutSeconds": 900, "stepWaitSeconds": 60}
    )
    # Three readiness waits, two observations, one rollback wait, five minutes of set-up.
    assert builders.deploy_deadline_seconds(settings, slow) == 4 * 900 + 2 * 60 + 300
    job = builders.build_deploy_job(
        name="demo-deploy-v3", model=MODEL, version="3", settings=settings, rollout=slow
    )
    assert job["spec"]["activeDeadlineSeconds"] == 4 * 900 + 2 * 60 + 300
    # Azure ML also waits for the endpoint to settle around every traffic update.
    assert builders.deploy_deadline_seconds(settings, slow, ServingTarget.AZUREML) == (
        3 * 4 * 900 + 2 * 60 + 300
    )


def test_spec_runtime_overrides_the_chart_defaults() -> None:
    runtime = RuntimeSpec.model_validate(
        {
            "image": "registry.example/stockops:2",
            "serviceAccountName": "forecaster",
            "azureClientId": "00000000-0000-0000-0000-000000000001",
            "env": [{"name": "KAFKA_PASSWORD", "secretName": "kafka", "key": "password"}],
            "train": {
                "resources": {"requests": {"cpu": "2"}},
                "env": [{"name": "KAFKA_PASSWORD", "secretName": "kafka-train", "key": "pw"}],
            },
        }
    )
    spec = RetrainScheduleSpec.model_validate({"modelRef": {"name": "demo"}, "interval": "15m"})
    job = builders.build_train_job(
        name="x",
        schedule=SCHEDULE,
        spec=spec,
        settings=Settings(),
        scheduled=None,
        run_now="r",
        runtime=runtime,
    )
    c = container(job)
    assert c["image"] == "registry.example/stockops:2"
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "forecaster"
    assert job["spec"]["template"]["metadata"]["labels"][builders.AZURE_IDENTITY_LABEL] == "true"
    env = {e["name"]: e for e in c["env"]}
    assert env["AZURE_CLIENT_ID"]["value"] == "00000000-0000-0000-0000-000000000001"
    # The train-specific Secret wins over the model-wide one of the same name.
    assert env["KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-train"
    # Given requests are merged over the defaults; limits stay the chart's.
    assert c["resources"]["requests"]["cpu"] == "2"
    assert (
        c["resources"]["requests"]["memory"] == Settings().resources["train"]["requests"]["memory"]
    )
    assert c["resources"]["limits"] == Settings().resources["train"]["limits"]
    # Other workloads of the same model keep the chart's resources.
    feed = builders.build_feed_deployment(MODEL, Settings(), "h", runtime)
    assert container(feed)["resources"] == Settings().resources["feed"]
