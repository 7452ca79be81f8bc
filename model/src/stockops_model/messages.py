"""The Kafka wire format of a bar: JSON, version 1, keyed by symbol.

    {"v": 1, "symbol": "AAPL", "ts": "2018-02-16T14:30:00Z", "open": 172.36,
     "high": 172.47, "low": 172.19, "close": 172.25, "volume": 1667756.0, "source": "replay"}

`ts` is the bar start in UTC (ISO 8601). Decoding never raises anything but
`BarValidationError`, whose message is the reason a dead-letter header carries.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from stockops_model.bars import Bar
from stockops_model.errors import BarValidationError

WIRE_VERSION = 1


def encode_bar(bar: Bar) -> bytes:
    """Serialise one bar to the JSON message of DESIGN.md."""
    payload = {
        "v": WIRE_VERSION,
        "symbol": bar.symbol,
        "ts": bar.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "source": bar.source,
    }
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def encode_key(bar: Bar) -> bytes:
    """The message key: the symbol, so one ticker's bars stay ordered in one partition."""
    return bar.symbol.encode()


def decode_bar(value: bytes | None) -> Bar:
    """Parse and validate one message value.

    Raises:
        BarValidationError: the value is not UTF-8 JSON, not an object, has the wrong
            version, or breaks the bar schema; the message says which.
    """
    if value is None:
        raise BarValidationError("empty message (tombstone)")
    try:
        payload: Any = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise BarValidationError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise BarValidationError(f"bad JSON: {exc.msg} at position {exc.pos}") from None
    except ValueError as exc:
        raise BarValidationError(f"bad JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BarValidationError(f"message must be a JSON object, got {type(payload).__name__}")
    version = payload.pop("v", None)
    # `True == 1` and `1.0 == 1` in Python; only the integer 1 is version 1.
    if type(version) is not int or version != WIRE_VERSION:
        raise BarValidationError(f"v: unsupported message version {version!r}, expected 1")
    return Bar.parse(payload)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid number")
