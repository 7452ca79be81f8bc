"""Small async steps that send built objects to the API server and read back what is needed.

Each function does one thing a handler needs (ensure the workloads, create a Job, delete
Jobs, read a train result, write status, post Events); the decisions are made before, in
`plans.py`, and the manifests come from `builders.py`.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from stockops_model.spec import StockModelSpec
from stockops_operator import builders, registry
from stockops_operator.kubeapi import CONFIGMAPS, DEPLOYMENTS, JOBS, PODS, KubeApi, Resource
from stockops_operator.plans import Event
from stockops_operator.runtime import Runtime
from stockops_operator.status import (
    DeployResult,
    TrainResult,
    parse_deploy_result,
    parse_train_result,
    termination_message,
)

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")

# kopf index contents: (namespace, name) -> the snapshots of that object (one, or none).
ObjectIndex = Mapping[tuple[str, str], Iterable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Workloads:
    """The ConfigMaps and Deployments the operator owns, as kopf's watches last saw them."""

    configmaps: ObjectIndex = field(default_factory=dict)
    deployments: ObjectIndex = field(default_factory=dict)


def workload_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a timer tick needs of an owned ConfigMap or Deployment: its identity, the spec
    hash on it (a ConfigMap's) or on its Pod template (a Deployment's), and its status
    (availability); detached from kopf's body."""
    meta = body.get("metadata") or {}
    template = ((body.get("spec") or {}).get("template") or {}).get("metadata") or {}
    own = meta.get("annotations") or {}
    hashes = {k: v for k, v in own.items() if k == builders.ANNOTATION_SPEC_HASH}
    return {
        "metadata": {
            **{k: meta.get(k) for k in ("name", "namespace", "uid")},
            "annotations": hashes,
        },
        "spec": {
            "template": {"metadata": {"annotations": dict(template.get("annotations") or {})}}
        },
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


async def read_indexed(
    rt: Runtime, resource: Resource, known: ObjectIndex, namespace: str, name: str
) -> Mapping[str, Any] | None:
    """An object from kopf's index `known`, else from the API server; None if it does not
    exist. Absent from the index may only mean not seen yet, so that is never taken as gone."""
    for found in known.get((namespace, name), ()):
        return found
    return await rt.kube.get(resource, namespace, name)


async def ensure_workloads(
    rt: Runtime,
    owner: builders.Owner,
    spec: StockModelSpec,
    *,
    force: bool,
    known: Workloads | None = None,
) -> dict[str, Mapping[str, Any] | None]:
    """Make the spec ConfigMap and the feed and sink Deployments match the spec.

    With `force` (the spec may have changed) all three are applied at once; without it (a
    timer tick), objects that exist with the current spec hash are left alone: no write, and
    no API call for the objects `known` (kopf's indexes) holds; a GET for the others.

    Returns:
        The `feed` and `sink` Deployments as they are now.
    """
    known = known or Workloads()
    configmap = builders.build_spec_configmap(owner, spec.to_wire())
    digest = configmap["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH]
    deployments = {
        "feed": builders.build_feed_deployment(owner, rt.settings, digest, spec.runtime),
        "sink": builders.build_sink_deployment(owner, rt.settings, digest, spec.runtime),
    }
    current: dict[str, Mapping[str, Any] | None] = {}
    if not force:
        for workload, manifest in deployments.items():
            current[workload] = await read_indexed(
                rt, DEPLOYMENTS, known.deployments, owner.namespace, manifest["metadata"]["name"]
            )
        fresh = all(
            d is not None
            and (d["spec"]["template"]["metadata"].get("annotations") or {}).get(
                builders.ANNOTATION_SPEC_HASH
            )
            == digest
            for d in current.values()
        )
        cm_name = configmap["metadata"]["name"]
        if fresh and (
            await read_indexed(rt, CONFIGMAPS, known.configmaps, owner.namespace, cm_name)
            is not None
        ):
            return current
    # Server-side apply is idempotent: applying what is already there changes nothing.
    await rt.kube.apply(configmap)
    for workload, manifest in deployments.items():
        current[workload] = await rt.kube.apply(manifest)
    return current


async def owned_jobs(
    kube: KubeApi, namespace: str, selector: str, uid: str
) -> list[dict[str, Any]]:
    """Jobs matching `selector` whose controller owner is the object with `uid`."""
    jobs = await kube.list_objects(JOBS, namespace, selector)
    return [
        j
        for j in jobs
        if any(ref.get("uid") == uid for ref in j["metadata"].get("ownerReferences") or [])
        and not j["metadata"].get("deletionTimestamp")
    ]


async def create_job(kube: KubeApi, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """Create a Job and return it; None if a Job of that name exists already (a run is never
    duplicated)."""
    return await kube.create(manifest)


async def delete_jobs(kube: KubeApi, namespace: str, names: Iterable[str]) -> None:
    """Delete Jobs; their Pods follow through the garbage collector."""
    for name in names:
        await kube.delete(JOBS, namespace, name)


async def read_train_result(
    rt: Runtime, job: Mapping[str, Any], model: Mapping[str, Any] | None
) -> TrainResult | None:
    """The train result of a finished Job: its Pod's termination message, else the MLflow run.

    Args:
        rt: the runtime.
        job: the finished train Job.
        model: the StockModel it trained (for the tracking URI), if it still exists.
    """
    async for message in termination_messages(rt.kube, job):
        result = parse_train_result(message)
        if result is not None:
            return result
    if model is None:
        return None
    mlflow = (model.get("spec") or {}).get("mlflow") or {}
    uri = str(mlflow.get("trackingUri") or "")
    experiment = str(mlflow.get("experiment") or mlflow.get("modelName") or "")
    text = await registry.run_result_of_job(rt.http, uri, experiment, job["metadata"]["name"])
    return None if text is None else parse_train_result(text)


async def read_deploy_result(kube: KubeApi, job: Mapping[str, Any]) -> DeployResult | None:
    """The rollout result of a finished deploy Job, from its Pods' termination messages."""
    async for message in termination_messages(kube, job):
        result = parse_deploy_result(message)
        if result is not None:
            return result
    return None


async def termination_messages(kube: KubeApi, job: Mapping[str, Any]) -> AsyncIterator[str]:
    """The non-empty termination messages of a Job's Pods, newest Pod first."""
    namespace = job["metadata"]["namespace"]
    name = job["metadata"]["name"]
    for label in JOB_NAME_LABELS:
        pods = await kube.list_objects(PODS, namespace, f"{label}={name}")
        pods.sort(key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))
        for pod in reversed(pods):
            message = termination_message(pod)
            if message:
                yield message


async def write_status(
    kube: KubeApi,
    resource: Resource,
    body: Mapping[str, Any],
    desired: Mapping[str, Any],
) -> bool:
    """Merge `desired` into the object's status if anything differs; True if it wrote."""
    current = body.get("status") or {}
    changes = {k: v for k, v in desired.items() if current.get(k) != v}
    if not changes:
        return False
    meta = body["metadata"]
    await kube.patch_status(resource, meta["namespace"], meta["name"], changes)
    return True


def post_events(body: kopf.Body, events: Iterable[Event]) -> None:
    """Post Events on the object (kopf sends them in the background)."""
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
