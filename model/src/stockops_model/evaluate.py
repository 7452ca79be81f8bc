"""Forecast quality on the same test windows: error metrics and the Diebold-Mariano test.

All forecasts are in price units (forecast close), compared against the realised close
`actual` and the window's last close `last_close`, which is also the naive (persistence)
forecast. Every report includes the naive forecast, because at a one-minute horizon it
is very hard to beat.

- `rmse`, `mae`: in price units.
- `mase`: MAE of the forecast / MAE of the naive forecast on the same windows. This is
  the "relative MAE" form of MASE (Hyndman & Koehler 2006 scale by the in-sample naive
  MAE; scaling by the naive MAE on the evaluation windows makes the number directly
  "how much better than persistence here": below 1 beats it).
- `directional_accuracy`: among windows where the price moved (actual != last close),
  the share where the forecast moved the same way; a forecast of "no change" counts as
  wrong. Returned with the share of up-moves among those windows: always guessing the
  majority direction scores max(base, 1 - base), the bar to beat. Unchanged windows
  (frequent at one minute) are left out of both.
- `diebold_mariano`: H0 equal expected loss; Harvey, Leybourne & Newbold (1997) small-sample
  correction, Student-t with n-1 degrees of freedom, two-sided p-value. A negative
  statistic means the first forecaster has the lower loss.

Limits: the DM test assumes the loss differential is covariance-stationary; with overlapping
targets (horizon > 1) the long-run variance uses autocovariances up to lag horizon-1.
This module does not import TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

ArrayLike = npt.ArrayLike
NAIVE = "naive"


def _vectors(*arrays: ArrayLike) -> list[npt.NDArray[np.float64]]:
    out = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    if len({a.shape[0] for a in out}) != 1:
        raise ValueError(f"arrays differ in length: {[a.shape[0] for a in out]}")
    if out[0].shape[0] == 0:
        raise ValueError("no values to evaluate")
    return out


def rmse(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Root mean squared error, in the units of the inputs."""
    a, f = _vectors(actual, forecast)
    return float(np.sqrt(np.mean((a - f) ** 2)))


def mae(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Mean absolute error, in the units of the inputs."""
    a, f = _vectors(actual, forecast)
    return float(np.mean(np.abs(a - f)))


def mase(actual: ArrayLike, forecast: ArrayLike, naive_forecast: ArrayLike) -> float:
    """MAE of `forecast` divided by the MAE of `naive_forecast` on the same windows.

    Returns inf when the naive forecast is exact everywhere and `forecast` is not, and 1.0
    when both are exact.
    """
    a, f, n = _vectors(actual, forecast, naive_forecast)
    scale = float(np.mean(np.abs(a - n)))
    err = float(np.mean(np.abs(a - f)))
    if scale == 0.0:
        return 1.0 if err == 0.0 else math.inf
    return err / scale


def directional_accuracy(
    last_close: ArrayLike, actual: ArrayLike, forecast: ArrayLike
) -> tuple[float, float]:
    """(accuracy, up_base_rate) over the windows where the price moved.

    Returns (nan, nan) if the price never moved.
    """
    last, a, f = _vectors(last_close, actual, forecast)
    actual_sign = np.sign(a - last)
    moved = actual_sign != 0
    if not moved.any():
        return math.nan, math.nan
    hits = np.sign(f - last)[moved] == actual_sign[moved]
    return float(hits.mean()), float((actual_sign[moved] > 0).mean())


@dataclass(frozen=True)
class DMResult:
    """Diebold-Mariano test result: negative statistic = the first forecaster is better."""

    statistic: float
    p_value: float
    mean_loss_difference: float
    n: int


def diebold_mariano(
    errors_a: ArrayLike,
    errors_b: ArrayLike,
    horizon: int = 1,
    loss: Literal["squared", "absolute"] = "squared",
) -> DMResult:
    """Test equal predictive accuracy of two forecasts from their errors on the same windows.

    d_t = L(e_a,t) - L(e_b,t); DM = mean(d) / sqrt(V / n) with V the long-run variance of d
    (autocovariances up to lag horizon-1; if that estimate is not positive, the lag-0
    variance alone). HLN correction: DM * sqrt((n + 1 - 2h + h(h-1)/n) / n), compared with
    Student's t, n-1 degrees of freedom, two-sided.

    Identical losses give statistic 0 and p-value 1; a constant non-zero difference gives
    an infinite statistic and p-value 0.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    ea, eb = _vectors(errors_a, errors_b)
    if loss == "squared":
        d = ea**2 - eb**2
    elif loss == "absolute":
        d = np.abs(ea) - np.abs(eb)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    n = d.shape[0]
    if n < 2:
        raise ValueError("the Diebold-Mariano test needs at least 2 windows")
    mean = float(d.mean())
    centred = d - mean
    gamma0 = float(centred @ centred) / n
    variance = gamma0 + 2.0 * sum(
        float(centred[k:] @ centred[:-k]) / n for k in range(1, min(horizon, n))
    )
    if variance <= 0.0:
        variance = gamma0
    if variance <= 0.0 or not math.isfinite(variance):
        if mean == 0.0:
            return DMResult(0.0, 1.0, 0.0, n)
        return DMResult(math.copysign(math.inf, mean), 0.0, mean, n)
    dm = mean / math.sqrt(variance / n)
    correction = math.sqrt(max((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n, 0.0))
    statistic = dm * correction
    p_value = float(2.0 * stats.t.sf(abs(statistic), df=n - 1))
    return DMResult(float(statistic), p_value, mean, n)


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The finite entries of a metric set, as floats: what MLflow and JSON can carry.

    NaN (an undefined metric, e.g. directional accuracy when the price never moved, or the
    DM test of the reference against itself) and infinities are left out.
    """
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def evaluate_forecasts(
    actual: ArrayLike,
    last_close: ArrayLike,
    forecasts: Mapping[str, ArrayLike],
    *,
    horizon: int = 1,
    reference: str = NAIVE,
) -> dict[str, dict[str, float]]:
    """Metrics per forecaster on the same windows, the naive forecast always included.

    Args:
        actual: realised closes.
        last_close: the windows' last closes (the naive forecast).
        forecasts: name -> forecast closes; a name "naive" is reserved for persistence.
        horizon: forecast horizon in bars, for the DM test's autocovariance lags.
        reference: which forecaster the DM test compares each other one with (default the
            naive forecast; pass the champion's name to test a challenger against it).

    Returns:
        name -> {rmse, mae, mase, directional_accuracy, up_base_rate, dm_statistic,
        dm_p_value, n}; the DM fields are for the forecaster against `reference` (NaN for
        the reference itself). Keys are plain floats, ready for MLflow and JSON.
    """
    a, last = _vectors(actual, last_close)
    if NAIVE in forecasts:
        raise ValueError(f"the forecaster name {NAIVE!r} is reserved for persistence")
    series: dict[str, npt.NDArray[np.float64]] = {NAIVE: last}
    for name, values in forecasts.items():
        (series[name],) = _vectors(values)
        if series[name].shape != a.shape:
            raise ValueError(f"forecast {name!r} has {series[name].shape[0]} values, not {len(a)}")
    if reference not in series:
        raise ValueError(f"reference {reference!r} is not among {', '.join(series)}")
    ref_errors = a - series[reference]
    report: dict[str, dict[str, float]] = {}
    for name, forecast in series.items():
        accuracy, base = directional_accuracy(last, a, forecast)
        if name == reference:
            dm = DMResult(math.nan, math.nan, 0.0, len(a))
        elif len(a) >= 2:
            dm = diebold_mariano(a - forecast, ref_errors, horizon=horizon)
        else:
            dm = DMResult(math.nan, math.nan, math.nan, len(a))
        report[name] = {
            "rmse": rmse(a, forecast),
            "mae": mae(a, forecast),
            "mase": mase(a, forecast, last),
            "directional_accuracy": accuracy,
            "up_base_rate": base,
            "dm_statistic": dm.statistic,
            "dm_p_value": dm.p_value,
            "n": float(len(a)),
        }
    return report
