"""What the routes of one scoring-server app share: settings, model slot, batcher, metrics.

The routes (`stockops_model.server.app` for /v1 and health, `stockops_model.server.oip`
for the Open Inference Protocol v2) are thin: they parse, ask the `Runtime` for the
serving model and a forecast, and shape the answer.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import Depends, Request, Response, params
from fastapi.security import APIKeyHeader

from stockops_model.forecaster import Windows
from stockops_model.server.batching import DEFAULT_MAX_WINDOWS, Batcher
from stockops_model.server.command import API_KEY_HEADER
from stockops_model.server.inputs import DEFAULT_MAX_BARS as DEFAULT_MAX_BARS
from stockops_model.server.inputs import require_finite
from stockops_model.server.metrics import ServerMetrics
from stockops_model.server.problems import ApiError
from stockops_model.server.recent import BarSource
from stockops_model.server.slot import LoadedModel, ModelSlot

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_POLL_SECONDS = 30.0


@dataclass(frozen=True)
class ServerConfig:
    """The server's settings (`stockops serve` flags; see docs/serving.md).

    Attributes:
        api_key: the key clients must send; None serves without authentication.
        max_body_bytes: larger request bodies get 413 (Content-Length or while reading).
        max_bars: more bars in one request get 413.
        poll_seconds: how often the model alias is checked; None checks once at start.
        max_batch_windows: windows per network call when batching requests.
        compile_network: run a network model's forward pass compiled with XLA (see
            `stockops_model.server.compiled`); off serves the plain tf.function.
    """

    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_bars: int = DEFAULT_MAX_BARS
    poll_seconds: float | None = DEFAULT_POLL_SECONDS
    max_batch_windows: int = DEFAULT_MAX_WINDOWS
    compile_network: bool = True


class Runtime:
    """The state behind one app (see the module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        slot: ModelSlot,
        metrics: ServerMetrics,
        bars: BarSource | None,
    ) -> None:
        self.config = config
        self.slot = slot
        self.metrics = metrics
        self.bars = bars
        self.batcher = Batcher(config.max_batch_windows, metrics.batch_windows.observe)

    def serving(self) -> LoadedModel:
        """The model now serving; a request calls this once and keeps what it got.

        Raises:
            ApiError: 503 while no model is loaded yet.
        """
        model = self.slot.current
        if model is None:
            detail = self.slot.last_reload_error
            raise ApiError(
                503,
                "model_not_loaded",
                "no model is loaded yet"
                + (f"; last attempt: {detail}" if detail else "; it is loading"),
            )
        return model

    async def forecast(
        self, model: LoadedModel, windows: Windows, field: str | None = None
    ) -> npt.NDArray[np.float64]:
        """Forecast close for prepared windows with `model` (batched for a network).

        Prices that are finite and positive can still be too large for the model: 1e300
        overflows the network's float32 features, and a forecast can overflow. Both are
        refused, so no answer carries a null for a forecast.

        Raises:
            InputError: 422 invalid_price naming the ticker; `field` is the request's
                collection of bars.
        """
        if windows.x is None:
            forecast = model.runner.forecast_windows(None, windows.last_close)
        else:
            require_finite(windows.x, windows.symbols, field, "its features overflow")
            forecast = await self.batcher.forecast(model.runner, windows.x, windows.last_close)
        require_finite(forecast, windows.symbols, field, "its forecast overflows")
        return forecast

    def check_key(self, request: Request) -> None:
        """Raise 401 unless the request carries the API key (constant-time compare)."""
        expected = self.config.api_key
        if expected is None:
            return
        given = request.headers.get(API_KEY_HEADER)
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(
                401,
                "unauthorized",
                f"missing or wrong API key: send the header {API_KEY_HEADER}: <key>",
                field=API_KEY_HEADER,
            )


def keyed(runtime: Runtime) -> params.Depends:
    """The dependency of a keyed route: 401 without the API key (`Runtime.check_key`).

    The `APIKeyHeader` parameter only documents the header in the OpenAPI document (its
    auto_error is off); the check, which also takes `Authorization: Bearer`, is ours.
    """
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    async def check(request: Request, _: str | None = Depends(key_header)) -> None:
        runtime.check_key(request)

    dependency: params.Depends = Depends(check)
    return dependency


def json_response(content: object, status_code: int = 200) -> Response:
    """A JSON answer serialised by orjson (several times faster than the standard library)."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")
