"""The Yahoo chart client and source against a real local HTTP server.

The server (`RecordedYahoo`, on 127.0.0.1) answers each request with the next scripted
response: a status, headers, a body (mostly the recorded chart responses of
tests/data/yahoo, written in Yahoo's wire format) and an optional delay. Nothing in the
client is patched; it is pointed at the server with `base_url`, and a `FakeClock` makes
backoff and polling sleeps instant and observable.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from stockops_model.bars import Bar
from stockops_model.clock import FakeClock
from stockops_model.errors import (
    ExitCode,
    ServiceUnavailableError,
    SourceConfigError,
    SourceError,
)
from stockops_model.loaders import load_bars
from stockops_model.sources.yahoo import YahooSource
from stockops_model.sources.yahoo_chart import parse_chart

DATA = Path(__file__).resolve().parents[1] / "data" / "yahoo"
SPY = Path(__file__).resolve().parents[2] / "examples" / "data" / "spy-2011-1min"
POLL1_AT = datetime(2011, 1, 4, 14, 33, 20, tzinfo=UTC)  # 09:33:20 EST, when poll1 was taken
POLL2_AT = datetime(2011, 1, 4, 21, 3, 10, tzinfo=UTC)  # 16:03:10 EST
REGULAR = (datetime(2011, 1, 4, 14, 30, tzinfo=UTC), datetime(2011, 1, 4, 21, 0, tzinfo=UTC))


def recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json;charset=utf-8"
    # Runs in the server before it answers: a test moves its FakeClock here to stand for
    # the time a request spends in flight.
    on_serve: Callable[[], None] | None = None
    # Seconds between the body's bytes: a server that answers, but at a trickle.
    trickle: float = 0.0


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class RecordedYahoo:
    """A threaded HTTP server on 127.0.0.1 that plays a queue of replies.

    A symbol given a reply of its own (`answer`) gets that reply every time instead.
    """

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.by_symbol: dict[str, Reply | deque[Reply]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                outer.requests.append(Seen(parts.path, parse_qs(parts.query), dict(self.headers)))
                reply = outer.next_reply(parts.path.rsplit("/", 1)[-1])
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.on_serve is not None:
                    reply.on_serve()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if reply.trickle:
                        for byte in reply.body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up, as intended

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def answer(self, symbol: str, *replies: Reply) -> None:
        """Answer `symbol` with these replies in turn, the last one for ever after."""
        self.by_symbol[symbol] = replies[0] if len(replies) == 1 else deque(replies)

    def next_reply(self, symbol: str) -> Reply:
        mine = self.by_symbol.get(symbol)
        if isinstance(mine, Reply):
            return mine
        if mine is not None:
            return mine.popleft() if len(mine) > 1 else mine[0]
        return self.replies.popleft() if self.replies else Reply(599, b"no reply left")

    def requested(self, symbol: str) -> int:
        """How many requests asked for `symbol`'s chart."""
        return sum(1 for seen in self.requests if seen.path.endswith(f"/{symbol}"))


@pytest.fixture
def yahoo() -> Iterator[RecordedYahoo]:
    server = RecordedYahoo()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def source(
    server: RecordedYahoo, clock: FakeClock, symbols: tuple[str, ...] = ("SPY",), **options: Any
) -> YahooSource:
    options.setdefault("rng", random.Random(0))
    return YahooSource(list(symbols), clock=clock, base_url=server.url, **options)


async def poll(src: YahooSource) -> list[Bar]:
    async with src.client() as client:
        return await src.poll_once(client)


def source_bars() -> dict[datetime, tuple[float, ...]]:
    """The SPY bars of 2011-01-04 the recordings were written from, by bar start."""
    frame = load_bars(SPY, start="2011-01-04", end="2011-01-04")
    values = frame[["open", "high", "low", "close", "volume"]].itertuples(index=False)
    return {ts.to_pydatetime(): tuple(v) for ts, v in zip(frame["ts"], values, strict=True)}


async def drain(src: YahooSource, into: list[Bar]) -> None:
    async for bar in src.stream():
        into.append(bar)


def expected_closed(name: str, now: datetime) -> list[tuple[datetime, float]]:
    """Independently of the client: aligned, non-null minutes closed at `now`."""
    result = json.loads(recorded(name))["chart"]["result"][0]
    quote = result["indicators"]["quote"][0]
    out = []
    for i, stamp in enumerate(result["timestamp"]):
        values = [quote[k][i] for k in ("open", "high", "low", "close")]
        if stamp % 60 == 0 and None not in values and stamp + 60 <= now.timestamp():
            out.append((datetime.fromtimestamp(stamp, UTC), round(values[3], 4)))
    return out


# --- recorded responses ---------------------------------------------------------------------


async def test_first_poll_emits_the_closed_minutes_with_prices_as_quoted(
    yahoo: RecordedYahoo,
) -> None:
    yahoo.queue(Reply(body=recorded("spy_2011-01-04_poll1.json")))
    bars = await poll(source(yahoo, FakeClock(POLL1_AT)))
    assert [(b.ts, b.close) for b in bars] == expected_closed("spy_2011-01-04_poll1.json", POLL1_AT)
    assert all(b.source == "yahoo" and b.symbol == "SPY" for b in bars)
    # Never the minute in progress (09:33 EST) nor the live tick at 09:33:20.
    assert bars[-1].ts == datetime(2011, 1, 4, 14, 32, tzinfo=UTC)
    # float32 artefacts are gone: the prices are the quoted cents of the source data.
    quoted = source_bars()
    assert all((b.open, b.high, b.low, b.close, b.volume) == quoted[b.ts] for b in bars)


async def test_the_request_is_the_v8_chart_of_the_symbol_at_one_minute(
    yahoo: RecordedYahoo,
) -> None:
    yahoo.queue(Reply(body=recorded("spy_2011-01-04_poll1.json")))
    await poll(source(yahoo, FakeClock(POLL1_AT)))
    (seen,) = yahoo.requests
    assert seen.path == "/v8/finance/chart/SPY"
    assert seen.query == {"interval": ["1m"], "range": ["1d"], "includePrePost": ["true"]}
    assert "stockops" in seen.headers["User-Agent"]


async def test_polls_emit_each_bar_once_in_order_until_a_chart_error(
    yahoo: RecordedYahoo,
) -> None:
    yahoo.queue(
        Reply(body=recorded("spy_2011-01-04_poll1.json")),
        Reply(body=recorded("spy_2011-01-04_poll2.json")),
        Reply(404, recorded("error_not_found.json")),
    )
    clock = FakeClock(POLL1_AT)
    # The second poll lands exactly when the second recording was taken. The only symbol
    # failing once is "every symbol failing persistently" when one failure is the limit.
    src = source(
        yahoo,
        clock,
        poll_seconds=(POLL2_AT - POLL1_AT).total_seconds(),
        give_up_after_failures=1,
    )
    bars: list[Bar] = []
    with pytest.raises(SourceError, match="Not Found"):
        await drain(src, bars)
    assert [(b.ts, b.close) for b in bars] == expected_closed("spy_2011-01-04_poll2.json", POLL2_AT)
    assert len({b.ts for b in bars}) == len(bars)
    # The minute in progress at the first poll arrives once, with its final values.
    at_0933 = next(b for b in bars if b.ts == POLL1_AT.replace(second=0))
    assert (at_0933.open, at_0933.high, at_0933.low, at_0933.close, at_0933.volume) == (
        source_bars()[at_0933.ts]
    )
    assert clock.sleeps == [(POLL2_AT - POLL1_AT).total_seconds()] * 2


async def test_pre_and_post_market_bars_are_flagged_and_can_be_left_out(
    yahoo: RecordedYahoo,
) -> None:
    chart = parse_chart(json.loads(recorded("spy_2011-01-04_poll2.json")), "SPY")
    sessions = {cb.session for cb in chart.bars}
    assert sessions == {"pre", "regular", "post"}
    for cb in chart.bars:
        inside = REGULAR[0] <= cb.bar.ts < REGULAR[1]
        assert (cb.session == "regular") == inside
        assert cb.session != "pre" or cb.bar.ts < REGULAR[0]
    assert chart.null_minutes > 0
    assert chart.unaligned == 1
    assert chart.meta is not None
    assert chart.meta.exchange_timezone == "America/New_York"
    assert chart.meta.gmtoffset == -18000

    yahoo.queue(Reply(body=recorded("spy_2011-01-04_poll2.json")))
    bars = await poll(source(yahoo, FakeClock(POLL2_AT), regular_hours=True))
    assert bars
    assert all(REGULAR[0] <= b.ts < REGULAR[1] for b in bars)
    regular = [cb.bar for cb in chart.bars if cb.session == "regular"]
    assert bars == regular


@pytest.mark.parametrize("name", ["empty_no_timestamps.json", "empty_result_null.json"])
async def test_an_empty_chart_yields_nothing(yahoo: RecordedYahoo, name: str) -> None:
    yahoo.queue(Reply(body=recorded(name)))
    assert await poll(source(yahoo, FakeClock(POLL1_AT))) == []


# --- errors, rate limiting and retries ------------------------------------------------------


async def test_a_chart_error_is_reported_in_yahoos_words_and_not_retried(
    yahoo: RecordedYahoo, caplog: pytest.LogCaptureFixture
) -> None:
    yahoo.queue(Reply(404, recorded("error_not_found.json")))
    src = source(yahoo, FakeClock(POLL1_AT), symbols=("XYZ",))
    assert await poll(src) == []  # one failure is not yet a reason to stop the feed
    failure = src.failing["XYZ"]
    assert (failure.code, failure.count) == ("Not Found", 1)
    assert failure.message == (
        "Yahoo chart error for XYZ: Not Found: No data found, symbol may be delisted"
    )
    assert len(yahoo.requests) == 1
    (warning,) = [r.getMessage() for r in caplog.records if "XYZ" in r.getMessage()]
    assert "No data found, symbol may be delisted" in warning
    assert "code Not Found" in warning


async def test_a_bad_range_is_a_configuration_error_that_stops_the_feed_at_once(
    yahoo: RecordedYahoo,
) -> None:
    # Two symbols: the request itself is wrong, so the second is not even tried.
    yahoo.queue(Reply(422, recorded("error_unprocessable.json")))
    clock = FakeClock(POLL1_AT)
    with pytest.raises(SourceConfigError, match="Unprocessable Entity: 1m data not available"):
        await poll(source(yahoo, clock, symbols=("SPY", "QQQ"), range="1mo"))
    assert len(yahoo.requests) == 1
    assert clock.sleeps == []
    assert SourceConfigError.exit_code == ExitCode.INVALID_SPEC


async def test_access_denied_is_a_configuration_error_too(yahoo: RecordedYahoo) -> None:
    yahoo.queue(Reply(403, b"<html>Forbidden</html>", content_type="text/html"))
    with pytest.raises(SourceConfigError, match="HTTP 403"):
        await poll(source(yahoo, FakeClock(POLL1_AT), symbols=("SPY", "QQQ")))


async def test_rate_limits_and_server_errors_are_retried_with_backoff(
    yahoo: RecordedYahoo,
) -> None:
    yahoo.queue(
        Reply(429, b"Too Many Requests\r\n", {"Retry-After": "7"}, content_type="text/plain"),
        Reply(500, recorded("error_internal.json")),
        Reply(503, b"<html>Service Unavailable</html>", content_type="text/html"),
        Reply(body=recorded("spy_2011-01-04_poll1.json")),
    )
    clock = FakeClock(POLL1_AT)
    src = source(yahoo, clock, backoff_base=2.0, backoff_max=5.0)
    bars = await poll(src)
    assert len(bars) == len(expected_closed("spy_2011-01-04_poll1.json", POLL1_AT))
    assert len(yahoo.requests) == 4
    retry_after, second, third = clock.sleeps
    assert retry_after == 7.0  # the server's Retry-After is honoured
    assert 0.0 <= second <= 4.0  # full jitter in [0, base * 2]
    assert 0.0 <= third <= 5.0  # capped at backoff_max
    assert second != third  # jittered, not a fixed schedule


async def test_retry_after_as_an_http_date_is_honoured(yahoo: RecordedYahoo) -> None:
    clock = FakeClock(POLL1_AT)
    later = "Tue, 04 Jan 2011 14:33:50 GMT"  # 30 s after POLL1_AT
    yahoo.queue(
        Reply(429, b"Too Many Requests", {"Retry-After": later}, content_type="text/plain"),
        Reply(body=recorded("empty_result_null.json")),
    )
    await poll(source(yahoo, clock))
    assert clock.sleeps == [30.0]


async def test_retries_run_out_with_a_clear_error(yahoo: RecordedYahoo) -> None:
    yahoo.queue(*[Reply(429, b"Too Many Requests", content_type="text/plain")] * 3)
    clock = FakeClock(POLL1_AT)
    with pytest.raises(ServiceUnavailableError) as info:
        await poll(source(yahoo, clock, max_retries=2))
    assert str(info.value) == (
        "Yahoo chart for SPY failed 3 time(s), last: HTTP 429 Too Many Requests; retry later"
    )
    assert len(yahoo.requests) == 3
    assert len(clock.sleeps) == 2


async def test_a_slow_answer_times_out_and_is_retried(yahoo: RecordedYahoo) -> None:
    yahoo.queue(
        Reply(body=recorded("spy_2011-01-04_poll1.json"), delay=2.0),
        Reply(body=recorded("spy_2011-01-04_poll1.json")),
    )
    clock = FakeClock(POLL1_AT)
    bars = await poll(source(yahoo, clock, timeout=0.2))
    assert len(bars) == len(expected_closed("spy_2011-01-04_poll1.json", POLL1_AT))
    assert len(yahoo.requests) == 2
    assert len(clock.sleeps) == 1


async def test_an_unreachable_server_is_unavailable_not_a_crash() -> None:
    server = RecordedYahoo()  # bound but never serving: connections are refused or hang
    url = server.url
    server.server.server_close()
    clock = FakeClock(POLL1_AT)
    src = YahooSource(["SPY"], clock=clock, base_url=url, max_retries=1, timeout=0.5)
    with pytest.raises(ServiceUnavailableError, match="failed 2 time"):
        await poll(src)


async def test_a_late_fill_behind_the_emitted_mark_is_not_emitted_out_of_order(
    yahoo: RecordedYahoo,
) -> None:
    payload = json.loads(recorded("spy_2011-01-04_poll1.json"))
    quote = payload["chart"]["result"][0]["indicators"]["quote"][0]
    stamps = payload["chart"]["result"][0]["timestamp"]
    hole = stamps.index(int((POLL1_AT - timedelta(minutes=5)).replace(second=0).timestamp()))
    kept = {k: quote[k][hole] for k in quote}
    for key in quote:
        quote[key][hole] = None
    first = json.dumps(payload).encode()
    for key in quote:
        quote[key][hole] = kept[key]
    yahoo.queue(Reply(body=first), Reply(body=json.dumps(payload).encode()))
    src = source(yahoo, FakeClock(POLL1_AT))
    async with src.client() as client:
        before = await src.poll_once(client)
        after = await src.poll_once(client)
    assert datetime.fromtimestamp(stamps[hole], UTC) not in {b.ts for b in before}
    assert after == []


async def test_a_minute_that_closes_while_the_request_is_in_flight_is_not_emitted_unfinished(
    yahoo: RecordedYahoo,
) -> None:
    # Sent at 09:33:59.5 EST; the answer (poll1: the 09:33 minute still in progress) comes
    # back at 09:34:00.5, after that minute has closed. Its values are those of the snapshot,
    # not final: closedness must be judged at the time the request was sent.
    sent = POLL1_AT.replace(second=59, microsecond=500_000)
    clock = FakeClock(sent)
    yahoo.queue(
        Reply(body=recorded("spy_2011-01-04_poll1.json"), on_serve=lambda: clock.advance(1.0)),
        Reply(body=recorded("spy_2011-01-04_poll2.json")),
    )
    src = source(yahoo, clock)
    async with src.client() as client:
        first = await src.poll_once(client)
        clock.advance((POLL2_AT - clock.now()).total_seconds())
        second = await src.poll_once(client)
    in_progress = POLL1_AT.replace(second=0)
    assert [(b.ts, b.close) for b in first] == expected_closed("spy_2011-01-04_poll1.json", sent)
    assert in_progress not in {b.ts for b in first}
    (final,) = [b for b in second if b.ts == in_progress]
    assert (final.open, final.high, final.low, final.close, final.volume) == (
        source_bars()[in_progress]
    )


async def test_one_bad_ticker_does_not_stop_the_others(
    yahoo: RecordedYahoo, caplog: pytest.LogCaptureFixture
) -> None:
    poll1, poll2 = recorded("spy_2011-01-04_poll1.json"), recorded("spy_2011-01-04_poll2.json")
    yahoo.answer("SPY", Reply(body=poll1), Reply(body=poll2))
    yahoo.answer("XYZ", Reply(404, recorded("error_not_found.json")))
    yahoo.answer("QQQ", Reply(body=poll1), Reply(body=poll2))
    clock = FakeClock(POLL1_AT)
    src = source(yahoo, clock, symbols=("SPY", "XYZ", "QQQ"))
    async with src.client() as client:
        first = await src.poll_once(client)
        clock.advance((POLL2_AT - clock.now()).total_seconds())
        second = await src.poll_once(client)
    for symbol in ("SPY", "QQQ"):
        bars = [(b.ts, b.close) for b in [*first, *second] if b.symbol == symbol]
        assert bars == expected_closed("spy_2011-01-04_poll2.json", POLL2_AT)
    assert not [b for b in [*first, *second] if b.symbol == "XYZ"]
    assert yahoo.requested("XYZ") == 2  # retried on the next poll
    assert src.failing["XYZ"].count == 2
    assert set(src.failing) == {"XYZ"}
    logged = [r for r in caplog.records if "XYZ" in r.getMessage()]
    assert len(logged) == 2
    assert all("Not Found" in r.getMessage() and "delisted" in r.getMessage() for r in logged)


async def test_a_failing_ticker_is_retried_with_backoff_not_every_poll(
    yahoo: RecordedYahoo,
) -> None:
    yahoo.answer("SPY", Reply(body=recorded("spy_2011-01-04_poll1.json")))
    yahoo.answer("XYZ", Reply(404, recorded("error_not_found.json")))
    clock = FakeClock(POLL1_AT)
    src = source(yahoo, clock, symbols=("SPY", "XYZ"), symbol_backoff_max=600.0)
    tried_at: list[int] = []
    async with src.client() as client:
        for round_ in range(1, 41):
            before = yahoo.requested("XYZ")
            await src.poll_once(client)  # never raises: SPY keeps answering
            if yahoo.requested("XYZ") > before:
                tried_at.append(round_)
            clock.advance(60)
    # Sits out 0, 1, 3, 7 polls, then at most 600 s / 60 s = 10 polls apart.
    assert tried_at == [1, 2, 4, 8, 16, 26, 36]
    assert yahoo.requested("SPY") == 40


async def test_a_ticker_that_answers_again_streams_again(yahoo: RecordedYahoo) -> None:
    not_found = Reply(404, recorded("error_not_found.json"))
    yahoo.answer("SPY", Reply(body=recorded("spy_2011-01-04_poll1.json")))
    yahoo.answer("QQQ", not_found, not_found, Reply(body=recorded("spy_2011-01-04_poll1.json")))
    src = source(yahoo, FakeClock(POLL1_AT), symbols=("SPY", "QQQ"))
    got: list[Bar] = []
    async with src.client() as client:
        for _ in range(4):  # QQQ: fails, fails, sits out one poll, answers
            got.extend(await src.poll_once(client))
    expected = expected_closed("spy_2011-01-04_poll1.json", POLL1_AT)
    assert [(b.ts, b.close) for b in got if b.symbol == "QQQ"] == expected
    assert [(b.ts, b.close) for b in got if b.symbol == "SPY"] == expected
    assert src.failing == {}


async def test_the_feed_fails_only_when_every_ticker_fails_persistently(
    yahoo: RecordedYahoo,
) -> None:
    yahoo.answer("XYZ", Reply(404, recorded("error_not_found.json")))
    yahoo.answer("ABCD", Reply(404, b"<html>Not Found</html>", content_type="text/html"))
    clock = FakeClock(POLL1_AT)
    src = source(yahoo, clock, symbols=("XYZ", "ABCD"), poll_seconds=60)
    bars: list[Bar] = []
    with pytest.raises(SourceError) as info:
        await drain(src, bars)
    assert not isinstance(info.value, SourceConfigError)
    message = str(info.value)
    assert "every symbol failed 5 or more polls in a row" in message
    assert "XYZ: Not Found: No data found, symbol may be delisted" in message
    assert "HTTP 404 for ABCD" in message
    # Five tries each, on polls 1, 2, 4, 8 and 16; the feed polled on schedule between.
    assert (yahoo.requested("XYZ"), yahoo.requested("ABCD")) == (5, 5)
    assert clock.sleeps == [60.0] * 15
    assert bars == []


async def test_a_ticker_whose_retries_run_out_is_isolated_while_others_answer(
    yahoo: RecordedYahoo,
) -> None:
    yahoo.answer("SPY", Reply(body=recorded("spy_2011-01-04_poll1.json")))
    yahoo.answer("QQQ", Reply(503, b"Service Unavailable", content_type="text/plain"))
    clock = FakeClock(POLL1_AT)
    src = source(yahoo, clock, symbols=("QQQ", "SPY"), max_retries=1)
    bars = await poll(src)
    assert len(bars) == len(expected_closed("spy_2011-01-04_poll1.json", POLL1_AT))
    assert yahoo.requested("QQQ") == 2  # its own retry still happened
    assert src.failing["QQQ"].code == "unavailable"
    assert "HTTP 503" in src.failing["QQQ"].message


async def test_symbol_errors_are_counted_in_the_feed_metric(yahoo: RecordedYahoo) -> None:
    from prometheus_client import CollectorRegistry

    from stockops_model.feed import FeedMetrics

    registry = CollectorRegistry()
    metrics = FeedMetrics(registry)
    yahoo.answer("SPY", Reply(body=recorded("spy_2011-01-04_poll1.json")))
    yahoo.answer("XYZ", Reply(404, recorded("error_not_found.json")))
    src = source(
        yahoo, FakeClock(POLL1_AT), symbols=("SPY", "XYZ"), on_symbol_error=metrics.source_error
    )
    async with src.client() as client:
        for _ in range(4):
            await src.poll_once(client)
    labels = {"symbol": "XYZ", "code": "Not Found"}
    assert registry.get_sample_value("stockops_feed_source_errors_total", labels) == 3
    assert (
        registry.get_sample_value(
            "stockops_feed_source_errors_total", {"symbol": "SPY", "code": "Not Found"}
        )
        is None
    )


async def test_an_answer_that_trickles_in_times_out_as_a_whole_and_is_retried(
    yahoo: RecordedYahoo,
) -> None:
    # Each byte comes well within the timeout, the whole answer well after it.
    slow = recorded("empty_result_null.json")
    assert len(slow) * 0.05 > 1.0
    yahoo.queue(
        Reply(body=slow, trickle=0.05),
        Reply(body=recorded("spy_2011-01-04_poll1.json")),
    )
    clock = FakeClock(POLL1_AT)
    bars = await poll(source(yahoo, clock, timeout=0.5))
    assert len(bars) == len(expected_closed("spy_2011-01-04_poll1.json", POLL1_AT))
    assert len(yahoo.requests) == 2
    assert len(clock.sleeps) == 1
