"""Metrics against hand-computed values; Diebold-Mariano sign, symmetry and p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stockops_model.evaluate import (
    diebold_mariano,
    directional_accuracy,
    evaluate_forecasts,
    finite_metrics,
    mae,
    mase,
    rmse,
)

# Four windows worked by hand.
LAST = np.array([100.0, 100.0, 100.0, 100.0])
ACTUAL = np.array([101.0, 99.0, 100.0, 102.0])
FORECAST = np.array([100.5, 99.5, 100.5, 101.0])
# errors: 0.5, -0.5, -0.5, 1.0 ; naive errors: 1, -1, 0, 2


def test_rmse_and_mae_by_hand() -> None:
    assert rmse(ACTUAL, FORECAST) == pytest.approx(math.sqrt((0.25 + 0.25 + 0.25 + 1.0) / 4))
    assert mae(ACTUAL, FORECAST) == pytest.approx((0.5 + 0.5 + 0.5 + 1.0) / 4)


def test_mase_is_relative_to_the_naive_mae_on_the_same_windows() -> None:
    # naive MAE = (1 + 1 + 0 + 2) / 4 = 1.0 ; forecast MAE = 0.625
    assert mase(ACTUAL, FORECAST, LAST) == pytest.approx(0.625)
    assert mase(ACTUAL, LAST, LAST) == 1.0
    assert mase(LAST, LAST + 1.0, LAST) == math.inf
    assert mase(LAST, LAST, LAST) == 1.0


def test_directional_accuracy_by_hand() -> None:
    # moved windows: 0 (up), 1 (down), 3 (up); forecast directions: up, down, up -> 3/3.
    assert directional_accuracy(LAST, ACTUAL, FORECAST) == (1.0, pytest.approx(2 / 3))
    # a "no change" forecast is never right; the base rate does not depend on the forecast
    assert directional_accuracy(LAST, ACTUAL, LAST) == (0.0, pytest.approx(2 / 3))
    wrong = np.array([99.0, 101.0, 100.0, 103.0])  # down, up, -, up
    assert directional_accuracy(LAST, ACTUAL, wrong) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    accuracy, base = directional_accuracy(LAST, LAST, FORECAST)
    assert math.isnan(accuracy)
    assert math.isnan(base)


def test_diebold_mariano_by_hand() -> None:
    # Squared-error differences d = [1, 2, 3, 4]: mean 2.5, gamma0 = 1.25, n = 4.
    errors_a = np.sqrt(np.array([1.0, 2.0, 3.0, 4.0]) + 1.0)
    errors_b = np.ones(4)
    dm = 2.5 / math.sqrt(1.25 / 4)
    hln = dm * math.sqrt((4 + 1 - 2) / 4)
    result = diebold_mariano(errors_a, errors_b)
    assert result.statistic == pytest.approx(hln)
    assert result.p_value == pytest.approx(2 * stats.t.sf(hln, df=3))
    assert result.mean_loss_difference == pytest.approx(2.5)
    assert result.n == 4


def test_diebold_mariano_horizon_two_by_hand() -> None:
    # d = [1, 3, 2, 4, 5]: mean 3, centred [-2, 0, -1, 1, 2]
    # gamma0 = (4 + 0 + 1 + 1 + 4) / 5 = 2 ; gamma1 = (0 + 0 - 1 + 2) / 5 = 0.2
    d = np.array([1.0, 3.0, 2.0, 4.0, 5.0])
    variance = 2.0 + 2 * 0.2
    dm = 3.0 / math.sqrt(variance / 5)
    hln = dm * math.sqrt((5 + 1 - 4 + 2 * 1 / 5) / 5)
    result = diebold_mariano(d, np.zeros(5), horizon=2, loss="absolute")
    assert result.statistic == pytest.approx(hln)
    assert result.p_value == pytest.approx(2 * stats.t.sf(hln, df=4))


def test_diebold_mariano_is_antisymmetric() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=300), rng.normal(scale=1.2, size=300)
    ab, ba = diebold_mariano(a, b), diebold_mariano(b, a)
    assert ab.statistic == pytest.approx(-ba.statistic)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert ab.statistic < 0  # a has the smaller errors


def test_diebold_mariano_p_values_are_sane() -> None:
    rng = np.random.default_rng(5)
    good = rng.normal(scale=1.0, size=500)
    bad = rng.normal(scale=2.0, size=500)
    assert diebold_mariano(good, bad).p_value < 1e-6
    # Equal accuracy: over many samples, p < 0.05 about 5 % of the time.
    rejections = np.mean(
        [
            diebold_mariano(rng.normal(size=200), rng.normal(size=200)).p_value < 0.05
            for _ in range(400)
        ]
    )
    assert 0.02 < rejections < 0.09
    same = diebold_mariano(good, good)
    assert (same.statistic, same.p_value) == (0.0, 1.0)
    shifted = diebold_mariano(np.full(10, 2.0), np.full(10, 1.0))
    assert shifted.statistic == math.inf
    assert shifted.p_value == 0.0


def test_diebold_mariano_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="length"):
        diebold_mariano(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="at least 2"):
        diebold_mariano(np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="horizon"):
        diebold_mariano(np.ones(3), np.ones(3), horizon=0)


def test_evaluate_forecasts_always_includes_naive() -> None:
    report = evaluate_forecasts(ACTUAL, LAST, {"model": FORECAST})
    assert set(report) == {"naive", "model"}
    assert report["naive"]["mase"] == 1.0
    assert report["naive"]["rmse"] == pytest.approx(math.sqrt((1 + 1 + 0 + 4) / 4))
    assert report["model"]["mase"] == pytest.approx(0.625)
    assert report["model"]["directional_accuracy"] == 1.0
    assert report["model"]["up_base_rate"] == pytest.approx(2 / 3)
    assert math.isnan(report["naive"]["dm_p_value"])
    expected = diebold_mariano(ACTUAL - FORECAST, ACTUAL - LAST)
    assert report["model"]["dm_statistic"] == pytest.approx(expected.statistic)
    assert all(isinstance(v, float) for m in report.values() for v in m.values())


def test_evaluate_forecasts_against_a_champion() -> None:
    champion = np.array([100.8, 99.2, 100.2, 101.5])
    report = evaluate_forecasts(
        ACTUAL, LAST, {"challenger": FORECAST, "champion": champion}, reference="champion"
    )
    expected = diebold_mariano(ACTUAL - FORECAST, ACTUAL - champion)
    assert report["challenger"]["dm_p_value"] == pytest.approx(expected.p_value)
    assert math.isnan(report["champion"]["dm_statistic"])


def test_evaluate_forecasts_refuses_mismatched_input() -> None:
    with pytest.raises(ValueError, match="reserved"):
        evaluate_forecasts(ACTUAL, LAST, {"naive": LAST})
    with pytest.raises(ValueError, match="3 values"):
        evaluate_forecasts(ACTUAL, LAST, {"short": FORECAST[:3]})
    with pytest.raises(ValueError, match="reference"):
        evaluate_forecasts(ACTUAL, LAST, {"model": FORECAST}, reference="nobody")


def test_finite_metrics_drop_undefined_values_for_mlflow_and_json() -> None:
    report = evaluate_forecasts(ACTUAL, LAST, {"model": FORECAST})
    naive = finite_metrics(report["naive"])
    # The reference has no DM test against itself: NaN, left out.
    assert "dm_p_value" not in naive
    assert naive["mase"] == 1.0
    assert finite_metrics({"a": np.float64(2.0), "b": math.inf, "c": math.nan}) == {"a": 2.0}
