"""Synthetic bars: a valid request body for any forecaster, without market data.

`synthetic_bars` writes `count` one-minute bars per ticker in the bar wire format (the
records `POST /v1/predict` and the Azure ML scoring script take). Two places need input
before any real bars are at hand: the scoring server's warm-up (one forecast before a
model takes traffic, `stockops_model.server.slot.warm_up`) and the Azure ML target's smoke
request when the model has no input example (`stockops_model.deploy.azureml_entities`).

Limits: the prices are a small deterministic oscillation around 100, not a market; the
forecasts made from them only show that the model runs and answers finite numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

SYNTHETIC_START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def synthetic_bars(tickers: Sequence[str], count: int) -> list[dict[str, Any]]:
    """`count` one-minute bars per ticker of a small, always positive oscillation.

    Each bar passes the bar checks (prices > 0, low <= open, close <= high), each ticker's
    bars are in time order from `SYNTHETIC_START`, as JSON-ready records.
    """
    bars = []
    for symbol in tickers:
        for i in range(count):
            close = 100.0 + math.sin(i / 3.0) + 0.01 * i
            open_ = close - 0.05 * math.cos(i / 2.0)
            bars.append(
                {
                    "symbol": symbol,
                    "ts": (SYNTHETIC_START + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "open": round(open_, 4),
                    "high": round(max(open_, close) + 0.1, 4),
                    "low": round(min(open_, close) - 0.1, 4),
                    "close": round(close, 4),
                    "volume": 1000.0 + 10 * i,
                }
            )
    return bars
