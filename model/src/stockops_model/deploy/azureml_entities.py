"""Pure builders of the Azure ML entities the `azureml` deploy target sends, and their names.

Everything here is a function of the StockModel's `AzureMLSpec` and the release: no client,
no I/O beyond reading a downloaded MLflow model folder, so each entity can be checked with the
SDK's own serialisation (`_to_rest_object()`, `_to_rest_online_endpoint()`, `_to_dict()`).
`stockops_model.deploy.azureml` applies them.

Names and traffic follow what the service and the SDK (azure-ai-ml 1.35) do to them:

- Deployment names are 3-32 characters, start with a letter, then letters, digits or `-`,
  and end with a letter or digit; they are built lowercase because
  `OnlineEndpointOperations.begin_create_or_update` lowercases every traffic key (a
  deployment named `Model-V7` would never receive its traffic).
- A traffic map always names every deployment of the endpoint and sums to 100: the SDK drops
  the 0 entries, and an update whose map ends up empty sets every deployment to 0%.

Limits: the environment is built from the model's own `conda.yaml` (the pinned requirements
MLflow saved with it) plus Azure ML's inference server, on a base image the caller names.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import (
    CodeConfiguration,
    Environment,
    KubernetesOnlineDeployment,
    KubernetesOnlineEndpoint,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    OnlineDeployment,
    OnlineEndpoint,
)

from stockops_model.errors import DataError, SpecError

# Re-exported: callers and tests of the smoke request find it here.
from stockops_model.examples import synthetic_bars as synthetic_bars
from stockops_model.spec import AzureMLSpec

VERSION_TAG = "stockops.io/model-version"
MODEL_NAME_TAG = "stockops.io/model-name"
MANAGED_BY_TAG = "stockops.io/managed-by"
MANAGED_BY = "stockops"
SCORING_SCRIPT = "score.py"
INFERENCE_SERVER_PACKAGE = "azureml-inference-server-http"
NAME_MAX = 32
_NAME_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")
_BAR_FIELDS = ("symbol", "ts", "open", "high", "low", "close", "volume")


def deployment_name(model_name: str, version: str) -> str:
    """The deployment serving `version`: `<model name>-v<version>`, lowercase, <= 32 chars.

    The model name is cut (never the version) so two versions never share a name; a name
    that starts with a digit gets an `m` in front.

    Raises:
        SpecError: the version alone is too long for a deployment name.
    """
    suffix = "-v" + re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")
    stem = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    if not stem or not stem[0].isalpha():
        stem = ("m-" + stem).strip("-")
    stem = stem[: NAME_MAX - len(suffix)].rstrip("-")
    name = stem + suffix
    if not stem or not _NAME_PATTERN.match(name):
        raise SpecError(f"model version {version!r} does not fit an Azure ML deployment name")
    return name


def environment_name(model_name: str) -> str:
    """The environment asset of a registered model's serving image (one version per model
    version)."""
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", model_name) + "-serving"


def asset_ref(name: str, version: str) -> str:
    """The `azureml:NAME:VERSION` reference a deployment takes for a model or environment."""
    return f"azureml:{name}:{version}"


def traffic_map(deployments: Sequence[str], shares: Mapping[str, int]) -> dict[str, int]:
    """The full traffic map: `shares` for the named deployments, 0 for every other one.

    Raises:
        ValueError: the shares do not sum to 100, are out of range, or name a deployment the
            endpoint does not have.
    """
    # Azure ML compares deployment names case-insensitively and the SDK lowercases the keys
    # of a traffic map, so a deployment named "Blue" and a share for "blue" are the same.
    known = {name.lower() for name in deployments}
    wanted = {name.lower(): int(share) for name, share in shares.items()}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ValueError(f"traffic names unknown deployment(s) {', '.join(unknown)}")
    if any(not 0 <= share <= 100 for share in wanted.values()) or sum(wanted.values()) != 100:
        raise ValueError(f"traffic shares must be 0-100 and sum to 100, got {dict(shares)}")
    return {name: wanted.get(name, 0) for name in sorted(known)}


def build_endpoint(spec: AzureMLSpec, traffic: Mapping[str, int] | None = None) -> OnlineEndpoint:
    """A new managed or Kubernetes online endpoint with key authentication."""
    tags = {MANAGED_BY_TAG: MANAGED_BY}
    description = "stockops forecaster: raw 1-minute bars in, forecast close out"
    if spec.endpoint_kind == "kubernetes":
        return KubernetesOnlineEndpoint(
            name=spec.endpoint_name,
            compute=spec.compute,
            auth_mode="key",
            description=description,
            tags=tags,
            traffic=dict(traffic or {}),
        )
    return ManagedOnlineEndpoint(
        name=spec.endpoint_name,
        auth_mode="key",
        description=description,
        tags=tags,
        traffic=dict(traffic or {}),
    )


def endpoint_kind(endpoint: OnlineEndpoint) -> str:
    """`kubernetes` for an endpoint on an attached Kubernetes compute, else `managed`."""
    return "kubernetes" if isinstance(endpoint, KubernetesOnlineEndpoint) else "managed"


def with_traffic(endpoint: OnlineEndpoint, traffic: Mapping[str, int]) -> OnlineEndpoint:
    """A copy of `endpoint` (as read from the service) carrying the full `traffic` map.

    The copy keeps every other setting the service returned (auth mode, tags, compute), so
    the update changes traffic only; the SDK rewrites the map in place (lowercase, zeros
    dropped), hence the copy. Mirror traffic is cleared: it may point at the deployment a
    rollout is about to delete, and a shadow copy of requests is not part of blue/green.
    """
    updated = copy.deepcopy(endpoint)
    updated.traffic = dict(traffic)
    updated.mirror_traffic = {}
    return updated


def build_model(model_name: str, version: str, path: Path, description: str) -> Model:
    """The workspace model asset: the MLflow folder of `models:/NAME/VERSION`, same version."""
    return Model(
        name=model_name,
        version=version,
        type=AssetTypes.MLFLOW_MODEL,
        path=str(path),
        description=description,
        tags={VERSION_TAG: version, MANAGED_BY_TAG: MANAGED_BY},
    )


def serving_conda(model_dir: Path) -> dict[str, Any]:
    """The model's `conda.yaml` plus Azure ML's inference server (which runs `score.py`).

    Raises:
        DataError: the MLflow folder has no readable `conda.yaml`.
    """
    try:
        conda = yaml.safe_load((model_dir / "conda.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(
            f"{model_dir}: the MLflow model has no readable conda.yaml: {exc}"
        ) from None
    dependencies: list[Any] = list(conda.get("dependencies") or [])
    pip = next((d for d in dependencies if isinstance(d, dict) and "pip" in d), None)
    if pip is None:
        pip = {"pip": []}
        dependencies.append(pip)
    packages = list(pip["pip"])
    if not any(str(p).startswith(INFERENCE_SERVER_PACKAGE) for p in packages):
        packages.append(INFERENCE_SERVER_PACKAGE)
    pip["pip"] = packages
    return {**conda, "dependencies": dependencies}


def build_environment(
    model_name: str, version: str, conda: Mapping[str, Any], base_image: str
) -> Environment:
    """The serving environment of one model version: its conda file on `base_image`."""
    return Environment(
        name=environment_name(model_name),
        version=version,
        image=base_image,
        conda_file=dict(conda),
        description=f"serving environment of {model_name} version {version}",
        tags={VERSION_TAG: version, MANAGED_BY_TAG: MANAGED_BY},
    )


def build_deployment(
    spec: AzureMLSpec,
    *,
    name: str,
    model_name: str,
    version: str,
    environment: str,
    code_dir: str,
) -> OnlineDeployment:
    """The deployment of one model version, running `score.py` in its environment.

    Args:
        spec: the endpoint settings (kind, instance type and count).
        name: the deployment name (`deployment_name`).
        model_name: the registered model, in MLflow and in the workspace.
        version: the model version (same number in both).
        environment: the environment reference (`azureml:NAME:VERSION`).
        code_dir: a folder holding only `score.py` (the SDK uploads it).
    """
    common: dict[str, Any] = {
        "name": name,
        "endpoint_name": spec.endpoint_name,
        # The SDK's _to_rest_object sends a string model as is and resolves
        # "azureml:name:version" to the asset's ARM id; a Model object would need an id.
        "model": asset_ref(model_name, version),
        "environment": environment,
        "code_configuration": CodeConfiguration(code=code_dir, scoring_script=SCORING_SCRIPT),
        "environment_variables": {
            "STOCKOPS_MODEL_NAME": model_name,
            "STOCKOPS_MODEL_VERSION": version,
        },
        "instance_type": spec.instance_type,
        "instance_count": spec.instance_count,
        "tags": {VERSION_TAG: version, MODEL_NAME_TAG: model_name, MANAGED_BY_TAG: MANAGED_BY},
        "description": f"{model_name} version {version}",
    }
    if spec.endpoint_kind == "kubernetes":
        return KubernetesOnlineDeployment(**common)
    return ManagedOnlineDeployment(**common)


def smoke_bars(model_dir: Path) -> list[dict[str, Any]]:
    """Bars the model accepts: its saved input example, else synthetic bars.

    The input example is what `log_forecaster` saved (the last `min_bars` real bars of each
    ticker). Without one, a gentle synthetic series is built for the tickers and `min_bars`
    recorded in the MLmodel metadata.

    Raises:
        DataError: no input example and no tickers in the metadata.
    """
    from mlflow.models import Model as MlflowModel

    mlmodel = MlflowModel.load(str(model_dir))
    try:
        example = mlmodel.load_input_example(str(model_dir))
    except Exception:  # an unreadable example: fall back to synthetic bars
        example = None
    if example is not None and hasattr(example, "to_dict"):
        records: list[dict[str, Any]] = example.to_dict(orient="records")
        if records and all(field in records[0] for field in _BAR_FIELDS):
            return [{k: _plain(r[k]) for k in _BAR_FIELDS} for r in records]
    meta = dict((mlmodel.metadata or {}).get("stockops") or {})
    tickers = list(meta.get("tickers") or [])
    if not tickers:
        raise DataError(f"{model_dir}: no input example and no tickers in the MLmodel metadata")
    return synthetic_bars(tickers, int(meta.get("min_bars", 1)))


def _plain(value: Any) -> Any:
    # numpy scalars and timestamps from the example frame, as JSON values.
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if hasattr(value, "item"):
        return value.item()
    return value
