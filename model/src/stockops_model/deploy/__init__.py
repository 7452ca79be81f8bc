"""`stockops deploy -f stockmodel.yaml`: roll the production model out to its serving target.

The version to roll out is `--version`, else `STOCKOPS_TARGET_VERSION` (set by the operator
on its deploy Job), else the version under the registered model's `production` alias.
The target is the StockModel's `spec.serving.target`; each lives in its own module and
implements `stockops_model.deploy.base.DeployTarget`:

- `azureml`: an Azure ML managed or Kubernetes online endpoint, blue/green by traffic.
- `kserve`: a KServe InferenceService running `stockops serve`, canary by traffic percent.
- `local`: the local scoring server (`stockops serve`), as `stockops up` runs it.

The outcome is ONE JSON line (the last on stdout, and the termination log): `target`,
`requested_version`, `serving_version`, `previous_version`, `endpoint_url`, `traffic`
(version -> percent), `rolled_back`, `succeeded`, `message`, `steps`. It is printed on every
exit once the spec and the version are known (on exits 3 and 5 with `succeeded` false and
the error as `message`).

Exit codes: 0 the version serves; 3 bad spec; 5 a dependency is unreachable (nothing
changed, retry); 6 the rollout failed and the previous version was restored.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
from typing import TYPE_CHECKING, Any

from stockops_model.errors import ExitCode, SpecError, StockopsError
from stockops_model.results import emit_result

if TYPE_CHECKING:
    from stockops_model.deploy.base import DeployTarget
    from stockops_model.spec import StockModel

log = logging.getLogger(__name__)

TARGET_VERSION_ENV = "STOCKOPS_TARGET_VERSION"
# target name -> module exposing `build_target(model, tracking_uri) -> DeployTarget`
TARGET_MODULES: dict[str, str] = {
    "azureml": "stockops_model.deploy.azureml",
    "kserve": "stockops_model.deploy.kserve",
    "local": "stockops_model.deploy.local",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `stockops deploy`."""
    parser.add_argument(
        "-f", "--file", help="StockModel manifest (YAML); default: the JSON in STOCKOPS_SPEC_JSON"
    )
    parser.add_argument(
        "--version",
        help=f"model version to roll out (default: {TARGET_VERSION_ENV}, else the version "
        "under the production alias)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else spec.mlflow.trackingUri)",
    )


def build_target(model: StockModel, tracking_uri: str) -> DeployTarget:
    """The target named by the model's `spec.serving.target`."""
    name = str(model.spec.serving.target)
    if name not in TARGET_MODULES:
        raise SpecError(f"spec.serving.target: unknown target {name!r}")
    module: Any = importlib.import_module(TARGET_MODULES[name])
    target: DeployTarget = module.build_target(model, tracking_uri)
    return target


def resolve_version(explicit: str | None, model_name: str, tracking_uri: str) -> str:
    """The version to roll out: the flag, the operator's env var, else production's."""
    version = explicit or os.environ.get(TARGET_VERSION_ENV)
    if version:
        return version
    from stockops_model.registry import production_version
    from stockops_model.tracking import connect_mlflow

    current = production_version(connect_mlflow(tracking_uri), model_name)
    if current is None:
        raise SpecError(f"registered model {model_name!r} has no version under 'production'")
    return str(current.version)


def run(args: argparse.Namespace) -> int:
    from stockops_model.deploy.base import Release, RolloutFailedError, RolloutResult
    from stockops_model.spec import load_stockmodel
    from stockops_model.tracking import resolve_tracking_uri

    model = load_stockmodel(args.file)
    tracking_uri = resolve_tracking_uri(args.tracking_uri, model.spec)
    name = model.spec.mlflow.model_name
    release = Release(name, resolve_version(args.version, name, tracking_uri), tracking_uri)
    try:
        target = build_target(model, tracking_uri)
        log.info("rolling out %s to %s", release.model_uri, target.name)
        result = target.rollout(release, model.spec.serving.rollout)
    except RolloutFailedError as exc:
        emit_result(exc.result.to_json())
        raise
    except StockopsError as exc:
        # Nothing changed (a bad target setting, a dependency away): the line says why, so
        # the operator can show it next to the failed or retried Job.
        emit_result(RolloutResult.unchanged(model, release.version, str(exc)).to_json())
        raise
    emit_result(result.to_json())
    return int(ExitCode.OK)
