"""Conditions, Job phases and the train result line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stockops_operator import status as st

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_transition_time_changes_only_with_the_status() -> None:
    first = st.set_condition(
        [], type_="Ready", status=False, reason="A", message="m", generation=1, now=T0
    )
    same = st.set_condition(
        first,
        type_="Ready",
        status=False,
        reason="B",
        message="n",
        generation=2,
        now=T0 + timedelta(hours=1),
    )
    flipped = st.set_condition(
        same,
        type_="Ready",
        status=True,
        reason="C",
        message="o",
        generation=2,
        now=T0 + timedelta(hours=2),
    )
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["observedGeneration"] == 2
    assert same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T02:00:00Z"
    assert flipped[0]["status"] == "True"


def test_other_conditions_are_kept_and_unknown_is_spelled_out() -> None:
    out = st.set_condition(
        [{"type": "Ingesting", "status": "True"}],
        type_="Deployed",
        status=None,
        reason="R",
        message="",
        generation=1,
        now=T0,
    )
    assert [c["type"] for c in out] == ["Ingesting", "Deployed"]
    assert out[1]["status"] == "Unknown"


def test_job_phase_from_conditions() -> None:
    assert st.job_phase({}) == st.JobPhase.ACTIVE
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    failed = {
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "too long",
                }
            ]
        }
    }
    assert st.job_phase(done) == st.JobPhase.SUCCEEDED
    assert st.job_phase(failed) == st.JobPhase.FAILED
    assert st.job_failure_message(failed) == "DeadlineExceeded: too long"


def test_train_result_takes_the_last_json_line() -> None:
    text = (
        'loading\n{"not": "this"}\nnoise\n{"decision": "kept", "metrics": {"rmse": 2, '
        '"naive_rmse": 1.5, "loss": 0.3}, "reason": "worse than naive"}\n'
    )
    result = st.parse_train_result(text)
    assert result is not None
    assert result.decision == st.Decision.KEPT
    # Flat metrics are split by prefix; names the status schema does not know are dropped.
    assert result.metrics == {"model": {"rmse": "2"}, "naive": {"rmse": "1.5"}}
    assert result.to_status()["reason"] == "worse than naive"


def test_train_result_metrics_are_decimal_strings_without_nan() -> None:
    result = st.parse_train_result(
        '{"promoted": false, "metrics": {"model": {"rmse": 1.234567891e-05, "mase": NaN, '
        '"directional_accuracy": 0.53}}, "naive": {"rmse": 1.3e-05}}'
    )
    assert result is not None
    assert result.metrics["model"] == {"rmse": "1.23457e-05", "directionalAccuracy": "0.53"}
    assert result.metrics["naive"] == {"rmse": "1.3e-05"}


def test_no_json_line_means_no_result() -> None:
    assert st.parse_train_result("Traceback (most recent call last):\n  boom") is None
    assert st.parse_train_result("") is None


def test_termination_message_of_a_pod() -> None:
    pod = {
        "status": {
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": 0, "message": '{"promoted": false}'}}}
            ]
        }
    }
    assert st.termination_message(pod) == '{"promoted": false}'
    assert st.termination_message({"status": {}}) == ""


def test_train_result_of_the_stockops_train_line_prefers_the_gate_metrics() -> None:
    line = (
        '{"challenger_version":"7","data":{"rows":7800},"gate":{"challenger":{"count":390,'
        '"directional_accuracy":0.51,"mae":0.02,"mase":0.97,"rmse":0.031},"champion":{"rmse":0.033},'
        '"naive":{"rmse":0.032},"promoted":true},"model":"demo-forecaster","promoted":true,'
        '"reason":"beats the champion by 6%","run_id":"r1","test":{"model":{"rmse":0.04},'
        '"naive":{"rmse":0.05}}}'
    )
    result = st.parse_train_result("Epoch 1/2\n" + line)
    assert result is not None
    assert result.decision == st.Decision.PROMOTED
    assert result.version == "7"
    assert result.run_id == "r1"
    assert result.metrics == {
        "model": {"directionalAccuracy": "0.51", "mae": "0.02", "mase": "0.97", "rmse": "0.031"},
        "naive": {"rmse": "0.032"},
        "champion": {"rmse": "0.033"},
    }
    without_gate = st.parse_train_result(line.replace('"gate"', '"gate_"'))
    assert without_gate is not None
    assert without_gate.metrics == {"model": {"rmse": "0.04"}, "naive": {"rmse": "0.05"}}


def test_deploy_result_reads_the_last_json_line_in_either_case() -> None:
    text = (
        "INFO rolling out models:/demo/4 to local\n"
        '{"target":"azureml","requestedVersion":"4","servingVersion":"4",'
        '"endpointUrl":"https://demo.westeurope.inference.ml.azure.com/score",'
        '"traffic":{"4":100,"3":0,"bad":"x"},"rolledBack":false,"message":"ok"}\n'
    )
    result = st.parse_deploy_result(text)
    assert result is not None
    assert result.target == "azureml"
    assert result.serving_version == "4"
    assert result.endpoint_url == "https://demo.westeurope.inference.ml.azure.com/score"
    assert result.traffic == {"4": 100, "3": 0}
    assert result.rolled_back is False
    assert result.to_status()["traffic"] == {"4": 100, "3": 0}


def test_deploy_result_of_a_crashed_job_is_none() -> None:
    assert st.parse_deploy_result("Traceback (most recent call last):\n  boom\n") is None
    assert st.parse_deploy_result("") is None
    # FallbackToLogsOnError: the last log lines, JSON records included, are not a result.
    log_line = '{"level":"ERROR","logger":"stockops","message":"boom","traffic":"x"}'
    assert st.parse_deploy_result(log_line) is None


def test_deploy_result_with_a_malformed_traffic_map_keeps_the_rest() -> None:
    result = st.parse_deploy_result('{"target":"local","serving_version":"2","traffic":[100]}')
    assert result is not None
    assert result.traffic == {}
    assert result.serving_version == "2"
