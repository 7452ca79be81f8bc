"""Scalers: paired transform/inverse, constant features, JSON round trip, train-only fit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stockops_model.features import build_features, feature_columns
from stockops_model.scalers import (
    MinMaxScaler,
    StandardScaler,
    fit_minmax,
    fit_standard,
    scaler_from_dict,
)
from stockops_model.spec import default_indicators
from stockops_model.windows import build_dataset, chronological_split

DATA = Path(__file__).parents[2] / "data" / "features" / "bars-amzn-axp-2018-02-21-23.csv"
TICKERS = ["AMZN", "AXP"]
Fit = Callable[[np.ndarray], StandardScaler | MinMaxScaler]


@pytest.fixture
def values() -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.normal(loc=[100.0, -3.0, 0.0], scale=[5.0, 0.01, 1.0], size=(200, 16, 3))
    x[..., 2] = 1.0  # a one-hot column of the only ticker: constant
    return x


def test_standard_scaler_centres_and_scales_each_feature(values: np.ndarray) -> None:
    scaler = fit_standard(values)
    z = scaler.transform(values)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[..., :2].reshape(-1, 2).mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[..., :2].reshape(-1, 2).std(axis=0), 1.0, atol=1e-5)


def test_constant_feature_stays_finite(values: np.ndarray) -> None:
    for scaler in (fit_standard(values), fit_minmax(values)):
        z = scaler.transform(values)
        assert np.isfinite(z).all()
        assert np.ptp(z[..., 2]) == 0.0
    # rounding noise of a constant column (mean of many 0.1 is not exactly 0.1)
    noisy = np.full((1000, 1), 0.1)
    assert fit_standard(noisy).scale[0] == 1.0


@pytest.mark.parametrize("fit", [fit_standard, fit_minmax])
def test_inverse_undoes_transform(values: np.ndarray, fit: Fit) -> None:
    scaler = fit(values)
    np.testing.assert_allclose(
        scaler.inverse_transform(scaler.transform(values)), values, rtol=1e-5
    )


def test_windows_and_rows_give_the_same_fit(values: np.ndarray) -> None:
    a = fit_standard(values)
    b = fit_standard(values.reshape(-1, 3))
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.scale, b.scale)


def test_minmax_maps_the_training_range_to_unit_interval_and_not_beyond(
    values: np.ndarray,
) -> None:
    scaler = fit_minmax(values)
    z = scaler.transform(values)
    assert z[..., :2].min() == pytest.approx(0.0, abs=1e-6)
    assert z[..., :2].max() == pytest.approx(1.0, abs=1e-6)
    # A price above the training range leaves [0, 1]: why the level target extrapolates badly.
    above = values[:1].copy()
    above[..., 0] = values[..., 0].max() + 10.0
    assert (scaler.transform(above)[..., 0] > 1.0).all()


@pytest.mark.parametrize("fit", [fit_standard, fit_minmax])
def test_json_round_trip_restores_the_scaler_exactly(values: np.ndarray, fit: Fit) -> None:
    scaler = fit(values)
    restored = scaler_from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert type(restored) is type(scaler)
    np.testing.assert_array_equal(restored.transform(values), scaler.transform(values))


def test_from_dict_refuses_the_other_kind(values: np.ndarray) -> None:
    with pytest.raises(ValueError, match="kind"):
        MinMaxScaler.from_dict(fit_standard(values).to_dict())
    with pytest.raises(ValueError, match="kind"):
        StandardScaler.from_dict(fit_minmax(values).to_dict())


def test_feature_count_mismatch_is_refused(values: np.ndarray) -> None:
    with pytest.raises(ValueError, match="features"):
        fit_standard(values).transform(values[..., :2])


def test_fit_refuses_empty_or_non_finite_input() -> None:
    with pytest.raises(ValueError, match="zero rows"):
        fit_standard(np.empty((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        fit_minmax(np.array([[1.0], [np.nan]]))


def test_scaler_fitted_on_train_ignores_validation_and_test_data() -> None:
    # Build the dataset twice from bars that differ only after the training part: the
    # scaler fitted on the training windows must be identical.
    bars = pd.read_csv(DATA, parse_dates=["ts"])
    indicators = default_indicators()
    columns = feature_columns(indicators, TICKERS)

    def fitted(frame: pd.DataFrame) -> tuple[StandardScaler, np.ndarray]:
        ds = build_dataset(build_features(frame, indicators, TICKERS), columns, 32, 1, "return")
        split = chronological_split(
            ds.end_ts, 32, 1, 1500, 1500, start_ts=ds.start_ts, target_ts=ds.target_ts
        )
        y_scaler = fit_standard(ds.y[split.train].reshape(-1, 1))
        return fit_standard(ds.X[split.train]), np.concatenate([y_scaler.mean, y_scaler.scale])

    before, y_before = fitted(bars)
    ds = build_dataset(build_features(bars, indicators, TICKERS), columns, 32, 1, "return")
    split = chronological_split(
        ds.end_ts, 32, 1, 1500, 1500, start_ts=ds.start_ts, target_ts=ds.target_ts
    )
    later = bars["ts"] > pd.Timestamp(ds.end_ts[split.validation].min(), tz="UTC")
    changed = bars.copy()
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.5
    after, y_after = fitted(changed)

    np.testing.assert_array_equal(before.mean, after.mean)
    np.testing.assert_array_equal(before.scale, after.scale)
    np.testing.assert_array_equal(y_before, y_after)
    # and the change did reach the data: fitting on everything would differ
    everything_before = fit_standard(ds.X)
    ds_changed = build_dataset(
        build_features(changed, indicators, TICKERS), columns, 32, 1, "return"
    )
    assert not np.allclose(everything_before.mean, fit_standard(ds_changed.X).mean)
