"""No input gives a 500: schemathesis fuzzes every route from the app's own OpenAPI document.

The app serves the naive forecaster (one bar per ticker is enough for a forecast, so
generated bodies also reach the forecast path, not only validation), with a fake bar store
holding real bars, so /v1/forecast answers from data too. Any 5xx fails the test, and so
does an answer whose body does not match the document's schema for its status.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from stockops_model.forecaster import NaiveForecaster
from stockops_model.loaders import load_bars

from .conftest import DATA, TICKERS, FakeBars, build_app, ticker_bars


def _app() -> FastAPI:
    frame = load_bars(DATA, symbols=TICKERS)
    source = FakeBars({s: ticker_bars(frame, s) for s in TICKERS})
    app = build_app({"1": NaiveForecaster(TICKERS)}, bar_source=source)
    asyncio.run(app.state.runtime.slot.refresh())
    return app


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_no_request_gives_a_server_error(case: schemathesis.Case[Any]) -> None:
    # Also: every answer, error or not, has the shape the document gives for its status.
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
