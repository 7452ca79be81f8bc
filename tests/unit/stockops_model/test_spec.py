"""The spec models reject what the CRD rules reject, and name the field in camelCase."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockops_model.errors import SpecError
from stockops_model.spec import (
    SPEC_ENV,
    Condition,
    ConditionStatus,
    Decision,
    RetrainSchedule,
    RetrainScheduleStatus,
    StockModel,
    StockModelStatus,
    load_manifests,
    load_stockmodel,
    parse_duration,
    parse_resource,
)

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "examples" / "cluster"
LOCAL = ROOT / "examples" / "local"


def _doc(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture
def model_doc() -> dict[str, Any]:
    return _doc(CLUSTER / "stockmodel.yaml")


@pytest.fixture
def schedule_doc() -> dict[str, Any]:
    return _doc(CLUSTER / "retrainschedule.yaml")


def _error(document: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        parse_resource(document)
    return str(caught.value)


def test_examples_validate() -> None:
    kinds = sorted(r.kind for r in [*load_manifests(CLUSTER), *load_manifests(LOCAL)])
    assert kinds == ["RetrainSchedule", "RetrainSchedule", "StockModel", "StockModel"]


def test_wire_form_is_camel_case_and_round_trips(model_doc: dict[str, Any]) -> None:
    model = parse_resource(model_doc)
    assert isinstance(model, StockModel)
    wire = model.spec.to_wire()
    assert wire["training"]["batchSize"] == 256
    assert wire["runtime"]["azureClientId"] == "11111111-1111-1111-1111-111111111111"
    assert "batch_size" not in json.dumps(wire)
    again = parse_resource({**model_doc, "spec": wire})
    assert again == model


def test_defaults_fill_a_minimal_spec() -> None:
    model = parse_resource(
        {
            "apiVersion": "stockops.io/v1alpha1",
            "kind": "StockModel",
            "metadata": {"name": "tiny"},
            "spec": {
                "tickers": ["SPY"],
                "storage": {"path": "/data"},
                "mlflow": {"modelName": "m"},
            },
        }
    )
    assert isinstance(model, StockModel)
    assert model.spec.horizon == 1
    assert model.spec.serving.rollout.canary_steps == [10, 50, 100]
    assert [i.column for i in model.spec.features.indicators][:3] == [
        "close",
        "macd",
        "bollUpper_20",
    ]
    assert model.spec.runtime.image is None


# One case per cross-field rule and per notable bound: (edit, field path named in the error).
STOCKMODEL_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("tickers unique", {"tickers": ["AAPL", "AAPL"]}, "spec.tickers"),
    ("ticker pattern", {"tickers": ["aapl"]}, "spec.tickers[0]"),
    (
        "storage both",
        {"storage": {"account": "acct1", "container": "bars", "path": "/x"}},
        "spec.storage",
    ),
    ("storage account alone", {"storage": {"account": "acct1"}}, "spec.storage"),
    ("storage none", {"storage": {"prefix": "bars"}}, "spec.storage"),
    (
        "period on close",
        {"features": {"indicators": [{"name": "close", "period": 5}]}},
        "spec.features.indicators[0]",
    ),
    (
        "duplicate indicators",
        {"features": {"indicators": [{"name": "rsi"}, {"name": "rsi", "period": 14}]}},
        "spec.features.indicators",
    ),
    ("bps too large", {"training": {"validationBps": 4000, "testBps": 2500}}, "spec.training"),
    ("learning rate zero", {"training": {"learningRate": "0"}}, "spec.training.learningRate"),
    (
        "learning rate above one",
        {"training": {"learningRate": "1.5"}},
        "spec.training.learningRate",
    ),
    ("batch size zero", {"training": {"batchSize": 0}}, "spec.training.batchSize"),
    (
        "canary decreasing",
        {"serving": {"target": "local", "rollout": {"canarySteps": [50, 10, 100]}}},
        "spec.serving.rollout.canarySteps",
    ),
    (
        "canary not ending at 100",
        {"serving": {"target": "local", "rollout": {"canarySteps": [10, 50]}}},
        "spec.serving.rollout.canarySteps",
    ),
    (
        "canary step above 100",
        {"serving": {"target": "local", "rollout": {"canarySteps": [10, 150]}}},
        "spec.serving.rollout.canarySteps[1]",
    ),
    ("azureml without settings", {"serving": {"target": "azureml"}}, "spec.serving"),
    (
        "kserve min above max",
        {"serving": {"target": "kserve", "kserve": {"minReplicas": 5, "maxReplicas": 2}}},
        "spec.serving.kserve",
    ),
    (
        "replay start after end",
        {"source": {"type": "replay", "replay": {"start": "2024-02-01", "end": "2024-01-01"}}},
        "spec.source.replay",
    ),
    ("unknown field", {"trainig": {}}, "spec.trainig"),
    ("model name pattern", {"mlflow": {"modelName": "-bad"}}, "spec.mlflow.modelName"),
    (
        "quantity",
        {"runtime": {"feed": {"resources": {"requests": {"cpu": "lots"}}}}},
        "spec.runtime.feed.resources.requests.cpu",
    ),
]


def _merge(base: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in edit.items():
        if key == "storage" or key == "serving" or not isinstance(value, dict):
            merged[key] = value
        else:
            merged[key] = _merge(merged.get(key, {}), value)
    return merged


@pytest.mark.parametrize(
    ("edit", "path"), [(e, p) for _, e, p in STOCKMODEL_CASES], ids=[c[0] for c in STOCKMODEL_CASES]
)
def test_stockmodel_rule_names_the_field(
    model_doc: dict[str, Any], edit: dict[str, Any], path: str
) -> None:
    model_doc["spec"] = _merge(model_doc["spec"], edit)
    message = _error(model_doc)
    assert message.startswith("StockModel/megacaps ")
    assert f" {path}:" in message


def test_azureml_kubernetes_needs_compute(model_doc: dict[str, Any]) -> None:
    model_doc["spec"]["serving"]["azureml"]["endpointKind"] = "kubernetes"
    assert "spec.serving.azureml: compute is required" in _error(model_doc)
    model_doc["spec"]["serving"]["azureml"]["compute"] = "aks-inference"
    assert isinstance(parse_resource(model_doc), StockModel)


def test_long_or_upper_case_names_are_refused(model_doc: dict[str, Any]) -> None:
    model_doc["metadata"]["name"] = "m" * 46
    assert "metadata.name must be a DNS label of at most 45" in _error(model_doc)
    model_doc["metadata"]["name"] = "Megacaps"
    assert "metadata.name" in _error(model_doc)


SCHEDULE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("both schedule and interval", {"interval": "15m"}, "spec"),
    ("neither", {"schedule": None}, "spec"),
    ("unknown zone", {"timeZone": "Mars/Olympus"}, "spec.timeZone"),
    ("offset is not a zone", {"timeZone": "+01:00"}, "spec.timeZone"),
    ("cron with 4 fields", {"schedule": "*/15 9-16 * *"}, "spec.schedule"),
    ("zero interval", {"schedule": None, "interval": "0m"}, "spec.interval"),
    ("interval not a duration", {"schedule": None, "interval": "15 minutes"}, "spec.interval"),
    ("concurrency enum", {"concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy"),
    ("history too long", {"successfulRunsHistoryLimit": 101}, "spec.successfulRunsHistoryLimit"),
    ("deadline too short", {"activeDeadlineSeconds": 59}, "spec.activeDeadlineSeconds"),
    ("negative starting deadline", {"startingDeadlineSeconds": -1}, "spec.startingDeadlineSeconds"),
    ("model ref empty", {"modelRef": {"name": ""}}, "spec.modelRef.name"),
]


@pytest.mark.parametrize(
    ("edit", "path"), [(e, p) for _, e, p in SCHEDULE_CASES], ids=[c[0] for c in SCHEDULE_CASES]
)
def test_schedule_rule_names_the_field(
    schedule_doc: dict[str, Any], edit: dict[str, Any], path: str
) -> None:
    for key, value in edit.items():
        if value is None:
            schedule_doc["spec"].pop(key)
        else:
            schedule_doc["spec"][key] = value
    message = _error(schedule_doc)
    assert message.startswith("RetrainSchedule/megacaps-intraday ")
    assert f" {path}:" in message


def test_schedule_accepts_macros_and_zones(schedule_doc: dict[str, Any]) -> None:
    schedule_doc["spec"].update(schedule="@hourly", timeZone="Europe/Berlin")
    parsed = parse_resource(schedule_doc)
    assert isinstance(parsed, RetrainSchedule)
    assert parsed.spec.time_zone == "Europe/Berlin"


def test_parse_duration() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45s") == 45
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("")


def test_spec_from_environment(model_doc: dict[str, Any]) -> None:
    loaded = load_stockmodel(None, env={SPEC_ENV: json.dumps(model_doc)})
    assert loaded.spec.tickers == ["AAPL", "MSFT", "NVDA", "AMZN"]
    with pytest.raises(SpecError, match=SPEC_ENV):
        load_stockmodel(None, env={})


def test_status_round_trips_in_camel_case() -> None:
    wire = {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Serving",
                "message": "version 4 serves",
                "lastTransitionTime": "2026-11-29T16:00:00Z",
                "observedGeneration": 3,
            }
        ],
        "productionVersion": "4",
        "servingVersion": "4",
        "lastTraining": {
            "runId": "abc",
            "jobName": "megacaps-train-29384756",
            "challengerVersion": "4",
            "decision": "promoted",
            "reason": "beats champion by 2.1% and naive by 0.8%",
            "metrics": {
                "model": {
                    "rmse": "0.0123",
                    "mae": "0.0091",
                    "mase": "0.98",
                    "directionalAccuracy": "0.53",
                },
                "naive": {"rmse": "0.0125", "mae": "0.0093", "mase": "1"},
            },
            "finishedAt": "2026-11-29T16:00:00Z",
        },
        "endpointUrl": "http://megacaps.stockops.svc/score",
        "futureField": "ignored by older operators",
    }
    status = StockModelStatus.model_validate(wire)
    assert status.last_training is not None
    assert status.last_training.decision == Decision.PROMOTED
    out = status.to_wire()
    assert "futureField" not in out
    assert out == {k: v for k, v in wire.items() if k != "futureField"}


def test_status_metrics_are_decimal_strings() -> None:
    with pytest.raises(ValueError, match=r"should match pattern"):
        StockModelStatus.model_validate({"lastTraining": {"metrics": {"model": {"rmse": "n/a"}}}})


def test_schedule_status_keeps_active_jobs() -> None:
    now = datetime(2026, 11, 29, 16, tzinfo=UTC)
    status = RetrainScheduleStatus(
        last_schedule_time=now,
        active=[{"name": "megacaps-intraday-29384756"}],
        conditions=[
            Condition(
                type="Ready",
                status=ConditionStatus.TRUE,
                reason="Scheduled",
                last_transition_time=now,
            )
        ],
    )
    wire = status.to_wire()
    assert wire["lastScheduleTime"] == "2026-11-29T16:00:00Z"
    assert wire["active"] == [{"name": "megacaps-intraday-29384756"}]
    assert wire["conditions"][0]["message"] == ""
