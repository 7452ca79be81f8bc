"""What the handlers read from kopf's indexes instead of the API server: a schedule's
StockModel, and the workloads a StockModel's timer tick checks."""

from __future__ import annotations

from typing import Any, cast

import httpx

from stockops_model.spec import StockModelSpec
from stockops_operator import appliers, builders, plans
from stockops_operator.handlers import schedules
from stockops_operator.kubeapi import STOCKMODELS, KubeApi, Resource
from stockops_operator.runtime import Runtime
from stockops_operator.settings import Settings


class FakeKube:
    """Answers GETs from a dict and records them (the API server is the boundary here)."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.gets: list[str] = []

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append(f"{resource.plural}/{namespace}/{name}")
        return self.objects.get(name)


def body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "stockops.io/v1alpha1",
        "kind": "StockModel",
        "metadata": {"name": name, "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
        "spec": {"tickers": ["AAPL"], "runtime": {"image": "a:1"}},
        "status": {"conditions": []},
    }


def runtime(kube: FakeKube) -> Runtime:
    return Runtime(
        settings=Settings(),
        kube=cast(KubeApi, kube),
        http=cast(httpx.AsyncClient, None),
    )


def test_snapshot_keeps_identity_and_spec_and_does_not_alias_the_watched_body() -> None:
    watched = body("demo")
    snapshot = schedules.model_snapshot(watched)
    watched["spec"]["runtime"]["image"] = "b:2"  # kopf replaces bodies as events arrive

    assert snapshot["metadata"] == {"name": "demo", "namespace": "ns", "uid": "u-1"}
    assert snapshot["spec"]["runtime"]["image"] == "a:1"
    assert "status" not in snapshot  # status is read fresh before it is written


async def test_a_model_in_the_index_is_read_without_an_api_call() -> None:
    kube = FakeKube({"demo": body("demo")})
    index = {("ns", "demo"): [schedules.model_snapshot(body("demo"))]}

    model = await appliers.read_indexed(runtime(kube), STOCKMODELS, index, "ns", "demo")

    assert model is not None
    assert model["metadata"]["name"] == "demo"
    assert kube.gets == []


async def test_a_model_the_index_does_not_hold_yet_is_fetched() -> None:
    kube = FakeKube({"fresh": body("fresh")})

    found = await appliers.read_indexed(runtime(kube), STOCKMODELS, {}, "ns", "fresh")
    missing = await appliers.read_indexed(runtime(kube), STOCKMODELS, {}, "ns", "absent")

    assert found is not None
    assert found["metadata"]["name"] == "fresh"
    assert missing is None
    assert kube.gets == ["stockmodels/ns/fresh", "stockmodels/ns/absent"]


class FakeWorkloadKube(FakeKube):
    """Also answers server-side applies, recording them (returns the manifest as stored)."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__(objects)
        self.applied: list[str] = []

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(manifest["metadata"]["name"])
        self.objects[manifest["metadata"]["name"]] = manifest
        return manifest


def model_spec() -> StockModelSpec:
    return StockModelSpec.model_validate(
        {
            "tickers": ["AAPL"],
            "source": {"type": "synthetic"},
            "storage": {"path": "bars"},
            "mlflow": {"trackingUri": "http://127.0.0.1:9", "modelName": "demo"},
        }
    )


def owned(spec: StockModelSpec, owner: builders.Owner, available: int) -> dict[str, dict[str, Any]]:
    """The ConfigMap and Deployments as the API server holds them after an apply."""
    configmap = builders.build_spec_configmap(owner, spec.to_wire())
    digest = configmap["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH]
    objects = {configmap["metadata"]["name"]: configmap}
    for build in (builders.build_feed_deployment, builders.build_sink_deployment):
        deployment = build(owner, Settings(), digest)
        deployment["status"] = {"availableReplicas": available}
        objects[deployment["metadata"]["name"]] = deployment
    return objects


def indexed(objects: dict[str, dict[str, Any]]) -> appliers.Workloads:
    snaps = {n: appliers.workload_snapshot(o) for n, o in objects.items()}
    return appliers.Workloads(
        configmaps={("ns", n): [s] for n, s in snaps.items() if n.endswith("-spec")},
        deployments={("ns", n): [s] for n, s in snaps.items() if not n.endswith("-spec")},
    )


OWNER = builders.Owner(kind="StockModel", name="demo", namespace="ns", uid="u-1")


async def test_a_tick_checks_indexed_fresh_workloads_without_an_api_call() -> None:
    objects = owned(model_spec(), OWNER, available=1)
    kube = FakeWorkloadKube(dict(objects))

    found = await appliers.ensure_workloads(
        runtime(kube), OWNER, model_spec(), force=False, known=indexed(objects)
    )

    assert kube.gets == []
    assert kube.applied == []
    assert {w: (d or {}).get("status") for w, d in found.items()} == {
        "feed": {"availableReplicas": 1},
        "sink": {"availableReplicas": 1},
    }


async def test_a_tick_reads_and_reapplies_what_the_index_lacks_or_holds_stale() -> None:
    objects = owned(model_spec(), OWNER, available=0)
    known = indexed({n: o for n, o in objects.items() if not n.endswith("-sink")})
    stale = owned(model_spec(), OWNER, available=0)
    stale["demo-feed"]["spec"]["template"]["metadata"]["annotations"][
        builders.ANNOTATION_SPEC_HASH
    ] = "old"
    kube = FakeWorkloadKube({n: o for n, o in objects.items() if not n.endswith("-sink")})

    await appliers.ensure_workloads(runtime(kube), OWNER, model_spec(), force=False, known=known)
    assert kube.gets == ["deployments/ns/demo-sink"]  # not indexed yet: asked, absent
    assert sorted(kube.applied) == ["demo-feed", "demo-sink", "demo-spec"]

    kube = FakeWorkloadKube(dict(stale))
    await appliers.ensure_workloads(
        runtime(kube), OWNER, model_spec(), force=False, known=indexed(stale)
    )
    assert sorted(kube.applied) == ["demo-feed", "demo-sink", "demo-spec"]


def model_body() -> dict[str, Any]:
    return {**body("demo"), "spec": model_spec().to_wire()}


async def test_a_schedule_checks_its_models_spec_configmap_in_the_index_first() -> None:
    configmap = owned(model_spec(), OWNER, available=1)["demo-spec"]
    index = {("ns", "demo-spec"): [appliers.workload_snapshot(configmap)]}
    kube = FakeKube({})

    state = await schedules.check_model(runtime(kube), index, "ns", "demo", model_body())

    assert state.ready
    assert kube.gets == []


async def test_a_spec_configmap_the_index_lacks_is_fetched_and_a_missing_one_holds_runs() -> None:
    configmap = owned(model_spec(), OWNER, available=1)["demo-spec"]
    present = FakeKube({"demo-spec": configmap})
    absent = FakeKube({})

    found = await schedules.check_model(runtime(present), {}, "ns", "demo", model_body())
    missing = await schedules.check_model(runtime(absent), {}, "ns", "demo", model_body())
    unknown = await schedules.check_model(runtime(absent), {}, "ns", "demo", None)

    assert found.ready
    assert present.gets == ["configmaps/ns/demo-spec"]
    assert missing.reason == plans.MODEL_SPEC_PENDING
    assert unknown.reason == plans.MODEL_NOT_FOUND
    assert absent.gets == ["configmaps/ns/demo-spec"]  # no ConfigMap is looked for without a model
