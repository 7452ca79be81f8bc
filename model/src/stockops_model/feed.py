"""`stockops feed`: publish each closed bar of a source to the bus, keyed by symbol.

The source (yahoo | replay | synthetic) comes from the StockModel spec (``-f`` or
``STOCKOPS_SPEC_JSON``) or from the flags; each bar is sent as the JSON message of
`stockops_model.messages` to the spec's topic, keyed by its symbol so one ticker's bars stay
ordered in one partition. The Kafka producer is idempotent with ``acks=all`` (see
`stockops_model.bus`), so its own retries never duplicate a message.

The feed flushes (waits for every acknowledgement) at least once a second and at the end.
A finite source (replay, synthetic) ends the command with exit 0 after the final flush;
SIGTERM stops the source, flushes what was already published and exits 0. A feed that is
restarted re-publishes from the source's beginning (replay) or from the source's own window
(yahoo); that is safe because the sink stores bars idempotently.

A live source isolates a failing symbol rather than stopping (see
`stockops_model.sources.yahoo`: a delisted ticker is logged, backed off and retried while
the others stream). ``--metrics-port`` serves Prometheus counters: bars published, and
``stockops_feed_source_errors_total{symbol, code}``, the failed requests per symbol with
the source's error code, which is where an isolated ticker shows up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import date
from typing import TYPE_CHECKING, Any

from stockops_model.errors import ExitCode, SpecError
from stockops_model.messages import encode_bar, encode_key

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from stockops_model.bars import Bar
    from stockops_model.bus import Publisher
    from stockops_model.spec import StockModel

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0


class FeedMetrics:
    """Prometheus metrics of a feed process (``--metrics-port``).

    Args:
        registry: where to register; None is the process-wide default registry (one
            instance per process then), tests pass their own.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter

        where = registry if registry is not None else REGISTRY
        self.bars = Counter(
            "stockops_feed_bars_published_total", "Bars published to the bus", registry=where
        )
        self.source_errors = Counter(
            "stockops_feed_source_errors_total",
            "Failed source requests per symbol and error code (the symbol is retried later)",
            ["symbol", "code"],
            registry=where,
        )

    def source_error(self, symbol: str, code: str) -> None:
        """Count one failed request of `symbol` (the source's `on_symbol_error` hook)."""
        self.source_errors.labels(symbol=symbol, code=code).inc()


async def publish_bars(
    bars: AsyncIterator[Bar],
    publisher: Publisher,
    topic: str,
    *,
    limit: int | None = None,
    metrics: FeedMetrics | None = None,
) -> int:
    """Publish every bar of `bars` to `topic` and flush; returns how many were published.

    Flushes at least every second, so a live source's bars are acknowledged promptly, and
    on the way out (also when cancelled), so nothing queued is silently dropped.
    """
    count = 0
    last_flush = time.monotonic()
    try:
        async for bar in bars:
            await publisher.publish(topic, encode_bar(bar), key=encode_key(bar))
            count += 1
            if metrics is not None:
                metrics.bars.inc()
            now = time.monotonic()
            if now - last_flush >= FLUSH_EVERY_S:
                await publisher.flush()
                last_flush = now
            if limit is not None and count >= limit:
                break
    finally:
        await asyncio.shield(publisher.flush())
    return count


def source_options(model: StockModel) -> tuple[str, list[str], dict[str, Any]]:
    """The source kind, symbols and `build_source` options a StockModel spec asks for."""
    source = model.spec.source
    kind = str(source.type)
    options: dict[str, Any]
    if kind == "replay":
        r = source.replay
        options = {
            "path": r.path,
            "speed": r.speed or None,
            "start": r.start,
            "end": r.end,
            "regular_hours": r.regular_hours,
        }
    elif kind == "synthetic":
        s = source.synthetic
        options = {"seed": s.seed, "days": s.days, "start": s.start_date, "speed": s.speed or None}
    else:
        y = source.yahoo
        options = {"poll_seconds": y.poll_seconds, "regular_hours": not y.include_pre_post}
    return kind, list(model.spec.tickers), options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `stockops feed`; each overrides the spec."""
    parser.add_argument("-f", "--file", help="StockModel manifest (default: $STOCKOPS_SPEC_JSON)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers, host:port[,host:port]")
    parser.add_argument("--topic", help="topic to publish to (default: spec.source.topic)")
    parser.add_argument("--source", choices=["yahoo", "replay", "synthetic"], help="bar source")
    parser.add_argument("--symbols", help="comma-separated tickers (default: spec.tickers)")
    parser.add_argument("--path", help="replay: bar file or directory")
    parser.add_argument(
        "--speed", type=float, help="replay/synthetic clock acceleration; 0 = as fast as possible"
    )
    parser.add_argument("--start", type=date.fromisoformat, help="replay: first trading day")
    parser.add_argument("--end", type=date.fromisoformat, help="replay: last trading day")
    parser.add_argument(
        "--regular-hours", action="store_true", help="replay: regular trading hours only"
    )
    parser.add_argument("--limit", type=int, help="stop after this many bars")
    parser.add_argument(
        "--no-create-topic", action="store_true", help="do not create the topic when missing"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (default: off)"
    )


def _resolve(args: argparse.Namespace) -> tuple[StockModel | None, str, list[str], dict[str, Any]]:
    from stockops_model.spec import SPEC_ENV, load_stockmodel

    model = load_stockmodel(args.file) if args.file or os.environ.get(SPEC_ENV) else None
    if model is None and not args.source:
        raise SpecError(f"no StockModel: pass -f FILE, set {SPEC_ENV}, or give --source")
    if model is not None and (args.source is None or args.source == str(model.spec.source.type)):
        kind, symbols, options = source_options(model)
    else:
        kind, symbols, options = args.source, list(model.spec.tickers) if model else [], {}
    if args.symbols:
        symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if args.speed is not None:
        options["speed"] = args.speed or None
    if args.regular_hours:
        options["regular_hours"] = True
    for key in ("path", "start", "end"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if kind == "replay" and "path" not in options:
        raise SpecError("the replay source needs --path (or spec.source.replay.path)")
    if not symbols and kind != "replay":
        raise SpecError(f"the {kind} source needs --symbols (or spec.tickers)")
    return model, kind, symbols, options


def run(args: argparse.Namespace) -> int:
    """Publish bars until the source ends or SIGTERM arrives."""
    from stockops_model.bus import KafkaBus
    from stockops_model.settings import DataPlaneSettings, kafka_config
    from stockops_model.sources import build_source

    settings = DataPlaneSettings.from_env()
    model, kind, symbols, options = _resolve(args)
    topic = args.topic or (model.spec.source.topic if model else None)
    if not topic:
        raise SpecError("no topic: pass --topic or give spec.source.topic")
    kafka = kafka_config(
        settings,
        model.spec.source.kafka if model else None,
        bootstrap=args.bootstrap,
        client_id="stockops-feed",
    )
    metrics: FeedMetrics | None = None
    if args.metrics_port:
        from prometheus_client import start_http_server

        metrics = FeedMetrics()
        start_http_server(args.metrics_port)
        if kind == "yahoo":
            options["on_symbol_error"] = metrics.source_error
    source = build_source(kind, symbols=symbols, **options)

    async def main() -> int:
        bus = KafkaBus(kafka)
        if not args.no_create_topic:
            await bus.ensure_topics([topic])
        publisher = bus.publisher()
        await publisher.start()
        task = asyncio.create_task(
            publish_bars(source.stream(), publisher, topic, limit=args.limit, metrics=metrics)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _request_stop, task, sig)
        started = time.monotonic()
        try:
            count = await task
        except asyncio.CancelledError:
            count = -1
        finally:
            await publisher.stop()
        elapsed = time.monotonic() - started
        if count >= 0:
            log.info(
                "published %d bars from %s to %s in %.1fs (%.0f bars/s)",
                count,
                kind,
                topic,
                elapsed,
                count / max(elapsed, 1e-9),
            )
        else:
            log.info("stopped after %.1fs; everything published was acknowledged", elapsed)
        return int(ExitCode.OK)

    return asyncio.run(main())


def _request_stop(task: asyncio.Task[int], sig: signal.Signals) -> None:
    log.info("%s received: stopping the source and flushing", sig.name)
    task.cancel()
