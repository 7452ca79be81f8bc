"""`stockops serve` as a real process against a real MLflow registry, following an alias.

Three versions of one registered model: 1 and 2 are naive forecasters (fast to log and load;
2 has another horizon, so an answer shows which one served it), 3 is a network version
whose artifact is then broken on the server's disk. The server follows `@serving`:

0. it starts before the alias is set (a fresh `stockops up`): alive, not ready, waiting
   for the alias with a warning and no error; the alias is set to 1 and a reload loads it;
1. it answers with version 1 (API key required, forecasts from the store too);
2. the alias moves to 2; `POST /v1/models/reload` swaps, and the next answer is version 2;
3. the alias moves to 3; the load fails, version 2 keeps serving and the error is reported;
4. SIGTERM stops it with exit code 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from stockops_model.testing import MlflowServer
from stockops_model.testing.scoring import ScoringServer, scoring_server

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

DATA = Path(__file__).parents[1] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
KEY = "integration-key"
READY_WITHIN = 180.0  # seconds: importing MLflow and loading the first model


def bars() -> pd.DataFrame:
    from stockops_model.loaders import load_bars

    return load_bars(DATA, symbols=TICKERS)


def register(server: MlflowServer, name: str) -> Any:
    """Versions 1 and 2 (naive, horizons 1 and 5) and 3 (a network, broken on disk)."""
    import mlflow

    from stockops_model.forecaster import InputSpec, NaiveForecaster, NetworkForecaster
    from stockops_model.network import build_network
    from stockops_model.registry import log_forecaster
    from stockops_model.scalers import fit_standard
    from stockops_model.spec import IndicatorName, IndicatorSpec
    from stockops_model.training import prepare_dataset

    mlflow.set_tracking_uri(server.tracking_uri)
    client = mlflow.MlflowClient(server.tracking_uri)
    experiment = mlflow.set_experiment(f"serving-{name}")
    frame = bars()
    inputs = InputSpec(TICKERS, (IndicatorSpec(name=IndicatorName.CLOSE),), 4, 1, "return")
    dataset = prepare_dataset(frame, inputs)
    network = NetworkForecaster(
        inputs,
        fit_standard(dataset.X),
        fit_standard(dataset.y.reshape(-1, 1)),
        build_network(inputs.window, len(inputs.columns), 2, 0.001, seed=1),
    )
    for forecaster in (NaiveForecaster(TICKERS, 1), NaiveForecaster(TICKERS, 5), network):
        with mlflow.start_run():
            log_forecaster(forecaster, frame, registered_model_name=name)
    # Version 3's network file is replaced by garbage, as a torn upload would leave it. It
    # is the only network logged in this experiment's part of the artifact store.
    broken = list((server.artifacts_dir / experiment.experiment_id).rglob("network.keras"))
    assert len(broken) == 1, f"expected version 3's network.keras only, found {broken}"
    for path in broken:
        path.write_bytes(b"not a keras file")
    return client  # the alias is set by the first test, after the server started


@pytest.fixture(scope="module")
def served(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The registry client, the model name, the base URL and the process of a running
    `stockops serve` (alive, no alias set yet), and its log file."""
    from stockops_model.store import BarStore, FileBackend

    name = f"serving-{uuid.uuid4().hex[:8]}"
    client = register(mlflow_server, name)
    folder = tmp_path_factory.mktemp("serving")
    store = BarStore(FileBackend(folder / "store"), "bars")
    asyncio.run(store.write(bars()))
    with scoring_server(
        f"models:/{name}@serving",
        mlflow_server.tracking_uri,
        folder,
        api_key=KEY,
        store_url=f"file://{folder / 'store'}/bars",
        poll_seconds=3600,  # the test moves the alias and asks for a reload itself
    ) as server:
        _wait_first_poll(server)
        yield client, name, server.url, server.process, server.log_path


def _wait_first_poll(server: ScoringServer) -> None:
    """Until the server has looked for the alias once (and logged that it waits for it)."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if not server.process.running:
            pytest.fail(f"stockops serve exited:\n{server.log_path.read_text()}")
        if "waiting for alias" in server.log_path.read_text():
            return
        time.sleep(0.5)
    pytest.fail(
        f"stockops serve never polled in {READY_WITHIN:.0f} s:\n{server.log_path.read_text()}"
    )


def predict(base: str) -> httpx.Response:
    tail = bars().groupby("symbol").tail(3)
    records = tail.assign(ts=tail["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    columns = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    body = {"bars": records.loc[:, columns].to_dict("records")}
    return httpx.post(f"{base}/v1/predict", json=body, headers={"X-API-Key": KEY}, timeout=30)


def test_waits_for_an_alias_not_set_yet_then_loads_it(served: Any) -> None:
    client, name, base, _, log_path = served
    ready = httpx.get(f"{base}/readyz", timeout=30)
    assert ready.status_code == 503
    assert f"waiting for alias serving of {name}" in ready.json()["error"]["message"]
    assert predict(base).json()["error"]["reason"] == "model_not_loaded"
    log = log_path.read_text()
    assert "WARNING" in log
    assert "ERROR" not in log, log
    client.set_registered_model_alias(name, "serving", "1")
    status = httpx.post(f"{base}/v1/models/reload", headers={"X-API-Key": KEY}, timeout=120)
    assert status.status_code == 200, status.text
    assert status.json()["version"] == "1"
    assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200


def test_serves_the_alias_version_behind_the_api_key(served: Any) -> None:
    _, name, base, _, _ = served
    answer = predict(base)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == name
    assert answer.json()["model_version"] == "1"
    assert [f["symbol"] for f in answer.json()["forecasts"]] == list(TICKERS)
    refused = httpx.post(f"{base}/v1/predict", json={"bars": []}, timeout=30)
    assert refused.status_code == 401
    status = httpx.get(f"{base}/v1/models", timeout=30).json()
    assert (status["version"], status["alias"], status["kind"]) == ("1", "serving", "naive")


def test_forecasts_from_the_store(served: Any) -> None:
    _, _, base, _, _ = served
    reply = httpx.get(
        f"{base}/v1/forecast/AMZN", params={"points": 20}, headers={"X-API-Key": KEY}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    last = bars().query("symbol == 'AMZN'")["close"].tail(20).tolist()
    assert [b["close"] for b in body["bars"]] == last
    # The naive forecast from the last bar is the last close.
    assert body["next"]["forecast_close"] == last[-1]


def test_moving_the_alias_and_reloading_swaps_the_model(served: Any) -> None:
    client, name, base, _, _ = served
    client.set_registered_model_alias(name, "serving", "2")
    status = httpx.post(f"{base}/v1/models/reload", headers={"X-API-Key": KEY}, timeout=120)
    assert status.status_code == 200, status.text
    assert status.json()["version"] == "2"
    answer = predict(base).json()
    assert answer["model_version"] == "2"
    assert {f["horizon"] for f in answer["forecasts"]} == {5}


def test_a_broken_version_keeps_the_old_one_serving(served: Any) -> None:
    client, name, base, _, _ = served
    client.set_registered_model_alias(name, "serving", "3")
    status = httpx.post(f"{base}/v1/models/reload", headers={"X-API-Key": KEY}, timeout=120)
    assert status.status_code == 200, status.text
    assert status.json()["version"] == "2"
    assert "cannot load version 3" in status.json()["last_reload_error"]
    assert predict(base).json()["model_version"] == "2"
    metrics = httpx.get(f"{base}/metrics", timeout=30).text
    assert 'stockops_serve_reloads_total{outcome="failed"} 1.0' in metrics
    assert f'stockops_serve_model_info{{name="{name}",version="2"}} 1.0' in metrics


def test_sigterm_stops_the_server_cleanly(served: Any) -> None:
    process = served[3]
    assert process.pid is not None
    os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while process.returncode is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.returncode == 0
