"""`stockops train`'s data reading (with lineage) and its one-line result, without MLflow."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from stockops_model.errors import DataError
from stockops_model.loaders import load_bars
from stockops_model.results import emit_result
from stockops_model.spec import StockModelSpec
from stockops_model.store import StoreLocation, open_store
from stockops_model.train import read_training_data

DATA = Path(__file__).parents[2] / "data" / "bars-2018-1min"
TICKERS = ["AMZN", "AXP"]


def spec(store: Path, lookback_days: int) -> StockModelSpec:
    return StockModelSpec.model_validate(
        {
            "tickers": TICKERS,
            "storage": {"path": str(store), "prefix": "bars"},
            "training": {"lookbackDays": lookback_days},
            "mlflow": {"modelName": "m"},
        }
    )


def eastern_days(bars: pd.DataFrame) -> list[date]:
    return sorted(set(pd.DatetimeIndex(bars["ts"]).tz_convert("America/New_York").date))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A file:// bar store holding the four days of the test slice."""
    bars = load_bars(DATA, symbols=TICKERS)
    location = StoreLocation(scheme="file", root=tmp_path / "store", prefix="bars")

    async def write() -> None:
        async with open_store(location) as opened:
            await opened.write(bars)

    asyncio.run(write())
    return tmp_path / "store"


def test_store_reads_the_last_days_with_etags(store: Path) -> None:
    data = read_training_data(spec(store, lookback_days=2))
    assert eastern_days(data.bars) == [date(2018, 3, 12), date(2018, 3, 13)]
    objects = data.lineage["objects"]
    assert sorted(Path(o["name"]).name for o in objects) == [
        "12.parquet",
        "12.parquet",
        "13.parquet",
        "13.parquet",
    ]
    assert all(o["etag"] for o in objects)
    assert sum(o["rows"] for o in objects) == len(data.bars) == data.lineage["rows"]
    assert data.lineage["trading_days"] == 2
    assert data.lineage["start"].startswith("2018-03-12T13:30")  # 09:30 EDT


def test_store_respects_the_end_day(store: Path) -> None:
    data = read_training_data(spec(store, lookback_days=2), end=date(2018, 3, 9))
    assert eastern_days(data.bars) == [date(2018, 3, 8), date(2018, 3, 9)]


def test_files_carry_their_hash_as_lineage(tmp_path: Path) -> None:
    data = read_training_data(spec(tmp_path, lookback_days=3), bars_path=DATA)
    assert eastern_days(data.bars) == [date(2018, 3, 9), date(2018, 3, 12), date(2018, 3, 13)]
    by_name = {Path(o["name"]).name: o for o in data.lineage["objects"]}
    digest = hashlib.sha256((DATA / "AMZN.csv").read_bytes()).hexdigest()
    assert by_name["AMZN.csv"]["etag"] == f"sha256:{digest}"
    assert by_name["AMZN.csv"]["rows"] == int((data.bars["symbol"] == "AMZN").sum())


def test_an_empty_store_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no bars for AMZN, AXP"):
        read_training_data(spec(tmp_path / "empty", lookback_days=5))


def test_result_is_the_last_stdout_line_and_the_termination_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    log.write_text("")
    monkeypatch.setenv("STOCKOPS_TERMINATION_LOG", str(log))
    print("progress noise")
    emit_result({"promoted": False, "reason": "not better", "challenger_version": "7"})
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[-1]) == json.loads(log.read_text())
    assert json.loads(lines[-1])["challenger_version"] == "7"


def test_no_termination_log_file_is_created_when_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOCKOPS_TERMINATION_LOG", str(tmp_path / "absent"))
    emit_result({"promoted": True})
    assert not (tmp_path / "absent").exists()
