"""Request and response models of the scoring server, for its OpenAPI document.

The hot routes (`POST /v1/predict`, `POST /v2/models/{name}/infer`) do not validate their
body through these models: `stockops_model.server.inputs` parses it with orjson and numpy,
which is several times faster on a few hundred bars, and answers in the same error shape.
The models still describe the wire format exactly, so the OpenAPI document (and the
schemathesis test that fuzzes the server from it) matches what the server accepts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The `openapi_extra` of a route that reads its body itself: the body is a `model`.

    The app puts the models into the document's components
    (`stockops_model.server.app`), which these references point at.
    """
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


class Bar(BaseModel):
    """One 1-minute bar, as the bar wire format writes it."""

    symbol: str = Field(description="Ticker, one of the model's tickers.", examples=["AMZN"])
    ts: str = Field(
        description="Bar start, ISO 8601 (naive means UTC).", examples=["2018-03-13T19:59:00Z"]
    )
    open: float = Field(gt=0)
    high: float = Field(gt=0)
    low: float = Field(gt=0)
    close: float = Field(gt=0)
    volume: float = Field(ge=0)


class PredictRequest(BaseModel):
    """Recent bars of one or more tickers, each ticker's sorted by ts and unique."""

    bars: list[Bar] = Field(
        min_length=1,
        description="At least min_bars bars per ticker (GET /v1/models tells min_bars).",
    )


class Forecast(BaseModel):
    """The forecast close of one ticker, `horizon` bars after its last bar."""

    symbol: str
    ts: str = Field(description="Start of the last bar used (the forecast origin), UTC.")
    forecast_close: float
    horizon: int = Field(description="Bars ahead of ts the forecast is for.")


class PredictResponse(BaseModel):
    """The answer of `POST /v1/predict`.

    One forecast per ticker, and the version that made them.
    """

    model_name: str
    model_version: str | None
    forecasts: list[Forecast] = Field(description="One per ticker, from its last bar.")


class ErrorDetail(BaseModel):
    """What failed: a stable reason slug, a message naming the field, the field's path."""

    reason: str = Field(description="A stable slug, e.g. too_few_bars, unknown_ticker.")
    message: str
    field: str | None = Field(description="JSON path of the culprit, e.g. bars[3].close.")


class ErrorBody(BaseModel):
    """The body of every failed request (4xx and 5xx)."""

    error: ErrorDetail


class PricePoint(BaseModel):
    """One stored bar's start and close."""

    ts: str
    close: float


class ForecastPoint(BaseModel):
    """The forecast close from one origin bar of a ticker."""

    ts: str = Field(description="The forecast origin (a bar start), UTC.")
    forecast_close: float
    horizon: int


class SymbolForecast(BaseModel):
    """The answer of `GET /v1/forecast/{symbol}`.

    Recent closes and forecasts from the bar store.
    """

    symbol: str
    model_name: str
    model_version: str | None
    bars: list[PricePoint]
    forecasts: list[ForecastPoint]
    next: ForecastPoint = Field(description="The forecast from the latest bar.")


class ModelStatus(BaseModel):
    """The model now serving (`GET /v1/models`, `POST /v1/models/reload`)."""

    name: str
    version: str | None
    uri: str
    alias: str | None
    kind: str
    tickers: list[str]
    min_bars: int
    horizon: int
    loaded_at: str
    reloads: int = Field(description="Model swaps since the first load.")
    last_reload_error: str | None


class Health(BaseModel):
    """The answer of `/healthz` (`ok`) and `/readyz` (`ready`)."""

    status: str


# --------------------------------------------------------------------------- OIP v2


class ServerMetadata(BaseModel):
    """OIP v2 server metadata (`GET /v2`)."""

    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    """OIP v2 liveness (`GET /v2/health/live`)."""

    live: bool


class Ready(BaseModel):
    """OIP v2 readiness (`GET /v2/health/ready`): a model is loaded."""

    ready: bool


class ModelReady(BaseModel):
    """OIP v2 model readiness (`GET /v2/models/{name}/ready`)."""

    name: str
    ready: bool


class TensorMetadata(BaseModel):
    """One input or output tensor of the model: name, datatype and shape (-1: any length)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """OIP v2 model metadata (`GET /v2/models/{name}`): versions, platform and tensors."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferTensor(BaseModel):
    """One input tensor: a bar field as a flat list of N values (shape [N])."""

    name: Literal["symbol", "ts", "open", "high", "low", "close", "volume"]
    datatype: Literal["BYTES", "FP64", "FP32", "INT64", "INT32"]
    shape: list[int] = Field(min_length=1, max_length=1)
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """OIP v2 inference request: one tensor per bar field, all of the same length."""

    id: str | None = None
    inputs: list[InferTensor] = Field(min_length=1)
    parameters: dict[str, Any] | None = None


class OutputTensor(BaseModel):
    """One output tensor: a flat list with one element per ticker."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class InferResponse(BaseModel):
    """OIP v2 inference answer: symbol, ts, forecast_close and horizon per ticker."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: list[OutputTensor]
