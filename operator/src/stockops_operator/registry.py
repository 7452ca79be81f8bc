"""What MLflow's model registry says, over its REST API (the operator has no mlflow package).

Two questions: which version carries the `production` alias of a registered model, and
which run a train Job logged (tagged `stockops.job-name` = the Job's name), as a fallback
when the Job's Pod and its termination message are gone.

Limits: only `http(s)://` tracking URIs can be asked; a `sqlite:` or file URI (local mode)
is reported as unreachable. No authentication (MLflow's basic auth is not used here).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from stockops_operator.plans import Registry

PRODUCTION_ALIAS = "production"
JOB_NAME_TAG = "stockops.job-name"
RESULT_TAG = "stockops.result"
PROMOTED_TAG = "stockops.promoted"


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
    if response.status_code == 404 or (
        response.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in response.text
    ):
        return Registry(None)
    if response.status_code >= 400:
        return Registry(None, f"MLflow answered {response.status_code}: {response.text[:200]}")
    version = (response.json().get("model_version") or {}).get("version")
    return Registry(None if version is None else str(version))


async def run_result_of_job(
    client: httpx.AsyncClient, tracking_uri: str, experiment: str, job_name: str
) -> str | None:
    """The train JSON line of the run a Job tagged (its `stockops.result` tag, or else its
    metrics and `stockops.promoted` tag as JSON); None if there is no such run."""
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
    data = runs[0].get("data") or {}
    tags = {t["key"]: t["value"] for t in data.get("tags") or []}
    if tags.get(RESULT_TAG):
        return str(tags[RESULT_TAG])
    # No result tag: rebuild what we can from the run's metrics and promotion tag.
    metrics = {m["key"]: m["value"] for m in data.get("metrics") or []}
    promoted = tags.get(PROMOTED_TAG, "").lower() == "true"
    return json.dumps({"promoted": promoted, "metrics": metrics})
