"""The scoring server's FastAPI app: `create_app` builds it, the routes live here.

Routes (docs/serving.md has the details; `/openapi.json` the schema):

- `POST /v1/predict`: raw bars in, the forecast close per ticker out, with the version
  that answered; `GET /v1/forecast/{symbol}`: the same from the latest stored bars;
- `GET /v1/models`, `POST /v1/models/reload`: what serves, and re-check the alias now;
- the Open Inference Protocol v2 routes (`stockops_model.server.oip`);
- `/healthz` (the process lives), `/readyz` (a model is loaded), `/metrics`, and `/`,
  the page that plots prices and forecasts (`static/index.html`).

Keyed routes need the API key when one is configured; see `Runtime.check_key`.

The app is usable without a socket (`httpx.ASGITransport(app)`): tests build it around a
fake loader. The lifespan starts the batching worker and the alias poller; without a
lifespan (ASGI transport) call `await app.state.runtime.slot.refresh()` yourself.

Limits: one process; the hot path runs on the event loop except the network call, so a
second core is used only while TensorFlow runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from stockops_model.errors import StockopsError
from stockops_model.server import schemas
from stockops_model.server.command import API_KEY_HEADER
from stockops_model.server.inputs import bars_from_records, format_timestamps, parse_json
from stockops_model.server.metrics import ServerMetrics
from stockops_model.server.problems import ApiError, problem_of
from stockops_model.server.recent import BarSource
from stockops_model.server.runtime import (
    Runtime,
    ServerConfig,
    json_response,
    keyed,
)
from stockops_model.server.slot import (
    DEFAULT_RETRY_SECONDS,
    LoadedModel,
    ModelLoader,
    ModelSlot,
    ModelSource,
    compiled_runner,
    plain_runner,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
INDEX_FILE = STATIC_DIR / "index.html"
DEFAULT_POINTS = 60
MAX_POINTS = 1000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorBody, "description": "Missing or wrong API key."},
    413: {"model": schemas.ErrorBody, "description": "Body or bar count over the limit."},
    422: {"model": schemas.ErrorBody, "description": "Invalid input; `field` names it."},
    503: {"model": schemas.ErrorBody, "description": "No model loaded yet."},
}


def create_app(
    source: ModelSource,
    loader: ModelLoader,
    config: ServerConfig | None = None,
    bars: BarSource | None = None,
) -> FastAPI:
    """The scoring server for the model `source` names, loaded through `loader`.

    Args:
        source: what to serve (an alias is followed, see `stockops_model.server.slot`).
        loader: resolves and loads versions (`MlflowLoader`, or a fake in tests).
        config: limits, API key, poll interval.
        bars: recent bars for `GET /v1/forecast/{symbol}`; without it that route is 503.
    """
    config = config or ServerConfig()
    metrics = ServerMetrics()
    runner_for = compiled_runner if config.compile_network else plain_runner
    slot = ModelSlot(
        source,
        loader,
        metrics,
        runner_for=runner_for,
        retry_seconds=config.poll_seconds or DEFAULT_RETRY_SECONDS,
    )
    runtime = Runtime(config, slot, metrics, bars)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.batcher.start()
        if config.poll_seconds is None:
            poller = asyncio.create_task(runtime.slot.refresh())
        else:
            poller = asyncio.create_task(runtime.slot.poll(config.poll_seconds))
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await asyncio.to_thread(runtime.batcher.stop)
            if bars is not None:
                await bars.close()

    app = FastAPI(
        title="stockops scoring server",
        version=_package_version(),
        description="Forecast close prices from raw 1-minute bars with a registered model.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    _install_error_handlers(app, metrics)
    app.add_middleware(_Guard, runtime=runtime)
    _add_v1_routes(app, runtime)
    _add_health_routes(app, runtime)
    from stockops_model.server.oip import oip_router

    app.include_router(oip_router(runtime))
    _document_raw_bodies(app, [schemas.PredictRequest, schemas.InferRequest])
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# --------------------------------------------------------------------------- errors


def _install_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    async def handle(_: Request, exc: Exception) -> Response:
        problem = problem_of(exc)
        metrics.errors.labels(problem.reason).inc()
        response = json_response(problem.body(), problem.status)
        if problem.status == 401:
            response.headers["WWW-Authenticate"] = f'ApiKey header="{API_KEY_HEADER}"'
        return response

    for kind in (
        ApiError,
        StockopsError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(kind, handle)


def _dumps(content: object) -> bytes:
    import orjson

    return orjson.dumps(content)


class _Guard:
    """ASGI middleware: the body size limit and the per-route latency histogram.

    The limit is enforced twice: from Content-Length before the app runs, and while the
    body is read, so a chunked body (no length) cannot grow past it either.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.runtime.config.max_body_bytes
        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await self._refuse(send, declared, limit)
                return
            received = 0

            async def limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise ApiError(
                            413,
                            "body_too_large",
                            f"body: over the limit of {limit} bytes",
                        )
                return message

            await self.app(scope, limited, send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.runtime.metrics.request_seconds.labels(label).observe(
                time.perf_counter() - started
            )

    async def _refuse(self, send: Send, declared: int, limit: int) -> None:
        error = ApiError(
            413,
            "body_too_large",
            f"body: {declared} bytes, over the limit of {limit} bytes",
        )
        problem = problem_of(error)
        self.runtime.metrics.errors.labels(problem.reason).inc()
        body = _dumps(problem.body())
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# --------------------------------------------------------------------------- routes


def _document_raw_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Put the models of the bodies routes read themselves into the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _add_v1_routes(app: FastAPI, runtime: Runtime) -> None:
    key = keyed(runtime)

    @app.post(
        "/v1/predict",
        response_model=schemas.PredictResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=schemas.request_body(schemas.PredictRequest),
        dependencies=[key],
        summary="Forecast close per ticker from raw recent bars",
    )
    async def predict(request: Request) -> Response:
        model = runtime.serving()
        forecaster = model.forecaster
        body = await request.body()
        bars = bars_from_records(
            parse_json(body), forecaster.tickers, forecaster.min_bars, runtime.config.max_bars
        )
        windows = forecaster.prepare_windows(bars)
        forecast = await runtime.forecast(model, windows, "bars")
        stamps = format_timestamps(windows.ts)
        return json_response(
            {
                "model_name": model.name,
                "model_version": model.version,
                "forecasts": [
                    {
                        "symbol": symbol,
                        "ts": ts,
                        "forecast_close": value,
                        "horizon": forecaster.horizon,
                    }
                    for symbol, ts, value in zip(
                        windows.symbols, stamps, forecast.tolist(), strict=True
                    )
                ],
            }
        )

    @app.get(
        "/v1/forecast/{symbol}",
        response_model=schemas.SymbolForecast,
        responses={**ERROR_RESPONSES, 404: {"model": schemas.ErrorBody}},
        dependencies=[key],
        summary="Recent closes and forecasts of one ticker, from the bar store",
    )
    async def forecast_symbol(
        symbol: str,
        points: int = Query(DEFAULT_POINTS, ge=1, le=MAX_POINTS, description="Bars to return."),
    ) -> Response:
        model = runtime.serving()
        forecaster = model.forecaster
        if symbol not in forecaster.tickers:
            raise ApiError(
                404,
                "unknown_ticker",
                f"symbol: this model forecasts {', '.join(forecaster.tickers)}, not "
                f"{symbol[:32]!r}",
                field="symbol",
            )
        if runtime.bars is None:
            raise ApiError(503, "no_store", "no bar store configured: start with --store or -f")
        recent = await runtime.bars.latest(symbol, forecaster.min_bars + points - 1)
        have = 0 if recent is None else len(recent.close)
        if recent is None or have < forecaster.min_bars:
            raise ApiError(
                503,
                "too_few_bars",
                f"the store holds {have} bar(s) of {symbol}; the model needs {forecaster.min_bars}",
            )
        windows = forecaster.prepare_windows([recent], origins=points)
        values = (await runtime.forecast(model, windows)).tolist()
        origins = format_timestamps(windows.ts)
        forecasts = [
            {"ts": ts, "forecast_close": value, "horizon": forecaster.horizon}
            for ts, value in zip(origins, values, strict=True)
        ]
        shown = format_timestamps(recent.ts[-points:])
        return json_response(
            {
                "symbol": symbol,
                "model_name": model.name,
                "model_version": model.version,
                "bars": [
                    {"ts": ts, "close": close}
                    for ts, close in zip(shown, recent.close[-points:].tolist(), strict=True)
                ],
                "forecasts": forecasts,
                "next": forecasts[-1],
            }
        )

    @app.get(
        "/v1/models",
        response_model=schemas.ModelStatus,
        responses={503: ERROR_RESPONSES[503]},
        summary="The model now serving",
    )
    async def models() -> Response:
        return json_response(_status(runtime, runtime.serving()))

    @app.post(
        "/v1/models/reload",
        response_model=schemas.ModelStatus,
        responses={401: ERROR_RESPONSES[401], 503: ERROR_RESPONSES[503]},
        dependencies=[key],
        summary="Check the model alias now and load the version it points at",
    )
    async def reload() -> Response:
        await runtime.slot.refresh(force=True)
        return json_response(_status(runtime, runtime.serving()))


def _status(runtime: Runtime, model: LoadedModel) -> dict[str, Any]:
    forecaster = model.forecaster
    return {
        "name": model.name,
        "version": model.version,
        "uri": model.uri,
        "alias": model.source.alias,
        "kind": forecaster.kind,
        "tickers": list(forecaster.tickers),
        "min_bars": forecaster.min_bars,
        "horizon": forecaster.horizon,
        "loaded_at": model.loaded_at.isoformat().replace("+00:00", "Z"),
        "reloads": runtime.slot.reloads,
        "last_reload_error": runtime.slot.last_reload_error,
    }


def _add_health_routes(app: FastAPI, runtime: Runtime) -> None:
    @app.get("/healthz", response_model=schemas.Health, summary="The process is alive")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/readyz",
        response_model=schemas.Health,
        responses={503: ERROR_RESPONSES[503]},
        summary="A model is loaded and takes traffic",
    )
    async def readyz() -> Response:
        runtime.serving()
        return json_response({"status": "ready"})

    # An explicit route: a mounted ASGI app would redirect /metrics to /metrics/.
    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", summary="The page plotting prices and forecasts", response_class=Response)
    async def index() -> Response:
        if not INDEX_FILE.is_file():
            raise ApiError(404, "not_found", "the page is not installed in this build")
        return FileResponse(INDEX_FILE, media_type="text/html")


def _package_version() -> str:
    try:
        return metadata.version("stockops-model")
    except metadata.PackageNotFoundError:
        return "0"
