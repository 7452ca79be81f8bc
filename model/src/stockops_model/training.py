"""The training loop: bars -> features -> windows -> chronological split -> scalers -> fit.

`train_forecaster` is pure computation (no MLflow, no terminal): it returns the fitted
`NetworkForecaster`, the loss history and the evaluation on the test windows, and reports
each epoch through an optional callback. `stockops train` (`stockops_model.train`) and
`stockops backtest` wrap it with logging, registration and progress display.

Protocol, chosen to avoid the original system's leakage:

- windows and targets from `stockops_model.windows.build_dataset` (the target never spans
  an overnight gap), split chronologically by window end time with a purge of at least one
  window plus the horizon between the parts (`chronological_split`);
- scalers fitted on the training part only: standard scaling of inputs and target for the
  `return` target, min-max for the `level` target (the original system's choice);
- Adam on MSE, shuffled mini-batches, early stopping on the validation loss with the best
  epoch's weights restored, seeds set before the weights are drawn;
- evaluation on the test windows in price units, side by side with the naive forecast
  (`stockops_model.evaluate.evaluate_forecasts`).

Limits: everything is held in memory; one model for all tickers (a one-hot ticker column
tells them apart).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from stockops_model.errors import DataError
from stockops_model.evaluate import evaluate_forecasts
from stockops_model.features import build_features
from stockops_model.forecaster import InputSpec, NetworkForecaster
from stockops_model.hyperparameters import Hyperparameters
from stockops_model.scalers import Scaler, fit_minmax, fit_standard
from stockops_model.windows import Dataset, Split, build_dataset, chronological_split

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, Mapping[str, float]], None]
MODEL = "model"
# Test windows whose attention weights are computed for the heatmap.
ATTENTION_SAMPLE = 256


@dataclass
class TrainingResult:
    """What one training run produced.

    Attributes:
        forecaster: the fitted forecaster (best validation epoch's weights).
        history: Keras history: `loss` and `val_loss` per epoch (scaled target, MSE).
        best_epoch: 0-based epoch whose weights were restored.
        metrics: per forecaster ("naive", "model") on the test windows, see
            `evaluate_forecasts` (DM statistic of the model against the naive forecast).
        test: one row per test window: symbol, end_ts, target_ts, last_close, actual,
            naive, model.
        attention: (n, window) attention weights of the last test windows.
        sizes: windows in the train, validation and test parts.
        ranges: first and last window end time of each part (ISO strings).
        seconds: wall time of each stage.
    """

    forecaster: NetworkForecaster
    history: dict[str, list[float]]
    best_epoch: int
    metrics: dict[str, dict[str, float]]
    test: pd.DataFrame
    attention: npt.NDArray[np.float32]
    sizes: dict[str, int]
    ranges: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_dataset(bars: pd.DataFrame, inputs: InputSpec) -> Dataset:
    """Features and windows of all tickers, ready to split.

    Raises:
        DataError: the bars yield no window at all.
    """
    features = build_features(bars, inputs.indicators, inputs.tickers)
    dataset = build_dataset(features, inputs.columns, inputs.window, inputs.horizon, inputs.target)
    if len(dataset) == 0:
        raise DataError(
            f"no training windows: each ticker needs more than {inputs.min_bars} bars "
            f"(window {inputs.window} plus indicator warm-up)"
        )
    return dataset


def split_dataset(dataset: Dataset, params: Hyperparameters) -> Split:
    """The purged chronological split of `dataset` for these hyperparameters."""
    return chronological_split(
        dataset.end_ts,
        params.window,
        params.horizon,
        params.validation_bps,
        params.test_bps,
        start_ts=dataset.start_ts,
        target_ts=dataset.target_ts,
    )


def fit_scalers(train: Dataset, target: str) -> tuple[Scaler, Scaler]:
    """Input and target scalers fitted on the training part only."""
    if target == "level":
        return fit_minmax(train.X), fit_minmax(train.y.reshape(-1, 1))
    return fit_standard(train.X), fit_standard(train.y.reshape(-1, 1))


def _epoch_callback(on_epoch: EpochCallback) -> Any:
    import keras

    class Report(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            on_epoch(epoch, {k: float(v) for k, v in (logs or {}).items()})

    return Report()


def fit_network(
    train: Dataset,
    validation: Dataset,
    inputs: InputSpec,
    params: Hyperparameters,
    on_epoch: EpochCallback | None = None,
) -> tuple[NetworkForecaster, dict[str, list[float]], int]:
    """Scale, build and fit the network with early stopping; returns forecaster, history, best.

    Raises:
        DataError: a part is empty.
    """
    import keras

    from stockops_model.network import build_network

    if len(train) == 0 or len(validation) == 0:
        raise DataError("training and validation parts must both hold windows")
    x_scaler, y_scaler = fit_scalers(train, inputs.target)
    network = build_network(
        inputs.window, len(inputs.columns), params.units, params.learning_rate, params.seed
    )
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=params.patience, restore_best_weights=True
    )
    callbacks: list[Any] = [stopper]
    if on_epoch is not None:
        callbacks.append(_epoch_callback(on_epoch))
    fitted = network.fit(
        x_scaler.transform(train.X),
        y_scaler.transform(train.y.reshape(-1, 1)),
        validation_data=(
            x_scaler.transform(validation.X),
            y_scaler.transform(validation.y.reshape(-1, 1)),
        ),
        epochs=params.epochs,
        batch_size=params.batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    losses = history.get("val_loss") or history["loss"]
    best_epoch = int(np.argmin(losses))
    forecaster = NetworkForecaster(inputs, x_scaler, y_scaler, network)
    return forecaster, history, best_epoch


def tabulate_forecasts(
    test: Dataset, forecasts: Mapping[str, npt.NDArray[np.float64]]
) -> pd.DataFrame:
    """One row per test window with the actual close and each forecast."""
    frame = pd.DataFrame(
        {
            "symbol": test.symbol.astype(str),
            "end_ts": pd.to_datetime(test.end_ts).tz_localize("UTC"),
            "target_ts": pd.to_datetime(test.target_ts).tz_localize("UTC"),
            "last_close": test.last_close,
            "actual": test.future_close,
            "naive": test.last_close,
        }
    )
    for name, values in forecasts.items():
        frame[name] = values
    return frame


def _range(part: Dataset) -> str:
    first, last = part.end_ts.min(), part.end_ts.max()
    return f"{pd.Timestamp(first).isoformat()}Z..{pd.Timestamp(last).isoformat()}Z"


def train_forecaster(
    bars: pd.DataFrame,
    inputs: InputSpec,
    params: Hyperparameters,
    on_epoch: EpochCallback | None = None,
) -> TrainingResult:
    """Train on `bars` and evaluate on the chronologically last test windows.

    Args:
        bars: canonical bars of the spec's tickers (any order).
        inputs: tickers, indicators, window, horizon, target.
        params: hyperparameters (window/horizon/target must agree with `inputs`).
        on_epoch: called after each epoch with (epoch, logs) for progress and MLflow.

    Raises:
        DataError: too few bars for a split with non-empty parts.
    """
    from stockops_model.network import attention_weights

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    dataset = prepare_dataset(bars, inputs)
    split = split_dataset(dataset, params)
    train, validation, test = (
        dataset.subset(i) for i in (split.train, split.validation, split.test)
    )
    seconds["prepare"] = time.perf_counter() - started

    started = time.perf_counter()
    forecaster, history, best_epoch = fit_network(train, validation, inputs, params, on_epoch)
    seconds["fit"] = time.perf_counter() - started

    started = time.perf_counter()
    forecast = forecaster.forecast_windows(test.X, test.last_close)
    metrics = evaluate_forecasts(
        test.future_close, test.last_close, {MODEL: forecast}, horizon=inputs.horizon
    )
    sample = forecaster.x_scaler.transform(test.X[-ATTENTION_SAMPLE:])
    attention = attention_weights(forecaster.network, sample)
    seconds["evaluate"] = time.perf_counter() - started
    log.info(
        "trained %s windows in %.1f s; test RMSE model %.6g, naive %.6g",
        len(train),
        seconds["fit"],
        metrics[MODEL]["rmse"],
        metrics["naive"]["rmse"],
    )
    return TrainingResult(
        forecaster=forecaster,
        history=history,
        best_epoch=best_epoch,
        metrics=metrics,
        test=tabulate_forecasts(test, {MODEL: forecast}),
        attention=attention,
        sizes={"train": len(train), "validation": len(validation), "test": len(test)},
        ranges={"train": _range(train), "validation": _range(validation), "test": _range(test)},
        seconds=seconds,
    )
