"""The Azure ML scoring script (`score.py`) on a real saved pyfunc, in Azure ML's folder layout.

The naive forecaster is saved with `mlflow.pyfunc.save_model` exactly as the registry logs it
(same python model, artifacts, code paths and signature) under a folder laid out like Azure
ML's mount of an mlflow_model asset (`AZUREML_MODEL_DIR/<folder>/MLmodel`). No server runs:
`init()` and `run()` are called the way the inference server calls them, with the body as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stockops_model.deploy import score
from stockops_model.deploy.azureml_entities import smoke_bars, synthetic_bars
from stockops_model.forecaster import NaiveForecaster, prepare_bars
from stockops_model.loaders import load_bars

DATA = Path(__file__).parents[3] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]


def save_pyfunc(forecaster: NaiveForecaster, path: Path) -> None:
    """Save `forecaster` as the registry's pyfunc (see `stockops_model.registry`)."""
    import tempfile

    import mlflow.pyfunc

    import stockops_model
    from stockops_model.registry import (
        ARTIFACT_KEY,
        ForecasterModel,
        forecaster_signature,
        pip_requirements,
    )

    with tempfile.TemporaryDirectory() as tmp:
        forecaster.save(tmp)
        mlflow.pyfunc.save_model(
            str(path),
            python_model=ForecasterModel(),
            artifacts={ARTIFACT_KEY: tmp},
            code_paths=[str(Path(stockops_model.__file__).parent)],
            signature=forecaster_signature(),
            pip_requirements=pip_requirements(),
            metadata={"stockops": forecaster.describe()},
        )


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    frame = load_bars(DATA, symbols=TICKERS).loc[:, COLUMNS]
    return frame.groupby("symbol", sort=True).tail(5).reset_index(drop=True)


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AZUREML_MODEL_DIR: the MLflow folder one level below, as Azure ML mounts it."""
    root = tmp_path_factory.mktemp("azureml-models") / "forecaster" / "3"
    save_pyfunc(NaiveForecaster(TICKERS, horizon=1), root / "model")
    return root


@pytest.fixture
def loaded(model_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(score.MODEL_DIR_ENV, str(model_root))
    monkeypatch.setenv(score.MODEL_NAME_ENV, "forecaster")
    monkeypatch.setenv(score.MODEL_VERSION_ENV, "3")
    score.init()
    yield
    monkeypatch.setattr(score, "_model", None)


def body(frame: pd.DataFrame) -> str:
    records = frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return json.dumps({"bars": records.to_dict(orient="records")})


def test_run_forecasts_the_last_close_per_ticker(loaded: None, bars: pd.DataFrame) -> None:
    answer: dict[str, Any] = score.run(body(bars))

    assert answer["model_name"] == "forecaster"
    assert answer["model_version"] == "3"
    last = bars.groupby("symbol").tail(1).set_index("symbol")
    assert [f["symbol"] for f in answer["forecasts"]] == list(TICKERS)
    for forecast in answer["forecasts"]:
        assert forecast["forecast_close"] == pytest.approx(last.loc[forecast["symbol"], "close"])
        assert forecast["horizon"] == 1
        assert forecast["ts"] == last.loc[forecast["symbol"], "ts"].strftime("%Y-%m-%dT%H:%M:%SZ")
    json.dumps(answer)  # the inference server must be able to serialise it


def test_a_model_without_an_input_example_is_smoke_tested_with_synthetic_bars(
    loaded: None, model_root: Path
) -> None:
    bars = smoke_bars(model_root / "model")  # this pyfunc was saved without an example

    answer = score.run(json.dumps({"bars": bars}))

    assert sorted({b["symbol"] for b in bars}) == list(TICKERS)
    assert [f["symbol"] for f in answer["forecasts"]] == list(TICKERS)


def test_synthetic_bars_pass_the_forecasters_input_checks() -> None:
    bars = synthetic_bars(TICKERS, 120)

    frame = prepare_bars(bars, TICKERS, 120)

    assert len(frame) == 240
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()


def test_bad_price_is_an_error_body_naming_the_field(loaded: None, bars: pd.DataFrame) -> None:
    broken = bars.copy()
    broken.loc[2, "close"] = -1.0

    answer = score.run(body(broken))

    assert answer["error"]["reason"] == "invalid_price"  # the scoring server's slug
    assert answer["error"]["field"] == "bars[2].close"
    assert answer["error"]["message"].startswith("bars[2].close:")
    assert "-1.0" in answer["error"]["message"]


def test_unknown_ticker_is_an_error_body(loaded: None, bars: pd.DataFrame) -> None:
    other = bars.assign(symbol="ZZZZ")

    answer = score.run(body(other))

    assert answer["error"]["reason"] == "unknown_ticker"
    assert "ZZZZ" in answer["error"]["message"]


def test_unsorted_bars_are_an_error_body(loaded: None, bars: pd.DataFrame) -> None:
    answer = score.run(body(bars.iloc[::-1]))

    assert answer["error"]["reason"] == "unsorted_timestamps"


def test_a_bar_without_a_column_is_an_error_body(loaded: None, bars: pd.DataFrame) -> None:
    answer = score.run(body(bars.drop(columns=["volume"])))

    assert answer["error"]["reason"] == "missing_field"
    assert "volume" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        ("not json", "invalid_json", None),
        (b"\xff\xfe{", "invalid_json", None),  # not UTF-8
        ('{"rows": []}', "invalid_shape", "bars"),
        ('{"bars": []}', "no_bars", "bars"),
        ("[1]", "invalid_shape", None),
        ('{"bars": [1]}', "invalid_shape", "bars[0]"),
    ],
)
def test_malformed_requests_are_error_bodies(
    loaded: None, raw: str | bytes, reason: str, field: str | None
) -> None:
    answer = score.run(raw)

    assert answer["error"]["reason"] == reason
    assert answer["error"]["field"] == field
    assert answer["error"]["message"]


def test_run_before_init_says_the_model_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score, "_model", None)

    assert score.run('{"bars": []}')["error"]["reason"] == "not_ready"


def test_init_without_a_model_folder_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(score.MODEL_DIR_ENV, str(tmp_path))

    with pytest.raises(FileNotFoundError, match="no MLmodel"):
        score.init()
