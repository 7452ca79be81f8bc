"""No input gives a 500: schemathesis fuzzes every route from the app's own OpenAPI document.

Two apps are fuzzed. One serves the naive forecaster (one bar per ticker is enough for a
forecast, so generated bodies also reach the forecast path, not only validation); the other
a small untrained network, so the network's input path (features, windows, the batcher,
the finite checks) is fuzzed too. Both have a fake bar store holding real bars, so
/v1/forecast answers from data. Any 5xx fails the test, and so does an answer whose body
does not match the document's schema for its status.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from stockops_model.forecaster import Forecaster, NaiveForecaster
from stockops_model.loaders import load_bars

from .conftest import COLUMNS, DATA, TICKERS, FakeBars, build_app, small_network, ticker_bars

FRAME = load_bars(DATA, symbols=TICKERS).loc[:, COLUMNS]


def _app(forecaster: Forecaster) -> FastAPI:
    source = FakeBars({s: ticker_bars(FRAME, s) for s in TICKERS})
    app = build_app({"1": forecaster}, bar_source=source)
    asyncio.run(app.state.runtime.slot.refresh())
    return app


NAIVE_APP = _app(NaiveForecaster(TICKERS))
NETWORK_APP = _app(small_network(FRAME))
naive_schema = schemathesis.openapi.from_asgi("/openapi.json", NAIVE_APP)
network_schema = schemathesis.openapi.from_asgi("/openapi.json", NETWORK_APP)
SETTINGS = hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@naive_schema.parametrize()
@SETTINGS
def test_no_request_gives_a_server_error(case: schemathesis.Case[Any]) -> None:
    # Also: every answer, error or not, has the shape the document gives for its status.
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])


@network_schema.parametrize()
@SETTINGS
def test_no_request_to_a_network_model_gives_a_server_error(
    case: schemathesis.Case[Any],
) -> None:
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
