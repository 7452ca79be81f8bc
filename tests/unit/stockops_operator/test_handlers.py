"""The handlers' own helpers: how a RetrainSchedule finds its StockModel (kopf index first)."""

from __future__ import annotations

from typing import Any, cast

import httpx

from stockops_operator.handlers import schedules
from stockops_operator.kubeapi import KubeApi, Resource
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

    model = await schedules.read_model(runtime(kube), index, "ns", "demo")

    assert model is not None
    assert model["metadata"]["name"] == "demo"
    assert kube.gets == []


async def test_a_model_the_index_does_not_hold_yet_is_fetched() -> None:
    kube = FakeKube({"fresh": body("fresh")})

    found = await schedules.read_model(runtime(kube), {}, "ns", "fresh")
    missing = await schedules.read_model(runtime(kube), {}, "ns", "absent")

    assert found is not None
    assert found["metadata"]["name"] == "fresh"
    assert missing is None
    assert kube.gets == ["stockmodels/ns/fresh", "stockmodels/ns/absent"]
