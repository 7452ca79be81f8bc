"""`stockops up` lands every replayed bar exactly once in the local Blob-layout store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from stockops_model.cli import main
from stockops_model.loaders import load_bars
from stockops_model.store import read_bars

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
    assert main(["up", "-f", str(manifest)]) == 0
    # Twice: a second run re-applies the same bars and must not duplicate any.
    assert main(["up", "-f", str(manifest)]) == 0

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
    assert main(["up", "--store", f"file://{store}"]) == 0
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
