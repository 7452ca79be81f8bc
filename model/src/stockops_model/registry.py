"""MLflow registry: forecasters as pyfunc models that take raw bars, aliases, the naive champion.

`ForecasterModel` is the one `mlflow.pyfunc.PythonModel` for both forecasters: its artifact
is a directory saved by `Forecaster.save` (input spec, fitted scalers, and for the network
the `.keras` file), and `load_context` restores it with `load_forecaster`, which dispatches
on the recorded kind. The `stockops_model` package travels in the model's `code_paths`, so
the custom attention layer and the feature pipeline load in any fresh process, with or
without this package installed.

Input: raw bars (a DataFrame, or JSON records `{"symbol","ts","open","high","low","close",
"volume"}` through a scoring server); output: `symbol, ts, forecast_close, horizon` per
ticker. The optional parameter `origins` ("last" or "all") is part of the signature.
The MLmodel metadata records `kind`, `tickers`, `min_bars`, `horizon`, so a caller can cut the
bars it sends without loading the model.

Limits: the pip requirements are pinned to the versions installed here rather than inferred
(inference would load TensorFlow in a subprocess for every logged model); the serving image
is built from the same lock file.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd

from stockops_model.forecaster import Forecaster, NaiveForecaster, load_forecaster
from stockops_model.tracking import is_not_found

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"
ARTIFACT_KEY = "forecaster"
MODEL_ARTIFACT_PATH = "model"
TAG_KIND = "stockops.kind"
TAG_CODE_VERSION = "stockops.code-version"
CODE_VERSION_ENV = "STOCKOPS_CODE_VERSION"
_REQUIREMENTS = (
    "mlflow",
    "tensorflow-cpu",
    "keras",
    "numpy",
    "pandas",
    "pydantic",
    "scipy",
    "pyyaml",
)


class ForecasterModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """The registered pyfunc: raw bars in, forecast close per ticker out."""

    def load_context(self, context: Any) -> None:
        self.forecaster: Forecaster = load_forecaster(context.artifacts[ARTIFACT_KEY])

    # No annotations on purpose: MLflow reads predict's type hints to build a schema and
    # warns on anything but list[...]; the signature is given explicitly instead.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        origins = str((params or {}).get("origins", "last"))
        if origins not in ("last", "all"):
            from stockops_model.errors import DataError

            raise DataError(f"params.origins: must be 'last' or 'all', got {origins!r}")
        return self.forecaster.predict(model_input, "all" if origins == "all" else "last")


def code_version() -> str:
    """The code that trained a model: `STOCKOPS_CODE_VERSION` (set by the image build), else
    the git commit of this checkout, else the package version."""
    explicit = os.environ.get(CODE_VERSION_ENV, "").strip()
    if explicit:
        return explicit
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--", str(here))
        if commit:
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "stockops-model " + importlib_metadata.version("stockops-model")


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc environment (see the module docstring)."""
    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def example_input(bars: pd.DataFrame, forecaster: Forecaster) -> pd.DataFrame:
    """The last `min_bars` bars of each ticker: the smallest input that forecasts them all."""
    columns = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    frame = bars.loc[bars["symbol"].isin(forecaster.tickers), columns]
    frame = frame.sort_values(["symbol", "ts"], kind="stable")
    return frame.groupby("symbol", sort=True).tail(forecaster.min_bars).reset_index(drop=True)


def forecaster_signature() -> Any:
    """Signature of every stockops pyfunc: raw bars in, forecast close per ticker out.

    `ts` is declared as any type: MLflow's datetime columns refuse timezone-aware values,
    while clients send ISO 8601 strings with an offset or timezone-aware timestamps; the
    forecaster parses and validates it itself (naive values are taken as UTC).
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    prices = [ColSpec("double", name) for name in ("open", "high", "low", "close", "volume")]
    any_type = AnyType()  # type: ignore[no-untyped-call]
    inputs = Schema([ColSpec("string", "symbol"), ColSpec(any_type, "ts"), *prices])
    outputs = Schema(
        [
            ColSpec("string", "symbol"),
            ColSpec("datetime", "ts"),
            ColSpec("double", "forecast_close"),
            ColSpec("long", "horizon"),
        ]
    )
    params = ParamSchema([ParamSpec("origins", "string", "last")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_forecaster(
    forecaster: Forecaster,
    bars: pd.DataFrame,
    registered_model_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> ModelInfo:
    """Log `forecaster` as a pyfunc in the active MLflow run, optionally registering it.

    Args:
        forecaster: a fitted forecaster.
        bars: recent raw bars of its tickers; the input example and signature come from them.
        registered_model_name: register a new version under this name.
        tags: tags of the logged model (the registry version gets them via `tag_version`).
    """
    import mlflow

    import stockops_model

    example = example_input(bars, forecaster)
    forecaster.predict(example)  # fail here, with a DataError, rather than inside MLflow
    example["ts"] = example["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="stockops-forecaster-") as tmp:
        forecaster.save(tmp)
        info: ModelInfo = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_PATH,
            python_model=ForecasterModel(),
            artifacts={ARTIFACT_KEY: tmp},
            code_paths=[str(Path(stockops_model.__file__).parent)],
            signature=forecaster_signature(),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
            metadata={"stockops": forecaster.describe()},
            tags=dict(tags or {}),
        )
    return info


def registered_version(client: MlflowClient, name: str, info: ModelInfo) -> ModelVersion:
    """The registry version created by `log_forecaster(..., registered_model_name=name)`."""
    version = info.registered_model_version
    if version is None:
        raise RuntimeError(f"model {info.model_uri} was not registered under {name}")
    return client.get_model_version(name, str(version))


def tag_version(client: MlflowClient, name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Set tags on a registered model version (values stringified)."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def production_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version under the `production` alias, or None when there is none (or no model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model if it does not exist yet (idempotent)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name, description="stockops forecaster: raw 1-minute bars in, forecast close out"
        )
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise


def ensure_naive_champion(
    client: MlflowClient,
    name: str,
    tickers: tuple[str, ...],
    horizon: int,
    bars: pd.DataFrame,
    experiment_id: str | None = None,
) -> str:
    """Make sure a `production` model exists: register the naive forecast there if none does.

    The naive forecast is logged in a run of its own and registered as a version like any
    other, so the serving side always has a model, and a network must beat persistence to
    be served. Idempotent: with a production model in place nothing happens.

    Returns:
        The production version (the existing one, or the naive one just registered).
    """
    import mlflow

    ensure_registered_model(client, name)
    current = production_version(client, name)
    if current is not None:
        return str(current.version)
    naive = NaiveForecaster(tickers, horizon)
    tags = {TAG_KIND: "naive", TAG_CODE_VERSION: code_version()}
    with mlflow.start_run(experiment_id=experiment_id, run_name="naive-baseline", nested=True):
        mlflow.set_tags(tags)
        mlflow.log_params({"kind": "naive", "horizon": horizon, "tickers": ",".join(tickers)})
        info = log_forecaster(naive, bars, registered_model_name=name)
    version = str(registered_version(client, name, info).version)
    tag_version(client, name, version, tags)
    # Another gate may have set an alias meanwhile; never overwrite a real champion.
    winner = production_version(client, name)
    if winner is not None:
        return str(winner.version)
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    log.info("registered the naive forecast as %s version %s (production)", name, version)
    return version


def load_pyfunc(name: str, version: str) -> Any:
    """Load a registered version as a pyfunc model."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def _stockops_metadata(model: Any) -> dict[str, Any]:
    # The "stockops" entry `log_forecaster` writes into the MLmodel metadata ({} if absent).
    meta = getattr(getattr(model, "metadata", None), "metadata", None) or {}
    return dict(meta.get("stockops") or {})


def model_min_bars(model: Any) -> int:
    """Bars per ticker a loaded pyfunc needs, from its MLmodel metadata (1 if unknown)."""
    return int(_stockops_metadata(model).get("min_bars", 1))


def model_tickers(model: Any) -> tuple[str, ...] | None:
    """Tickers a loaded pyfunc forecasts, from its MLmodel metadata (None if unknown)."""
    tickers = _stockops_metadata(model).get("tickers")
    return tuple(tickers) if tickers else None
