"""`stockops deploy` prints its result line on every exit once it knows what to roll out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockops_model.cli import main
from stockops_model.errors import ExitCode
from stockops_model.testing.ports import pick_free_port


def manifest(tmp_path: Path, serving: str) -> Path:
    path = tmp_path / "stockmodel.yaml"
    path.write_text(
        f"""
apiVersion: stockops.io/v1alpha1
kind: StockModel
metadata: {{name: demo}}
spec:
  tickers: [SPY]
  storage: {{path: {tmp_path / "bars"}}}
  mlflow: {{trackingUri: "sqlite:///{tmp_path / "mlflow.db"}", modelName: demo-forecaster}}
  serving: {serving}
"""
    )
    return path


@pytest.mark.parametrize(
    ("serving", "code", "said"),
    [
        # Nobody listens on the local server's port: a dependency is away, retry later.
        (
            f"{{target: local, local: {{port: {pick_free_port()}}}}}",
            ExitCode.UNAVAILABLE,
            "does not answer",
        ),
        # KServe needs an image for its predictor and none is configured anywhere.
        ("{target: kserve}", ExitCode.INVALID_SPEC, "image"),
    ],
)
def test_a_rollout_that_cannot_start_says_why_in_its_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    serving: str,
    code: ExitCode,
    said: str,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("STOCKOPS_WORKLOAD_IMAGE", raising=False)
    log = tmp_path / "termination-log"
    log.write_text("")
    monkeypatch.setenv("STOCKOPS_TERMINATION_LOG", str(log))

    assert main(["deploy", "-f", str(manifest(tmp_path, serving)), "--version", "4"]) == code

    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["succeeded"] is False
    assert line["requested_version"] == "4"
    assert said in line["message"]
    assert json.loads(log.read_text()) == line
