"""The Open Inference Protocol (v2) routes, so KServe-style clients can call the server.

- `GET /v2`: server metadata; `GET /v2/health/live`, `GET /v2/health/ready`;
- `GET /v2/models/{name}`: model metadata (versions, platform, input and output tensors);
- `GET /v2/models/{name}/ready`;
- `POST /v2/models/{name}/infer`: one tensor per bar field, each of shape [N]:
  `symbol` and `ts` BYTES (ts ISO 8601), `open`..`volume` FP64 (FP32/INT accepted); the
  outputs `symbol`, `ts` (BYTES), `forecast_close` (FP64) and `horizon` (INT64), one
  element per ticker.

`{name}` is the registered model name (GET /v1/models tells it); another name is a 404.
Errors use the server's one error body (`stockops_model.server.problems`), with `field`
as the JSON path into the request (`inputs[3].data[7]`), not the protocol's bare string.

Limits: no per-version routes (`/versions/{v}`): the server serves one version at a time,
and the answer names it; tensors must be flat (shape [N], data a flat list).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from stockops_model.forecaster import INPUT_COLUMNS
from stockops_model.server import schemas
from stockops_model.server.inputs import bars_from_columns, format_timestamps, parse_json
from stockops_model.server.problems import ApiError, InputError
from stockops_model.server.runtime import Runtime, json_response, keyed
from stockops_model.server.slot import LoadedModel

PLATFORM = "stockops_forecaster"
_BYTES = ("symbol", "ts")
_NUMERIC_TYPES = ("FP64", "FP32", "INT64", "INT32")
INPUT_TENSORS = [
    {"name": name, "datatype": "BYTES" if name in _BYTES else "FP64", "shape": [-1]}
    for name in INPUT_COLUMNS
]
OUTPUT_TENSORS = [
    {"name": "symbol", "datatype": "BYTES", "shape": [-1]},
    {"name": "ts", "datatype": "BYTES", "shape": [-1]},
    {"name": "forecast_close", "datatype": "FP64", "shape": [-1]},
    {"name": "horizon", "datatype": "INT64", "shape": [-1]},
]


def oip_router(runtime: Runtime) -> APIRouter:
    """The v2 routes over `runtime` (see the module docstring)."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": schemas.ErrorBody} for code in (401, 404, 413, 422, 503)
    }

    def model_named(name: str) -> LoadedModel:
        model = runtime.serving()
        if name != model.name:
            raise ApiError(
                404, "unknown_model", f"name: this server serves {model.name!r}", field="name"
            )
        return model

    @router.get("", response_model=schemas.ServerMetadata)
    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "stockops", "version": request.app.version, "extensions": []})

    @router.get("/health/live", response_model=schemas.Live)
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/health/ready", response_model=schemas.Ready, responses={503: errors[503]})
    async def ready() -> Response:
        runtime.serving()
        return json_response({"ready": True})

    @router.get("/models/{name}", response_model=schemas.ModelMetadata, responses=errors)
    async def model_metadata(name: str) -> Response:
        model = model_named(name)
        return json_response(
            {
                "name": model.name,
                "versions": [model.version] if model.version is not None else [],
                "platform": PLATFORM,
                "inputs": INPUT_TENSORS,
                "outputs": OUTPUT_TENSORS,
            }
        )

    @router.get("/models/{name}/ready", response_model=schemas.ModelReady, responses=errors)
    async def model_ready(name: str) -> Response:
        model = model_named(name)
        return json_response({"name": model.name, "ready": True})

    @router.post(
        "/models/{name}/infer",
        response_model=schemas.InferResponse,
        responses=errors,
        dependencies=[keyed(runtime)],
        openapi_extra=schemas.request_body(schemas.InferRequest),
    )
    async def infer(name: str, request: Request) -> Response:
        model = model_named(name)
        forecaster = model.forecaster
        document = parse_json(await request.body())
        columns, index = _columns(document)
        bars = bars_from_columns(
            columns,
            forecaster.tickers,
            forecaster.min_bars,
            runtime.config.max_bars,
            lambda field, i: f"inputs[{index[field]}].data[{i}]",
            "inputs",
        )
        windows = forecaster.prepare_windows(bars)
        forecast = (await runtime.forecast(model, windows, "inputs")).tolist()
        count = len(forecast)
        outputs = [
            {"name": "symbol", "datatype": "BYTES", "shape": [count], "data": windows.symbols},
            {
                "name": "ts",
                "datatype": "BYTES",
                "shape": [count],
                "data": format_timestamps(windows.ts),
            },
            {"name": "forecast_close", "datatype": "FP64", "shape": [count], "data": forecast},
            {
                "name": "horizon",
                "datatype": "INT64",
                "shape": [count],
                "data": [forecaster.horizon] * count,
            },
        ]
        request_id = document.get("id")
        return json_response(
            {
                "model_name": model.name,
                "model_version": model.version,
                "id": request_id if isinstance(request_id, str) else None,
                "outputs": outputs,
            }
        )

    return router


def _columns(document: Any) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """The seven input tensors as columns, and each one's index in `inputs`."""
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise InputError(
            'body: must be an object {"inputs": [{"name", "datatype", "shape", "data"}, ...]}',
            field="inputs",
            reason="invalid_shape",
        )
    columns: dict[str, list[Any]] = {}
    index: dict[str, int] = {}
    length: int | None = None
    for i, tensor in enumerate(document["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise InputError(
                f"{where}: must be a tensor object", field=where, reason="invalid_shape"
            )
        name, datatype, shape, data = (tensor.get(k) for k in ("name", "datatype", "shape", "data"))
        if name not in INPUT_COLUMNS:
            raise InputError(
                f"{where}.name: must be one of {', '.join(INPUT_COLUMNS)}, got {str(name)[:32]!r}",
                field=f"{where}.name",
                reason="invalid_shape",
            )
        if name in columns:
            raise InputError(
                f"{where}.name: {name} given twice", field=f"{where}.name", reason="invalid_shape"
            )
        expected = ("BYTES",) if name in _BYTES else _NUMERIC_TYPES
        if datatype not in expected:
            raise InputError(
                f"{where}.datatype: {name} must be {' or '.join(expected)}, got "
                f"{str(datatype)[:16]!r}",
                field=f"{where}.datatype",
                reason="invalid_shape",
            )
        if not isinstance(data, list):
            raise InputError(
                f"{where}.data: must be a flat list", field=f"{where}.data", reason="invalid_shape"
            )
        if not (
            isinstance(shape, list)
            and len(shape) == 1
            and type(shape[0]) is int
            and shape[0] == len(data)
        ):
            raise InputError(
                f"{where}.shape: must be [{len(data)}] (a flat tensor of its data's length)",
                field=f"{where}.shape",
                reason="invalid_shape",
            )
        if length is not None and len(data) != length:
            raise InputError(
                f"{where}.shape: {name} has {len(data)} elements, the inputs before it {length}",
                field=f"{where}.shape",
                reason="invalid_shape",
            )
        length = len(data)
        columns[name] = data
        index[name] = i
    missing = [c for c in INPUT_COLUMNS if c not in columns]
    if missing:
        raise InputError(
            f"inputs: missing tensor(s) {', '.join(missing)}",
            field="inputs",
            reason="invalid_shape",
        )
    return columns, index
