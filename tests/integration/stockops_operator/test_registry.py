"""The operator's MLflow REST client against a real MLflow tracking server."""

from __future__ import annotations

import json

import httpx
import pytest
from mlflow import MlflowClient

from stockops_model.testing.mlflow_server import MlflowServer
from stockops_operator import registry
from stockops_operator.status import Decision, parse_train_result

pytestmark = pytest.mark.mlflow


async def test_production_alias_is_read_and_absence_is_not_an_error(
    mlflow_server: MlflowServer,
) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    name = "op-registry-alias"
    client.create_registered_model(name)
    experiment = client.create_experiment("op-registry-alias")
    run = client.create_run(experiment)
    async with httpx.AsyncClient(timeout=10) as http:
        none_yet = await registry.production_version(http, mlflow_server.tracking_uri, name)
        assert none_yet.version is None
        assert none_yet.error is None
        for _ in range(2):
            client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_registered_model_alias(name, "production", "2")
        found = await registry.production_version(http, mlflow_server.tracking_uri, name)
        assert found.version == "2"
        missing = await registry.production_version(http, mlflow_server.tracking_uri, "no-such")
        assert (missing.version, missing.error) == (None, None)


async def test_unreachable_or_local_tracking_is_reported_not_raised() -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        local = await registry.production_version(http, "sqlite:///x.db", "m")
        down = await registry.production_version(http, "http://127.0.0.1:9", "m")
    assert local.error is not None
    assert down.error is not None


async def test_result_of_a_job_is_rebuilt_from_the_run_it_tagged(
    mlflow_server: MlflowServer,
) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    experiment = client.create_experiment("op-registry-runs")
    run = client.create_run(experiment, tags={registry.JOB_NAME_TAG: "demo-hourly-1767229200"})
    client.create_run(experiment, tags={registry.JOB_NAME_TAG: "another-job"})
    client.log_metric(run.info.run_id, "test_model_rmse", 0.04)
    client.log_metric(run.info.run_id, "test_naive_rmse", 0.05)
    record = {
        "promoted": False,
        "reason": "does not beat the naive forecast",
        "challenger_version": "3",
        "challenger": {"rmse": 0.051},
        "naive": {"rmse": 0.05},
        "champion": {},
    }
    client.set_tag(run.info.run_id, registry.GATE_RECORD_TAG, json.dumps(record))
    async with httpx.AsyncClient(timeout=10) as http:
        text = await registry.run_result_of_job(
            http, mlflow_server.tracking_uri, "op-registry-runs", "demo-hourly-1767229200"
        )
        nothing = await registry.run_result_of_job(
            http, mlflow_server.tracking_uri, "op-registry-runs", "never-ran"
        )
    assert nothing is None
    assert text is not None
    result = parse_train_result(text)
    assert result is not None
    assert result.decision == Decision.KEPT
    assert result.version == "3"
    assert result.run_id == run.info.run_id
    assert result.metrics == {"model": {"rmse": "0.051"}, "naive": {"rmse": "0.05"}}
