"""The `yahoo` source: 1-minute bars polled from Yahoo Finance's v8 chart API.

This is the source the original system polled through Airbyte: every `poll_seconds` it
asks for each symbol's chart of the day (`stockops_model.sources.yahoo_chart` holds the
client, its retries and the wire format) and emits the bars that are new:

* only closed bars are emitted: `ts + 60 s <=` the time the request was sent, never the
  minute in progress, nor one that closed while the answer was on its way;
* bars already emitted are not emitted again on the next poll: per symbol the source
  keeps the newest bar time it emitted (constant memory) and emits only newer bars.
  A minute Yahoo fills in late, behind that mark, is dropped to keep bar-time order;
* pre- and post-market bars are kept (their session is told by `parse_chart`);
  `regular_hours=True` keeps only the regular session.

Errors of the feed (`YahooSource`): one bad ticker must not stop the others. A symbol
whose request fails (a `SourceSymbolError`, or retries that ran out while other symbols
answered) is logged with Yahoo's code and description, reported to `on_symbol_error` (the
feed counts it in ``stockops_feed_source_errors_total``), skipped for a while and retried:
after its n-th consecutive failure it sits out 2^(n-1) - 1 polls (0, 1, 3, 7, ...), at
most `symbol_backoff_max` seconds' worth, so a delisted ticker costs one request every
half hour rather than one a minute. The first answer with a chart clears its record. The
feed stops only when

* the error is a configuration error (`SourceConfigError`, at once: no symbol can work);
* every symbol polled in a round failed transiently, i.e. Yahoo itself is unreachable
  (`ServiceUnavailableError`, as before: the orchestrator restarts the feed);
* every symbol has failed `give_up_after_failures` times in a row (`SourceError` naming
  each symbol and Yahoo's words; with the default 5 and 60 s polls, about 16 minutes).

Limits: those of the chart API (`stockops_model.sources.yahoo_chart`); the emitted-bar
marks live in memory, so a restarted feed re-emits the day's closed bars (the sink's
merge is idempotent, so they are not stored twice).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from stockops_model.bars import SYMBOL_PATTERN, Bar
from stockops_model.clock import Clock, SystemClock
from stockops_model.errors import (
    ServiceUnavailableError,
    SourceConfigError,
    SourceError,
    SourceSymbolError,
    SpecError,
)
from stockops_model.sources.yahoo_chart import (
    BAR_SECONDS,
    DEFAULT_BASE_URL,
    DEFAULT_USER_AGENT,
    Chart,
    RetryPolicy,
    YahooChartClient,
)

log = logging.getLogger(__name__)

# The code under which a symbol whose retries ran out is counted.
UNAVAILABLE_CODE = "unavailable"


@dataclass
class SymbolFailure:
    """The failure record of one symbol: consecutive failures and polls left to sit out."""

    symbol: str
    code: str
    message: str
    count: int = 0
    skip: int = 0


class YahooSource:
    """Polls the chart of each symbol and yields newly closed bars, until cancelled.

    One failing symbol is isolated and retried with backoff; see the module docstring for
    when the whole source fails.

    Args:
        symbols: tickers as Yahoo spells them (upper case, e.g. AAPL, BRK-B).
        clock: the time that decides which minutes are closed, and where polls sleep.
        base_url: the API's scheme and host; tests pass http://127.0.0.1:PORT.
        poll_seconds: time from the start of one polling round to the next.
        timeout: seconds an HTTP request may take in all.
        max_retries: retries of a failed request (429, 5xx, timeout) before giving up.
        backoff_base: first backoff window in seconds (doubles per retry, full jitter).
        backoff_max: largest backoff window in seconds.
        range: the chart range asked for (1d covers today's session and extended hours).
        regular_hours: keep only bars of the regular session.
        user_agent: the User-Agent header.
        rng: random source of the jitter (seed it for reproducible tests).
        give_up_after_failures: consecutive failed polls of every symbol that end the feed.
        symbol_backoff_max: longest wait, in seconds, between two tries of a failing symbol.
        on_symbol_error: called with (symbol, code) for every failed request of a symbol,
            e.g. to count it in a metric.
    """

    name = "yahoo"

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        clock: Clock | None = None,
        base_url: str = DEFAULT_BASE_URL,
        poll_seconds: float = 60.0,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        range: str = "1d",
        regular_hours: bool = False,
        user_agent: str = DEFAULT_USER_AGENT,
        rng: random.Random | None = None,
        give_up_after_failures: int = 5,
        symbol_backoff_max: float = 1800.0,
        on_symbol_error: Callable[[str, str], None] | None = None,
    ) -> None:
        if not symbols:
            raise SpecError("yahoo source: at least one symbol is needed")
        if poll_seconds <= 0 or timeout <= 0 or max_retries < 0:
            raise SpecError("yahoo source: poll_seconds and timeout must be > 0, retries >= 0")
        if give_up_after_failures < 1 or symbol_backoff_max < 0:
            raise SpecError(
                "yahoo source: give_up_after_failures must be >= 1, symbol_backoff_max >= 0"
            )
        self.symbols = [s.upper() for s in symbols]
        unusable = [s for s in self.symbols if not re.fullmatch(SYMBOL_PATTERN, s)]
        if unusable:
            raise SpecError(
                f"yahoo source: symbol(s) {', '.join(unusable)} do not fit the bar schema "
                f"({SYMBOL_PATTERN}); indices like ^GSPC are not supported"
            )
        self.clock: Clock = clock or SystemClock()
        self.base_url = base_url
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.retry = RetryPolicy(
            max_retries=max_retries, base=backoff_base, cap=backoff_max, rng=rng or random.Random()
        )
        self.range = range
        self.regular_hours = regular_hours
        self.user_agent = user_agent
        self.give_up_after_failures = give_up_after_failures
        # Polls a failing symbol may sit out in a row: symbol_backoff_max seconds' worth.
        self.max_skip = max(0, int(symbol_backoff_max // poll_seconds) - 1)
        self.on_symbol_error = on_symbol_error
        self.failing: dict[str, SymbolFailure] = {}
        self._emitted: dict[str, datetime] = {}

    def client(self) -> YahooChartClient:
        """A chart client with this source's settings (close it after use)."""
        return YahooChartClient(
            self.base_url,
            clock=self.clock,
            timeout=self.timeout,
            retry=self.retry,
            user_agent=self.user_agent,
        )

    async def poll_once(self, client: YahooChartClient) -> list[Bar]:
        """One round over every symbol: the bars closed since the previous round.

        A symbol that fails is recorded in `failing` and left out of this round (and of
        the next ones while it backs off); the others' bars are returned. Every chart is
        fetched before any bar is selected, so a round that raises moves no symbol's mark.

        Raises:
            SourceConfigError: Yahoo refused the request itself; no symbol can work.
            ServiceUnavailableError: every symbol polled this round failed transiently.
            SourceError: every symbol has failed `give_up_after_failures` times in a row.
        """
        charts: list[tuple[Chart, datetime]] = []
        unavailable: list[ServiceUnavailableError] = []
        attempted = 0
        for symbol in self.symbols:
            failure = self.failing.get(symbol)
            if failure is not None and failure.skip > 0:
                failure.skip -= 1
                continue
            attempted += 1
            # Closedness is judged when the request leaves: Yahoo's snapshot is no older, and
            # a minute that closes while the answer is in flight (or retried) is in it as it
            # was, unfinished; the next poll brings it whole.
            sent = self.clock.now()
            try:
                chart = await client.fetch(symbol, self.range)
            except SourceConfigError:
                raise
            except SourceSymbolError as exc:
                self._record_failure(symbol, exc.code, str(exc))
                continue
            except ServiceUnavailableError as exc:
                unavailable.append(exc)
                self._record_failure(symbol, UNAVAILABLE_CODE, str(exc))
                continue
            self._record_success(symbol)
            charts.append((chart, sent))
        if attempted and len(unavailable) == attempted:
            if len(unavailable) == 1:
                raise unavailable[0]
            raise ServiceUnavailableError(
                f"Yahoo failed for all {attempted} symbol(s) polled; first: {unavailable[0]}"
            )
        self._check_all_failing()
        return [bar for chart, sent in charts for bar in self.select_new(chart, sent)]

    def _record_failure(self, symbol: str, code: str, message: str) -> None:
        failure = self.failing.setdefault(symbol, SymbolFailure(symbol, code, message))
        failure.code, failure.message = code, message
        failure.count += 1
        failure.skip = min(2 ** (failure.count - 1) - 1, self.max_skip)
        if self.on_symbol_error is not None:
            self.on_symbol_error(symbol, code)
        log.warning(
            "Yahoo %s failed (%d in a row, code %s): %s; the other symbols go on, %s",
            symbol,
            failure.count,
            code,
            message,
            f"retrying it after {failure.skip} poll(s)" if failure.skip else "retrying next poll",
        )

    def _record_success(self, symbol: str) -> None:
        failure = self.failing.pop(symbol, None)
        if failure is not None:
            log.info("Yahoo %s answers again after %d failed poll(s)", symbol, failure.count)

    def _check_all_failing(self) -> None:
        limit = self.give_up_after_failures
        records = [self.failing.get(s) for s in self.symbols]
        if all(f is not None and f.count >= limit for f in records):
            detail = "; ".join(f.message for f in records if f is not None)
            raise SourceError(
                f"every symbol failed {limit} or more polls in a row, giving up: {detail}. "
                "Fix the tickers (spec.tickers) or check that Yahoo still serves them"
            )

    def select_new(self, chart: Chart, now: datetime) -> list[Bar]:
        """The bars of `chart` that are closed at `now` and newer than any emitted before."""
        closed_before = now - timedelta(seconds=BAR_SECONDS)
        mark = self._emitted.get(chart.symbol)
        new = [
            cb.bar
            for cb in chart.bars
            if cb.bar.ts <= closed_before
            and (mark is None or cb.bar.ts > mark)
            and (not self.regular_hours or cb.session == "regular")
        ]
        if new:
            self._emitted[chart.symbol] = new[-1].ts
        log.debug(
            "Yahoo %s: %d new bar(s); %d null minute(s), %d live tick(s), %d invalid",
            chart.symbol,
            len(new),
            chart.null_minutes,
            chart.unaligned,
            chart.invalid,
        )
        return new

    async def stream(self) -> AsyncIterator[Bar]:
        """Poll forever, yielding newly closed bars; stops only by cancellation or error."""
        async with self.client() as client:
            while True:
                started = self.clock.now()
                for bar in await self.poll_once(client):
                    yield bar
                elapsed = (self.clock.now() - started).total_seconds()
                await self.clock.sleep(max(0.0, self.poll_seconds - elapsed))
