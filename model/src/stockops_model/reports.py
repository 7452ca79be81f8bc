"""The plots a training run logs to MLflow: loss curve, forecast vs actual, attention heatmap.

Each function draws one matplotlib figure and returns it; the caller logs it with
`mlflow.log_figure` and closes it. The Agg backend is selected on import because training
runs in containers with no display, and pyplot's interactive backends would need one.

Limits: figures are for people, not for parsing; long test windows are thinned to the last
`max_points` bars per ticker so the plot stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.figure import Figure


def plot_loss_curve(
    history: Mapping[str, Sequence[float]], best_epoch: int | None = None
) -> Figure:
    """Training and validation loss per epoch, with the restored best epoch marked.

    Args:
        history: Keras `History.history`: `loss` and, when validated, `val_loss`.
        best_epoch: 0-based epoch whose weights were restored, if any.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        values = history.get(key)
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=label)
    if best_epoch is not None:
        ax.axvline(best_epoch + 1, color="grey", linestyle="--", label="restored weights")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE, scaled target)")
    ax.set_yscale("log")
    ax.set_title("Loss per epoch")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_forecast_vs_actual(
    frame: pd.DataFrame, forecast_columns: Sequence[str], max_points: int = 390
) -> Figure:
    """Actual close and each forecast over the test window, one panel per ticker.

    Args:
        frame: one row per forecast origin with `symbol`, `target_ts` (the bar forecast),
            `actual` and one column per forecaster named in `forecast_columns`.
        forecast_columns: e.g. `["naive", "model"]`.
        max_points: the last bars per ticker to draw.
    """
    symbols = sorted(frame["symbol"].unique())
    fig, axes = plt.subplots(len(symbols), 1, figsize=(9, 3 * max(1, len(symbols))), squeeze=False)
    for ax, symbol in zip(axes[:, 0], symbols, strict=True):
        part = frame[frame["symbol"] == symbol].sort_values("target_ts").tail(max_points)
        x = np.arange(len(part))
        ax.plot(x, part["actual"].to_numpy(), color="black", linewidth=1.2, label="actual")
        for column in forecast_columns:
            ax.plot(x, part[column].to_numpy(), linewidth=0.9, alpha=0.8, label=column)
        first, last = part["target_ts"].iloc[0], part["target_ts"].iloc[-1]
        ax.set_title(f"{symbol}: {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC")
        ax.set_ylabel("close")
        ax.legend(loc="upper left", fontsize="small")
    axes[-1, 0].set_xlabel("test bar")
    fig.tight_layout()
    return fig


def plot_attention(weights: npt.NDArray[np.floating], max_rows: int = 64) -> Figure:
    """Heatmap of attention weights: one row per window, one column per time step.

    Args:
        weights: shape (windows, window), each row sums to 1 (softmax over time).
        max_rows: the last windows to draw.
    """
    data = np.asarray(weights, dtype=float)[-max_rows:]
    fig, (heat, mean) = plt.subplots(
        2, 1, figsize=(8, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    image = heat.imshow(data, aspect="auto", cmap="viridis", interpolation="nearest")
    heat.set_ylabel("test window")
    heat.set_title("Attention over the time steps of a window (right = latest bar)")
    fig.colorbar(image, ax=heat, fraction=0.03)
    mean.bar(np.arange(data.shape[1]), data.mean(axis=0))
    mean.set_xlabel("time step in window")
    mean.set_ylabel("mean weight")
    fig.tight_layout()
    return fig


def close_figure(fig: Figure) -> None:
    """Free a figure's memory (pyplot keeps every open figure alive otherwise)."""
    plt.close(fig)
