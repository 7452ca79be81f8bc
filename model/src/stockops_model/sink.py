"""`stockops sink`: consume bars from the bus and land them as Parquet day objects.

One loop, one batch at a time:

1. collect up to ``batch_max`` records, waiting at most ``batch_wait_ms`` after the first;
2. decode each record; a malformed one (bad JSON, schema violation, impossible prices)
   goes to the dead-letter topic ``<topic>.dlq`` (see "Dead letters" below and
   `stockops_model.deadletters`);
3. merge the valid bars into their (symbol, trading day) objects through `BarStore.write`
   (concurrently, conditional on ETags) and wait for the DLQ acknowledgements;
4. only then commit, per partition, the offset after the last record of the batch.

Why no bar is lost or duplicated, whatever the crash point:

* Nothing is committed before step 3 has succeeded, so a crash before or during the write
  leaves the batch uncommitted and the group re-delivers it (at-least-once on the bus).
* Re-delivered bars are re-applied to the store idempotently: the merge deduplicates on
  (symbol, ts) and the day object is a deterministic function of its rows, so applying a
  bar that is already stored changes no byte (the write is even skipped). A crash between
  the write and the commit therefore only re-applies the same bars.
* Concurrent writers (two sinks during a rebalance, a replay beside a live feed) cannot
  overwrite each other's bars: every write is conditional on the ETag it merged from.
* A rebalance waits for the in-flight batch (the revoke callback takes the batch lock), and
  a commit refused after a rebalance is harmless for the same reason as a crash.

Together: at-least-once delivery + idempotent, conditional writes = every bar exactly once
in the store. The dead-letter topic is at-least-once only: after a crash a malformed
message can appear twice there; its original topic/partition/offset headers identify it.

Dead letters (`stockops_model.deadletters`) keep the original key, value and headers and
add the context in headers; one too large for the DLQ topic is kept in the store with a
pointer record in the DLQ, so it cannot crash-loop the sink. That module's docstring is
the policy.

Operations: SIGTERM (or SIGINT) stops taking new records, finishes and commits the current
batch, leaves the group and exits 0. ``--drain`` exits 0 once the group has read everything
in its partitions (for a Job). Broker and store outages are retried with backoff; the
process gives up (exit 5, UNAVAILABLE) only after ``--give-up-after`` seconds of failure,
so an orchestrator restarts it and the uncommitted batch is re-delivered.
``--metrics-port`` serves Prometheus counters (bars stored, dead letters, quarantined day
objects, batch time, time of the last commit, which is also a liveness signal).

An existing day object that cannot be decoded does not stop the sink: `BarStore.write`
copies its bytes aside under ``_quarantine/``, logs an error naming it, and rewrites the
day from the batch's bars (see `stockops_model.store` for the policy and how to recover).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from stockops_model.bars import Bar
from stockops_model.deadletters import DEFAULT_DLQ_MAX_BYTES, DeadLetterQueue, dlq_topic
from stockops_model.errors import (
    BarValidationError,
    ExitCode,
    ServiceUnavailableError,
    StoreError,
)
from stockops_model.messages import decode_bar

if TYPE_CHECKING:
    import pandas as pd

    from stockops_model.bus import Bus, Publisher, Record, Subscription
    from stockops_model.spec import StockModel
    from stockops_model.store import BarStore

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Test-only fault injection: "after-write:N" SIGKILLs the process right after the N-th
# durable store write and before its commit, the worst moment for exactly-once.
FAILPOINT_ENV = "STOCKOPS_SINK_FAILPOINT"


@dataclass(frozen=True)
class SinkConfig:
    """What one sink consumes and how it batches."""

    topic: str
    group: str = "stockops-sink"
    batch_max: int = 5000
    batch_wait_s: float = 0.5
    drain: bool = False
    give_up_after_s: float = 300.0
    create_topics: bool = True
    dlq_max_bytes: int = DEFAULT_DLQ_MAX_BYTES


@dataclass
class SinkStats:
    """Counters of one sink run (also logged at the end)."""

    batches: int = 0
    records: int = 0
    bars: int = 0
    dead_lettered: int = 0
    dead_letters_offloaded: int = 0
    objects_written: int = 0
    objects_unchanged: int = 0
    objects_quarantined: int = 0
    commits_rejected: int = 0
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        """Bars per second since the start."""
        return self.bars / max(1e-9, time.monotonic() - self.started)


class SinkMetrics:
    """Prometheus metrics of a sink process (``--metrics-port``); one instance per process."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.bars = Counter("stockops_sink_bars_total", "Bars stored and committed")
        self.dead = Counter("stockops_sink_dead_letters_total", "Messages sent to the DLQ")
        self.offloaded = Counter(
            "stockops_sink_dead_letters_offloaded_total",
            "Dead letters too large for the DLQ, kept in the store with a pointer in the DLQ",
        )
        self.batch_seconds = Histogram(
            "stockops_sink_batch_seconds",
            "Decode + write + commit time of one batch",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.last_commit = Gauge(
            "stockops_sink_last_commit_timestamp_seconds", "Unix time of the last commit"
        )
        self.quarantined = Counter(
            "stockops_sink_quarantined_objects_total",
            "Unreadable day objects copied aside and rewritten (see stockops_model.store)",
        )

    def observe(self, bars: int, dead: int, seconds: float, quarantined: int = 0) -> None:
        self.bars.inc(bars)
        self.dead.inc(dead)
        self.quarantined.inc(quarantined)
        self.batch_seconds.observe(seconds)
        self.last_commit.set_to_current_time()


class Sink:
    """Consumes one topic into a `BarStore`; see the module docstring for the guarantees."""

    def __init__(
        self, bus: Bus, store: BarStore, config: SinkConfig, metrics: SinkMetrics | None = None
    ) -> None:
        self.metrics = metrics
        self.bus = bus
        self.store = store
        self.config = config
        self.stats = SinkStats()
        self._batch_lock = asyncio.Lock()
        self._failpoint_writes = _failpoint("after-write")
        self._dead_letters = DeadLetterQueue(
            config.topic, store, max_bytes=config.dlq_max_bytes, on_offload=self._count_offload
        )

    async def _wait_for_batch(self) -> None:
        # Bounded, so a rebalance can never hang on a batch stuck in outage retries; if it
        # times out the batch's commit is refused later and the batch is re-delivered.
        try:
            await asyncio.wait_for(self._batch_lock.acquire(), timeout=30)
        except TimeoutError:
            log.warning("rebalance went ahead while a batch was still in flight")
            return
        self._batch_lock.release()

    async def run(self, stop: asyncio.Event) -> SinkStats:
        """Consume until `stop` is set (or, in drain mode, until caught up).

        Raises:
            ServiceUnavailableError, StoreError: an outage outlasted ``give_up_after_s``.
        """
        cfg = self.config
        if cfg.create_topics:
            await self._retry(
                "create topics",
                lambda: self.bus.ensure_topics([cfg.topic, dlq_topic(cfg.topic)]),
                stop,
            )
        sub = self.bus.subscription(cfg.topic, cfg.group, on_revoke=self._wait_for_batch)
        dlq = self.bus.publisher()
        await self._retry("connect the consumer", sub.start, stop)
        try:
            await self._retry("connect the DLQ producer", dlq.start, stop)
            while not stop.is_set():
                records = await self._collect(sub, stop)
                if records:
                    async with self._batch_lock:
                        await self._process(records, sub, dlq, stop)
                elif cfg.drain and await self._caught_up(sub):
                    log.info("caught up with %s, draining done", cfg.topic)
                    break
        finally:
            await dlq.stop()
            await sub.stop()
        log.info(
            "sink stopped: %d bars in %d batches, %d dead-lettered, %d objects written, "
            "%d unchanged, %d quarantined, %.0f bars/s",
            self.stats.bars,
            self.stats.batches,
            self.stats.dead_lettered,
            self.stats.objects_written,
            self.stats.objects_unchanged,
            self.stats.objects_quarantined,
            self.stats.rate(),
        )
        return self.stats

    async def _caught_up(self, sub: Subscription) -> bool:
        try:
            return await sub.caught_up()
        except Exception as exc:
            log.warning("cannot tell whether the sink is caught up yet: %s", exc)
            return False

    async def _collect(self, sub: Subscription, stop: asyncio.Event) -> list[Record]:
        """One batch: the first records, then more until full or `batch_wait_s` is over."""
        cfg = self.config
        try:
            records = await sub.poll(max_records=cfg.batch_max, timeout_s=0.5)
        except ServiceUnavailableError as exc:
            log.warning("polling failed, retrying: %s", exc)
            await asyncio.sleep(1.0)
            return []
        if not records:
            return []
        deadline = time.monotonic() + cfg.batch_wait_s
        while len(records) < cfg.batch_max and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                more = await sub.poll(max_records=cfg.batch_max - len(records), timeout_s=left)
            except ServiceUnavailableError:
                break
            if not more:
                break
            records.extend(more)
        return records

    async def _process(
        self, records: list[Record], sub: Subscription, dlq: Publisher, stop: asyncio.Event
    ) -> None:
        started = time.monotonic()
        quarantined = 0
        decoded: list[tuple[Record, Bar]] = []
        rejected: list[tuple[Record, str]] = []
        for rec in records:
            try:
                decoded.append((rec, decode_bar(rec.value)))
            except BarValidationError as exc:
                rejected.append((rec, str(exc)))
        frame, bars = _storable(decoded, rejected)
        if bars:
            results = await self._retry(
                "write bars to the store", lambda: self.store.write(frame), stop
            )
            written = sum(1 for r in results if r.written)
            quarantined = sum(1 for r in results if r.quarantined)
            self.stats.objects_written += written
            self.stats.objects_unchanged += len(results) - written
            self.stats.objects_quarantined += quarantined
        if rejected:
            await self._dead_letter(rejected, dlq, stop)
            for rec, reason in rejected[:3]:
                log.warning(
                    "dead-lettered %s:%d@%d: %s", rec.topic, rec.partition, rec.offset, reason
                )
        self._hit_failpoint()
        offsets: dict[tuple[str, int], int] = {}
        for rec in records:
            key = (rec.topic, rec.partition)
            offsets[key] = max(offsets.get(key, 0), rec.offset + 1)
        committed = await self._retry("commit offsets", lambda: sub.commit(offsets), stop)
        if not committed:
            self.stats.commits_rejected += 1
            log.warning(
                "commit refused after a rebalance; the new owner re-delivers the batch "
                "and re-applies it idempotently"
            )
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.bars += len(bars)
        self.stats.dead_lettered += len(rejected)
        if self.metrics is not None:
            self.metrics.observe(len(bars), len(rejected), time.monotonic() - started, quarantined)
        log.debug(
            "batch %d: %d records, %d bars, %d dead-lettered",
            self.stats.batches,
            len(records),
            len(bars),
            len(rejected),
        )

    async def _dead_letter(
        self, rejected: list[tuple[Record, str]], dlq: Publisher, stop: asyncio.Event
    ) -> None:
        """Publish the batch's dead letters (see `stockops_model.deadletters` for the policy)."""

        async def retry(what: str, action: Callable[[], Awaitable[_T]]) -> _T:
            return await self._retry(what, action, stop)

        await self._dead_letters.send(rejected, dlq, retry)

    def _count_offload(self) -> None:
        self.stats.dead_letters_offloaded += 1
        if self.metrics is not None:
            self.metrics.offloaded.inc()

    def _hit_failpoint(self) -> None:
        if self._failpoint_writes is None:
            return
        self._failpoint_writes -= 1
        if self._failpoint_writes <= 0:
            log.error("failpoint %s reached: killing this process", FAILPOINT_ENV)
            os.kill(os.getpid(), signal.SIGKILL)

    async def _retry(
        self, what: str, action: Callable[[], Awaitable[_T]], stop: asyncio.Event
    ) -> _T:
        """Run `action`, retrying outages with capped exponential backoff and jitter.

        A stop request does not interrupt the retries: the batch in hand must be finished
        (or the process must die uncommitted) for the guarantees to hold.
        """
        delay = 0.2
        first_failure: float | None = None
        while True:
            try:
                return await action()
            except (ServiceUnavailableError, StoreError) as exc:
                now = time.monotonic()
                first_failure = first_failure or now
                if now - first_failure > self.config.give_up_after_s:
                    raise
                log.warning("cannot %s (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 10.0)


def _storable(
    decoded: list[tuple[Record, Bar]], rejected: list[tuple[Record, str]]
) -> tuple[pd.DataFrame, list[Bar]]:
    """The batch's bars as a validated frame; bars the frame cannot hold join `rejected`.

    A bar can pass the message schema and still be refused by the store: a timestamp
    outside pandas' nanosecond range (years before 1677 or after 2262), or one whose
    US/Eastern day is, is a valid datetime. Raising would leave the batch uncommitted
    and every restart would die on it, so such bars are found one by one and
    dead-lettered like any malformed message.
    """
    from stockops_model.bars import bars_to_frame
    from stockops_model.store import validate_storable

    bars = [bar for _, bar in decoded]
    try:
        return validate_storable(bars_to_frame(bars)), bars
    except BarValidationError:
        pass
    kept: list[Bar] = []
    for rec, bar in decoded:
        try:
            validate_storable(bars_to_frame([bar]))
        except BarValidationError as exc:
            rejected.append((rec, str(exc)))
        else:
            kept.append(bar)
    return validate_storable(bars_to_frame(kept)), kept


def _failpoint(name: str) -> int | None:
    raw = os.environ.get(FAILPOINT_ENV, "")
    if not raw.startswith(name + ":"):
        return None
    return int(raw.split(":", 1)[1])


# --------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `stockops sink`; each overrides the environment and the spec."""
    parser.add_argument("-f", "--file", help="StockModel manifest (default: $STOCKOPS_SPEC_JSON)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers, host:port[,host:port]")
    parser.add_argument("--topic", help="topic of bars (default: spec.source.topic)")
    parser.add_argument("--group", help="consumer group (default: stockops-sink)")
    parser.add_argument("--store", help="store URL: file:///abs/path or azblob://container/prefix")
    parser.add_argument("--connection-string", help="Blob connection string (Azurite, local)")
    parser.add_argument("--account-url", help="Blob account URL, used with DefaultAzureCredential")
    parser.add_argument("--batch-max", type=int, help="most messages per batch (default 5000)")
    parser.add_argument("--batch-wait-ms", type=int, help="batch fill wait (default 500)")
    parser.add_argument(
        "--drain", action="store_true", help="exit 0 once caught up with the topic (for a Job)"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (default: off)"
    )
    parser.add_argument(
        "--dlq-max-bytes",
        type=int,
        default=DEFAULT_DLQ_MAX_BYTES,
        help="largest dead-letter record; a larger malformed message is kept in the store "
        "and the DLQ gets a pointer (default 1000000; keep it <= the DLQ topic's "
        "max.message.bytes)",
    )
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=300.0,
        help="seconds of continuous outage before exiting 5 (default 300)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the sink until SIGTERM (or until caught up with ``--drain``)."""
    from stockops_model.bus import KafkaBus
    from stockops_model.settings import DataPlaneSettings, kafka_config, store_target
    from stockops_model.store import open_store

    settings = DataPlaneSettings.from_env()
    spec = _load_spec(args.file, required=not (args.topic and (args.store or settings.store)))
    topic = args.topic or (spec.spec.source.topic if spec else None)
    kafka = kafka_config(
        settings,
        spec.spec.source.kafka if spec else None,
        bootstrap=args.bootstrap,
        client_id="stockops-sink",
    )
    location, credentials = store_target(
        settings,
        spec.spec.storage if spec else None,
        url=args.store,
        connection_string=args.connection_string,
        account_url=args.account_url,
    )
    if not topic:
        # _load_spec already insists on a spec when --topic is missing; this keeps the
        # promise under `python -O` too, where an assert would vanish.
        from stockops_model.errors import SpecError

        raise SpecError("no topic to consume: pass --topic or set spec.source.topic")
    config = SinkConfig(
        topic=topic,
        group=args.group or settings.sink_group,
        batch_max=args.batch_max or settings.sink_batch_max,
        batch_wait_s=(
            args.batch_wait_ms if args.batch_wait_ms is not None else settings.sink_batch_wait_ms
        )
        / 1000,
        drain=args.drain,
        give_up_after_s=args.give_up_after,
        dlq_max_bytes=args.dlq_max_bytes,
    )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _request_stop, stop, sig)
        log.info(
            "sink: %s (group %s) -> %s, batches of up to %d",
            config.topic,
            config.group,
            location,
            config.batch_max,
        )
        async with open_store(
            location, credentials, create=True, concurrency=settings.store_concurrency
        ) as store:
            metrics = None
            if args.metrics_port:
                from prometheus_client import start_http_server

                metrics = SinkMetrics()
                start_http_server(args.metrics_port)
            await Sink(KafkaBus(kafka), store, config, metrics).run(stop)
        return int(ExitCode.OK)

    return asyncio.run(main())


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("%s received: finishing the current batch, committing, exiting", sig.name)
    stop.set()


def _load_spec(path: str | None, *, required: bool) -> StockModel | None:
    """The StockModel from `path` or STOCKOPS_SPEC_JSON; None when neither is given."""
    from stockops_model.spec import SPEC_ENV, load_stockmodel

    if path is None and not os.environ.get(SPEC_ENV):
        if required:
            from stockops_model.errors import SpecError

            raise SpecError(f"no StockModel: pass -f FILE or set {SPEC_ENV} (or give the flags)")
        return None
    return load_stockmodel(path)
