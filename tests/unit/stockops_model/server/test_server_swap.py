"""Hot swap and batching: requests in flight finish on their model, a bad version never serves."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockops_model.errors import DataError, ServiceUnavailableError
from stockops_model.forecaster import NaiveForecaster
from stockops_model.server.slot import AliasNotSetError, MlflowLoader, ModelSlot, ModelSource

from .conftest import (
    TICKERS,
    FakeLoader,
    GatedForecaster,
    build_app,
    records,
    serving_client,
    until,
)


@pytest.fixture(scope="module")
def payload(bars: pd.DataFrame) -> dict[str, Any]:
    return {"bars": records(bars, 3)}


async def test_a_request_in_flight_answers_with_the_old_version(payload: dict[str, Any]) -> None:
    old, new = GatedForecaster(TICKERS), NaiveForecaster(TICKERS)
    app = build_app({"1": old, "2": new})
    loader: FakeLoader = app.state.runtime.slot.loader
    async with serving_client(app) as client:
        old.hold()
        in_flight = asyncio.create_task(client.post("/v1/predict", json=payload))
        # The request has taken version 1 and waits inside its network call.
        assert await asyncio.to_thread(old.started.wait, 30)
        loader.alias = "2"
        reloaded = await client.post("/v1/models/reload")
        assert reloaded.json()["version"] == "2"
        old.gate.set()
        first = await in_flight
        second = await client.post("/v1/predict", json=payload)
    assert first.json()["model_version"] == "1"
    assert second.json()["model_version"] == "2"
    assert reloaded.json()["reloads"] == 1


async def test_a_version_that_fails_to_load_keeps_the_old_one(payload: dict[str, Any]) -> None:
    broken = DataError("network.keras: truncated file")
    app = build_app({"1": NaiveForecaster(TICKERS), "2": broken})
    runtime = app.state.runtime
    loader: FakeLoader = runtime.slot.loader
    async with serving_client(app) as client:
        loader.alias = "2"
        status = (await client.post("/v1/models/reload")).json()
        answer = await client.post("/v1/predict", json=payload)
        metrics = (await client.get("/metrics")).text
    assert status["version"] == "1"
    assert "cannot load version 2" in status["last_reload_error"]
    assert "truncated file" in status["last_reload_error"]
    assert answer.json()["model_version"] == "1"
    assert 'stockops_serve_reloads_total{outcome="failed"} 1.0' in metrics
    assert 'stockops_serve_model_info{name="stocks",version="1"} 1.0' in metrics


async def test_a_model_that_cannot_forecast_is_not_swapped_in(payload: dict[str, Any]) -> None:
    class UnfitForecaster(NaiveForecaster):
        """A fake model whose forecasts are not finite: the warm-up must catch it."""

        def forecast_windows(self, x: Any, last_close: Any) -> Any:
            return last_close * float("nan")

    app = build_app({"1": NaiveForecaster(TICKERS), "2": UnfitForecaster(TICKERS)})
    loader: FakeLoader = app.state.runtime.slot.loader
    async with serving_client(app) as client:
        loader.alias = "2"
        status = (await client.post("/v1/models/reload")).json()
    assert status["version"] == "1"
    assert "warm-up forecast is not finite" in status["last_reload_error"]


class FakeClock:
    """A fake wall clock for the slot's retry backoff; `advance` moves it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def serving_1_then_broken_2() -> tuple[ModelSlot, FakeLoader]:
    """A slot serving version 1 whose alias has just moved to a version 2 that cannot load."""
    app = build_app({"1": NaiveForecaster(TICKERS), "2": DataError("broken")})
    slot: ModelSlot = app.state.runtime.slot
    loader: FakeLoader = slot.loader
    await slot.refresh()
    loader.alias = "2"
    return slot, loader


async def test_a_failed_version_is_retried_with_backoff_while_another_serves() -> None:
    slot, loader = await serving_1_then_broken_2()
    slot.clock = clock = FakeClock()
    slot.retry_seconds = 30.0
    await slot.refresh()
    clock.advance(10)
    await slot.refresh()  # a poll before the retry is due: not downloaded again
    assert loader.loads == ["1", "2"]
    clock.advance(20)
    await slot.refresh()  # 30 s after the failure: retried, fails again
    assert loader.loads == ["1", "2", "2"]
    clock.advance(59)
    await slot.refresh()  # the wait doubled to 60 s
    assert loader.loads == ["1", "2", "2"]
    loader.versions["2"] = NaiveForecaster(TICKERS)  # the transient failure is over
    clock.advance(1)
    await slot.refresh()
    assert loader.loads == ["1", "2", "2", "2"]
    assert slot.current.version == "2"
    assert slot.last_reload_error is None


async def test_the_backoff_is_capped_at_ten_minutes() -> None:
    slot, loader = await serving_1_then_broken_2()
    slot.clock = clock = FakeClock()
    slot.retry_seconds = 30.0
    for _ in range(12):  # far past 30 * 2**5 = 960 s
        await slot.refresh()
        clock.advance(600)
    await slot.refresh()
    assert loader.loads == ["1"] + ["2"] * 13  # every refresh 10 minutes apart retried


async def test_a_forced_reload_retries_a_failed_version_at_once() -> None:
    slot, loader = await serving_1_then_broken_2()
    await slot.refresh()
    loader.versions["2"] = NaiveForecaster(TICKERS)
    await slot.refresh(force=True)  # POST /v1/models/reload
    assert loader.loads == ["1", "2", "2"]
    assert slot.current.version == "2"


async def test_a_pinned_version_that_failed_at_start_is_retried_at_every_poll() -> None:
    # A KServe predictor pins models:/NAME/V: one transient blob error at pod start must
    # not leave it 503 forever.
    app = build_app({"1": ServiceUnavailableError("blob read timed out")})
    slot = app.state.runtime.slot
    loader: FakeLoader = slot.loader
    await slot.refresh()
    await slot.refresh()
    assert loader.loads == ["1", "1"]
    assert slot.current is None
    loader.versions["1"] = NaiveForecaster(TICKERS)
    await slot.refresh()  # a poll, not a forced reload
    assert app.state.runtime.slot.current.version == "1"


async def test_a_registry_outage_keeps_serving_and_forgets_nothing() -> None:
    slot, loader = await serving_1_then_broken_2()
    await slot.refresh()
    loader.alias = ServiceUnavailableError("registry down")
    await slot.refresh()
    assert slot.current.version == "1"
    assert "registry down" in slot.last_reload_error
    loader.alias = "2"
    await slot.refresh()  # still the broken version: not downloaded again
    assert loader.loads == ["1", "2"]


async def test_the_alias_poller_swaps_without_a_request() -> None:
    app = build_app({"1": NaiveForecaster(TICKERS), "2": NaiveForecaster(TICKERS)})
    slot = app.state.runtime.slot
    loader: FakeLoader = slot.loader
    poller = asyncio.create_task(slot.poll(0.01))
    try:
        await until(lambda: slot.current is not None, "the first load")
        loader.alias = "2"
        await until(lambda: slot.current.version == "2", "the swap to version 2")
    finally:
        poller.cancel()
    assert slot.reloads == 1


async def test_queued_requests_share_one_network_call(payload: dict[str, Any]) -> None:
    gated = GatedForecaster(TICKERS)
    app = build_app({"1": gated})
    async with serving_client(app) as client:
        gated.hold()
        first = asyncio.create_task(client.post("/v1/predict", json=payload))
        assert await asyncio.to_thread(gated.started.wait, 30)
        # While the first call runs, three more requests queue up.
        queued = [asyncio.create_task(client.post("/v1/predict", json=payload)) for _ in range(3)]
        await until(lambda: app.state.runtime.batcher._queue.qsize() == 3, "3 queued requests")
        gated.gate.set()
        replies = [await first, *[await task for task in queued]]
    assert [r.status_code for r in replies] == [200] * 4
    # Two tickers a request: one call for the first, one for the three queued together.
    assert gated.batch_sizes == [2, 6]
    closes = [[f["forecast_close"] for f in r.json()["forecasts"]] for r in replies]
    assert all(c == closes[0] for c in closes)


def test_model_uris_name_the_registered_model() -> None:
    alias = ModelSource.parse("models:/stocks@production")
    pinned = ModelSource.parse("models:/stocks/7")
    run = ModelSource.parse("runs:/abc123/model")
    assert (alias.name, alias.alias, alias.version) == ("stocks", "production", None)
    assert (pinned.name, pinned.alias, pinned.version) == ("stocks", None, "7")
    assert (run.name, run.alias, run.version) == ("model", None, None)


async def test_an_alias_not_set_yet_is_waited_for_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The normal state of a fresh `stockops up`: no rollout has set the alias yet.
    app = build_app({"1": NaiveForecaster(TICKERS)})
    slot = app.state.runtime.slot
    loader: FakeLoader = slot.loader
    loader.alias = AliasNotSetError("waiting for alias production of stocks (not set yet)")
    with caplog.at_level(logging.INFO, logger="stockops_model.server.slot"):
        for _ in range(3):  # three polls
            await slot.refresh()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in warnings] == ["WARNING"]
    assert "waiting for alias production of stocks" in warnings[0].getMessage()
    async with serving_client(app, load=False) as client:
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
    assert ready.status_code == 503
    assert "waiting for alias production" in ready.json()["error"]["message"]
    assert 'stockops_serve_reloads_total{outcome="failed"} 1.0' not in metrics
    loader.alias = "1"  # the first rollout
    await slot.refresh()
    assert slot.current.version == "1"


async def test_a_registry_that_is_down_is_still_an_error(caplog: pytest.LogCaptureFixture) -> None:
    app = build_app({"1": NaiveForecaster(TICKERS)})
    slot = app.state.runtime.slot
    slot.loader.alias = ServiceUnavailableError("connection refused")
    with caplog.at_level(logging.INFO, logger="stockops_model.server.slot"):
        await slot.refresh()
        await slot.refresh()
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]


@pytest.mark.parametrize("registered", [False, True], ids=["no model", "no alias"])
def test_the_mlflow_loader_says_an_absent_alias_is_not_set_yet(
    tmp_path: Path, registered: bool
) -> None:
    import mlflow

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if registered:
        mlflow.MlflowClient(tracking_uri).create_registered_model("stocks")
    loader = MlflowLoader(ModelSource.parse("models:/stocks@serving"), tracking_uri)
    with pytest.raises(AliasNotSetError, match="waiting for alias serving of stocks"):
        loader.resolve()


async def test_the_warm_up_forecasts_every_ticker() -> None:
    class HalfUnfitForecaster(NaiveForecaster):
        """A fake model whose forecast for its second ticker is not finite."""

        def forecast_windows(self, x: Any, last_close: Any) -> Any:
            forecast = np.array(last_close, dtype=np.float64)
            forecast[1:] = np.nan
            return forecast

    app = build_app({"1": HalfUnfitForecaster(TICKERS)})
    slot = app.state.runtime.slot
    await slot.refresh()
    assert slot.current is None
    assert "warm-up forecast is not finite" in slot.last_reload_error
