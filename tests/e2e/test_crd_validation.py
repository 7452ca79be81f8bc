"""The real kube-apiserver enforces the CRDs: every CEL rule and every bound, naming the field.

The CRDs from crds/ are installed into the session's control plane. Each CEL rule has its own
test (an invalid object is refused with HTTP 422 and the message names the field); each bound in
the schemas (minimum, maximum, lengths, item counts, patterns, enums) gets a generated case from
`stockops_model.crds.bound_cases`, the same cases the unit tests feed to pydantic. The server's
defaults must equal pydantic's, and `kubectl get` columns, short names and the `stockops`
category must work.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from stockops_model import crds, spec
from stockops_model.testing.kube import KubeCluster

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
PLURALS = {"StockModel": "stockmodels", "RetrainSchedule": "retrainschedules"}


@pytest.fixture(scope="module")
def crds_installed(kube_cluster: KubeCluster) -> KubeCluster:
    for definition in crds.DEFINITIONS:
        kube_cluster.apply((ROOT / "crds" / definition.file_name).read_text())
    return kube_cluster


@pytest.fixture
def objects(crds_installed: KubeCluster) -> Any:
    return client.CustomObjectsApi(crds_installed.api_client())


def _example(kind: str, flavour: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "examples" / flavour / f"{kind.lower()}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _documents(kind: str) -> list[dict[str, Any]]:
    """Valid documents that between them set every optional field (as in tests/unit)."""
    return crds.covering_documents(kind, ROOT)


def _create(objects: Any, namespace: str, document: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(document)
    body["metadata"]["namespace"] = namespace
    created: dict[str, Any] = objects.create_namespaced_custom_object(
        spec.GROUP,
        spec.VERSION,
        namespace,
        PLURALS[body["kind"]],
        body,
        field_validation="Strict",
    )
    return created


def _refusal(objects: Any, namespace: str, document: dict[str, Any]) -> str:
    """Create `document`, expect the API server to refuse it; return its message."""
    with pytest.raises(ApiException) as caught:
        _create(objects, namespace, document)
    assert caught.value.status in (400, 422), caught.value.body
    message = json.loads(caught.value.body or "{}")["message"]
    assert isinstance(message, str)
    return message


# --------------------------------------------------------------------------- accepted objects


@pytest.mark.parametrize("kind", PLURALS)
def test_examples_are_accepted(objects: Any, namespace: str, kind: str) -> None:
    for document in _documents(kind):
        created = _create(objects, namespace, document)
        assert created["spec"]["modelRef" if kind == "RetrainSchedule" else "tickers"]


@pytest.mark.parametrize(
    ("kind", "minimal"),
    [
        (
            "StockModel",
            {"tickers": ["SPY"], "storage": {"path": "/data"}, "mlflow": {"modelName": "m"}},
        ),
        ("RetrainSchedule", {"modelRef": {"name": "demo"}, "interval": "15m"}),
    ],
)
def test_server_defaults_equal_pydantic_defaults(
    objects: Any, namespace: str, kind: str, minimal: dict[str, Any]
) -> None:
    document = {
        "apiVersion": spec.API_VERSION,
        "kind": kind,
        "metadata": {"name": "minimal"},
        "spec": minimal,
    }
    stored = _create(objects, namespace, document)
    model = spec.StockModelSpec if kind == "StockModel" else spec.RetrainScheduleSpec
    assert stored["spec"] == model.model_validate(minimal).to_wire()


# --------------------------------------------------------------------------- CEL rules


def _edit(kind: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = _example(kind, "cluster")
    change(document["spec"])
    return document


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets a dotted path of the spec (None removes it)."""

    def change(spec_doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = spec_doc
        for key in parents:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value

    return change


def _both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(spec_doc: dict[str, Any]) -> None:
        for one in changes:
            one(spec_doc)

    return change


# (kind, edit, field path the server names, words of the rule's message)
CEL_CASES: dict[str, tuple[str, Callable[[dict[str, Any]], None], str, str]] = {
    "schedule and interval both set": (
        "RetrainSchedule",
        _set("interval", "15m"),
        "spec",
        "set exactly one of schedule and interval",
    ),
    "neither schedule nor interval": (
        "RetrainSchedule",
        _set("schedule", None),
        "spec",
        "set exactly one of schedule and interval",
    ),
    "unknown time zone": (
        "RetrainSchedule",
        _set("timeZone", "Mars/Olympus_Mons"),
        "spec.timeZone",
        "time zone",
    ),
    "Local is not a time zone": (
        "RetrainSchedule",
        _set("timeZone", "Local"),
        "spec.timeZone",
        "timeZone must be an IANA time zone",
    ),
    "interval of zero": (
        "RetrainSchedule",
        _both(_set("schedule", None), _set("interval", "0m")),
        "spec.interval",
        "interval must be positive",
    ),
    "storage with both Blob and path": (
        "StockModel",
        _set("storage.path", "/data"),
        "spec.storage.path",
        "set exactly one of account+container (Blob) or path (local)",
    ),
    "storage account without container": (
        "StockModel",
        _set("storage.container", None),
        "spec.storage.container",
        "account and container must be set together",
    ),
    "canary steps not increasing": (
        "StockModel",
        _set("serving.rollout.canarySteps", [50, 10, 100]),
        "spec.serving.rollout.canarySteps",
        "canarySteps must be strictly increasing",
    ),
    "canary steps repeated": (
        "StockModel",
        _set("serving.rollout.canarySteps", [10, 10, 100]),
        "spec.serving.rollout.canarySteps",
        "canarySteps must be strictly increasing",
    ),
    "canary steps not ending at 100": (
        "StockModel",
        _set("serving.rollout.canarySteps", [10, 50]),
        "spec.serving.rollout.canarySteps",
        "the last of canarySteps must be 100",
    ),
    "azureml target without settings": (
        "StockModel",
        _set("serving.azureml", None),
        "spec.serving.azureml",
        "target azureml requires the azureml settings",
    ),
    "kubernetes endpoint without compute": (
        "StockModel",
        _set("serving.azureml.endpointKind", "kubernetes"),
        "spec.serving.azureml.compute",
        "compute is required for, and only for, endpointKind kubernetes",
    ),
    "kserve min above max": (
        "StockModel",
        _set("serving.kserve", {"minReplicas": 3, "maxReplicas": 2}),
        "spec.serving.kserve.minReplicas",
        "minReplicas must not exceed maxReplicas",
    ),
    "period on close": (
        "StockModel",
        _set("features.indicators", [{"name": "close", "period": 5}]),
        "spec.features.indicators[0].period",
        "period is not allowed for close and macd",
    ),
    "period on macd": (
        "StockModel",
        _set("features.indicators", [{"name": "macd", "period": 9}]),
        "spec.features.indicators[0].period",
        "period is not allowed for close and macd",
    ),
    "same indicator twice through its default period": (
        "StockModel",
        _set("features.indicators", [{"name": "rsi"}, {"name": "rsi", "period": 14}]),
        "spec.features.indicators",
        "indicators must be unique",
    ),
    "validation and test leave too little for training": (
        "StockModel",
        _both(_set("training.validationBps", 4000), _set("training.testBps", 2500)),
        "spec.training.testBps",
        "validationBps + testBps must leave at least 40% for training",
    ),
    "learning rate of zero": (
        "StockModel",
        _set("training.learningRate", "0.0"),
        "spec.training.learningRate",
        "learningRate must be in (0, 1]",
    ),
    "learning rate above one": (
        "StockModel",
        _set("training.learningRate", "1.5"),
        "spec.training.learningRate",
        "learningRate must be in (0, 1]",
    ),
    "replay start after end": (
        "StockModel",
        _set("source.replay", {"start": "2024-02-01", "end": "2024-01-01"}),
        "spec.source.replay.start",
        "start must not be after end",
    ),
    "tickers repeated": (
        "StockModel",
        _set("tickers", ["AAPL", "AAPL"]),
        "spec.tickers[1]",
        "Duplicate value",
    ),
}


@pytest.mark.parametrize("case", CEL_CASES, ids=list(CEL_CASES))
def test_cel_rule_refuses_and_names_the_field(objects: Any, namespace: str, case: str) -> None:
    kind, change, path, words = CEL_CASES[case]
    document = _edit(kind, change)
    spec_model = spec.StockModel if kind == "StockModel" else spec.RetrainSchedule
    with pytest.raises(ValidationError):  # pydantic refuses it too
        spec_model.model_validate(document)
    message = _refusal(objects, namespace, document)
    assert f"{path}:" in message
    assert words in message


@pytest.mark.parametrize(
    ("kind", "name"),
    [("StockModel", "m" * 46), ("StockModel", "Megacaps"), ("RetrainSchedule", "r" * 53)],
)
def test_object_names_must_fit_derived_names(
    objects: Any, namespace: str, kind: str, name: str
) -> None:
    document = _example(kind, "cluster")
    document["metadata"]["name"] = name
    message = _refusal(objects, namespace, document)
    assert "metadata.name" in message


def test_model_name_is_immutable(objects: Any, namespace: str) -> None:
    document = _example("StockModel", "cluster")
    document["metadata"]["name"] = f"m-{uuid.uuid4().hex[:6]}"
    _create(objects, namespace, document)
    name = document["metadata"]["name"]
    with pytest.raises(ApiException) as caught:
        objects.patch_namespaced_custom_object(
            spec.GROUP,
            spec.VERSION,
            namespace,
            "stockmodels",
            name,
            {"spec": {"mlflow": {"modelName": "another-name"}}},
        )
    assert caught.value.status == 422
    message = json.loads(caught.value.body or "{}")["message"]
    assert "spec.mlflow.modelName:" in message
    assert "modelName is immutable" in message
    # Other fields still change.
    patched = objects.patch_namespaced_custom_object(
        spec.GROUP, spec.VERSION, namespace, "stockmodels", name, {"spec": {"horizon": 5}}
    )
    assert patched["spec"]["horizon"] == 5


def test_unknown_fields_are_refused(objects: Any, namespace: str) -> None:
    document = _example("StockModel", "cluster")
    document["spec"]["trainig"] = {"epochs": 3}
    message = _refusal(objects, namespace, document)
    assert 'unknown field "spec.trainig"' in message


# --------------------------------------------------------------------------- bounds


def _bound_cases() -> list[crds.BoundCase]:
    seen: dict[str, crds.BoundCase] = {}
    for definition in crds.DEFINITIONS:
        crd = yaml.safe_load((ROOT / "crds" / definition.file_name).read_text())
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for document in _documents(definition.kind):
            for case in crds.bound_cases(schema, document):
                seen.setdefault(case.id, case)
    return list(seen.values())


BOUND_CASES = _bound_cases()


@pytest.mark.parametrize("case", BOUND_CASES, ids=[c.id for c in BOUND_CASES])
def test_bound_refused_naming_the_field(objects: Any, namespace: str, case: crds.BoundCase) -> None:
    message = _refusal(objects, namespace, case.document)
    assert f"{case.path}:" in message or f"{case.path}[" in message, message


# --------------------------------------------------------------------------- kubectl get


def test_status_subresource_and_printer_columns(objects: Any, namespace: str) -> None:
    document = _example("StockModel", "cluster")
    _create(objects, namespace, document)
    status = spec.StockModelStatus.model_validate(
        {
            "observedGeneration": 1,
            "productionVersion": "7",
            "servingVersion": "6",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "RollingOut",
                    "message": "version 7 at 10%",
                    "lastTransitionTime": "2026-11-29T16:00:00Z",
                    "observedGeneration": 1,
                }
            ],
            "lastTraining": {
                "decision": "promoted",
                "metrics": {"model": {"rmse": "0.0121"}, "naive": {"rmse": "0.0125"}},
            },
        }
    )
    objects.patch_namespaced_custom_object_status(
        spec.GROUP, spec.VERSION, namespace, "stockmodels", "megacaps", {"status": status.to_wire()}
    )
    # A status written through the main resource is ignored (status is a subresource).
    objects.patch_namespaced_custom_object(
        spec.GROUP,
        spec.VERSION,
        namespace,
        "stockmodels",
        "megacaps",
        {"status": {"productionVersion": "99"}},
    )
    table = objects.list_namespaced_custom_object(
        spec.GROUP,
        spec.VERSION,
        namespace,
        "stockmodels",
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    names = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert names == [
        "Name",
        "Tickers",
        "Production",
        "Serving",
        "RMSE",
        "Naive RMSE",
        "Ready",
        "Age",
    ]
    (row,) = table["rows"]
    assert row["cells"][1:7] == [
        '["AAPL","MSFT","NVDA","AMZN"]',
        "7",
        "6",
        "0.0121",
        "0.0125",
        "False",
    ]


def test_schedule_printer_columns(objects: Any, namespace: str) -> None:
    _create(objects, namespace, _example("RetrainSchedule", "cluster"))
    status = spec.RetrainScheduleStatus.model_validate(
        {
            "lastScheduleTime": "2026-11-29T15:45:00Z",
            "lastRun": {
                "jobName": "megacaps-intraday-1",
                "outcome": "Succeeded",
                "decision": "kept",
            },
        }
    )
    objects.patch_namespaced_custom_object_status(
        spec.GROUP,
        spec.VERSION,
        namespace,
        "retrainschedules",
        "megacaps-intraday",
        {"status": status.to_wire()},
    )
    table = objects.list_namespaced_custom_object(
        spec.GROUP,
        spec.VERSION,
        namespace,
        "retrainschedules",
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    names = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert names == [
        "Name",
        "Model",
        "Schedule",
        "Interval",
        "Suspend",
        "Last Schedule",
        "Decision",
        "Age",
    ]
    (row,) = table["rows"]
    assert row["cells"][1:5] == ["megacaps", "*/15 9-16 * * 1-5", None, False]
    assert row["cells"][6] == "kept"


def test_short_names_and_category_are_served(crds_installed: KubeCluster) -> None:
    api = client.ApisApi(crds_installed.api_client())
    assert any(g.name == spec.GROUP for g in api.get_api_versions().groups)
    resources = client.CustomObjectsApi(crds_installed.api_client()).get_api_resources(
        spec.GROUP, spec.VERSION
    )
    served = {r.name: r for r in resources.resources}
    assert served["stockmodels"].short_names == ["sm"]
    assert served["retrainschedules"].short_names == ["rs"]
    assert served["stockmodels"].categories == ["stockops"]
    assert served["retrainschedules"].categories == ["stockops"]
    assert "stockmodels/status" in served
