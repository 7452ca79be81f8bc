"""What MLflow's model registry says, over its REST API (the operator has no mlflow package).

Two questions: which version carries the `production` alias of a registered model, and
which run a train Job logged (tagged `stockops.job-name` = the Job's name), as a fallback
when the Job's Pod and its termination message are gone.

Limits: only `http(s)://` tracking URIs can be asked; a `sqlite:` or file URI (local mode)
is reported as unreachable. No authentication (MLflow's basic auth is not used here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from stockops_operator.plans import Registry

PRODUCTION_ALIAS = "production"
JOB_NAME_TAG = "stockops.job-name"
GATE_RECORD_TAG = "stockops.gate.record"  # the gate's decision as JSON (stockops_model.promotion)


async def production_version(
    client: httpx.AsyncClient, tracking_uri: str, model_name: str
) -> Registry:
    """The version under the production alias; `Registry(None)` if none; error if unreachable."""
    if not tracking_uri.startswith(("http://", "https://")):
        return Registry(None, f"tracking URI {tracking_uri!r} cannot be queried over REST")
    url = tracking_uri.rstrip("/") + "/api/2.0/mlflow/registered-models/alias"
    try:
        response = await client.get(url, params={"name": model_name, "alias": PRODUCTION_ALIAS})
    except httpx.HTTPError as exc:
        return Registry(None, f"MLflow at {tracking_uri} did not answer: {exc!r}")
    if _means_absent(response):
        return Registry(None)
    if response.status_code >= 400:
        return Registry(None, f"MLflow answered {response.status_code}: {response.text[:200]}")
    version = (response.json().get("model_version") or {}).get("version")
    return Registry(None if version is None else str(version))


def _means_absent(response: httpx.Response) -> bool:
    # MLflow answers a missing model with RESOURCE_DOES_NOT_EXIST (404) and a model without
    # the alias with INVALID_PARAMETER_VALUE "... alias production not found." (400).
    if response.status_code not in (400, 404):
        return False
    try:
        body = response.json()
    except ValueError:
        return response.status_code == 404
    code = str(body.get("error_code", ""))
    message = str(body.get("message", "")).lower()
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in message
    )


async def run_result_of_job(
    client: httpx.AsyncClient, tracking_uri: str, experiment: str, job_name: str
) -> str | None:
    """A train result line (JSON) rebuilt from the run a Job tagged; None if there is none."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    base = tracking_uri.rstrip("/") + "/api/2.0/mlflow"
    try:
        found = await client.get(
            base + "/experiments/get-by-name", params={"experiment_name": experiment}
        )
        if found.status_code != 200:
            return None
        experiment_id = found.json()["experiment"]["experiment_id"]
        search = await client.post(
            base + "/runs/search",
            json={
                "experiment_ids": [experiment_id],
                "filter": f"tags.`{JOB_NAME_TAG}` = '{job_name}'",
                "max_results": 1,
            },
        )
    except httpx.HTTPError:
        return None
    if search.status_code != 200:
        return None
    runs: list[dict[str, Any]] = search.json().get("runs") or []
    if not runs:
        return None
    run = runs[0]
    data = run.get("data") or {}
    tags = {t["key"]: t["value"] for t in data.get("tags") or []}
    metrics = {m["key"]: m["value"] for m in data.get("metrics") or []}
    return json.dumps(result_from_run(str(run.get("info", {}).get("run_id", "")), tags, metrics))


def result_from_run(
    run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float]
) -> dict[str, Any]:
    """A train result line rebuilt from an MLflow run: the gate's record tag when the gate
    ran, plus the test metrics (`test_model_rmse`, `test_naive_rmse`, ...) per side."""
    test: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("_", 2)
        if len(parts) == 3 and parts[0] == "test" and parts[1] in ("model", "naive"):
            test.setdefault(parts[1], {})[parts[2]] = value
    result: dict[str, Any] = {"run_id": run_id, "test": test, "promoted": False}
    record = tags.get(GATE_RECORD_TAG)
    if record:
        try:
            gate = json.loads(record)
        except json.JSONDecodeError:
            gate = None
        if isinstance(gate, dict):
            result.update(
                gate=gate,
                promoted=bool(gate.get("promoted")),
                reason=str(gate.get("reason", "")),
                challenger_version=gate.get("challenger_version"),
            )
    return result
