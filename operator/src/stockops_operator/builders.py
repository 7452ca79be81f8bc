"""Kubernetes objects the operator creates, built by pure `build_*` functions.

Every function returns a plain manifest (a dict) from the custom resource and the operator
settings, with no I/O, so each one is unit-tested by looking at what it returns. Appliers in
`appliers.py` send them to the API server.

What every workload gets:
* owner references to the custom resource that caused it (the garbage collector removes it
  with its owner),
* the recommended `app.kubernetes.io/*` labels and `stockops.io/*` labels to select by,
* the StockModel manifest mounted from a ConfigMap at `/etc/stockops/stockmodel.json`
  (`stockops <workload> -f` that file), with a hash of it on the Pod template so a spec change
  rolls the Deployments,
* a restricted security context (non-root, read-only root file system, no capabilities,
  RuntimeDefault seccomp) and an emptyDir at /tmp,
* the Azure workload identity label when the settings or the spec's `runtime.azureClientId`
  turn it on.

Image, pull policy, ServiceAccount, resources and Secret-backed environment variables come
from the StockModel's `spec.runtime` where it sets them, else from the settings (the chart's
values). Limits: one container per Pod.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stockops_model.errors import ExitCode
from stockops_model.spec import (
    API_VERSION,
    RetrainScheduleSpec,
    RolloutSpec,
    RuntimeSpec,
    ServingTarget,
    WorkloadRuntimeSpec,
)
from stockops_operator.schedules import format_time
from stockops_operator.settings import Settings

SPEC_DIR = "/etc/stockops"
SPEC_KEY = "stockmodel.json"
SPEC_FILE = f"{SPEC_DIR}/{SPEC_KEY}"
TERMINATION_LOG = "/dev/termination-log"

LABEL_MODEL = "stockops.io/model"
LABEL_SCHEDULE = "stockops.io/schedule"
LABEL_TRIGGER = "stockops.io/trigger"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_SCHEDULED = "stockops.io/scheduled-time"
ANNOTATION_RUN_NOW = "stockops.io/run-now"
ANNOTATION_VERSION = "stockops.io/model-version"
ANNOTATION_SPEC_HASH = "stockops.io/spec-hash"
AZURE_IDENTITY_LABEL = "azure.workload.identity/use"

# Exit codes that say the input is wrong: retrying the Pod cannot help, so fail the Job now.
NON_RETRYABLE_EXIT_CODES = [int(ExitCode.INVALID_SPEC), int(ExitCode.INVALID_DATA)]
# A deploy Job also stops after a failed rollout (exit 6): it was rolled back (or, with
# autoRollback off, left for a person), and running it again would send users to the
# version that just failed once more.
DEPLOY_NON_RETRYABLE_EXIT_CODES = [*NON_RETRYABLE_EXIT_CODES, int(ExitCode.ROLLOUT_FAILED)]


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns what is built (from a kopf handler's `body`)."""

    kind: str
    name: str
    namespace: str
    uid: str
    api_version: str = API_VERSION

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(
            kind=str(body["kind"]),
            name=str(meta["name"]),
            namespace=str(meta["namespace"]),
            uid=str(meta["uid"]),
            api_version=str(body.get("apiVersion", API_VERSION)),
        )

    def reference(self) -> dict[str, Any]:
        """A controller owner reference; blockOwnerDeletion makes foreground deletion wait."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _labels(model: str, component: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "stockops",
        "app.kubernetes.io/instance": model,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/managed-by": "stockops-operator",
        LABEL_MODEL: model,
    }
    labels.update(extra or {})
    return labels


def spec_configmap_name(model: str) -> str:
    """Name of the ConfigMap holding the manifest of StockModel `model`."""
    return f"{model}-spec"


def build_spec_manifest(
    name: str, namespace: str, uid: str | None, spec: Mapping[str, Any]
) -> dict[str, Any]:
    """The StockModel manifest the workloads read with `-f` (no status, no server fields).

    The uid lets a workload make what it creates in the cluster (a KServe InferenceService)
    owned by the StockModel, so deleting the model deletes it too.
    """
    metadata = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return {
        "apiVersion": API_VERSION,
        "kind": "StockModel",
        "metadata": metadata,
        "spec": dict(spec),
    }


def spec_hash(manifest: Mapping[str, Any]) -> str:
    """A short stable hash of a manifest, put on Pod templates so a change rolls them."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def build_spec_configmap(owner: Owner, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap `<model>-spec` with the StockModel manifest as `stockmodel.json`."""
    manifest = build_spec_manifest(owner.name, owner.namespace, owner.uid, spec)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": spec_configmap_name(owner.name),
            "namespace": owner.namespace,
            "labels": _labels(owner.name, "spec"),
            "annotations": {ANNOTATION_SPEC_HASH: spec_hash(manifest)},
            "ownerReferences": [owner.reference()],
        },
        "data": {SPEC_KEY: json.dumps(manifest, indent=2, sort_keys=True)},
    }


def _resources(settings: Settings, runtime: RuntimeSpec, workload: str) -> dict[str, Any]:
    out = {k: dict(v) for k, v in settings.resources[workload].items()}
    own: WorkloadRuntimeSpec | None = getattr(runtime, workload)
    if own is not None and own.resources is not None:
        for part, given in own.resources.to_wire().items():
            out.setdefault(part, {}).update(given)
    return out


def _pod_spec(
    settings: Settings,
    runtime: RuntimeSpec,
    *,
    model: str,
    workload: str,
    env: Mapping[str, str],
    restart_policy: str,
) -> dict[str, Any]:
    return {
        "serviceAccountName": runtime.service_account_name or settings.workload_service_account,
        "restartPolicy": restart_policy,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "fsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": workload,
                "image": runtime.image or settings.workload_image,
                "imagePullPolicy": runtime.image_pull_policy or settings.image_pull_policy,
                "command": [settings.workload_command],
                "args": ["--log-json", workload, "-f", SPEC_FILE],
                "env": runtime.container_env(workload, env),
                "resources": _resources(settings, runtime, workload),
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "spec", "configMap": {"name": spec_configmap_name(model)}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }


def _pod_labels(
    settings: Settings, runtime: RuntimeSpec, labels: Mapping[str, str]
) -> dict[str, str]:
    out = dict(labels)
    if settings.azure_workload_identity or runtime.azure_client_id is not None:
        out[AZURE_IDENTITY_LABEL] = "true"
    return out


def _build_deployment(
    owner: Owner, settings: Settings, runtime: RuntimeSpec, workload: str, manifest_hash: str
) -> dict[str, Any]:
    labels = _labels(owner.name, workload)
    selector = {LABEL_MODEL: owner.name, LABEL_COMPONENT: workload}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{owner.name}-{workload}",
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "replicas": 1,
            # One writer at a time: two feeds would publish every bar twice.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": _pod_labels(settings, runtime, labels),
                    "annotations": {ANNOTATION_SPEC_HASH: manifest_hash},
                },
                "spec": _pod_spec(
                    settings,
                    runtime,
                    model=owner.name,
                    workload=workload,
                    env={"STOCKOPS_MODEL": owner.name},
                    restart_policy="Always",
                ),
            },
        },
    }


def build_feed_deployment(
    owner: Owner, settings: Settings, manifest_hash: str, runtime: RuntimeSpec | None = None
) -> dict[str, Any]:
    """The `<model>-feed` Deployment: `stockops feed`, publishing bars to Kafka."""
    return _build_deployment(owner, settings, runtime or RuntimeSpec(), "feed", manifest_hash)


def build_sink_deployment(
    owner: Owner, settings: Settings, manifest_hash: str, runtime: RuntimeSpec | None = None
) -> dict[str, Any]:
    """The `<model>-sink` Deployment: `stockops sink`, landing bars in storage."""
    return _build_deployment(owner, settings, runtime or RuntimeSpec(), "sink", manifest_hash)


def _build_job(
    *,
    name: str,
    owner: Owner,
    model: str,
    workload: str,
    settings: Settings,
    runtime: RuntimeSpec,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    env: Mapping[str, str],
    backoff_limit: int,
    active_deadline_seconds: int,
    fail_on: Sequence[int] = NON_RETRYABLE_EXIT_CODES,
) -> dict[str, Any]:
    all_labels = _labels(model, workload, labels)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": all_labels,
            "annotations": dict(annotations),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": workload,
                            "operator": "In",
                            "values": list(fail_on),
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": _pod_labels(settings, runtime, all_labels)},
                "spec": _pod_spec(
                    settings,
                    runtime,
                    model=model,
                    workload=workload,
                    env={"STOCKOPS_MODEL": model, "STOCKOPS_JOB_NAME": name, **env},
                    restart_policy="Never",
                ),
            },
        },
    }


def build_train_job(
    *,
    name: str,
    schedule: Owner,
    spec: RetrainScheduleSpec,
    settings: Settings,
    scheduled: datetime | None,
    run_now: str | None = None,
    runtime: RuntimeSpec | None = None,
) -> dict[str, Any]:
    """A train Job of a RetrainSchedule, owned by the schedule.

    Args:
        name: the Job name (see `schedules.scheduled_job_name` / `manual_job_name`).
        schedule: the RetrainSchedule.
        spec: its spec (modelRef, activeDeadlineSeconds, backoffLimit).
        settings: operator settings.
        scheduled: the scheduled instant, for a scheduled run.
        run_now: the run-now annotation's value, for a run started by hand.
        runtime: the StockModel's `spec.runtime` (image, identity, resources).
    """
    annotations = {}
    if scheduled is not None:
        annotations[ANNOTATION_SCHEDULED] = format_time(scheduled)
    if run_now is not None:
        annotations[ANNOTATION_RUN_NOW] = run_now
    return _build_job(
        name=name,
        owner=schedule,
        model=spec.model_ref.name,
        workload="train",
        settings=settings,
        runtime=runtime or RuntimeSpec(),
        labels={
            LABEL_SCHEDULE: schedule.name,
            LABEL_TRIGGER: "manual" if run_now is not None else "scheduled",
        },
        annotations=annotations,
        env={},
        backoff_limit=spec.backoff_limit,
        active_deadline_seconds=spec.active_deadline_seconds,
    )


def deploy_deadline_seconds(
    settings: Settings, rollout: RolloutSpec, target: ServingTarget = ServingTarget.LOCAL
) -> int:
    """The deploy Job's `activeDeadlineSeconds`: the chart's, or the policy's worst case.

    Worst case: the readiness waits of every canary step, the observation time between
    steps, and the waits of a rollback, plus five minutes for downloads and registration.
    Azure ML waits up to three times per step (the endpoint settling before and after a
    traffic update, then the deployment), KServe and the local server once. Killing a
    rollout mid-way would leave it half shifted, so the deadline leaves it room to finish.
    """
    steps = len(rollout.canary_steps)
    waits_per_step = 3 if target == ServingTarget.AZUREML else 1
    worst = (
        (steps + 1) * waits_per_step * rollout.readiness_timeout_seconds
        + max(steps - 1, 0) * rollout.step_wait_seconds
        + 300
    )
    return max(settings.deploy_active_deadline_seconds, worst)


def build_deploy_job(
    *,
    name: str,
    model: Owner,
    version: str,
    settings: Settings,
    runtime: RuntimeSpec | None = None,
    rollout: RolloutSpec | None = None,
    target: ServingTarget = ServingTarget.LOCAL,
) -> dict[str, Any]:
    """The deploy Job rolling `version` (the MLflow production version) out; owned by the model.

    The Job also gets the workload image (`STOCKOPS_WORKLOAD_IMAGE`: a KServe predictor runs
    it) and an `activeDeadlineSeconds` long enough for the whole rollout policy, see
    `deploy_deadline_seconds`. A target in the cluster (KServe) gets the Pod's ServiceAccount
    token mounted; the workload ServiceAccount does not mount one.
    """
    runtime = runtime or RuntimeSpec()
    job = _build_job(
        name=name,
        owner=model,
        model=model.name,
        workload="deploy",
        settings=settings,
        runtime=runtime or RuntimeSpec(),
        labels={},
        annotations={ANNOTATION_VERSION: version},
        env={
            "STOCKOPS_TARGET_VERSION": version,
            "STOCKOPS_WORKLOAD_IMAGE": runtime.image or settings.workload_image,
        },
        backoff_limit=settings.deploy_backoff_limit,
        active_deadline_seconds=deploy_deadline_seconds(settings, rollout or RolloutSpec(), target),
        fail_on=DEPLOY_NON_RETRYABLE_EXIT_CODES,
    )
    if target == ServingTarget.KSERVE:
        job["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    return job
