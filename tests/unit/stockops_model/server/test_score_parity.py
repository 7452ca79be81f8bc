"""The Azure ML scoring script refuses bad input exactly as `stockops serve` does.

`deploy/score.py` validates with the server's own `inputs` and maps errors with its
`problems`; here the same broken bodies go to both, a saved naive pyfunc behind the script
and the server's app, and the error bodies (reason, message, field) must be equal.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from stockops_model.deploy import score
from stockops_model.forecaster import NaiveForecaster

from .conftest import TICKERS, build_app, records, serving_client

Bars = list[dict[str, Any]]


def _set(i: int, field: str, value: Any) -> Callable[[Bars], bytes]:
    def change(bars: Bars) -> bytes:
        bars[i][field] = value
        return orjson.dumps({"bars": bars})

    return change


def _nan_close(bars: Bars) -> bytes:
    bars[3]["close"] = float("nan")
    return json.dumps({"bars": bars}).encode()  # Python's json writes NaN


def _unsorted(bars: Bars) -> bytes:
    bars[1], bars[2] = bars[2], bars[1]
    return orjson.dumps({"bars": bars})


def _repeat_ts(bars: Bars) -> bytes:
    bars[2]["ts"] = bars[1]["ts"]
    return orjson.dumps({"bars": bars})


def _without(field: str) -> Callable[[Bars], bytes]:
    def change(bars: Bars) -> bytes:
        del bars[2][field]
        return orjson.dumps({"bars": bars})

    return change


BROKEN: dict[str, Callable[[Bars], bytes]] = {
    "empty body": lambda b: b"",
    "not JSON": lambda b: b'{"bars": [',
    "a list": lambda b: orjson.dumps(b),
    "no bars": lambda b: b'{"bars": []}',
    "a NaN close": _nan_close,
    "a negative close": _set(2, "close", -1.0),
    "a zero low": _set(2, "low", 0),
    "a negative volume": _set(2, "volume", -5),
    "a price as a string": _set(2, "high", "12.5"),
    "a missing field": _without("volume"),
    "an unknown ticker": _set(0, "symbol", "ZZZZ"),
    "an unreadable ts": _set(2, "ts", "yesterday"),
    "a ts after 2262": _set(2, "ts", "9999-12-31T00:00:00Z"),
    "a repeated ts": _repeat_ts,
    "unsorted ts": _unsorted,
}


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A naive pyfunc saved as the registry logs it, in Azure ML's folder layout."""
    import mlflow.pyfunc

    import stockops_model
    from stockops_model.registry import (
        ARTIFACT_KEY,
        ForecasterModel,
        forecaster_signature,
        pip_requirements,
    )

    root = tmp_path_factory.mktemp("azureml-models") / "stocks" / "1"
    forecaster = NaiveForecaster(TICKERS)
    with tempfile.TemporaryDirectory() as tmp:
        forecaster.save(tmp)
        mlflow.pyfunc.save_model(
            str(root / "model"),
            python_model=ForecasterModel(),
            artifacts={ARTIFACT_KEY: tmp},
            code_paths=[str(Path(stockops_model.__file__).parent)],
            signature=forecaster_signature(),
            pip_requirements=pip_requirements(),
            metadata={"stockops": forecaster.describe()},
        )
    return root


@pytest.fixture
def loaded(model_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(score.MODEL_DIR_ENV, str(model_root))
    score.init()
    yield
    monkeypatch.setattr(score, "_model", None)


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_the_azure_ml_script_answers_bad_input_as_the_server_does(
    case: str, loaded: None, bars: pd.DataFrame
) -> None:
    raw = BROKEN[case](records(bars, 5))

    async with serving_client(build_app({"1": NaiveForecaster(TICKERS)})) as client:
        served = await client.post("/v1/predict", content=raw)
    answered = score.run(raw.decode("utf-8"))

    assert served.status_code == 422
    assert answered == served.json()


def test_a_model_logged_before_the_server_checks_is_still_served(
    loaded: None, bars: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As with a model version whose stockops_model cannot import server.inputs here (older,
    # or needing orjson, which the model's environment lacks), e.g. after a rollback.
    monkeypatch.setitem(sys.modules, "stockops_model.server.inputs", None)
    payload = records(bars, 5)
    broken = copy.deepcopy(payload)
    broken[2]["close"] = -1.0

    answer = score.run(json.dumps({"bars": payload}))
    refused = score.run(json.dumps({"bars": broken}))
    not_json = score.run("{")

    assert [f["symbol"] for f in answer["forecasts"]] == list(TICKERS)
    assert refused["error"]["reason"] == "invalid_input"
    assert "close" in refused["error"]["message"]
    assert not_json["error"]["reason"] == "invalid_input"
