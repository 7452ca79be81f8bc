"""Walk-forward folds: each fold trains only on what was known before its test block."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from stockops_model.backtest import Fold, fold_indices, plan_folds
from stockops_model.errors import DataError
from stockops_model.forecaster import InputSpec
from stockops_model.loaders import load_bars
from stockops_model.spec import IndicatorName, IndicatorSpec
from stockops_model.training import prepare_dataset
from stockops_model.windows import Dataset

DATA = Path(__file__).parents[2] / "data" / "bars-2018-1min"
DAYS = [date(2018, 3, 1) + timedelta(days=i) for i in range(10)]


def test_folds_walk_forward_over_the_last_days() -> None:
    folds = plan_folds(DAYS, folds=3, test_days=1, train_days=0)
    assert [f.test_days for f in folds] == [(DAYS[7],), (DAYS[8],), (DAYS[9],)]
    # All earlier days, and never a test day or a later one.
    assert [f.train_days for f in folds] == [tuple(DAYS[:7]), tuple(DAYS[:8]), tuple(DAYS[:9])]


def test_folds_with_a_fixed_training_span() -> None:
    folds = plan_folds(DAYS, folds=2, test_days=2, train_days=3)
    assert folds[0].train_days == tuple(DAYS[3:6])
    assert folds[0].test_days == tuple(DAYS[6:8])
    assert folds[1].train_days == tuple(DAYS[5:8])
    assert folds[1].test_days == tuple(DAYS[8:10])


def test_too_few_days_for_the_folds() -> None:
    with pytest.raises(DataError, match="too few"):
        plan_folds(DAYS[:4], folds=3, test_days=1, train_days=0)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    inputs = InputSpec(
        tickers=("AMZN", "AXP"),
        indicators=(
            IndicatorSpec(name=IndicatorName.CLOSE),
            IndicatorSpec(name=IndicatorName.SMA, period=10),
        ),
        window=8,
        horizon=1,
        target="return",
    )
    return prepare_dataset(load_bars(DATA, symbols=inputs.tickers), inputs)


def test_fold_windows_never_see_the_test_block(dataset: Dataset) -> None:
    from stockops_model.backtest import _days_of

    days = sorted(set(_days_of(dataset.end_ts)))
    assert len(days) >= 3
    for fold in plan_folds(days, folds=2, test_days=1, train_days=0):
        train, validation, test = fold_indices(
            dataset.end_ts, dataset.start_ts, dataset.target_ts, fold, validation_bps=2000
        )
        assert len(train) > 0
        assert len(validation) > 0
        assert len(test) > 0
        assert not set(train) & set(validation)
        assert not (set(train) | set(validation)) & set(test)
        origin = dataset.end_ts[test].min()
        # No target of a window fitted or early-stopped on reaches the test block.
        assert dataset.target_ts[train].max() < origin
        assert dataset.target_ts[validation].max() < origin
        # Validation windows start after the last training target (purged).
        assert dataset.start_ts[validation].min() > dataset.target_ts[train].max()
        assert set(_days_of(dataset.end_ts[test])) == set(fold.test_days)


def test_a_fold_without_windows_is_a_data_error(dataset: Dataset) -> None:
    fold = Fold(1, (date(2000, 1, 3),), (date(2000, 1, 4),))
    with pytest.raises(DataError, match="fold 1"):
        fold_indices(dataset.end_ts, dataset.start_ts, dataset.target_ts, fold, 2000)
