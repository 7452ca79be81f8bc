"""Yahoo Finance's v8 chart API: the HTTP client (retries, backoff) and the wire format.

This is the API the original system polled through Airbyte. One request per symbol::

    GET {base_url}/v8/finance/chart/{symbol}?interval=1m&range=1d&includePrePost=true

The answer is `{"chart": {"result": [...], "error": null}}`. `result[0]` carries `meta`
(symbol, exchangeTimezoneName, gmtoffset, regularMarketTime, currentTradingPeriod and,
with includePrePost, `tradingPeriods` split into pre/regular/post), `timestamp` (epoch
seconds of bar STARTS) and `indicators.quote[0]` with open/high/low/close/volume arrays
in which a minute without trades is `null`. What `parse_chart` does with it:

* minutes with any null price are skipped (volume null alone counts as 0);
* timestamps off a minute boundary are skipped: while the market is open Yahoo appends
  a live snapshot (e.g. 14:33:20) after the minute in progress, it is not a bar;
* prices are float32 on Yahoo's side (103.72000122070312); they are rounded to 4
  decimals, which restores the quoted price;
* every bar is labelled `source="yahoo"` and tagged with its session (pre, regular,
  post), from the meta's trading periods, else the US regular-hours rule.

It returns every bar of the answer, closed or not; which ones to emit is the source's
business (`stockops_model.sources.yahoo`).

Errors of one request (`YahooChartClient`): 429, 5xx, timeouts, connection errors and
undecodable bodies are retried with exponential backoff and full jitter, honouring
`Retry-After` (capped at `MAX_RETRY_AFTER` seconds); when retries run out,
`ServiceUnavailableError`. A `chart.error` payload is not retried within the request: a
request error (400 "Bad Request", 422 "Unprocessable Entity" for a bad range or interval,
401/403 access denied) is a `SourceConfigError`; anything else (404 "Not Found: No data
found, symbol may be delisted", a payload that is not a chart) is a `SourceSymbolError`
quoting Yahoo's code and description. An empty result (`result` null or no `timestamp`,
e.g. a holiday) yields no bars.

Limits: an unofficial API with no SLA; Yahoo rate-limits clients without a browser-like
User-Agent; range=1d after midnight returns the previous session until pre-market opens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx

from stockops_model.bars import Bar
from stockops_model.clock import Clock, SystemClock
from stockops_model.errors import (
    BarValidationError,
    ServiceUnavailableError,
    SourceConfigError,
    SourceError,
    SourceSymbolError,
)
from stockops_model.loaders import is_regular_hours

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://query1.finance.yahoo.com"
CHART_PATH = "/v8/finance/chart/{symbol}"
DEFAULT_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) stockops/0.1"
MAX_RETRY_AFTER = 300.0
BAR_SECONDS = 60
PRICE_DECIMALS = 4

_EASTERN = ZoneInfo("America/New_York")

# Yahoo's chart.error codes (and HTTP statuses) that reject the request, not the symbol.
CONFIG_ERROR_CODES = frozenset({"Bad Request", "Unprocessable Entity", "Unauthorized", "Forbidden"})
CONFIG_ERROR_STATUSES = frozenset({400, 401, 403, 422})
Session = Literal["pre", "regular", "post"]
_SESSIONS: tuple[Session, ...] = ("pre", "regular", "post")


class _TransientError(Exception):
    """A failed attempt worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class TradingPeriod:
    """One session window of one day, [start, end) in UTC."""

    session: Session
    start: datetime
    end: datetime

    def contains(self, ts: datetime) -> bool:
        return self.start <= ts < self.end


@dataclass(frozen=True)
class ChartMeta:
    """The parts of `chart.result[0].meta` the feed uses."""

    symbol: str
    exchange_timezone: str | None
    gmtoffset: int | None
    regular_market_time: datetime | None
    periods: tuple[TradingPeriod, ...]


@dataclass(frozen=True)
class ChartBar:
    """A bar from the chart and the session it belongs to."""

    bar: Bar
    session: Session


@dataclass(frozen=True)
class Chart:
    """A parsed chart answer: the bars in time order and what was skipped and why."""

    symbol: str
    meta: ChartMeta | None
    bars: tuple[ChartBar, ...]
    null_minutes: int = 0
    unaligned: int = 0
    invalid: int = 0


def parse_chart(payload: Any, symbol: str) -> Chart:
    """Parse one v8 chart answer into bars (all of them, closed or not).

    Raises:
        SourceError: the payload carries `chart.error`, or is not a chart at all.
    """
    chart = payload.get("chart") if isinstance(payload, dict) else None
    if not isinstance(chart, dict):
        raise _malformed(symbol, f"Yahoo answered something that is not a chart for {symbol}")
    error = chart.get("error")
    if error:
        raise chart_error(symbol, error)
    results = chart.get("result")
    if not results:
        return Chart(symbol=symbol, meta=None, bars=())
    if not isinstance(results, list):
        raise _malformed(symbol, f"Yahoo chart for {symbol}: result is not a list")
    result = results[0]
    if not isinstance(result, dict):
        raise _malformed(symbol, f"Yahoo chart for {symbol}: result[0] is not an object")
    meta = _parse_meta(result.get("meta"), symbol)
    stamps = result.get("timestamp") or []
    quotes = (result.get("indicators") or {}).get("quote") or [{}]
    quote = quotes[0] if isinstance(quotes[0], dict) else {}
    columns = {k: quote.get(k) or [] for k in ("open", "high", "low", "close", "volume")}
    if any(len(values) != len(stamps) for key, values in columns.items() if quote.get(key)):
        raise _malformed(
            symbol, f"Yahoo chart for {symbol}: quote arrays and timestamps differ in length"
        )
    if not stamps or not all(columns[k] for k in ("open", "high", "low", "close")):
        return Chart(symbol=symbol, meta=meta, bars=())
    volumes = columns["volume"] or [None] * len(stamps)
    bars: dict[datetime, ChartBar] = {}
    nulls = unaligned = invalid = 0
    for i, stamp in enumerate(stamps):
        if not isinstance(stamp, int) or stamp % BAR_SECONDS:
            unaligned += 1
            continue
        prices = [columns[k][i] for k in ("open", "high", "low", "close")]
        if any(p is None for p in prices):
            nulls += 1
            continue
        ts = datetime.fromtimestamp(stamp, UTC)
        open_, high, low, close = (_round_price(p) for p in prices)
        try:
            bar = Bar.parse(
                {
                    "symbol": symbol,
                    "ts": ts,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volumes[i] or 0,
                    "source": "yahoo",
                }
            )
        except BarValidationError as exc:
            invalid += 1
            log.warning("Yahoo %s bar at %s skipped: %s", symbol, ts.isoformat(), exc)
            continue
        bars[ts] = ChartBar(bar=bar, session=_session_of(ts, meta))
    ordered = tuple(bars[t] for t in sorted(bars))
    return Chart(symbol, meta, ordered, null_minutes=nulls, unaligned=unaligned, invalid=invalid)


def chart_error(symbol: str, error: Any, status: int | None = None) -> SourceError:
    """The exception for a `chart.error` payload, in Yahoo's words.

    A request error (`CONFIG_ERROR_CODES`, `CONFIG_ERROR_STATUSES`) is a
    `SourceConfigError`; anything else concerns this symbol, a `SourceSymbolError`.
    """
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        description = str(error.get("description") or "no description")
        message = f"Yahoo chart error for {symbol}: {code}: {description}"
    else:
        code, description = "error", str(error)
        message = f"Yahoo chart error for {symbol}: {error}"
    if code in CONFIG_ERROR_CODES or status in CONFIG_ERROR_STATUSES:
        return SourceConfigError(
            f"{message} (the request itself is refused: check the source "
            "settings, e.g. range, interval, user agent)"
        )
    return SourceSymbolError(message, symbol=symbol, code=code, description=description)


def _malformed(symbol: str, message: str) -> SourceSymbolError:
    return SourceSymbolError(message, symbol=symbol, code="malformed", description=message)


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base*2^n)).

    Attributes:
        max_retries: retries after the first attempt (0 = no retry).
        base: seconds of the first backoff window.
        cap: the largest backoff window in seconds.
        rng: the random source of the jitter (seed it in tests).
    """

    max_retries: int = 5
    base: float = 1.0
    cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        return self.rng.uniform(0.0, min(self.cap, self.base * 2.0**attempt))


class YahooChartClient:
    """Async client of the v8 chart endpoint with retries, backoff and timeouts.

    Args:
        base_url: scheme and host (and port), e.g. the public default or a local test server.
        clock: where backoff sleeps happen and what `Retry-After` dates are compared with.
        timeout: seconds a request may take in all (and each of its phases).
        retry: the retry policy.
        user_agent: sent with every request (Yahoo throttles library defaults).

    It always asks for 1-minute bars with pre- and post-market included: the bar schema is
    1-minute, and the source filters sessions itself (`regular_hours`).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        clock: Clock | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            follow_redirects=True,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> YahooChartClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def fetch_payload(self, symbol: str, range_: str = "1d") -> Any:
        """GET one chart and return its decoded JSON, retrying transient failures.

        Raises:
            SourceConfigError: Yahoo refused the request itself (400, 401, 403, 422).
            SourceSymbolError: Yahoo answered with a `chart.error` about this symbol (404
                "Not Found") or another non-retryable status.
            ServiceUnavailableError: every attempt failed transiently.
        """
        params = {"interval": "1m", "range": range_, "includePrePost": "true"}
        path = CHART_PATH.format(symbol=symbol)
        attempts = self.retry.max_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            try:
                return await self._attempt(path, params, symbol)
            except _TransientError as exc:
                last = str(exc)
                if attempt + 1 >= attempts:
                    break
                wait = self.retry.delay(attempt, exc.retry_after)
                log.warning(
                    "Yahoo chart for %s: %s; retry %d/%d in %.1f s",
                    symbol,
                    last,
                    attempt + 1,
                    self.retry.max_retries,
                    wait,
                )
                await self.clock.sleep(wait)
        raise ServiceUnavailableError(
            f"Yahoo chart for {symbol} failed {attempts} time(s), last: {last}; retry later"
        )

    async def fetch(self, symbol: str, range_: str = "1d") -> Chart:
        """Fetch and parse one chart (see `parse_chart`)."""
        return parse_chart(await self.fetch_payload(symbol, range_), symbol)

    async def _attempt(self, path: str, params: dict[str, str], symbol: str) -> Any:
        try:
            # httpx's timeouts bound each phase (connect, each read); this bounds the whole
            # request, so a server that trickles its answer cannot hold a poll for ever.
            async with asyncio.timeout(self.timeout):
                response = await self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise _TransientError(f"timed out ({type(exc).__name__})") from None
        except TimeoutError:
            raise _TransientError(f"no complete answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise _TransientError(f"transport error: {exc!r}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            reason = f"HTTP {status} {response.reason_phrase}".rstrip()
            raise _TransientError(reason, self._retry_after(response))
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            if status >= 400:
                raise self._status_error(symbol, response) from None
            raise _TransientError(f"HTTP {status} with a body that is not JSON") from None
        chart = payload.get("chart") if isinstance(payload, dict) else None
        if isinstance(chart, dict) and chart.get("error"):
            raise chart_error(symbol, chart["error"], status)
        if status >= 400:
            raise self._status_error(symbol, response)
        return payload

    @staticmethod
    def _status_error(symbol: str, response: httpx.Response) -> SourceError:
        status = response.status_code
        message = f"Yahoo answered HTTP {status} for {symbol}: {response.text[:200]!r}"
        if status in CONFIG_ERROR_STATUSES:
            return SourceConfigError(message)
        return SourceSymbolError(
            message, symbol=symbol, code=f"HTTP {status}", description=response.text[:200]
        )

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if not value:
            return None
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - self.clock.now()).total_seconds()
        return seconds if math.isfinite(seconds) else None


def _round_price(value: Any) -> Any:
    # Leave non-numbers to Bar validation, which names the problem.
    if isinstance(value, float) and math.isfinite(value):
        return round(value, PRICE_DECIMALS)
    return value


def _parse_meta(raw: Any, symbol: str) -> ChartMeta | None:
    if not isinstance(raw, dict):
        return None
    periods: list[TradingPeriod] = []
    trading = raw.get("tradingPeriods")
    # With includePrePost the periods come split by session; without, as [[regular...]].
    if isinstance(trading, dict):
        for session in _SESSIONS:
            for day in trading.get(session) or []:
                periods.extend(_periods(session, day))
    elif isinstance(trading, list):
        for day in trading:
            periods.extend(_periods("regular", day))
    current = raw.get("currentTradingPeriod")
    if isinstance(current, dict):
        for session in _SESSIONS:
            periods.extend(_periods(session, [current.get(session)]))
    market_time = raw.get("regularMarketTime")
    gmtoffset = raw.get("gmtoffset")
    return ChartMeta(
        symbol=str(raw.get("symbol") or symbol),
        exchange_timezone=raw.get("exchangeTimezoneName"),
        gmtoffset=gmtoffset if isinstance(gmtoffset, int) else None,
        regular_market_time=(
            datetime.fromtimestamp(market_time, UTC) if isinstance(market_time, int) else None
        ),
        periods=tuple(dict.fromkeys(periods)),
    )


def _periods(session: Session, raw: Any) -> list[TradingPeriod]:
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and isinstance(item.get("start"), int):
            end = item.get("end")
            if isinstance(end, int) and end > item["start"]:
                out.append(
                    TradingPeriod(
                        session,
                        datetime.fromtimestamp(item["start"], UTC),
                        datetime.fromtimestamp(end, UTC),
                    )
                )
    return out


def _session_of(ts: datetime, meta: ChartMeta | None) -> Session:
    if meta is not None:
        for period in meta.periods:
            if period.contains(ts):
                return period.session
    if is_regular_hours(ts):
        return "regular"
    local = ts.astimezone(_EASTERN)
    return "pre" if (local.hour, local.minute) < (9, 30) else "post"
