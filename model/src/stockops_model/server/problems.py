"""What the scoring server answers when a request fails: one mapping, one error body.

Every failure, whatever raised it, leaves the server as
`{"error": {"reason": "<slug>", "message": "...", "field": "bars[3].close" | null}}` with a
status code chosen in `problem_of` and nowhere else (KServe keeps the same in one
`errors.py`): bad input is a 4xx naming the field, an unreachable dependency a 503, and
only a bug is a 500. The reason is also the label of `stockops_serve_errors_total`.

`InputError` is the `DataError` of a request (it carries the field path and a reason);
`ApiError` is for what only HTTP has (authentication, size limits, unknown routes).

Limits: the messages of a `DataError` raised deeper in the model code have no field; the
field then stays null and the message names it in words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from stockops_model.errors import (
    DataError,
    ServiceUnavailableError,
    SettingsError,
    StoreError,
)

log = logging.getLogger(__name__)


class InputError(DataError):
    """A request's input cannot be used; `field` is the JSON path of the culprit."""

    def __init__(self, message: str, *, field: str | None, reason: str = "invalid_input") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class ApiError(Exception):
    """An HTTP-level refusal (auth, limits, not found, not ready) with its status code."""

    def __init__(self, status: int, reason: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class Problem:
    """The status code and error body of one failed request."""

    status: int
    reason: str
    message: str
    field: str | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"reason": self.reason, "message": self.message, "field": self.field}}


def problem_of(exc: BaseException) -> Problem:
    """Map any exception to the answer (see the module docstring)."""
    if isinstance(exc, ApiError):
        return Problem(exc.status, exc.reason, str(exc), exc.field)
    if isinstance(exc, InputError):
        return Problem(422, exc.reason, str(exc), exc.field)
    if isinstance(exc, DataError):
        return Problem(422, "invalid_input", str(exc), None)
    if isinstance(exc, StoreError):
        return Problem(503, "store_unavailable", f"the bar store cannot be read: {exc}")
    if isinstance(exc, ServiceUnavailableError):
        return Problem(503, "unavailable", str(exc))
    if isinstance(exc, SettingsError):
        return Problem(503, "misconfigured", str(exc))
    # Only now: the Azure ML scoring script maps its errors here without FastAPI installed.
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    if isinstance(exc, RequestValidationError):
        return _validation_problem(exc)
    if isinstance(exc, HTTPException):
        reasons = {404: "not_found", 405: "method_not_allowed"}
        return Problem(exc.status_code, reasons.get(exc.status_code, "http_error"), exc.detail)
    log.error("unexpected error while serving a request", exc_info=exc)
    return Problem(500, "internal", f"internal error ({type(exc).__name__}); see the server log")


def _validation_problem(exc: Any) -> Problem:
    """FastAPI's own validation errors, in the same shape, with the first error's path."""
    errors = exc.errors()
    if not errors:
        return Problem(422, "invalid_request", "the request does not validate")
    first = errors[0]
    location = [str(p) for p in first.get("loc", ())]
    # FastAPI prefixes the part of the request: body, query, path, header.
    where, path = (location[0], location[1:]) if location else ("request", [])
    field = _json_path(path) if path else where
    message = f"{field}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return Problem(422, "invalid_request", message, field)


def _json_path(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out
