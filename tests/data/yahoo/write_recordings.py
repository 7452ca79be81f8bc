"""Write the Yahoo v8 chart responses the Yahoo client's tests serve (run once, by hand).

    uv run python tests/data/yahoo/write_recordings.py

The prices are the Apache-2.0 SPY bars of 2011-01-04 in examples/data; the envelope is
Yahoo's real wire format for `interval=1m&range=1d&includePrePost=true`: meta with
current and split trading periods, bar-start epoch seconds, float32 prices, `null` for
minutes without trades, the minute in progress and a trailing live tick off the minute.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from stockops_model.loaders import load_bars

HERE = Path(__file__).parent
DAY = "2011-01-04"
PRE, REGULAR, POST, POST_END = (
    int(datetime.fromisoformat(f"{d}T{t}+00:00").timestamp())
    for d, t in ((DAY, "09:00"), (DAY, "14:30"), (DAY, "21:00"), ("2011-01-05", "01:00"))
)
EST = {"timezone": "EST", "gmtoffset": -18000}


def f32(x: float) -> float:
    return float(np.float32(x))


def meta(market_time: int, price: float, previous_close: float) -> dict[str, Any]:
    def period(start: int, end: int) -> dict[str, Any]:
        return {"timezone": "EST", "start": start, "end": end, "gmtoffset": -18000}

    return {
        "currency": "USD",
        "symbol": "SPY",
        "exchangeName": "PCX",
        "fullExchangeName": "NYSEArca",
        "instrumentType": "ETF",
        "firstTradeDate": 728317800,
        "regularMarketTime": market_time,
        "hasPrePostMarketData": True,
        "gmtoffset": -18000,
        "timezone": "EST",
        "exchangeTimezoneName": "America/New_York",
        "regularMarketPrice": price,
        "longName": "SPDR S&P 500 ETF",
        "shortName": "SPDR S&P 500",
        "chartPreviousClose": previous_close,
        "previousClose": previous_close,
        "scale": 3,
        "priceHint": 2,
        "currentTradingPeriod": {
            "pre": period(PRE, REGULAR),
            "regular": period(REGULAR, POST),
            "post": period(POST, POST_END),
        },
        "tradingPeriods": {
            "pre": [[period(PRE, REGULAR)]],
            "post": [[period(POST, POST_END)]],
            "regular": [[period(REGULAR, POST)]],
        },
        "dataGranularity": "1m",
        "range": "1d",
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
    }


def chart(polled_at: int, previous_close: float, bars: dict[int, tuple[float, ...]]) -> Any:
    """Every minute from the pre-market open to the minute of `polled_at`, then a tick."""
    minute_now = polled_at - polled_at % 60
    stamps = list(range(PRE, minute_now + 60, 60))
    quote: dict[str, list[Any]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
    for t in stamps:
        o, h, low, c, v = bars.get(t, (None,) * 5)
        if t == minute_now and o is not None:  # the minute in progress: partial values
            c = round((o + c) / 2, 2)
            h, low, v = max(o, c), min(o, c), v // 3
        for key, value in zip(quote, (o, h, low, c, v), strict=True):
            if value is not None:
                value = int(value) if key == "volume" else f32(value)
            quote[key].append(value)
    last = quote["close"][-1] if quote["close"][-1] is not None else previous_close
    stamps.append(polled_at)
    for key in quote:
        quote[key].append(0 if key == "volume" else last)
    regular_closes = [bars[t][3] for t in sorted(bars) if REGULAR <= t < min(POST, minute_now)]
    market_time = min(polled_at, POST)
    return {
        "chart": {
            "result": [
                {
                    "meta": meta(market_time, f32(regular_closes[-1]), previous_close),
                    "timestamp": stamps,
                    "indicators": {"quote": [quote]},
                }
            ],
            "error": None,
        }
    }


def at(hhmmss: str) -> int:
    """Epoch seconds of a UTC time of day on DAY."""
    return int(datetime.fromisoformat(f"{DAY}T{hhmmss}").replace(tzinfo=UTC).timestamp())


def main() -> None:
    frame = load_bars(HERE.parents[2] / "examples" / "data" / "spy-2011-1min", end=DAY)
    ts = frame["ts"].astype("int64") // 10**9
    bars = {
        int(t): (r.open, r.high, r.low, r.close, r.volume)
        for t, r in zip(ts, frame.itertuples(), strict=True)
        if PRE <= t < POST_END
    }
    # The previous regular session closed at 16:00 ET the day before.
    previous_close = f32(float(frame.loc[ts < POST - 86400, "close"].iloc[-1]))
    files = {
        "spy_2011-01-04_poll1.json": chart(at("14:33:20"), previous_close, bars),
        "spy_2011-01-04_poll2.json": chart(at("21:03:10"), previous_close, bars),
        "empty_no_timestamps.json": {
            "chart": {
                "result": [
                    {
                        "meta": meta(at("08:59:00"), previous_close, previous_close),
                        "indicators": {"quote": [{}]},
                    }
                ],
                "error": None,
            }
        },
        "empty_result_null.json": {"chart": {"result": None, "error": None}},
        "error_not_found.json": {
            "chart": {
                "result": None,
                "error": {
                    "code": "Not Found",
                    "description": "No data found, symbol may be delisted",
                },
            }
        },
        "error_unprocessable.json": {
            "chart": {
                "result": None,
                "error": {
                    "code": "Unprocessable Entity",
                    "description": "1m data not available for startTime=1293840000 and "
                    "endTime=1294963200. Only 8 days worth of 1m granularity data are allowed "
                    "to be fetched per request.",
                },
            }
        },
        "error_internal.json": {
            "chart": {
                "result": None,
                "error": {"code": "Internal Server Error", "description": "Unexpected error"},
            }
        },
    }
    for name, payload in files.items():
        (HERE / name).write_text(json.dumps(payload, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
