"""The Azure ML scoring script of the `azureml` deploy target: `init()` and `run(raw)`.

Azure ML's inference server (azureml-inference-server-http) imports this file from the
deployment's code folder, calls `init()` once per worker and `run(raw)` per request with the
request body as text. It serves the same registered MLflow pyfunc as `stockops serve`, with
the same request and answer as the server's `POST /v1/predict`:

- request: ``{"bars": [{"symbol", "ts", "open", "high", "low", "close", "volume"}, ...]}``
  (at least the model's `min_bars` bars per ticker, in time order, `ts` ISO 8601);
- answer: ``{"model_name", "model_version", "forecasts": [{"symbol", "ts", "forecast_close",
  "horizon"}]}``;
- bad input: ``{"error": {"reason", "message", "field"}}``, found by the server's own
  parsing and validation (`stockops_model.server.inputs`) and mapped by its
  `stockops_model.server.problems`, so reasons, messages and fields (`bars[3].close`) are
  the server's and cannot drift from them; a forecast that is not finite is refused the way
  the server refuses it (`invalid_price`), never answered as null.

`init()` loads the model from `AZUREML_MODEL_DIR`, the folder Azure ML mounts the registered
model into (for an mlflow_model asset the MLflow folder sits one or two levels below it; the
script looks for the `MLmodel` file). The deployment sets `STOCKOPS_MODEL_NAME` and
`STOCKOPS_MODEL_VERSION` so answers say which version replied.

A model logged by a stockops whose `stockops_model.server.inputs` cannot be imported here
(older, or needing orjson, which the model's environment lacks) is still served: bad input
is then refused by the forecaster's own checks, every reason `invalid_input`.

Limits: the inference server turns an exception in `run` into a 500 and a plain return value
into a 200. To answer bad input with a 4xx the script returns an `AMLResponse`, which only
exists where azureml-inference-server-http is installed (the deployment's environment); where
it is not (tests, this repository's own environment) the error body comes back as a plain
value, i.e. with status 200, and callers must look for the `error` key. Only this file is
uploaded as the deployment's code: it imports nothing of `stockops_model` at module level
(the pyfunc brings that package with it, in its `code_paths`, importable once `init()` has
loaded the model); the server modules it uses need neither FastAPI nor orjson.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_DIR_ENV = "AZUREML_MODEL_DIR"
MODEL_NAME_ENV = "STOCKOPS_MODEL_NAME"
MODEL_VERSION_ENV = "STOCKOPS_MODEL_VERSION"
MLMODEL_FILE = "MLmodel"
# Errors the forecaster raises for unusable input; matched by name because the pyfunc's copy
# of stockops_model (from its code_paths) is not the class object this process may import.
INPUT_ERROR_NAMES = frozenset({"DataError", "BarValidationError"})

_model: Any = None
_identity: dict[str, str | None] = {"model_name": None, "model_version": None}


def find_mlflow_dir(root: str | Path) -> Path:
    """The folder holding the `MLmodel` file at or below `root` (the shallowest one).

    Raises:
        FileNotFoundError: there is no `MLmodel` under `root`.
    """
    base = Path(root)
    if (base / MLMODEL_FILE).is_file():
        return base
    found = sorted(base.rglob(MLMODEL_FILE), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise FileNotFoundError(f"no {MLMODEL_FILE} file under {base}")
    return found[0].parent


def init() -> None:
    """Load the MLflow model Azure ML mounted at `AZUREML_MODEL_DIR` (once per worker)."""
    global _model
    import mlflow.pyfunc

    root = os.environ.get(MODEL_DIR_ENV)
    if not root:
        raise RuntimeError(f"{MODEL_DIR_ENV} is not set: Azure ML sets it to the model folder")
    model_dir = find_mlflow_dir(root)
    _model = mlflow.pyfunc.load_model(str(model_dir))
    _identity["model_name"] = os.environ.get(MODEL_NAME_ENV)
    _identity["model_version"] = os.environ.get(MODEL_VERSION_ENV)
    log.info("loaded the MLflow model at %s", model_dir)


def run(raw: str | bytes | dict[str, Any]) -> Any:
    """Forecast from the request body; bad input answers an error body, never raises."""
    if _model is None:
        return _respond(_error("not_ready", "the model is not loaded: init() has not run"), 503)
    try:
        from stockops_model.server.inputs import (
            DEFAULT_MAX_BARS,
            bars_from_records,
            parse_json,
            require_finite,
        )
        from stockops_model.server.problems import ApiError, InputError, problem_of
    except ImportError:
        # The model's copy of stockops_model predates these (or needs orjson, which the
        # model's environment lacks): a version logged before them, e.g. on a rollback.
        return _run_unchecked(raw)

    forecaster = _model.unwrap_python_model().forecaster
    try:
        if isinstance(raw, dict):
            document: Any = raw
        else:
            body = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
            document = parse_json(body)
        bars_from_records(document, forecaster.tickers, forecaster.min_bars, DEFAULT_MAX_BARS)
        frame = _model.predict(_frame(document["bars"]))
        forecast = frame["forecast_close"].to_numpy(dtype=float)
        require_finite(forecast, frame["symbol"].tolist(), "bars", "its forecast overflows")
    except (ApiError, InputError) as exc:
        problem = problem_of(exc)
        return _respond(problem.body(), problem.status)
    except Exception as exc:
        # Anything the forecaster or MLflow's schema check still refuses after the server's
        # validation is a 422 with its message; anything else is our fault and stays a 500.
        if not _is_input_error(exc):
            raise
        return _respond(_error("invalid_input", str(exc)), 422)
    return {**_identity, "forecasts": _forecasts(frame)}


def _run_unchecked(raw: str | bytes | dict[str, Any]) -> Any:
    """`run` for a model whose stockops_model cannot validate here: the forecaster's own
    checks, and every refusal answered as `invalid_input` with its message."""
    try:
        document = raw if isinstance(raw, dict) else json.loads(raw)
        frame = _model.predict(_frame(document["bars"]))
    except Exception as exc:
        # ValueError: not JSON or not UTF-8; KeyError, TypeError: not {"bars": [...]}.
        if not (_is_input_error(exc) or isinstance(exc, (ValueError, KeyError, TypeError))):
            raise
        return _respond(_error("invalid_input", f"{type(exc).__name__}: {exc}"), 422)
    forecasts = _forecasts(frame)
    for forecast in forecasts:
        if not math.isfinite(forecast["forecast_close"]):
            message = f"the prices of {forecast['symbol']} are too large for this model"
            return _respond(_error("invalid_price", message, "bars"), 422)
    return {**_identity, "forecasts": forecasts}


def _frame(bars: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(bars)


def _forecasts(frame: Any) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict(orient="records"):
        ts = row["ts"]
        value = float(row["forecast_close"])
        out.append(
            {
                "symbol": str(row["symbol"]),
                # As stockops serve writes it: UTC with a Z.
                "ts": ts.isoformat().replace("+00:00", "Z")
                if hasattr(ts, "isoformat")
                else str(ts),
                "forecast_close": value,
                "horizon": int(row["horizon"]),
            }
        )
    return out


def _is_input_error(exc: Exception) -> bool:
    if type(exc).__name__ in INPUT_ERROR_NAMES:
        return True
    # MLflow's schema enforcement (a missing column, a value of the wrong type).
    return type(exc).__name__ == "MlflowException" and getattr(exc, "error_code", "") in (
        "INVALID_PARAMETER_VALUE",
        "BAD_REQUEST",
    )


def _error(reason: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"reason": reason, "message": message, "field": field}}


def _respond(body: dict[str, Any], status: int) -> Any:
    """`body` with `status` where Azure ML's AMLResponse exists, else `body` itself."""
    response_class = _aml_response_class()
    if response_class is None:
        return body
    return response_class(body, status, json_str=True)


def _aml_response_class() -> Any:
    try:
        from azureml_inference_server_http.api.aml_response import (  # type: ignore[import-not-found]
            AMLResponse,
        )
    except ImportError:
        try:
            from azureml.contrib.services.aml_response import (  # type: ignore[import-not-found]
                AMLResponse,
            )
        except ImportError:
            return None
    return AMLResponse
