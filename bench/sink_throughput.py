"""Bars per second through real Kafka and the sink into Azurite, at the shape of 500 tickers.

Publishes synthetic 1-minute bars of 500 tickers (``--minutes`` minutes of one trading day,
time-ordered as a live feed would send them) to a real Kafka broker with the feed's
idempotent producer, then runs the real `Sink` (Kafka consumer group, ETag-conditional
Parquet day objects in Azurite, commit after the write) and times:

* the backlog: from the sink's start until every bar is stored and committed
  (``sink_bars_per_s``, the last line);
* one live minute: 500 bars (one per ticker) published while the sink is idle, until they
  are stored: this is what the sink must do every minute to keep up with 500 tickers.

Every day object is rewritten in each batch that touches it, so the cost grows with the
number of tickers per batch, not just with bars; 500 tickers is the worst case the issue asks
about. Run: ``uv run python bench/sink_throughput.py`` (starts Kafka and Azurite itself).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable

from stockops_model.bus import KafkaBus, KafkaConfig
from stockops_model.feed import publish_bars
from stockops_model.sink import Sink, SinkConfig
from stockops_model.sources import build_source
from stockops_model.store import BlobCredentials, open_store
from stockops_model.testing.services import running

TICKERS = [f"S{i:03d}" for i in range(500)]
TOPIC = "bench.bars"
STORE = "azblob://bench/bars"

log = logging.getLogger("bench.sink_throughput")


async def wait_until(condition: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the sink did not store every bar in time")
        await asyncio.sleep(0.05)


async def bench(bootstrap: str, conn: str, minutes: int, batch_max: int) -> float:
    bus = KafkaBus(KafkaConfig(bootstrap=bootstrap, partitions=6))
    await bus.ensure_topics([TOPIC])
    source = build_source(
        "synthetic", symbols=TICKERS, days=1, bars_per_day=minutes + 1, seed=1, speed=None
    )
    bars = [b async for b in source.stream()]
    backlog, live = bars[: minutes * len(TICKERS)], bars[minutes * len(TICKERS) :]

    async def replay(items: list[object]) -> int:
        async def gen():  # type: ignore[no-untyped-def]
            for item in items:
                yield item

        publisher = bus.publisher()
        await publisher.start()
        try:
            return await publish_bars(gen(), publisher, TOPIC)
        finally:
            await publisher.stop()

    t0 = time.perf_counter()
    await replay(backlog)  # type: ignore[arg-type]
    feed_s = time.perf_counter() - t0
    print(f"feed: published {len(backlog)} bars in {feed_s:.1f} s ({len(backlog) / feed_s:.0f}/s)")

    stop = asyncio.Event()
    async with open_store(STORE, BlobCredentials(connection_string=conn), create=True) as store:
        sink = Sink(bus, store, SinkConfig(topic=TOPIC, batch_max=batch_max, batch_wait_s=0.5))
        t0 = time.perf_counter()
        task = asyncio.create_task(sink.run(stop))
        await wait_until(lambda: sink.stats.bars >= len(backlog) or task.done(), 1800)
        backlog_s = time.perf_counter() - t0
        rate = len(backlog) / backlog_s
        print(
            f"sink backlog: {len(backlog)} bars of {len(TICKERS)} tickers in {backlog_s:.1f} s "
            f"({sink.stats.batches} batches, {sink.stats.objects_written} object writes)"
        )

        t0 = time.perf_counter()
        await replay(live)  # type: ignore[arg-type]
        await wait_until(lambda: sink.stats.bars >= len(backlog) + len(live) or task.done(), 600)
        minute_s = time.perf_counter() - t0
        print(
            f"one live minute of {len(live)} tickers: published and stored in {minute_s:.2f} s "
            f"(budget 60 s, {60 / minute_s:.0f}x headroom)"
        )
        stop.set()
        await task

    need = len(TICKERS) / 60
    print(f"keeping up with 500 tickers needs {need:.1f} bars/s: {rate / need:.0f}x headroom")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=120, help="minutes of bars per ticker")
    parser.add_argument("--batch-max", type=int, default=5000, help="sink batch size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    with running(kafka=True, azurite=True) as services:
        rate = asyncio.run(
            bench(
                services.kafka.bootstrap,
                services.azurite.connection_string,
                args.minutes,
                args.batch_max,
            )
        )
    print(f"sink_bars_per_s: {rate:.0f}")


if __name__ == "__main__":
    main()
