"""Property tests: no body gives a 500, including bodies that get past the first checks.

Schemathesis (test_server_schema.py) fuzzes from the OpenAPI document, but its random
tickers and timestamps rarely pass validation, so the forecast path behind it would go
untested. These tests generate bars that are mostly right (known tickers, real ISO
timestamps) with hostile values mixed in, and real request bodies with one field broken.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockops_model.forecaster import NaiveForecaster, NetworkForecaster

from .conftest import TICKERS, build_app, records

NASTY: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    -1.0,
    0,
    1e308,
    5e-324,
    10**400,
    True,
    None,
    "12.5",
    "",
    [],
    {},
    "2018-03-13T18:18:00+05:00",
    "2018-13-45T99:99:99Z",
    "now",
    "NaT",
]
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from(NASTY),
)
FIELDS = ["symbol", "ts", "open", "high", "low", "close", "volume"]
prices = st.floats(min_value=0.01, max_value=1e6)


@st.composite
def bodies(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid bars of known tickers, one minute apart, then zero to two fields broken."""
    start = draw(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)))
    suffix = draw(st.sampled_from(["Z", "+00:00", ""]))
    bars = [
        {
            "symbol": draw(st.sampled_from(TICKERS)),
            "ts": (start + timedelta(minutes=i)).replace(tzinfo=None).isoformat() + suffix,
            "open": draw(prices),
            "high": draw(prices),
            "low": draw(prices),
            "close": draw(prices),
            "volume": draw(st.floats(min_value=0, max_value=1e12)),
        }
        for i in range(draw(st.integers(min_value=1, max_value=12)))
    ]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        row = draw(st.integers(min_value=0, max_value=len(bars) - 1))
        bars[row][draw(st.sampled_from(FIELDS))] = draw(st.one_of(values, st.just("MSFT")))
    return bars


def loaded(app: FastAPI) -> Iterator[FastAPI]:
    asyncio.run(app.state.runtime.slot.refresh())
    yield app
    app.state.runtime.batcher.stop()


@pytest.fixture(scope="module")
def naive_app() -> Iterator[FastAPI]:
    yield from loaded(build_app({"1": NaiveForecaster(TICKERS, 3)}))


@pytest.fixture(scope="module")
def network_app(network: NetworkForecaster) -> Iterator[FastAPI]:
    yield from loaded(build_app({"1": network}))


def post(app: FastAPI, body: Any) -> httpx.Response:
    # Python's json writes NaN and Infinity, as careless clients do.
    content = json.dumps(body).encode()

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as client:
            return await client.post("/v1/predict", content=content)

    return asyncio.run(send())


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies())
def test_mostly_valid_bars_never_give_a_server_error(
    naive_app: FastAPI, bars: list[dict[str, Any]]
) -> None:
    reply = post(naive_app, {"bars": bars})
    assert reply.status_code < 500, reply.text
    if reply.status_code == 200:
        symbols = [f["symbol"] for f in reply.json()["forecasts"]]
        assert symbols == sorted({b["symbol"] for b in bars})
    else:
        assert set(reply.json()["error"]) == {"reason", "message", "field"}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    row=st.integers(min_value=0),
    field=st.sampled_from(FIELDS),
    value=values,
)
def test_one_broken_field_in_a_real_body_is_a_4xx_naming_it(
    network_app: FastAPI, real_body: list[dict[str, Any]], row: int, field: str, value: Any
) -> None:
    bars = [dict(b) for b in real_body]
    row %= len(bars)
    bars[row][field] = value
    reply = post(network_app, {"bars": bars})
    assert reply.status_code < 500, reply.text
    if reply.status_code != 200:
        named = reply.json()["error"]["field"]
        # The cell itself; the next bar's ts when the order broke there; all the bars when
        # a ticker is left with too few; any ts of the ticker a bar was moved to.
        expected = {f"bars[{row}].{field}", f"bars[{row + 1}].ts", "bars"}
        moved = field == "symbol" and re.fullmatch(r"bars\[\d+\]\.ts", named or "")
        assert named in expected or moved, (named, reply.json()["error"]["message"])


@pytest.fixture(scope="module")
def real_body(bars: pd.DataFrame, network: NetworkForecaster) -> list[dict[str, Any]]:
    return records(bars, network.min_bars)
