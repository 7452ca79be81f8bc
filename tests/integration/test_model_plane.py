"""The model plane against a real MLflow tracking server, on a slice of real 2018 bars.

One registered model goes through the life the operator drives, in order (the tests share
the module's registry and build on each other's state, which each one checks first):

1. `stockops train` registers the naive forecast as the first production model, trains a
   tiny network on AMZN/AXP bars, logs everything and registers it as version 2;
2. the gate keeps that weak challenger (it loses to persistence) and says why;
3. running the gate again for it changes nothing;
4. with a degraded network in production, a challenger that beats it is promoted;
5. `models:/NAME@production` and the network version load and forecast in a fresh process.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockops_model.testing import MlflowServer

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

DATA = Path(__file__).parents[1] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")

MANIFEST = """
apiVersion: stockops.io/v1alpha1
kind: StockModel
metadata:
  name: plane
  namespace: tests
spec:
  tickers: [AMZN, AXP]
  storage:
    path: {store}
  features:
    window: 8
  training:
    units: 4
    epochs: 2
    batchSize: 256
  mlflow:
    trackingUri: {uri}
    modelName: {name}
  promotion:
    minImprovementBps: 0
    significance: dieboldMariano
    alphaBps: 500
    validationBars: 120
"""


@pytest.fixture(scope="module")
def plane(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `stockops train` once; yields its parsed JSON result plus the names used."""
    from stockops_model import cli

    name = f"plane-{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("plane")
    manifest = folder / "stockmodel.yaml"
    manifest.write_text(
        MANIFEST.format(store=folder / "store", uri=mlflow_server.tracking_uri, name=name)
    )
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STOCKOPS_JOB_NAME", "plane-train-1")
        patch.setenv("STOCKOPS_TERMINATION_LOG", str(folder / "termination-log"))
        (folder / "termination-log").write_text("")
        with contextlib.redirect_stdout(stdout):
            code = cli.main(["train", "-f", str(manifest), "--bars", str(DATA)])
    assert code == 0
    lines = stdout.getvalue().strip().splitlines()
    return {
        "name": name,
        "uri": mlflow_server.tracking_uri,
        "result": json.loads(lines[-1]),
        "termination_log": (folder / "termination-log").read_text(),
    }


def client(plane: dict[str, Any]) -> Any:
    import mlflow

    mlflow.set_tracking_uri(plane["uri"])
    return mlflow.MlflowClient(plane["uri"])


def production(plane: dict[str, Any]) -> str:
    return str(client(plane).get_model_version_by_alias(plane["name"], "production").version)


def test_train_registers_naive_first_then_the_network(plane: dict[str, Any]) -> None:
    result = plane["result"]
    assert result["model"] == plane["name"]
    assert result["champion_version"] == "1"
    assert result["challenger_version"] == "2"
    versions = {
        v.version: v.tags.get("stockops.kind")
        for v in client(plane).search_model_versions(f"name='{plane['name']}'")
    }
    assert versions == {"1": "naive", "2": "network"}
    # The operator reads the same line from the termination log.
    assert json.loads(plane["termination_log"]) == result


def test_run_logs_params_curves_plots_and_lineage(plane: dict[str, Any]) -> None:
    mlflow_client = client(plane)
    run = mlflow_client.get_run(plane["result"]["run_id"])
    assert run.data.params["units"] == "4"
    assert run.data.params["window"] == "8"
    assert run.data.params["batch_size"] == "256"
    assert run.data.tags["stockops.job-name"] == "plane-train-1"
    epochs = mlflow_client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in epochs] == list(range(len(epochs)))
    assert 1 <= len(epochs) <= 2
    assert run.data.metrics["test_naive_mase"] == pytest.approx(1.0)
    assert "test_model_rmse" in run.data.metrics
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {
        "plots/loss_curve.png",
        "plots/forecast_vs_actual.png",
        "plots/attention.png",
    }
    import mlflow

    lineage = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/lineage.json")
    assert {Path(o["name"]).name for o in lineage["objects"]} == {"AMZN.csv", "AXP.csv"}
    assert all(o["etag"].startswith("sha256:") for o in lineage["objects"])
    assert lineage["trading_days"] == 4
    assert sum(o["rows"] for o in lineage["objects"]) == lineage["rows"]
    version = mlflow_client.get_model_version(plane["name"], "2")
    assert version.tags["data.start"] == lineage["start"]
    assert version.tags["stockops.code-version"]
    assert float(version.tags["test.model.rmse"]) > 0


def test_a_challenger_worse_than_naive_is_kept(plane: dict[str, Any]) -> None:
    result = plane["result"]
    assert result["promoted"] is False
    assert "naive" in result["reason"]
    assert production(plane) == "1"
    gate = result["gate"]
    assert gate["challenger"]["count"] == gate["champion"]["count"] == 2 * 120
    tags = client(plane).get_model_version(plane["name"], "2").tags
    assert tags["stockops.gate.decision"] == "kept"
    assert tags["stockops.gate.reason"] == result["reason"]
    assert float(tags["stockops.gate.challenger.rmse"]) > float(tags["stockops.gate.naive.rmse"])


def _bars() -> pd.DataFrame:
    from stockops_model.loaders import load_bars

    return load_bars(DATA, symbols=TICKERS)


def test_running_the_gate_again_changes_nothing(plane: dict[str, Any]) -> None:
    from stockops_model.promotion import promote_if_better
    from stockops_model.spec import PromotionSpec

    mlflow_client = client(plane)
    before = dict(mlflow_client.get_model_version(plane["name"], "2").tags)
    again = promote_if_better(
        mlflow_client, plane["name"], "2", _bars(), PromotionSpec(validation_bars=120), 1
    )
    assert again.repeated
    assert again.promoted is False
    assert again.reason == plane["result"]["reason"]
    assert dict(mlflow_client.get_model_version(plane["name"], "2").tags) == before
    assert production(plane) == "1"


def test_a_challenger_that_beats_a_degraded_champion_is_promoted(plane: dict[str, Any]) -> None:
    import mlflow

    from stockops_model import registry
    from stockops_model.forecaster import NaiveForecaster
    from stockops_model.promotion import promote_if_better
    from stockops_model.spec import PromotionSpec

    mlflow_client = client(plane)
    # The weak network ends up in production (say, promoted under an older, laxer policy);
    # a fresh naive forecast is the challenger that should win against it.
    mlflow_client.set_registered_model_alias(plane["name"], "production", "2")
    bars = _bars()
    experiment = mlflow_client.get_experiment_by_name(plane["name"])
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="challenger"):
        info = registry.log_forecaster(
            NaiveForecaster(TICKERS), bars, registered_model_name=plane["name"]
        )
    challenger = str(info.registered_model_version)
    policy = PromotionSpec(validation_bars=120, alpha_bps=500)
    decision = promote_if_better(mlflow_client, plane["name"], challenger, bars, policy, 1)
    assert decision.promoted, decision.reason
    assert decision.champion_version == "2"
    assert decision.dm_p_value is not None
    assert decision.dm_p_value < 0.05
    assert production(plane) == challenger
    tags = mlflow_client.get_model_version(plane["name"], challenger).tags
    assert tags["stockops.gate.decision"] == "promoted"
    assert json.loads(tags["stockops.gate.record"])["production_version"] == challenger
    # Idempotent: a second run finds the record and leaves the alias alone.
    mlflow_client.set_registered_model_alias(plane["name"], "production", "2")
    again = promote_if_better(mlflow_client, plane["name"], challenger, bars, policy, 1)
    assert again.repeated
    assert again.promoted
    assert production(plane) == "2"
    mlflow_client.set_registered_model_alias(plane["name"], "production", challenger)


FRESH = """
import json, sys
import mlflow
import pandas as pd
from stockops_model.loaders import load_bars

mlflow.set_tracking_uri(sys.argv[1])
bars = load_bars(sys.argv[3], symbols=["AMZN", "AXP"]).groupby("symbol").tail(400)
records = bars.assign(ts=bars["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
records = records[["symbol", "ts", "open", "high", "low", "close", "volume"]]
out = {}
for uri in (f"models:/{sys.argv[2]}@production", f"models:/{sys.argv[2]}/2"):
    model = mlflow.pyfunc.load_model(uri)
    pred = model.predict(records)
    out[uri] = dict(zip(pred["symbol"], pred["forecast_close"].astype(float)))
print(json.dumps(out))
"""


def test_production_model_loads_in_a_fresh_process(plane: dict[str, Any]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FRESH, plane["uri"], plane["name"], str(DATA)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    last_close = _bars().groupby("symbol")["close"].last()
    production_forecast = out[f"models:/{plane['name']}@production"]
    # Production is the naive challenger promoted above: the forecast is the last close.
    assert production_forecast == pytest.approx(last_close.to_dict())
    network = out[f"models:/{plane['name']}/2"]
    ratio = np.array([network[s] / last_close[s] for s in TICKERS])
    assert np.all(np.abs(ratio - 1) < 0.05)
