"""The promotion gate's pure parts: the decision rule, its record, and the gate's targets."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockops_model.promotion import (
    TAG_DECISION,
    TAG_RECORD,
    Decision,
    GateMetrics,
    compare_on_bars,
    decide,
    decision_tags,
    gate_targets,
    gate_window,
)
from stockops_model.spec import PromotionSpec, Significance


def metrics(rmse: float, count: int = 390) -> GateMetrics:
    return GateMetrics(rmse=rmse, mae=rmse * 0.8, mase=1.0, directional_accuracy=0.5, count=count)


NAIVE = metrics(1.0)
POLICY = PromotionSpec(
    min_improvement_bps=100, min_improvement_over_naive_bps=0, significance=Significance.NONE
)


def test_promotes_a_clear_winner() -> None:
    promote, reason = decide(metrics(0.90), metrics(0.95), NAIVE, POLICY)
    assert promote
    assert "beats the champion's 0.95" in reason


def test_keeps_when_the_margin_is_too_small() -> None:
    # 0.9405 is 1 % better than 0.95 only to 0.99 %: below the 100 bp asked for.
    promote, reason = decide(metrics(0.9406), metrics(0.95), NAIVE, POLICY)
    assert not promote
    assert "by 100 bp" in reason


def test_a_tie_never_promotes() -> None:
    no_margin = POLICY.model_copy(update={"min_improvement_bps": 0})
    promote, _ = decide(metrics(0.95), metrics(0.95), NAIVE, no_margin)
    assert not promote


def test_must_beat_the_naive_forecast_even_against_a_weak_champion() -> None:
    promote, reason = decide(metrics(1.05), metrics(1.50), NAIVE, POLICY)
    assert not promote
    assert "naive" in reason


def test_tying_naive_may_replace_a_worse_champion() -> None:
    assert decide(metrics(1.0), metrics(1.2), NAIVE, POLICY)[0]


def test_margin_over_naive_applies() -> None:
    policy = POLICY.model_copy(update={"min_improvement_over_naive_bps": 500})
    assert not decide(metrics(0.96), metrics(0.99), NAIVE, policy)[0]
    assert decide(metrics(0.94), metrics(0.99), NAIVE, policy)[0]


@pytest.mark.parametrize(("p_value", "expected"), [(0.01, True), (0.05, False), (0.2, False)])
def test_diebold_mariano_at_alpha(p_value: float, expected: bool) -> None:
    policy = POLICY.model_copy(
        update={"significance": Significance.DIEBOLD_MARIANO, "alpha_bps": 500}
    )
    promote, reason = decide(metrics(0.90), metrics(0.95), NAIVE, policy, dm_p_value=p_value)
    assert promote is expected
    assert "Diebold-Mariano" in reason


def test_diebold_mariano_without_a_p_value_keeps() -> None:
    policy = POLICY.model_copy(update={"significance": Significance.DIEBOLD_MARIANO})
    assert not decide(metrics(0.90), metrics(0.95), NAIVE, policy, dm_p_value=None)[0]


def test_no_champion_needs_only_to_beat_naive() -> None:
    assert decide(metrics(0.99), None, NAIVE, POLICY)[0]
    assert not decide(metrics(1.01), None, NAIVE, POLICY)[0]


def test_no_usable_forecast_keeps() -> None:
    promote, reason = decide(metrics(math.nan, count=0), metrics(0.95), NAIVE, POLICY)
    assert not promote
    assert "no usable forecast" in reason


def test_gate_metrics_carry_the_up_move_base_rate_beside_directional_accuracy() -> None:
    last = np.array([10.0, 10.0, 10.0, 10.0])
    actual = np.array([11.0, 9.0, 11.0, 10.0])  # up, down, up, unchanged (left out)
    forecast = np.array([10.5, 10.5, 9.5, 10.2])  # up (hit), up (miss), down (miss)
    gate = GateMetrics.of(actual, last, forecast)
    assert gate.directional_accuracy == pytest.approx(1 / 3)
    assert gate.up_base_rate == pytest.approx(2 / 3)
    assert gate.rmse == pytest.approx(math.sqrt((0.25 + 2.25 + 2.25 + 0.04) / 4))
    assert gate.count == 4


def test_decision_record_round_trips_as_json() -> None:
    decision = Decision(
        model_name="m",
        challenger_version="3",
        champion_version="1",
        promoted=False,
        reason="not better",
        production_version="1",
        challenger={"rmse": 0.9, "mase": math.inf},
        champion={"rmse": 0.8},
        naive={"rmse": 1.0},
        dm_statistic=1.5,
        dm_p_value=math.nan,
    )
    line = decision.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert data["challenger"]["mase"] is None
    assert data["dm_p_value"] is None
    again = Decision.from_record(line)
    assert again.repeated
    assert again.promoted is False
    assert again.challenger_version == "3"
    assert again.champion == {"rmse": 0.8}


def test_decision_tags_end_with_the_complete_record() -> None:
    decision = Decision("m", "3", "1", True, "better", "3", {"rmse": 0.9}, {"rmse": 1.0}, {})
    tags = decision_tags(decision)
    assert tags[TAG_DECISION] == "promoted"
    assert tags["stockops.gate.challenger.rmse"] == "0.9"
    assert tags["stockops.gate.champion.rmse"] == "1"
    assert list(tags)[-1] == TAG_RECORD
    assert json.loads(tags[TAG_RECORD])["production_version"] == "3"


def test_an_abandoned_move_is_recorded_without_the_record_that_ends_the_gate() -> None:
    # Production moved while the gate ran: the outcome is shown, but a rerun must judge the
    # challenger against the new champion rather than replay "kept".
    decision = Decision("m", "3", "1", False, "production moved", "2", {"rmse": 0.9}, {}, {})
    tags = decision_tags(decision, final=False)
    assert tags[TAG_DECISION] == "kept"
    assert TAG_RECORD not in tags


def _bars(stamps: list[str], closes: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": "AAA",
            "ts": pd.to_datetime(stamps, utc=True),
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": 1.0,
        }
    )


def test_gate_targets_never_span_a_session() -> None:
    bars = _bars(
        ["2018-03-08 20:58", "2018-03-08 20:59", "2018-03-09 14:30", "2018-03-09 14:31"],
        [10.0, 11.0, 12.0, 13.0],
    )
    targets = gate_targets(bars, horizon=1)
    assert targets["ts"].dt.strftime("%H:%M").tolist() == ["20:58", "14:30"]
    np.testing.assert_array_equal(targets["last_close"], [10.0, 12.0])
    np.testing.assert_array_equal(targets["actual"], [11.0, 13.0])


def test_gate_window_keeps_the_latest_bars_per_ticker() -> None:
    stamps = pd.date_range("2018-03-08 14:30", periods=50, freq="min", tz="UTC")
    one = _bars([str(s) for s in stamps], list(np.arange(50.0) + 1))
    two = one.assign(symbol="BBB")
    window = gate_window(pd.concat([two, one]), validation_bars=10, history=5, horizon=1)
    keep = 10 + 5 + 4 + 8
    assert window.groupby("symbol").size().to_dict() == {"AAA": keep, "BBB": keep}
    assert window.groupby("symbol")["ts"].max().nunique() == 1
    assert window["ts"].max() == stamps[-1]


@pytest.fixture(scope="module")
def naive_pyfunc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The naive forecaster saved and loaded as a real MLflow pyfunc (no tracking server)."""
    import mlflow.pyfunc

    from stockops_model.forecaster import NaiveForecaster
    from stockops_model.registry import (
        ARTIFACT_KEY,
        ForecasterModel,
        forecaster_signature,
        pip_requirements,
    )

    folder = tmp_path_factory.mktemp("naive")
    NaiveForecaster(("AAA",)).save(folder / "forecaster")
    mlflow.pyfunc.save_model(
        folder / "model",
        python_model=ForecasterModel(),
        artifacts={ARTIFACT_KEY: str(folder / "forecaster")},
        signature=forecaster_signature(),
        pip_requirements=pip_requirements(),
    )
    return mlflow.pyfunc.load_model(str(folder / "model"))


def test_the_gate_scores_no_origin_before_first_origin(naive_pyfunc: Any) -> None:
    stamps = pd.date_range("2018-03-08 14:30", periods=40, freq="min", tz="UTC")
    bars = _bars([str(s) for s in stamps], list(np.linspace(10.0, 12.0, 40)))
    everything = compare_on_bars(naive_pyfunc, None, bars, validation_bars=100, horizon=1)
    # 40 bars give 39 origins with a target one minute later.
    assert everything[0].count == 39
    later = compare_on_bars(
        naive_pyfunc, None, bars, validation_bars=100, horizon=1, first_origin=stamps[30]
    )
    assert later[0].count == 9  # origins 14:30+30 .. 14:30+38
    # A naive floor is read as UTC.
    naive_floor = stamps[30].tz_localize(None)
    again = compare_on_bars(
        naive_pyfunc, None, bars, validation_bars=100, horizon=1, first_origin=naive_floor
    )
    assert again[0].count == 9
