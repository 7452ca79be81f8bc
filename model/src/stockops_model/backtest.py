"""`stockops backtest`: rolling-origin (walk-forward) evaluation against the naive forecast.

The last `--folds` blocks of `--test-days` trading days are the test blocks, oldest first.
For each fold the origin is the first bar of its test block:

- training data: the `--train-days` trading days before the origin (all earlier days when
  0), features computed over the whole history so test windows see real indicator history;
- validation: the last `validationBps` share of those windows, separated from the training
  windows by a purge (no validation window starts before the last training target);
- a fresh network and fresh scalers are fitted on that fold's training windows only, with
  early stopping on its validation windows;
- test: every window whose last bar lies in the test block, scored in price units against
  the naive (last close) forecast; targets never span a session (`windows.build_dataset`).

Prints one row per fold and a pooled row (rich table on stderr), and one JSON line on
stdout with every figure. Nothing is logged to MLflow or registered: a backtest judges a
configuration, not a model to serve.

Limits: one network per fold for all tickers, like `stockops train`; folds run one after
the other (2 cores here).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from stockops_model.errors import DataError
from stockops_model.evaluate import finite_metrics

log = logging.getLogger(__name__)

MARKET_TZ = "America/New_York"


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: train on days before `origin`, test on `test_days`."""

    number: int
    train_days: tuple[Any, ...]
    test_days: tuple[Any, ...]


def plan_folds(days: list[Any], folds: int, test_days: int, train_days: int) -> list[Fold]:
    """The folds over sorted trading `days` (oldest first).

    Raises:
        DataError: not enough days for the folds asked for plus at least two training days.
    """
    need = folds * test_days + max(train_days, 2)
    if len(days) < need:
        raise DataError(
            f"{len(days)} trading day(s) are too few for {folds} fold(s) of {test_days} test "
            f"day(s) and {max(train_days, 2)} training day(s)"
        )
    out = []
    for k in range(folds):
        start = len(days) - (folds - k) * test_days
        first_train = 0 if train_days == 0 else max(0, start - train_days)
        out.append(
            Fold(k + 1, tuple(days[first_train:start]), tuple(days[start : start + test_days]))
        )
    return out


def _days_of(ts: npt.NDArray[np.datetime64]) -> npt.NDArray[Any]:
    stamps = pd.DatetimeIndex(ts).tz_localize("UTC").tz_convert(MARKET_TZ)
    return np.asarray(stamps.date)


def fold_indices(
    end_ts: npt.NDArray[np.datetime64],
    start_ts: npt.NDArray[np.datetime64],
    target_ts: npt.NDArray[np.datetime64],
    fold: Fold,
    validation_bps: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Train, validation and test window indices of one fold (see the module docstring)."""
    days = _days_of(end_ts)
    test = np.flatnonzero(np.isin(days, fold.test_days))
    origin = end_ts[test].min() if len(test) else np.datetime64("NaT")
    # Training windows: in the fold's training days and with their target before the origin.
    pool = np.flatnonzero(np.isin(days, fold.train_days) & (target_ts < origin))
    if len(pool) < 4 or len(test) == 0:
        raise DataError(f"fold {fold.number}: too few windows to train and test")
    ordered = pool[np.argsort(end_ts[pool], kind="stable")]
    cut = int(len(ordered) * (10_000 - validation_bps) // 10_000)
    train, rest = ordered[:cut], ordered[cut:]
    validation = rest[start_ts[rest] > target_ts[train].max()]
    if len(validation) == 0:
        raise DataError(f"fold {fold.number}: no validation window left after the purge")
    return train.astype(np.int64), validation.astype(np.int64), test.astype(np.int64)


def run_backtest(
    bars: pd.DataFrame,
    inputs: Any,
    params: Any,
    folds: int = 3,
    test_days: int = 1,
    train_days: int = 0,
) -> dict[str, Any]:
    """Walk-forward backtest of the network against the naive forecast.

    Args:
        bars: canonical bars of the tickers in `inputs`.
        inputs: `forecaster.InputSpec`.
        params: `hyperparameters.Hyperparameters` (epochs, batch size, seed, ...).
        folds, test_days, train_days: see the module docstring.

    Returns:
        {"folds": [per-fold metrics], "pooled": metrics over all test windows,
        "predictions": DataFrame of every test window with actual, naive and model}.
    """
    from stockops_model.evaluate import evaluate_forecasts
    from stockops_model.training import MODEL, fit_network, prepare_dataset, tabulate_forecasts

    dataset = prepare_dataset(bars, inputs)
    days = sorted(set(_days_of(dataset.end_ts)))
    plan = plan_folds(days, folds, test_days, train_days)
    rows: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    for fold in plan:
        train, validation, test = fold_indices(
            dataset.end_ts, dataset.start_ts, dataset.target_ts, fold, params.validation_bps
        )
        forecaster, history, best = fit_network(
            dataset.subset(train), dataset.subset(validation), inputs, params
        )
        part = dataset.subset(test)
        forecast = forecaster.forecast_windows(part.X, part.last_close)
        metrics = evaluate_forecasts(
            part.future_close, part.last_close, {MODEL: forecast}, horizon=inputs.horizon
        )
        rows.append(
            {
                "fold": fold.number,
                "train_days": f"{fold.train_days[0]}..{fold.train_days[-1]}",
                "test_days": f"{fold.test_days[0]}..{fold.test_days[-1]}",
                "windows": {"train": len(train), "validation": len(validation), "test": len(test)},
                "epochs": len(history["loss"]),
                "best_epoch": best,
                "metrics": metrics,
            }
        )
        frames.append(tabulate_forecasts(part, {MODEL: forecast}).assign(fold=fold.number))
        log.info(
            "fold %d: RMSE model %.6g naive %.6g",
            fold.number,
            metrics[MODEL]["rmse"],
            metrics["naive"]["rmse"],
        )
    predictions = pd.concat(frames, ignore_index=True)
    pooled = evaluate_forecasts(
        predictions["actual"],
        predictions["last_close"],
        {MODEL: predictions[MODEL]},
        horizon=inputs.horizon,
    )
    return {"folds": rows, "pooled": pooled, "predictions": predictions}


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stockops_model.train import add_data_arguments

    add_data_arguments(parser)
    parser.add_argument("--folds", type=int, default=3, help="walk-forward folds (default 3)")
    parser.add_argument(
        "--test-days", type=int, default=1, help="trading days per test block (default 1)"
    )
    parser.add_argument(
        "--train-days",
        type=int,
        default=0,
        help="trading days of training data per fold (default 0: all earlier days)",
    )
    parser.add_argument("--epochs", type=int, help="override spec.training.epochs")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from stockops_model.forecaster import InputSpec
    from stockops_model.hyperparameters import Hyperparameters
    from stockops_model.spec import load_stockmodel
    from stockops_model.train import read_training_data
    from stockops_model.training import MODEL

    if args.folds < 1 or args.test_days < 1 or args.train_days < 0:
        raise DataError("--folds and --test-days must be >= 1, --train-days >= 0")
    spec = load_stockmodel(args.file).spec
    data = read_training_data(spec, args.bars, args.store, args.end)
    inputs = InputSpec.from_spec(spec)
    params = Hyperparameters.from_spec(spec)
    if args.epochs:
        params = params.with_changes(epochs=args.epochs)
    outcome = run_backtest(data.bars, inputs, params, args.folds, args.test_days, args.train_days)

    table = Table(title=f"walk-forward backtest, {', '.join(inputs.tickers)}")
    for column in (
        "fold",
        "test days",
        "windows",
        "RMSE naive",
        "RMSE model",
        "MASE",
        "DA",
        "up rate",
        "DM p",
    ):
        table.add_column(column, justify="right")
    entries = [(str(r["fold"]), r["test_days"], r["metrics"]) for r in outcome["folds"]]
    entries.append(("all", "", outcome["pooled"]))
    for fold, days, metrics in entries:
        model, naive = metrics[MODEL], metrics["naive"]
        table.add_row(
            fold,
            days,
            f"{model['n']:.0f}",
            f"{naive['rmse']:.5g}",
            f"{model['rmse']:.5g}",
            f"{model['mase']:.3f}",
            f"{model['directional_accuracy']:.3f}",
            f"{model['up_base_rate']:.3f}",
            f"{model['dm_p_value']:.3g}",
        )
    Console(stderr=True, width=140).print(table)
    summary = {
        "tickers": list(inputs.tickers),
        "folds": [
            {
                **{k: v for k, v in r.items() if k != "metrics"},
                "metrics": {n: finite_metrics(m) for n, m in r["metrics"].items()},
            }
            for r in outcome["folds"]
        ],
        "pooled": {n: finite_metrics(m) for n, m in outcome["pooled"].items()},
    }
    print(json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str))
    return 0
