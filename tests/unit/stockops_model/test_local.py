"""`stockops up`: every replayed bar lands exactly once in the local Blob-layout store, and a
whole cycle trains, gates, registers and serves a model on this machine."""

from __future__ import annotations

from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from stockops_model.cli import main
from stockops_model.errors import SpecError
from stockops_model.loaders import load_bars
from stockops_model.store import read_bars
from stockops_model.testing.ports import pick_free_port

REPO = Path(__file__).resolve().parents[3]


def _manifest(tmp_path: Path) -> Path:
    doc = yaml.safe_load((REPO / "examples/local/stockmodel.yaml").read_text())
    doc["spec"]["source"]["replay"]["path"] = str(REPO / "examples/data")
    doc["spec"]["storage"]["path"] = str(tmp_path / "store")
    path = tmp_path / "stockmodel.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_up_replays_examples_into_the_store_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(tmp_path)
    assert main(["up", "--data-only", "-f", str(manifest)]) == 0
    # Twice: a second run re-applies the same bars and must not duplicate any.
    assert main(["up", "--data-only", "-f", str(manifest)]) == 0

    source = load_bars(REPO / "examples/data", symbols=["SPY"], regular_hours=True)
    stored, lineage = read_bars(f"file://{tmp_path / 'store'}/bars", ["SPY"])
    assert len(stored) == len(source) > 0
    assert not stored.duplicated(["symbol", "ts"]).any()
    columns = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(
        stored[columns].reset_index(drop=True), source[columns].reset_index(drop=True)
    )
    assert {d.day.isoformat() for d in lineage} == {
        str(day) for day in source["ts"].dt.tz_convert("America/New_York").dt.date.unique()
    }
    out = capsys.readouterr().out
    assert "SPY" in out
    assert f"{len(source):,}" in out


def test_up_on_embedded_defaults_needs_no_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    assert main(["up", "--data-only", "--store", f"file://{store}"]) == 0
    stored, _ = read_bars(f"file://{store}", ["AAA", "BBB"])
    assert set(stored["symbol"]) == {"AAA", "BBB"}
    assert (stored.groupby("symbol").size() == 3 * 390).all()


def test_up_rejects_an_invalid_manifest_with_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load((REPO / "examples/local/stockmodel.yaml").read_text())
    doc["spec"]["tickers"] = []
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["up", "-f", str(path)]) == 3
    assert "StockModel/demo spec.tickers" in capsys.readouterr().err


def test_the_schedule_of_the_model_is_found_and_a_second_one_refused(tmp_path: Path) -> None:
    from stockops_model.local import load_resources

    model, schedule = load_resources(str(REPO / "examples/local"))
    assert model.metadata.name == "demo"
    assert schedule is not None
    assert schedule.spec.interval == "15m"
    twice = tmp_path / "manifests"
    twice.mkdir()
    (twice / "stockmodel.yaml").write_text((REPO / "examples/local/stockmodel.yaml").read_text())
    doc = yaml.safe_load((REPO / "examples/local/retrainschedule.yaml").read_text())
    for name in ("a", "b"):
        doc["metadata"]["name"] = name
        (twice / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match="one RetrainSchedule per StockModel"):
        load_resources(str(twice))


@pytest.mark.slow
def test_once_on_embedded_defaults_trains_gates_and_serves_the_production_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The embedded defaults keep MLflow and the bars under ./.stockops.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = pick_free_port()
    assert main(["up", "--once", "--port", str(port)]) == 0

    client = MlflowClient(f"sqlite:///{tmp_path / '.stockops' / 'mlflow.db'}")
    production = client.get_model_version_by_alias("local-forecaster", "production")
    serving = client.get_model_version_by_alias("local-forecaster", "serving")
    assert serving.version == production.version
    versions = client.search_model_versions("name='local-forecaster'")
    assert len(versions) == 2  # the naive champion and one trained challenger
    out = capsys.readouterr().out
    assert "naive" in out
    assert "rmse" in out
    assert any(word in out for word in ("promoted", "kept"))
    assert f"serving version {production.version}" in " ".join(out.split())


@pytest.mark.slow
def test_a_failed_cycle_is_reported_with_its_exit_code_and_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ten bars cannot fill one training window: the cycle fails as invalid data (exit 4),
    # says so, and --once then stops the server it started.
    data = tmp_path / "data"
    data.mkdir()
    lines = (REPO / "tests/data/bars-2018-1min/AMZN.csv").read_text().splitlines()[:11]
    (data / "AMZN.csv").write_text("\n".join(lines) + "\n")
    doc = yaml.safe_load((REPO / "examples/local/stockmodel.yaml").read_text())
    doc["spec"]["tickers"] = ["AMZN"]
    doc["spec"]["source"]["replay"]["path"] = str(data)
    doc["spec"]["storage"]["path"] = str(tmp_path / "store")
    doc["spec"]["mlflow"]["trackingUri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    manifest = tmp_path / "stockmodel.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = pick_free_port()

    assert main(["up", "--once", "--port", str(port), "-f", str(manifest)]) == 4

    assert "cycle 1 failed" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
