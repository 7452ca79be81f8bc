"""`stockops serve`: the HTTP scoring server for a registered forecaster.

Loads the model an MLflow URI names (`models:/NAME@production` by default with `-f`),
answers `POST /v1/predict` with raw bars in and the forecast close per ticker out, follows
the alias and swaps models atomically when it moves, and exposes the Open Inference
Protocol v2 routes, health, readiness, Prometheus metrics and a page plotting prices and
forecasts. docs/serving.md describes the routes, authentication, limits and errors.

Modules: `app` (the FastAPI app and /v1 routes), `oip` (v2 routes), `inputs` (request
bodies to validated arrays, no pandas), `slot` (loading and hot swap), `batching`
(micro-batches for the network), `recent` (stored bars for /v1/forecast), `metrics`,
`problems` (errors to status codes, in one place), `schemas` (OpenAPI models),
`command` (the command line).

This package's `__init__` imports nothing heavy: `stockops --help` stays fast.
"""

from __future__ import annotations

from stockops_model.server.command import add_arguments, run

__all__ = ["add_arguments", "run"]
