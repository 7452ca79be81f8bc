"""`stockops train -f stockmodel.yaml`: train, log, register and gate one challenger.

Steps, each logged to the MLflow run of the spec's experiment:

1. read the last `training.lookbackDays` trading days of bars of the spec's tickers from the
   bar store (`spec.storage`, or `--store`/`STOCKOPS_STORE`), or from shared CSV files with
   `--bars PATH`; the data lineage (every day object or file with its ETag or hash, row
   counts, date range) becomes the `lineage.json` artifact and `data.*` tags;
2. make sure a `production` model exists (the naive forecast is registered there first);
3. train (`stockops_model.training`) with a progress bar on stderr and per-epoch metrics,
   then log test metrics side by side with the naive forecast, the loss curve, the
   forecast-vs-actual plot and the attention heatmap;
4. register the forecaster as a pyfunc version of `spec.mlflow.modelName`;
5. run the promotion gate (`stockops_model.promotion`) on the latest bars.

The result is ONE JSON line, the last line on stdout, also written to the Kubernetes
termination log (`/dev/termination-log`, or `STOCKOPS_TERMINATION_LOG`) when that file is
writable: the operator reads the Job's outcome from there. The run is tagged with
`stockops.job-name` from `STOCKOPS_JOB_NAME` when set.

Exit codes (see `stockops_model.errors.ExitCode`): 0 whether promoted or kept, 3 bad spec,
4 unusable data, 5 MLflow or the store unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from stockops_model.errors import DataError
from stockops_model.evaluate import finite_metrics
from stockops_model.results import emit_result
from stockops_model.tracking import connect_mlflow, resolve_tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from stockops_model.spec import StockModel, StockModelSpec
    from stockops_model.training import TrainingResult

log = logging.getLogger(__name__)

JOB_NAME_ENV = "STOCKOPS_JOB_NAME"
TAG_JOB_NAME = "stockops.job-name"
TAG_STOCKMODEL = "stockops.stockmodel"
MARKET_TZ = "America/New_York"


@dataclass(frozen=True)
class TrainingData:
    """Bars read for one run and where exactly they came from."""

    bars: pd.DataFrame
    lineage: dict[str, Any]


# --------------------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `stockops train` (and, via `add_data_arguments`, `stockops backtest`)."""
    add_data_arguments(parser)
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: spec.mlflow.trackingUri, or MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--no-gate",
        action="store_true",
        help="register the challenger but do not run the promotion gate",
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the spec and the bars come from."""
    parser.add_argument(
        "-f",
        "--file",
        help="StockModel manifest (YAML); default: the JSON in STOCKOPS_SPEC_JSON",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--bars",
        type=Path,
        help="read bars from CSV files (a file or directory, e.g. ../shared/data/bars-2018-1min) "
        "instead of the bar store",
    )
    source.add_argument(
        "--store",
        help="bar store URL (file:///path or azblob://container/prefix); "
        "default: STOCKOPS_STORE or spec.storage",
    )
    parser.add_argument(
        "--end",
        type=date.fromisoformat,
        help="last trading day to use (YYYY-MM-DD, inclusive); default: the latest available",
    )


# --------------------------------------------------------------------------- data


def _last_days(days: list[date], count: int) -> list[date]:
    return sorted(set(days))[-count:]


def read_training_data(
    spec: StockModelSpec,
    bars_path: Path | None = None,
    store_url: str | None = None,
    end: date | None = None,
) -> TrainingData:
    """The last `spec.training.lookbackDays` trading days of bars, with their lineage.

    Raises:
        DataError: no bars at all for the spec's tickers.
        StoreError: the store cannot be read.
    """
    tickers = list(spec.tickers)
    lookback = spec.training.lookback_days
    if bars_path is not None:
        return _read_files(bars_path, tickers, lookback, end)
    return _read_store(spec, tickers, lookback, store_url, end)


def _read_files(path: Path, tickers: list[str], lookback: int, end: date | None) -> TrainingData:
    from stockops_model.loaders import load_bars

    bars = load_bars(path, symbols=tickers, end=end)
    if bars.empty:
        raise DataError(f"{path}: no bars for {', '.join(tickers)}")
    days = pd.DatetimeIndex(bars["ts"]).tz_convert(MARKET_TZ).date
    keep_days = set(_last_days(list(days), lookback))
    bars = bars[pd.Series(days, index=bars.index).isin(keep_days)].reset_index(drop=True)
    files = [path] if path.is_file() else sorted(path.glob("*.csv"))
    objects = []
    for file in files:
        if file.stem.upper() not in tickers:
            continue
        data = file.read_bytes()
        objects.append(
            {
                "name": str(file),
                "etag": "sha256:" + hashlib.sha256(data).hexdigest(),
                "rows": int((bars["symbol"] == file.stem.upper()).sum()),
                "size": len(data),
            }
        )
    return TrainingData(bars, _lineage(str(path.resolve()), objects, bars))


def _read_store(
    spec: StockModelSpec, tickers: list[str], lookback: int, url: str | None, end: date | None
) -> TrainingData:
    from stockops_model.settings import DataPlaneSettings, store_target
    from stockops_model.store import open_store

    location, credentials = store_target(DataPlaneSettings.from_env(), spec.storage, url=url)
    end_ts = pd.Timestamp(end, tz=MARKET_TZ) + pd.Timedelta(days=1) if end else None

    async def go() -> tuple[pd.DataFrame, list[Any]]:
        async with open_store(location, credentials) as store:
            listed = await store.list_days(tickers, None, end_ts)
            days = _last_days([o.day for o in listed], lookback)
            if not days:
                return pd.DataFrame(), []
            start = pd.Timestamp(days[0], tz=MARKET_TZ)
            return await store.read_with_lineage(tickers, start, end_ts)

    bars, objects = asyncio.run(go())
    if bars.empty:
        raise DataError(f"store {location}: no bars for {', '.join(tickers)}")
    listed = [{"name": o.name, "etag": o.etag, "rows": o.rows, "size": o.size} for o in objects]
    return TrainingData(bars, _lineage(str(location), listed, bars))


def _lineage(source: str, objects: list[dict[str, Any]], bars: pd.DataFrame) -> dict[str, Any]:
    ts = pd.DatetimeIndex(bars["ts"])
    return {
        "source": source,
        "rows": len(bars),
        "rows_per_symbol": {str(k): int(v) for k, v in bars.groupby("symbol").size().items()},
        "start": ts.min().isoformat(),
        "end": ts.max().isoformat(),
        "trading_days": len(set(ts.tz_convert(MARKET_TZ).date)),
        "objects": objects,
    }


# --------------------------------------------------------------------------- MLflow


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id, creating it when missing.

    With a `sqlite:///` tracking URI (local mode, no server) artifacts go next to the
    database file instead of `./mlruns` of whatever directory the command runs in.
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    location = None
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        location = (db.parent / "artifacts").resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def log_training(result: TrainingResult, lineage: Mapping[str, Any]) -> None:
    """Test metrics, plots and lineage into the active run."""
    import mlflow

    from stockops_model import reports
    from stockops_model.training import MODEL

    for name, metrics in result.metrics.items():
        mlflow.log_metrics({f"test_{name}_{k}": v for k, v in finite_metrics(metrics).items()})
    naive_rmse = result.metrics["naive"]["rmse"]
    if naive_rmse > 0:
        mlflow.log_metric("test_rmse_vs_naive", result.metrics[MODEL]["rmse"] / naive_rmse)
    mlflow.log_metrics({f"windows_{k}": float(v) for k, v in result.sizes.items()})
    mlflow.log_metrics({f"seconds_{k}": v for k, v in result.seconds.items()})
    mlflow.log_metric("best_epoch", float(result.best_epoch))
    mlflow.set_tags({f"split.{k}": v for k, v in result.ranges.items()})
    figures = {
        "plots/loss_curve.png": reports.plot_loss_curve(result.history, result.best_epoch),
        "plots/forecast_vs_actual.png": reports.plot_forecast_vs_actual(
            result.test, ["naive", MODEL]
        ),
        "plots/attention.png": reports.plot_attention(result.attention),
    }
    for path, figure in figures.items():
        mlflow.log_figure(figure, path)
        reports.close_figure(figure)
    mlflow.log_dict(dict(lineage), "lineage.json")
    mlflow.set_tags(
        {
            "data.source": str(lineage["source"]),
            "data.start": str(lineage["start"]),
            "data.end": str(lineage["end"]),
            "data.rows": str(lineage["rows"]),
            "data.objects": str(len(lineage["objects"])),
        }
    )


# --------------------------------------------------------------------------- result


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    from stockops_model.spec import load_stockmodel

    manifest = load_stockmodel(args.file)
    data = read_training_data(manifest.spec, args.bars, args.store, args.end)
    result = train_and_register(
        manifest, data, tracking_uri=args.tracking_uri, gate=not args.no_gate
    )
    emit_result(result)
    return 0


def train_and_register(
    manifest: StockModel,
    data: TrainingData,
    tracking_uri: str | None = None,
    gate: bool = True,
) -> dict[str, Any]:
    """Everything after reading the bars: naive champion, training, registration, gate.

    Returns:
        The result document (what `stockops train` prints).
    """
    import mlflow
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from stockops_model import registry
    from stockops_model.forecaster import InputSpec
    from stockops_model.hyperparameters import Hyperparameters
    from stockops_model.promotion import promote_if_better
    from stockops_model.training import MODEL, train_forecaster

    spec = manifest.spec
    uri = resolve_tracking_uri(tracking_uri, spec)
    client = connect_mlflow(uri)
    model_name = spec.mlflow.model_name
    experiment_id = ensure_experiment(client, spec.mlflow.experiment or model_name, uri)
    inputs = InputSpec.from_spec(spec)
    params = Hyperparameters.from_spec(spec)
    started = time.perf_counter()

    registry.ensure_naive_champion(
        client, model_name, inputs.tickers, inputs.horizon, data.bars, experiment_id
    )
    job_name = os.environ.get(JOB_NAME_ENV, "").strip()
    tags = {
        registry.TAG_KIND: "network",
        registry.TAG_CODE_VERSION: registry.code_version(),
        TAG_STOCKMODEL: f"{manifest.metadata.namespace}/{manifest.metadata.name}",
    }
    if job_name:
        tags[TAG_JOB_NAME] = job_name
    console = Console(stderr=True)
    with mlflow.start_run(experiment_id=experiment_id, run_name=job_name or None) as run:
        mlflow.set_tags(tags)
        mlflow.log_params(params.as_params())
        mlflow.log_params(
            {
                "tickers": ",".join(inputs.tickers),
                "features": ",".join(inputs.columns),
                "lookback_days": spec.training.lookback_days,
            }
        )
        with Progress(
            TextColumn("[bold]training[/bold] {task.description}"),
            BarColumn(),
            TextColumn("epoch {task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("", total=params.epochs)

            def on_epoch(epoch: int, logs: Mapping[str, float]) -> None:
                mlflow.log_metrics(finite_metrics(logs), step=epoch)
                progress.update(
                    task,
                    completed=epoch + 1,
                    description=" ".join(f"{k}={v:.4g}" for k, v in logs.items()),
                )

            result = train_forecaster(data.bars, inputs, params, on_epoch)
        log_training(result, data.lineage)
        metrics = result.metrics
        version_tags = {
            **tags,
            "stockops.run-id": run.info.run_id,
            "data.start": data.lineage["start"],
            "data.end": data.lineage["end"],
            "data.rows": data.lineage["rows"],
            **{
                f"test.{k}.{m}": f"{v:.8g}"
                for k in metrics
                for m, v in finite_metrics(metrics[k]).items()
            },
        }
        info = registry.log_forecaster(
            result.forecaster, data.bars, registered_model_name=model_name, tags=tags
        )
        version = str(registry.registered_version(client, model_name, info).version)
        registry.tag_version(client, model_name, version, version_tags)
        console.print(
            f"registered {model_name} version {version}: test RMSE "
            f"{metrics[MODEL]['rmse']:.6g} (naive {metrics['naive']['rmse']:.6g})"
        )
    outcome: dict[str, Any] = {
        "model": model_name,
        "stockmodel": tags[TAG_STOCKMODEL],
        "run_id": run.info.run_id,
        "challenger_version": version,
        "test": {k: finite_metrics(v) for k, v in metrics.items()},
        "data": {k: data.lineage[k] for k in ("start", "end", "rows", "trading_days")},
    }
    if gate:
        decision = promote_if_better(
            client,
            model_name,
            version,
            data.bars,
            spec.promotion,
            inputs.horizon,
            # Only origins the challenger was not fitted or early-stopped on.
            first_origin=result.test["end_ts"].min(),
        )
        outcome.update(
            promoted=decision.promoted,
            reason=decision.reason,
            champion_version=decision.champion_version,
            production_version=decision.production_version,
            gate=decision.to_dict(),
        )
        console.print(f"gate: {'promoted' if decision.promoted else 'kept'} - {decision.reason}")
    outcome["seconds"] = round(time.perf_counter() - started, 1)
    if job_name:
        outcome["job_name"] = job_name
    return outcome
