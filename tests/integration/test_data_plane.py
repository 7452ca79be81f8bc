"""The data plane against the real services: feed -> Kafka -> sink -> Azurite -> BarStore.

`stockops feed` and `stockops sink` run as real subprocesses (so SIGKILL and SIGTERM are
real), on real bars of AMZN and AXP (tests/data/bars-2018-1min, four trading days). Every
test reads the store back and compares it with the source file, row for row.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from stockops_model.bars import frame_to_bars, normalise_frame
from stockops_model.bus import KafkaBus, KafkaConfig, Record
from stockops_model.deadletters import (
    ORIGINAL_OFFSET_HEADER,
    ORIGINAL_PARTITION_HEADER,
    ORIGINAL_TIMESTAMP_HEADER,
    ORIGINAL_TOPIC_HEADER,
    PAYLOAD_BYTES_HEADER,
    PAYLOAD_REF_HEADER,
    REASON_HEADER,
    dlq_topic,
)
from stockops_model.errors import (
    BarValidationError,
    CorruptObjectError,
    ExitCode,
    MessageTooLargeError,
)
from stockops_model.loaders import load_bars
from stockops_model.messages import decode_bar, encode_bar, encode_key
from stockops_model.sink import FAILPOINT_ENV
from stockops_model.store import (
    BlobCredentials,
    day_object_name,
    encode_day,
    open_store,
    quarantine_object_name,
)
from stockops_model.testing import Azurite, KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.azurite, pytest.mark.slow]

DATA = Path(__file__).parents[1] / "data" / "bars-2018-1min"
SYMBOLS = ["AMZN", "AXP"]
GROUP = "stockops-sink"


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    return normalise_frame(load_bars(DATA))


class Plane:
    """Runs the workloads of one test against one topic and one container."""

    def __init__(
        self, kafka: KafkaBroker, azurite: Azurite, topic: str, container: str, log_dir: Path
    ) -> None:
        self.kafka = kafka
        self.log_dir = log_dir
        self.log_path = log_dir / "sink.log"
        self.azurite = azurite
        self.topic = topic
        self.container = container
        self.store_url = f"azblob://{container}/bars"
        self.env = {
            **os.environ,
            "STOCKOPS_BLOB_CONNECTION_STRING": azurite.connection_string,
            "STOCKOPS_KAFKA_PARTITIONS": "3",
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def command(self, name: str, *args: str) -> list[str]:
        return [
            sys.executable, "-m", "stockops_model.cli", name,
            "--bootstrap", self.kafka.bootstrap, "--topic", self.topic, *args,
        ]  # fmt: skip

    def feed(self, *args: str, timeout: float = 180) -> None:
        """Replay the test bars (as fast as possible) and wait for the feed to finish."""
        cmd = self.command(
            "feed", "--source", "replay", "--path", str(DATA), "--symbols", ",".join(SYMBOLS),
            "--speed", "0", *args,
        )  # fmt: skip
        done = subprocess.run(cmd, env=self.env, capture_output=True, timeout=timeout)
        assert done.returncode == 0, done.stderr.decode()[-3000:]

    def start_feed(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a replay of the test bars in the background."""
        cmd = self.command(
            "feed", "--source", "replay", "--path", str(DATA), "--symbols", ",".join(SYMBOLS),
            *args,
        )  # fmt: skip
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start_sink(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        cmd = self.command("sink", "--store", self.store_url, "--group", GROUP, *args)
        # A file, not a pipe: during a broker outage the client logs a lot, and a full pipe
        # nobody reads would block the sink.
        self.log_path = self.log_dir / f"sink-{len(self.procs)}.log"
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    @property
    def last_output(self) -> str:
        """The tail of the last sink's log, for assertion messages."""
        return self.log_path.read_text(errors="replace")[-3000:]

    def drain(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> int:
        """Run a sink until it has caught up; returns its exit code."""
        proc = self.start_sink("--drain", *args, env=env)
        return proc.wait(timeout=timeout)

    def stored(self) -> pd.DataFrame:
        async def read() -> pd.DataFrame:
            creds = BlobCredentials(connection_string=self.azurite.connection_string)
            async with open_store(self.store_url, creds) as store:
                return await store.read(SYMBOLS)

        return asyncio.run(read())

    def committed(self) -> int:
        """Sum over partitions of the group's committed offsets on the topic."""

        async def query() -> int:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap)
            await admin.start()
            try:
                offsets = await admin.list_consumer_group_offsets(GROUP)
            finally:
                await admin.close()
            return sum(o.offset for tp, o in offsets.items() if tp.topic == self.topic)

        return asyncio.run(query())

    def produce(self, messages: list[tuple[bytes, bytes | None]]) -> None:
        """Send (key, value) pairs to the topic with a plain producer, as any client could."""

        async def go() -> None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all")
            await producer.start()
            try:
                for key, value in messages:
                    await producer.send(self.topic, value, key=key)
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(go())

    def create_dlq(self, max_message_bytes: int) -> None:
        """Create the DLQ topic ahead of the sink, with a size limit of its own."""

        async def go() -> None:
            from aiokafka.admin import AIOKafkaAdminClient, NewTopic

            admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap)
            await admin.start()
            try:
                config = {"max.message.bytes": str(max_message_bytes)}
                topic = NewTopic(dlq_topic(self.topic), 1, 1, topic_configs=config)
                await admin.create_topics([topic])
            finally:
                await admin.close()

        asyncio.run(go())

    def dead_letters(self) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
        """Every (key, value, headers) of the DLQ topic."""

        async def go() -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(
                dlq_topic(self.topic),
                bootstrap_servers=self.kafka.bootstrap,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            await consumer.start()
            out: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=3000)
                    if not batch:
                        return out
                    for msgs in batch.values():
                        out.extend((m.key, m.value, dict(m.headers)) for m in msgs)
            finally:
                await consumer.stop()

        return asyncio.run(go())

    def blob(self, url: str) -> bytes:
        """The bytes of a blob of this test's container, by its URL."""
        name = url.split(f"/{self.container}/", 1)[1]

        async def go() -> bytes:
            creds = BlobCredentials(connection_string=self.azurite.connection_string)
            async with open_store(self.store_url, creds) as store:
                got = await store.backend.get(name)
            assert got is not None, f"no blob {name}"
            return got[0]

        return asyncio.run(go())

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def plane(
    kafka: KafkaBroker, azurite: Azurite, kafka_topic: str, blob_container: str, tmp_path: Path
) -> Iterator[Plane]:
    p = Plane(kafka, azurite, kafka_topic, blob_container, tmp_path)
    try:
        yield p
    finally:
        p.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_replayed_bars_land_in_blob_exactly_once_with_source_values(
    plane: Plane, source: pd.DataFrame
) -> None:
    plane.feed()
    assert plane.drain() == 0, plane.last_output
    pd.testing.assert_frame_equal(plane.stored(), source)
    assert plane.committed() == len(source)


def test_a_sigkilled_sink_restarts_with_every_bar_exactly_once(
    plane: Plane, source: pd.DataFrame
) -> None:
    # The stream: the whole replay paced over ~30 s, so the kills land while bars still flow.
    feed = plane.start_feed("--speed", "3000")

    # 1. Killed by SIGKILL right after its third durable write, before that batch's commit.
    rc = plane.drain("--batch-max", "100", env={FAILPOINT_ENV: "after-write:3"})
    assert rc == -signal.SIGKILL, plane.last_output
    after_crash = len(plane.stored())
    assert 0 < plane.committed() < after_crash  # the store is a batch ahead of the group

    # 2. Killed by SIGKILL from outside at whatever point it has reached.
    sink = plane.start_sink("--batch-max", "100")
    wait_for(lambda: len(plane.stored()) > after_crash + 100, 120, "the sink to make progress")
    sink.send_signal(signal.SIGKILL)
    sink.wait(timeout=30)
    assert feed.poll() is None, "the kill landed after the end of the stream"

    # 3. A clean restart drains the rest: no bar lost, none duplicated.
    assert feed.wait(timeout=180) == 0
    assert plane.drain() == 0, plane.last_output
    pd.testing.assert_frame_equal(plane.stored(), source)
    assert plane.committed() == len(source)


def test_the_sink_rides_out_a_broker_restart(
    plane: Plane, kafka: KafkaBroker, source: pd.DataFrame
) -> None:
    first = source[source["ts"] < "2018-03-10"]
    plane.feed("--end", "2018-03-09")
    sink = plane.start_sink("--batch-max", "100")
    wait_for(lambda: len(plane.stored()) > 0, 120, "the sink to start storing bars")
    kafka.stop()
    try:
        time.sleep(3)  # the sink is now polling and committing against a dead broker
        assert sink.poll() is None
    finally:
        kafka.start()
    wait_for(lambda: len(plane.stored()) == len(first), 180, "the sink to finish the first days")
    plane.feed("--start", "2018-03-12")
    wait_for(lambda: len(plane.stored()) == len(source), 180, "the sink to store the rest")
    wait_for(lambda: plane.committed() == len(source), 60, "the sink to commit everything")
    assert sink.poll() is None, "the sink had to be restarted"
    sink.send_signal(signal.SIGTERM)
    assert sink.wait(timeout=60) == 0, plane.last_output
    assert "SIGTERM received" in plane.last_output
    pd.testing.assert_frame_equal(plane.stored(), source)


def malformed_messages(source: pd.DataFrame, n: int) -> list[tuple[bytes, bytes]]:
    """`n` broken messages of five kinds, each derived from a real bar."""
    bars = [json.loads(encode_bar(b)) for b in frame_to_bars(source.iloc[:n])]
    out = []
    for i, bar in enumerate(bars):
        kind = i % 5
        if kind == 0:
            value = encode_bar(frame_to_bars(source.iloc[[i]])[0])[:-7]  # truncated JSON
        elif kind == 1:
            value = json.dumps({**bar, "low": bar["high"] * 2}).encode()  # impossible prices
        elif kind == 2:
            value = json.dumps({**bar, "close": -bar["close"]}).encode()  # negative price
        elif kind == 3:
            value = json.dumps({k: v for k, v in bar.items() if k != "ts"}).encode()  # no ts
        else:
            value = json.dumps({**bar, "v": 99}).encode()  # unknown wire version
        out.append((bar["symbol"].encode(), value))
    return out


def test_malformed_messages_go_to_the_dlq_and_valid_bars_are_stored(
    plane: Plane, source: pd.DataFrame
) -> None:
    bad = malformed_messages(source, 1000)
    good = [(encode_key(b), encode_bar(b)) for b in frame_to_bars(source)]
    tombstone: tuple[bytes, bytes | None] = (b"AMZN", None)
    mixed: list[tuple[bytes, bytes | None]] = [tombstone]
    for i, msg in enumerate(good):
        mixed.append(msg)
        if i % 3 == 0 and bad:
            mixed.append(bad.pop())
    mixed.extend(bad)

    plane.produce(mixed)
    assert plane.drain() == 0, plane.last_output
    pd.testing.assert_frame_equal(plane.stored(), source)

    dead = plane.dead_letters()
    assert len(dead) == 1001
    where = {(int(h[ORIGINAL_PARTITION_HEADER]), int(h[ORIGINAL_OFFSET_HEADER])) for *_, h in dead}
    assert len(where) == 1001
    sent: dict[bytes | None, bytes] = {
        value: key for key, value in malformed_messages(source, 1000)
    }
    sent[None] = b"AMZN"  # a tombstone stays a tombstone (a null value) in the DLQ
    for key, value, headers in dead:
        assert value in sent  # the original bytes, not an envelope
        assert key == sent[value]
        assert headers[ORIGINAL_TOPIC_HEADER] == plane.topic.encode()
        assert int(headers[ORIGINAL_TIMESTAMP_HEADER]) > 0
        with pytest.raises(BarValidationError) as why:
            decode_bar(value)
        assert headers[REASON_HEADER].decode() == str(why.value)


def test_a_dead_letter_too_large_for_the_dlq_topic_is_kept_in_blob_with_a_pointer(
    plane: Plane, source: pd.DataFrame
) -> None:
    # The DLQ topic takes 4 KB. One malformed message is 10 KB: the broker refuses it.
    # Another is ~1 MB, just under the source topic's limit: with the context headers it
    # is over --dlq-max-bytes (1,000,000), so it never reaches the broker.
    plane.create_dlq(max_message_bytes=4_000)
    rng = random.Random(7)
    refused, oversized = rng.randbytes(10_000), rng.randbytes(1_040_000)  # incompressible
    small = [(b"AXP", b"{"), (b"AMZN", b"[1, 2]")]
    good = [(encode_key(b), encode_bar(b)) for b in frame_to_bars(source)]
    plane.produce([*good[:500], (b"AMZN", refused), *small, (b"AXP", oversized), *good[500:]])
    assert plane.drain() == 0, plane.last_output
    pd.testing.assert_frame_equal(plane.stored(), source)
    assert plane.committed() == len(good) + 4

    # The DLQ is at-least-once: a record sent before a refused batch may be there twice.
    dead = plane.dead_letters()
    plain = {(key, value) for key, value, h in dead if PAYLOAD_REF_HEADER not in h}
    assert plain == set(small)  # small dead letters are the original records
    pointers = {
        (key, value, h[ORIGINAL_OFFSET_HEADER], h[PAYLOAD_REF_HEADER], h[PAYLOAD_BYTES_HEADER])
        for key, value, h in dead
        if PAYLOAD_REF_HEADER in h
    }
    assert {(key, value) for key, value, *_ in pointers} == {(b"AMZN", b""), (b"AXP", b"")}
    assert len(pointers) == 2
    kept = {plane.blob(ref.decode()): int(size) for *_, ref, size in pointers}
    assert kept == {refused: len(refused), oversized: len(oversized)}  # every byte, in Blob
    reasons = {h[REASON_HEADER].split(b":")[0] for *_, h in dead if PAYLOAD_REF_HEADER in h}
    assert reasons == {b"not UTF-8"}
    log = plane.log_path.read_text(errors="replace")
    assert "over --dlq-max-bytes" in log  # the ~1 MB one, caught before sending
    assert "refused a batch as too large" in log  # the 10 KB one, refused by the broker


def test_the_kafka_bus_reports_a_refusal_for_size_as_message_too_large(
    kafka: KafkaBroker, kafka_topic: str
) -> None:
    async def go() -> list[Record]:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            config = {"max.message.bytes": "2000"}
            await admin.create_topics([NewTopic(kafka_topic, 1, 1, topic_configs=config)])
        finally:
            await admin.close()
        bus = KafkaBus(KafkaConfig(bootstrap=kafka.bootstrap))
        publisher = bus.publisher()
        await publisher.start()
        try:
            # Over the producer's max_request_size (1 MiB): refused before it is sent.
            with pytest.raises(MessageTooLargeError, match="producer refused"):
                await publisher.publish(kafka_topic, b"x" * 1_100_000)
            # Over the topic's max.message.bytes (incompressible): refused by the broker.
            await publisher.publish(kafka_topic, random.Random(3).randbytes(5_000))
            with pytest.raises(MessageTooLargeError, match="too large"):
                await publisher.flush()
            # A tombstone goes through as one.
            await publisher.publish(kafka_topic, None, key=b"AMZN")
            await publisher.flush()
        finally:
            await publisher.stop()
        sub = bus.subscription(kafka_topic, "size-check")
        await sub.start()
        try:
            got: list[Record] = []
            for _ in range(20):
                got += await sub.poll(max_records=10, timeout_s=1.0)
                if got:
                    return got
            return got
        finally:
            await sub.stop()

    (record,) = asyncio.run(go())
    assert (record.key, record.value) == (b"AMZN", None)


def test_a_dlq_topic_that_refuses_even_a_pointer_stops_the_sink_with_the_fix(
    plane: Plane, source: pd.DataFrame
) -> None:
    plane.create_dlq(max_message_bytes=100)
    good = [(encode_key(b), encode_bar(b)) for b in frame_to_bars(source.iloc[:50])]
    plane.produce([*good, (b"AMZN", b"not json")])
    assert plane.drain(timeout=120) == ExitCode.INVALID_SPEC, plane.last_output
    out = plane.last_output
    assert f"cannot dead-letter {plane.topic}:" in out
    assert f"max.message.bytes of {dlq_topic(plane.topic)}" in out
    assert plane.committed() == 0  # its batch stays for the restart after the fix
    ref = next(line for line in out.splitlines() if "its value is kept at" in line)
    assert "/_dead-letters/" in ref


def test_a_corrupt_day_blob_is_named_by_readers_and_quarantined_by_the_writer(
    azurite: Azurite, blob_container: str, source: pd.DataFrame
) -> None:
    day = source[(source["symbol"] == "AXP") & (source["ts"] < "2018-03-09")]
    name = day_object_name("bars", "AXP", pd.Timestamp("2018-03-08").date())
    truncated = encode_day(day)[:-100]
    creds = BlobCredentials(connection_string=azurite.connection_string)
    url = f"azblob://{blob_container}/bars"

    async def scenario() -> None:
        async with open_store(url, creds) as store:
            await store.backend.put(name, truncated, if_match=None, metadata={})
            with pytest.raises(CorruptObjectError) as info:
                await store.read(["AXP"])
            assert info.value.name.endswith(f"/{blob_container}/{name}")
            assert "not readable Parquet" in str(info.value)

            (result,) = await store.write(day.iloc[:200])
            assert result.quarantined == quarantine_object_name("bars", name, truncated)
            kept = await store.backend.get(result.quarantined)
            assert kept is not None
            assert kept[0] == truncated
        async with open_store(url, creds) as fresh:
            await fresh.write(day)
            pd.testing.assert_frame_equal(await fresh.read(["AXP"]), normalise_frame(day))

    asyncio.run(scenario())
