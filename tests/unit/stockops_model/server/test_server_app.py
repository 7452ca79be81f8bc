"""The scoring server's HTTP contract: forecasts, validation, auth, limits, OIP v2, metrics."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from stockops_model.forecaster import NaiveForecaster, NetworkForecaster
from stockops_model.server.runtime import ServerConfig

from .conftest import (
    MODEL,
    TICKERS,
    FakeBars,
    build_app,
    records,
    serving_client,
    ticker_bars,
)

Bars = list[dict[str, Any]]


@pytest.fixture(scope="module")
def payload(bars: pd.DataFrame, network: NetworkForecaster) -> Bars:
    return records(bars, network.min_bars + 5)


async def post_bars(app: Any, body: Any, **kwargs: Any) -> Any:
    async with serving_client(app) as client:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return await client.post("/v1/predict", content=content, **kwargs)


async def test_predict_answers_the_forecast_per_ticker_with_the_version(
    network: NetworkForecaster, payload: Bars
) -> None:
    app = build_app({"1": network})
    reply = await post_bars(app, {"bars": payload})
    assert reply.status_code == 200
    body = reply.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == "1"
    expected = network.predict(payload)
    assert [f["symbol"] for f in body["forecasts"]] == list(TICKERS)
    assert [f["ts"] for f in body["forecasts"]] == expected["ts"].dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    ).tolist()
    np.testing.assert_allclose(
        [f["forecast_close"] for f in body["forecasts"]], expected["forecast_close"], rtol=1e-6
    )
    assert {f["horizon"] for f in body["forecasts"]} == {1}


def _set(i: int, field: str, value: Any) -> Callable[[Bars], Any]:
    def change(bars: Bars) -> Any:
        bars[i][field] = value
        return {"bars": bars}

    return change


def _drop(i: int, field: str) -> Callable[[Bars], Any]:
    def change(bars: Bars) -> Any:
        del bars[i][field]
        return {"bars": bars}

    return change


def _swap(i: int, j: int) -> Callable[[Bars], Any]:
    def change(bars: Bars) -> Any:
        bars[i], bars[j] = bars[j], bars[i]
        return {"bars": bars}

    return change


def _repeat_ts(i: int) -> Callable[[Bars], Any]:
    def change(bars: Bars) -> Any:
        bars[i]["ts"] = bars[i - 1]["ts"]
        return {"bars": bars}

    return change


def _prices(i: int, value: float) -> Callable[[Bars], Any]:
    def change(bars: Bars) -> Any:
        bars[i].update(open=value, high=value, low=value, close=value)
        return {"bars": bars}

    return change


def _raw_close(i: int, literal: str) -> Callable[[Bars], Any]:
    # NaN and Infinity are not JSON, but clients (Python's json) write them.
    def change(bars: Bars) -> Any:
        bars[i]["close"] = 12345.678
        return orjson.dumps({"bars": bars}).replace(b"12345.678", literal.encode(), 1)

    return change


INVALID: dict[str, tuple[Callable[[Bars], Any], str, str | None]] = {
    "empty body": (lambda b: b"", "empty_body", None),
    "not JSON": (lambda b: b'{"bars": [', "invalid_json", None),
    "a list, not an object": (lambda b: b, "invalid_shape", None),
    "no bars key": (lambda b: {"rows": b}, "invalid_shape", "bars"),
    "no bars at all": (lambda b: {"bars": []}, "no_bars", "bars"),
    "a bar that is not an object": (
        lambda b: {"bars": [*b[:5], 7, *b[6:]]},
        "invalid_shape",
        "bars[5]",
    ),
    "a missing field": (_drop(5, "close"), "missing_field", "bars[5].close"),
    "a price as a string": (_set(5, "close", "12.5"), "invalid_number", "bars[5].close"),
    "a boolean volume": (_set(5, "volume", True), "invalid_number", "bars[5].volume"),
    "a NaN close": (_raw_close(5, "NaN"), "invalid_price", "bars[5].close"),
    "an infinite close": (_raw_close(5, "Infinity"), "invalid_price", "bars[5].close"),
    "a negative close": (_set(5, "close", -3.0), "invalid_price", "bars[5].close"),
    "a zero low": (_set(5, "low", 0), "invalid_price", "bars[5].low"),
    "a negative volume": (_set(5, "volume", -1), "invalid_volume", "bars[5].volume"),
    "an unreadable ts": (_set(5, "ts", "yesterday"), "invalid_timestamp", "bars[5].ts"),
    "a numeric ts": (_set(5, "ts", 1520519400), "invalid_timestamp", "bars[5].ts"),
    # numpy's datetime64[ns] wraps these silently (9999 became 1816)
    "a ts after 2262": (_set(5, "ts", "9999-12-31T00:00:00Z"), "invalid_timestamp", "bars[5].ts"),
    "a ts before 1678": (_set(5, "ts", "1600-01-01T00:00:00Z"), "invalid_timestamp", "bars[5].ts"),
    "a naive ts after 2262": (
        _set(5, "ts", "9999-12-31T00:00:00"),
        "invalid_timestamp",
        "bars[5].ts",
    ),
    "an offset before the Z": (
        _set(5, "ts", "2018-03-08T14:30:00+05:00Z"),
        "invalid_timestamp",
        "bars[5].ts",
    ),
    "a repeated ts": (_repeat_ts(6), "duplicate_timestamp", "bars[6].ts"),
    "unsorted ts": (_swap(5, 6), "unsorted_timestamps", "bars[6].ts"),
    # finite and positive, but the network's float32 features overflow
    "an extreme close": (_set(-1, "close", 1e300), "invalid_price", "bars"),
    "an extreme last bar": (_prices(-1, 1e300), "invalid_price", "bars"),
    "an unknown ticker": (_set(0, "symbol", "MSFT"), "unknown_ticker", "bars[0].symbol"),
    "a symbol that is a number": (_set(0, "symbol", 7), "invalid_symbol", "bars[0].symbol"),
    "too few bars": (lambda b: {"bars": b[-20:]}, "too_few_bars", "bars"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
@pytest.mark.filterwarnings("error")  # no numpy or parser warning per bad request either
async def test_bad_input_is_a_422_naming_the_field(
    case: str, network: NetworkForecaster, payload: Bars
) -> None:
    change, reason, field = INVALID[case]
    app = build_app({"1": network})
    reply = await post_bars(app, change(copy.deepcopy(payload)))
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["reason"] == reason
    assert error["field"] == field
    if field is not None:
        assert field in error["message"]


async def test_too_few_bars_says_how_many_the_model_needs(
    network: NetworkForecaster, payload: Bars
) -> None:
    reply = await post_bars(build_app({"1": network}), {"bars": payload[-20:]})
    assert f"need at least {network.min_bars}" in reply.json()["error"]["message"]


async def test_framework_validation_errors_have_the_same_shape(
    network: NetworkForecaster,
) -> None:
    app = build_app({"1": network}, bar_source=FakeBars({}))
    async with serving_client(app) as client:
        reply = await client.get("/v1/forecast/AMZN", params={"points": 0})
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["reason"] == "invalid_request"
    assert error["field"] == "points"


async def test_more_bars_than_the_limit_is_a_413(payload: Bars) -> None:
    app = build_app(
        {"1": NaiveForecaster(TICKERS)}, config=ServerConfig(max_bars=10, compile_network=False)
    )
    reply = await post_bars(app, {"bars": payload})
    assert reply.status_code == 413
    assert reply.json()["error"]["reason"] == "too_many_bars"
    assert reply.json()["error"]["field"] == "bars"


async def test_a_body_over_the_limit_is_a_413_from_its_length(payload: Bars) -> None:
    app = build_app(
        {"1": NaiveForecaster(TICKERS)},
        config=ServerConfig(max_body_bytes=1000, compile_network=False),
    )
    reply = await post_bars(app, {"bars": payload})
    assert reply.status_code == 413
    assert reply.json()["error"]["reason"] == "body_too_large"


async def test_a_chunked_body_over_the_limit_is_a_413_while_reading(payload: Bars) -> None:
    app = build_app(
        {"1": NaiveForecaster(TICKERS)},
        config=ServerConfig(max_body_bytes=1000, compile_network=False),
    )
    data = orjson.dumps({"bars": payload})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 500):
            yield data[start : start + 500]

    async with serving_client(app) as client:
        reply = await client.post("/v1/predict", content=chunks())
    assert "content-length" not in reply.request.headers
    assert reply.status_code == 413
    assert reply.json()["error"]["reason"] == "body_too_large"


KEY = "s3cret-key"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": KEY}, 200),
        ({"Authorization": f"Bearer {KEY}"}, 200),
    ],
    ids=["missing", "wrong", "wrong bearer", "header", "bearer"],
)
async def test_keyed_routes_need_the_api_key(
    headers: dict[str, str], status: int, payload: Bars
) -> None:
    app = build_app(
        {"1": NaiveForecaster(TICKERS)}, config=ServerConfig(api_key=KEY, compile_network=False)
    )
    async with serving_client(app) as client:
        replies = [
            await client.post("/v1/predict", json={"bars": payload}, headers=headers),
            await client.post("/v1/models/reload", headers=headers),
            await client.post(
                f"/v2/models/{MODEL}/infer", json=_infer_body(payload), headers=headers
            ),
        ]
    assert [r.status_code for r in replies] == [status] * 3
    if status == 401:
        assert replies[0].json()["error"]["reason"] == "unauthorized"


async def test_open_routes_need_no_key() -> None:
    app = build_app(
        {"1": NaiveForecaster(TICKERS)}, config=ServerConfig(api_key=KEY, compile_network=False)
    )
    async with serving_client(app) as client:
        paths = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/models", "/v2"]
        paths += ["/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}"]
        paths += [f"/v2/models/{MODEL}/ready"]
        statuses = {path: (await client.get(path)).status_code for path in paths}
    assert statuses == dict.fromkeys(paths, 200)


async def test_not_ready_until_a_model_is_loaded() -> None:
    app = build_app({"1": NaiveForecaster(TICKERS)})
    async with serving_client(app, load=False) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        models = await client.get("/v1/models")
        assert models.status_code == 503
        assert models.json()["error"]["reason"] == "model_not_loaded"
        await app.state.runtime.slot.refresh()
        assert (await client.get("/readyz")).status_code == 200


async def test_models_describes_what_serves(network: NetworkForecaster) -> None:
    async with serving_client(build_app({"1": network})) as client:
        body = (await client.get("/v1/models")).json()
    assert body["name"] == MODEL
    assert body["version"] == "1"
    assert body["uri"] == f"models:/{MODEL}/1"
    assert body["alias"] == "production"
    assert body["kind"] == "network"
    assert body["tickers"] == list(TICKERS)
    assert body["min_bars"] == network.min_bars
    assert body["reloads"] == 0
    assert body["last_reload_error"] is None


def _infer_body(bars: Bars) -> dict[str, Any]:
    def tensor(name: str, datatype: str) -> dict[str, Any]:
        data = [b[name] for b in bars]
        return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}

    inputs = [tensor("symbol", "BYTES"), tensor("ts", "BYTES")]
    inputs += [tensor(n, "FP64") for n in ("open", "high", "low", "close", "volume")]
    return {"id": "req-1", "inputs": inputs}


async def test_oip_infer_answers_what_predict_answers(
    network: NetworkForecaster, payload: Bars
) -> None:
    async with serving_client(build_app({"1": network})) as client:
        v1 = (await client.post("/v1/predict", json={"bars": payload})).json()
        reply = await client.post(f"/v2/models/{MODEL}/infer", json=_infer_body(payload))
        metadata = (await client.get(f"/v2/models/{MODEL}")).json()
    assert reply.status_code == 200
    body = reply.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == "1"
    assert body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["symbol"]["data"] == [f["symbol"] for f in v1["forecasts"]]
    assert outputs["ts"]["data"] == [f["ts"] for f in v1["forecasts"]]
    assert outputs["forecast_close"]["data"] == [f["forecast_close"] for f in v1["forecasts"]]
    assert outputs["horizon"] == {
        "name": "horizon",
        "datatype": "INT64",
        "shape": [2],
        "data": [1, 1],
    }
    assert metadata["versions"] == ["1"]
    assert [i["name"] for i in metadata["inputs"]] == [
        "symbol",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
    ]


async def test_oip_errors_name_the_tensor(network: NetworkForecaster, payload: Bars) -> None:
    body = _infer_body(payload)
    body["inputs"][5]["shape"] = [3]
    bad_close = _infer_body(payload)
    bad_close["inputs"][5]["data"][4] = -1.0
    huge_close = _infer_body(payload)
    huge_close["inputs"][5]["data"][-1] = 1e300
    async with serving_client(build_app({"1": network})) as client:
        shape = await client.post(f"/v2/models/{MODEL}/infer", json=body)
        price = await client.post(f"/v2/models/{MODEL}/infer", json=bad_close)
        huge = await client.post(f"/v2/models/{MODEL}/infer", json=huge_close)
        other = await client.post("/v2/models/other/infer", json=_infer_body(payload))
    assert (shape.status_code, shape.json()["error"]["field"]) == (422, "inputs[5].shape")
    assert (price.status_code, price.json()["error"]["field"]) == (422, "inputs[5].data[4]")
    assert (other.status_code, other.json()["error"]["reason"]) == (404, "unknown_model")
    assert (huge.status_code, huge.json()["error"]["reason"]) == (422, "invalid_price")
    assert TICKERS[-1] in huge.json()["error"]["message"]


async def test_metrics_show_latency_errors_model_and_reloads(payload: Bars) -> None:
    app = build_app({"1": NaiveForecaster(TICKERS)})
    async with serving_client(app) as client:
        await client.post("/v1/predict", json={"bars": payload})
        unknown = copy.deepcopy(payload)
        unknown[0]["symbol"] = "MSFT"
        await client.post("/v1/predict", json={"bars": unknown})
        text = (await client.get("/metrics")).text
    assert 'stockops_serve_request_seconds_count{route="/v1/predict"} 2.0' in text
    assert 'stockops_serve_errors_total{reason="unknown_ticker"} 1.0' in text
    assert f'stockops_serve_model_info{{name="{MODEL}",version="1"}} 1.0' in text
    assert 'stockops_serve_reloads_total{outcome="loaded"} 1.0' in text


async def test_many_apps_in_one_process_keep_their_own_metrics(payload: Bars) -> None:
    first = build_app({"1": NaiveForecaster(TICKERS)})
    second = build_app({"1": NaiveForecaster(TICKERS)})
    async with serving_client(first) as client:
        await client.post("/v1/predict", json={"bars": payload})
    async with serving_client(second) as client:
        text = (await client.get("/metrics")).text
    assert 'stockops_serve_request_seconds_count{route="/v1/predict"}' not in text


async def test_forecast_route_gives_recent_closes_forecasts_and_next(
    network: NetworkForecaster, bars: pd.DataFrame
) -> None:
    source = FakeBars({s: ticker_bars(bars, s) for s in TICKERS})
    app = build_app({"1": network}, bar_source=source)
    async with serving_client(app) as client:
        reply = await client.get("/v1/forecast/AXP", params={"points": 30})
    assert reply.status_code == 200
    body = reply.json()
    assert (body["symbol"], body["model_version"]) == ("AXP", "1")
    axp = bars[bars["symbol"] == "AXP"]
    assert [b["close"] for b in body["bars"]] == axp["close"].tail(30).tolist()
    expected = network.predict(axp.tail(network.min_bars + 29), origins="all")
    assert len(body["forecasts"]) == 30
    np.testing.assert_allclose(
        [f["forecast_close"] for f in body["forecasts"]], expected["forecast_close"], rtol=1e-6
    )
    assert body["next"] == body["forecasts"][-1]
    assert body["next"]["ts"] == body["bars"][-1]["ts"]


async def test_forecast_route_refusals(network: NetworkForecaster, bars: pd.DataFrame) -> None:
    few = ticker_bars(bars, "AMZN")
    few = type(few)("AMZN", few.ts[:10], few.high[:10], few.low[:10], few.close[:10])
    with_store = build_app({"1": network}, bar_source=FakeBars({"AMZN": few}))
    without_store = build_app({"1": network})
    async with serving_client(with_store) as client:
        unknown = await client.get("/v1/forecast/MSFT")
        short = await client.get("/v1/forecast/AMZN")
        empty = await client.get("/v1/forecast/AXP")
    async with serving_client(without_store) as client:
        nostore = await client.get("/v1/forecast/AMZN")
    assert (unknown.status_code, unknown.json()["error"]["reason"]) == (404, "unknown_ticker")
    assert (short.status_code, short.json()["error"]["reason"]) == (503, "too_few_bars")
    assert (empty.status_code, empty.json()["error"]["reason"]) == (503, "too_few_bars")
    assert (nostore.status_code, nostore.json()["error"]["reason"]) == (503, "no_store")


async def test_the_page_is_served_at_the_root() -> None:
    from stockops_model.server.app import INDEX_FILE

    async with serving_client(build_app({"1": NaiveForecaster(TICKERS)})) as client:
        reply = await client.get("/")
    if INDEX_FILE.is_file():
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/html")
    else:
        assert (reply.status_code, reply.json()["error"]["reason"]) == (404, "not_found")


async def test_every_schema_of_the_openapi_document_is_described() -> None:
    app = build_app({"1": NaiveForecaster(TICKERS)})
    async with serving_client(app) as client:
        document = (await client.get("/openapi.json")).json()
    ours = {
        name: schema
        for name, schema in document["components"]["schemas"].items()
        if name not in ("HTTPValidationError", "ValidationError")  # FastAPI's own
    }
    undescribed = sorted(name for name, schema in ours.items() if not schema.get("description"))
    assert undescribed == []


async def test_the_openapi_document_shows_which_routes_need_the_key_and_their_bodies() -> None:
    app = build_app({"1": NaiveForecaster(TICKERS)}, config=ServerConfig(api_key="k"))
    async with serving_client(app) as client:
        document = (await client.get("/openapi.json")).json()
    keyed = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    }
    assert keyed == {
        "POST /v1/predict",
        "GET /v1/forecast/{symbol}",
        "POST /v1/models/reload",
        "POST /v2/models/{name}/infer",
    }
    assert document["components"]["securitySchemes"] == {
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    }
    bodies = {
        path: item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for path, item in document["paths"].items()
        if "requestBody" in item.get("post", {})
    }
    assert bodies == {
        "/v1/predict": "#/components/schemas/PredictRequest",
        "/v2/models/{name}/infer": "#/components/schemas/InferRequest",
    }


async def test_the_local_deploy_target_sends_the_key_where_the_server_reads_it() -> None:
    from stockops_model.deploy.local import LocalTarget

    target = LocalTarget(None, "http://127.0.0.1:9", api_key="s3cret")  # type: ignore[arg-type]
    headers = dict(target.http.headers)
    target.http.close()
    app = build_app({"1": NaiveForecaster(TICKERS)}, config=ServerConfig(api_key="s3cret"))
    async with serving_client(app) as client:
        reply = await client.post("/v1/models/reload", headers=headers)
    assert reply.status_code == 200


async def test_a_bad_price_message_shows_the_value_as_the_client_wrote_it(payload: Bars) -> None:
    bars = copy.deepcopy(payload)
    bars[5]["close"] = -3.5
    reply = await post_bars(build_app({"1": NaiveForecaster(TICKERS)}), {"bars": bars})
    message = reply.json()["error"]["message"]
    assert message.startswith("bars[5].close: must be finite and positive, got -3.5 (")
