"""The kserve target's InferenceService, built and read without I/O.

`build_inference_service` turns a StockModel and a `Release` into the InferenceService
manifest (serving.kserve.io/v1beta1) the `kserve` target applies: a custom predictor
container running `stockops serve --model models:/NAME/VERSION` (one pinned version per
Knative revision), Knative deployment mode, and the `stockops.io/model-version` /
`stockops.io/previous-version` annotations. `PredictorState` reads back what a rollout
watches: the Ready condition, the revisions and the predictor's traffic split.

Limits: only the predictor is built (no transformer or explainer); fields are those of KServe
v0.17.0's schema (a unit test checks each one against its CRD, since the API server prunes
unknown fields silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stockops_model.deploy.base import Release
from stockops_model.spec import KServeSpec, StockModel

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
API_VERSION = f"{GROUP}/{VERSION}"
ANNOTATION_MODE = "serving.kserve.io/deploymentMode"
ANNOTATION_VERSION = "stockops.io/model-version"
ANNOTATION_PREVIOUS = "stockops.io/previous-version"
LABEL_MODEL = "stockops.io/model"
MANAGED_BY = "stockops-deploy"  # also the field manager of server-side apply
AZURE_IDENTITY_LABEL = "azure.workload.identity/use"
SERVE_PORT = 8080
CONTAINER_NAME = "kserve-container"  # the name KServe gives a custom predictor's container
PREDICT_PATH = "/v1/predict"


def isvc_namespace(model: StockModel) -> str:
    """Where the InferenceService lives: spec.serving.kserve.namespace, else the model's."""
    settings = model.spec.serving.kserve
    return (settings.namespace if settings else None) or model.metadata.namespace


def build_predictor(
    model: StockModel,
    release: Release,
    *,
    image: str,
    canary_percent: int | None = None,
) -> dict[str, Any]:
    """The predictor spec serving `release` (a custom container running `stockops serve`).

    Args:
        model: the StockModel (kserve settings, runtime image/identity/env/resources).
        release: the pinned version to serve.
        image: the workload image (the spec's runtime.image or the operator's default).
        canary_percent: `canaryTrafficPercent` of the new revision; None when it takes all.
    """
    runtime = model.spec.runtime
    settings = model.spec.serving.kserve or KServeSpec()
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["stockops"],
        "args": [
            "serve",
            "--model",
            release.model_uri,
            # Kubelet probes and KServe's queue proxy reach the pod's address, not loopback.
            "--host",
            "0.0.0.0",
            "--port",
            str(SERVE_PORT),
        ],
        "ports": [{"containerPort": SERVE_PORT, "protocol": "TCP"}],
        "env": runtime.container_env("serve", {"MLFLOW_TRACKING_URI": release.tracking_uri}),
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": SERVE_PORT},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if runtime.image_pull_policy is not None:
        container["imagePullPolicy"] = str(runtime.image_pull_policy)
    if runtime.serve is not None and runtime.serve.resources is not None:
        container["resources"] = runtime.serve.resources.to_wire()
    predictor: dict[str, Any] = {
        "minReplicas": settings.min_replicas,
        "maxReplicas": settings.max_replicas,
        "containers": [container],
    }
    account = settings.service_account_name or runtime.service_account_name
    if account is not None:
        predictor["serviceAccountName"] = account
    if runtime.azure_client_id is not None:
        predictor["labels"] = {AZURE_IDENTITY_LABEL: "true"}
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    return predictor


def build_inference_service(
    model: StockModel,
    release: Release,
    *,
    image: str,
    previous_version: str | None = None,
    canary_percent: int | None = None,
    predictor: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The InferenceService manifest serving `release` (no I/O).

    Args:
        model: the StockModel it serves.
        release: the version the predictor runs.
        image: the workload image.
        previous_version: the version fully rolled out before this one (an annotation, so a
            reader can tell what the canary is measured against and what a rollback restores).
        canary_percent: `canaryTrafficPercent`, or None for all traffic on the latest revision.
        predictor: a predictor spec to use instead of building one (a rollback restores the
            previous version's spec as it was); `canary_percent` still applies.
    """
    name = model.metadata.name
    annotations = {ANNOTATION_MODE: "Knative", ANNOTATION_VERSION: release.version}
    if previous_version is not None:
        annotations[ANNOTATION_PREVIOUS] = previous_version
    if predictor is None:
        spec = build_predictor(model, release, image=image, canary_percent=canary_percent)
    else:
        spec = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
        if canary_percent is not None:
            spec["canaryTrafficPercent"] = canary_percent
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": isvc_namespace(model),
        "labels": {
            "app.kubernetes.io/name": "stockops",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": "serve",
            "app.kubernetes.io/managed-by": MANAGED_BY,
            LABEL_MODEL: name,
        },
        "annotations": annotations,
    }
    uid = (model.metadata.model_extra or {}).get("uid")
    if uid and metadata["namespace"] == model.metadata.namespace:
        # Owned by the StockModel (the operator puts its uid in the mounted manifest), so the
        # garbage collector deletes the InferenceService with the model. Owners cannot be in
        # another namespace; blockOwnerDeletion would need rights on the model's finalizers.
        metadata["ownerReferences"] = [
            {
                "apiVersion": model.api_version,
                "kind": "StockModel",
                "name": name,
                "uid": str(uid),
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": spec},
    }


@dataclass(frozen=True)
class PredictorState:
    """What an InferenceService says about its predictor, read from spec and status."""

    version: str | None  # the annotation: the version the spec runs
    previous_version: str | None  # the annotation: the version rolled out before it
    canary_percent: int | None  # spec.predictor.canaryTrafficPercent
    ready: str | None  # the Ready condition's status: "True", "False", "Unknown" or None
    ready_message: str
    latest_created: str | None
    latest_ready: str | None
    latest_rolled_out: str | None
    traffic: dict[str, int]  # revision -> percent (summed: KServe may list one twice)
    url: str | None

    @classmethod
    def of(cls, isvc: Mapping[str, Any]) -> PredictorState:
        annotations = isvc.get("metadata", {}).get("annotations") or {}
        predictor = isvc.get("spec", {}).get("predictor") or {}
        status = isvc.get("status") or {}
        component = (status.get("components") or {}).get("predictor") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        traffic: dict[str, int] = {}
        for target in component.get("traffic") or []:
            revision = target.get("revisionName")
            if revision:
                traffic[revision] = traffic.get(revision, 0) + int(target.get("percent") or 0)
        url = status.get("url") or (status.get("address") or {}).get("url")
        canary = predictor.get("canaryTrafficPercent")
        return cls(
            version=annotations.get(ANNOTATION_VERSION),
            previous_version=annotations.get(ANNOTATION_PREVIOUS),
            canary_percent=None if canary is None else int(canary),
            ready=None if ready is None else str(ready.get("status")),
            ready_message=": ".join(
                str(ready[k]) for k in ("reason", "message") if ready and ready.get(k)
            ),
            latest_created=component.get("latestCreatedRevision"),
            latest_ready=component.get("latestReadyRevision"),
            latest_rolled_out=component.get("latestRolledoutRevision"),
            traffic=traffic,
            url=str(url) if url else None,
        )

    @property
    def stable_version(self) -> str | None:
        """The version fully rolled out: the spec's, unless a canary of it is in progress."""
        if self.latest_rolled_out is None:
            return None
        return self.previous_version if self.canary_percent is not None else self.version

    @property
    def serving_version(self) -> str | None:
        """The version taking most traffic (the new one from a 50 % canary on)."""
        canary = self.latest_created
        if (
            self.canary_percent is not None
            and canary is not None
            and canary != self.latest_rolled_out
            and self.traffic.get(canary, 0) >= 50
        ):
            return self.version
        return self.stable_version

    @property
    def endpoint_url(self) -> str | None:
        return self.url.rstrip("/") + PREDICT_PATH if self.url else None
