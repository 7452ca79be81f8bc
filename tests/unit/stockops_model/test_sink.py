"""The sink on the in-memory bus and the file store: batches, DLQ, crash safety, draining.

The same `Sink` runs against Kafka and Azurite in tests/integration/test_data_plane.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pandas as pd
import pytest

from stockops_model.bars import Bar, frame_to_bars, normalise_frame
from stockops_model.bus import MemoryBus, MemorySubscription, Subscription
from stockops_model.deadletters import (
    ORIGINAL_OFFSET_HEADER,
    ORIGINAL_PARTITION_HEADER,
    ORIGINAL_TIMESTAMP_HEADER,
    ORIGINAL_TOPIC_HEADER,
    PAYLOAD_BYTES_HEADER,
    PAYLOAD_REF_HEADER,
    REASON_HEADER,
    dlq_topic,
    record_size,
)
from stockops_model.errors import BarValidationError, DeadLetterError
from stockops_model.feed import publish_bars
from stockops_model.loaders import load_bars
from stockops_model.messages import decode_bar, encode_bar
from stockops_model.sink import Sink, SinkConfig
from stockops_model.store import BarStore, FileBackend

DATA = Path(__file__).parents[2] / "data" / "bars-2018-1min"
TOPIC = "bars"


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    return normalise_frame(load_bars(DATA))


async def feed(bus: MemoryBus, frame: pd.DataFrame) -> None:
    async def bars() -> AsyncIterator[Bar]:
        for bar in frame_to_bars(frame):
            yield bar

    await publish_bars(bars(), bus.publisher(), TOPIC)


def store_on(root: Path) -> BarStore:
    return BarStore(FileBackend(root), "bars")


async def drain(bus: MemoryBus, root: Path, **config: object) -> Sink:
    sink = Sink(bus, store_on(root), SinkConfig(topic=TOPIC, drain=True, **config))  # type: ignore[arg-type]
    await asyncio.wait_for(sink.run(asyncio.Event()), timeout=120)
    return sink


async def stored(root: Path) -> pd.DataFrame:
    return await store_on(root).read(["AMZN", "AXP"])


async def test_every_bar_lands_once_with_source_values(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    bus = MemoryBus(partitions=3)
    await feed(bus, source)
    sink = await drain(bus, tmp_path, batch_max=500)
    pd.testing.assert_frame_equal(await stored(tmp_path), source)
    assert sink.stats.bars == len(source)
    assert sink.stats.batches >= len(source) // 500
    committed = bus.committed(TOPIC, "stockops-sink")
    assert sum(committed.values()) == len(bus.records(TOPIC))


async def test_messages_are_keyed_by_symbol_so_a_ticker_stays_in_one_partition(
    source: pd.DataFrame,
) -> None:
    bus = MemoryBus(partitions=4)
    await feed(bus, source)
    partitions: dict[bytes, set[int]] = {}
    for rec in bus.records(TOPIC):
        assert rec.key == decode_bar(rec.value).symbol.encode()
        partitions.setdefault(rec.key, set()).add(rec.partition)
    assert all(len(p) == 1 for p in partitions.values())


async def test_malformed_messages_go_to_the_dlq_with_their_reason(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    bus = MemoryBus(partitions=2)
    good = source.iloc[:600]
    bad_bar = json.loads(encode_bar(frame_to_bars(source.iloc[:1])[0]))
    bad_bar["low"] = bad_bar["high"] * 2  # impossible prices
    malformed: list[bytes] = [
        b"{not json",
        json.dumps({"v": 1, "symbol": "AMZN"}).encode(),
        json.dumps(bad_bar).encode(),
        json.dumps({**bad_bar, "low": 1.0, "v": 2}).encode(),
        b"\xff\xfe",
    ]
    bars = frame_to_bars(good)
    for i, bar in enumerate(bars):
        bus.append(TOPIC, encode_bar(bar), bar.symbol.encode())
        if i % 100 == 0:
            bus.append(TOPIC, malformed[(i // 100) % len(malformed)], b"AMZN")
    n_bad = sum(1 for r in bus.records(TOPIC) if r.value in malformed)
    sink = await drain(bus, tmp_path, batch_max=128)
    pd.testing.assert_frame_equal(
        await store_on(tmp_path).read(["AMZN", "AXP"]), normalise_frame(good)
    )
    dead = bus.records(dlq_topic(TOPIC))
    assert len(dead) == n_bad == sink.stats.dead_lettered
    originals = {(r.partition, r.offset): r for r in bus.records(TOPIC)}
    for rec in dead:
        headers = dict(rec.headers)
        where = (int(headers[ORIGINAL_PARTITION_HEADER]), int(headers[ORIGINAL_OFFSET_HEADER]))
        assert originals[where].value == rec.value
        with pytest.raises(BarValidationError) as why:
            decode_bar(rec.value)
        assert headers[REASON_HEADER].decode() == str(why.value)
    assert len({(r.partition, r.offset) for r in dead}) == n_bad


async def test_a_bar_valid_as_a_message_but_not_storable_is_dead_lettered_not_a_crash_loop(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    # 2300 is a valid datetime, so decode_bar accepts it, but it lies outside pandas'
    # nanosecond range (1677-2262): the batch's frame cannot hold it. Before, that raised
    # out of the batch uncommitted, so every restart died on the same batch. Likewise
    # 1677-09-21T00:13Z: inside that range, but its US/Eastern day is not, so the store
    # cannot name its day object.
    bus = MemoryBus(partitions=1)
    good = source.iloc[:300]
    template = json.loads(encode_bar(frame_to_bars(source.iloc[:1])[0]))
    unstorable = [
        json.dumps({**template, "ts": ts}).encode()
        for ts in ("2300-01-03T14:30:00Z", "1677-09-21T00:13:00Z")
    ]
    for value in unstorable:
        decode_bar(value)  # the message schema really does accept it
    for i, bar in enumerate(frame_to_bars(good)):
        bus.append(TOPIC, encode_bar(bar), bar.symbol.encode())
        if i in (150, 160):
            bus.append(TOPIC, unstorable[(150, 160).index(i)], b"AMZN")
    sink = await drain(bus, tmp_path, batch_max=128)
    pd.testing.assert_frame_equal(await stored(tmp_path), normalise_frame(good))
    dead = bus.records(dlq_topic(TOPIC))
    assert [r.value for r in dead] == unstorable
    assert all(dict(r.headers)[REASON_HEADER].decode().startswith("ts: ") for r in dead)
    assert sink.stats.dead_lettered == len(unstorable)
    assert sink.stats.bars == len(good)
    committed = bus.committed(TOPIC, "stockops-sink")
    assert sum(committed.values()) == len(bus.records(TOPIC))


class CrashingSubscription(MemorySubscription):
    """Dies like a killed process after the store write and before the n-th commit."""

    def __init__(self, bus: MemoryBus, topic: str, group: str, crash_on_commit: int) -> None:
        super().__init__(bus, topic, group)
        self.crash_on_commit = crash_on_commit

    async def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        self.crash_on_commit -= 1
        if self.crash_on_commit == 0:
            raise SystemExit("simulated crash between write and commit")
        return await super().commit(offsets)


class CrashingBus(MemoryBus):
    crash_on_commit = 3

    def subscription(
        self,
        topic: str,
        group: str,
        *,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
    ) -> Subscription:
        return CrashingSubscription(self, topic, group, self.crash_on_commit)


async def test_a_crash_between_write_and_commit_neither_loses_nor_duplicates(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    bus = CrashingBus(partitions=1)
    await feed(bus, source)
    crashed = Sink(bus, store_on(tmp_path), SinkConfig(topic=TOPIC, batch_max=400, drain=True))
    with pytest.raises(SystemExit):
        await crashed.run(asyncio.Event())
    landed = await stored(tmp_path)
    committed = sum(bus.committed(TOPIC, "stockops-sink").values())
    # The third batch was written but not committed: the store is ahead of the group.
    assert committed == 800
    assert len(landed) == 1200
    bus.crash_on_commit = -1
    bus._active.clear()  # the crashed member is gone
    restarted = await drain(bus, tmp_path, batch_max=400)
    pd.testing.assert_frame_equal(await stored(tmp_path), source)
    assert restarted.stats.bars == len(source) - 800  # the uncommitted batch came back


async def test_stop_finishes_the_batch_in_hand_and_commits_it(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    bus = MemoryBus(partitions=1)
    await feed(bus, source)
    stop = asyncio.Event()
    store = store_on(tmp_path)
    original_write = store.write

    async def write_then_stop(frame: pd.DataFrame):  # type: ignore[no-untyped-def]
        stop.set()  # SIGTERM arrives while the first batch is being written
        return await original_write(frame)

    store.write = write_then_stop  # type: ignore[method-assign]
    sink = Sink(bus, store, SinkConfig(topic=TOPIC, batch_max=1000))
    await asyncio.wait_for(sink.run(stop), timeout=60)
    assert sink.stats.batches == 1
    assert bus.committed(TOPIC, "stockops-sink") == {0: 1000}
    assert len(await stored(tmp_path)) == 1000


async def test_a_store_outage_is_retried_without_committing(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    from stockops_model.errors import StoreError

    bus = MemoryBus(partitions=1)
    await feed(bus, source.iloc[:300])
    store = store_on(tmp_path)
    original_write = store.write
    failures = {"left": 2}
    commits_seen: list[dict[int, int]] = []

    async def flaky(frame: pd.DataFrame):  # type: ignore[no-untyped-def]
        commits_seen.append(dict(bus.committed(TOPIC, "stockops-sink")))
        if failures["left"]:
            failures["left"] -= 1
            raise StoreError("Blob Storage answered 503")
        return await original_write(frame)

    store.write = flaky  # type: ignore[method-assign]
    sink = Sink(bus, store, SinkConfig(topic=TOPIC, drain=True))
    await asyncio.wait_for(sink.run(asyncio.Event()), timeout=60)
    assert commits_seen[:3] == [{}, {}, {}]
    assert bus.committed(TOPIC, "stockops-sink") == {0: 300}
    assert len(await stored(tmp_path)) == 300


async def test_an_outage_longer_than_the_limit_fails_the_run_uncommitted(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    from stockops_model.errors import StoreError

    bus = MemoryBus(partitions=1)
    await feed(bus, source.iloc[:10])
    store = store_on(tmp_path)

    async def down(frame: pd.DataFrame):  # type: ignore[no-untyped-def]
        raise StoreError("Blob Storage is unreachable")

    store.write = down  # type: ignore[method-assign]
    sink = Sink(bus, store, SinkConfig(topic=TOPIC, give_up_after_s=0.5))
    with pytest.raises(StoreError):
        await asyncio.wait_for(sink.run(asyncio.Event()), timeout=30)
    assert bus.committed(TOPIC, "stockops-sink") == {}


def plant_corrupt_day(root: Path, frame: pd.DataFrame) -> tuple[str, bytes]:
    """Put a truncated day object where the first bar of `frame` will be merged."""
    from stockops_model.store import day_object_name, encode_day, trading_day

    first = frame.iloc[0]
    name = day_object_name("bars", first["symbol"], trading_day(first["ts"]))
    bad = encode_day(frame.iloc[:50])[:-40]
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(bad)
    return name, bad


async def test_a_corrupt_day_object_is_quarantined_instead_of_retried_for_ever(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    from stockops_model.store import quarantine_object_name

    name, bad = plant_corrupt_day(tmp_path, source)
    bus = MemoryBus(partitions=1)
    await feed(bus, source)
    # An outage limit far below the run: a retry loop on the corrupt object would fail it.
    sink = await drain(bus, tmp_path, batch_max=500, give_up_after_s=0.5)
    pd.testing.assert_frame_equal(await stored(tmp_path), source)
    assert sink.stats.objects_quarantined == 1
    assert (tmp_path / quarantine_object_name("bars", name, bad)).read_bytes() == bad
    assert sum(bus.committed(TOPIC, "stockops-sink").values()) == len(source)


async def test_metrics_count_stored_bars_and_dead_letters(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    from prometheus_client import REGISTRY

    from stockops_model.sink import SinkMetrics

    bus = MemoryBus(partitions=1)
    await feed(bus, source.iloc[:300])
    bus.append(TOPIC, b"[]", b"AMZN")
    plant_corrupt_day(tmp_path, source.iloc[:300])
    metrics = SinkMetrics()
    sink = Sink(bus, store_on(tmp_path), SinkConfig(topic=TOPIC, drain=True), metrics)
    await asyncio.wait_for(sink.run(asyncio.Event()), timeout=60)
    assert REGISTRY.get_sample_value("stockops_sink_bars_total") == 300
    assert REGISTRY.get_sample_value("stockops_sink_dead_letters_total") == 1
    assert REGISTRY.get_sample_value("stockops_sink_quarantined_objects_total") == 1
    assert REGISTRY.get_sample_value("stockops_sink_batch_seconds_count") == sink.stats.batches


async def test_a_dead_letter_is_the_original_record_with_context_in_headers(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    bus = MemoryBus(partitions=1)
    await feed(bus, source.iloc[:20])
    original = bus.append(TOPIC, b'{"v": 1, "symbol": "AMZN"', b"AMZN", [("trace-id", b"abc")])
    await drain(bus, tmp_path)
    (dead,) = bus.records(dlq_topic(TOPIC))
    assert (dead.key, dead.value) == (original.key, original.value)  # byte for byte
    headers = dict(dead.headers)
    assert headers["trace-id"] == b"abc"  # the producer's own headers travel along
    assert headers[ORIGINAL_TOPIC_HEADER] == TOPIC.encode()
    assert headers[ORIGINAL_PARTITION_HEADER] == b"0"
    assert headers[ORIGINAL_OFFSET_HEADER] == str(original.offset).encode()
    assert headers[ORIGINAL_TIMESTAMP_HEADER] == str(original.timestamp_ms).encode()
    assert headers[REASON_HEADER].startswith(b"bad JSON")
    assert PAYLOAD_REF_HEADER not in headers


async def test_a_dead_letter_too_large_for_the_dlq_is_kept_in_the_store_with_a_pointer(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    bus = MemoryBus(partitions=1)
    await feed(bus, source.iloc[:100])
    huge = b"\xff" + b"not a bar " * 500  # 5,001 bytes, not UTF-8
    small = b"[]"
    big_rec = bus.append(TOPIC, huge, b"AMZN", [("trace-id", b"t1")])
    bus.append(TOPIC, small, b"AXP")
    sink = await drain(bus, tmp_path, dlq_max_bytes=2_000, give_up_after_s=5)

    assert len(await stored(tmp_path)) == 100
    assert sum(bus.committed(TOPIC, "stockops-sink").values()) == 102
    pointer, plain = bus.records(dlq_topic(TOPIC))
    assert plain.value == small  # a small dead letter is unaffected
    assert pointer.key == b"AMZN"
    assert pointer.value == b""
    assert record_size(pointer.key, pointer.value, pointer.headers) <= 2_000
    headers = dict(pointer.headers)
    assert headers[REASON_HEADER].startswith(b"not UTF-8")
    assert headers[ORIGINAL_OFFSET_HEADER] == str(big_rec.offset).encode()
    assert headers[PAYLOAD_BYTES_HEADER] == str(len(huge)).encode()
    assert headers["trace-id"] == b"t1"
    ref = headers[PAYLOAD_REF_HEADER].decode()
    expected = f"bars/_dead-letters/{TOPIC}/0/{big_rec.offset}"
    assert ref == f"{tmp_path.as_uri()}/{expected}"
    assert (tmp_path / expected).read_bytes() == huge  # not one byte lost
    assert sink.stats.dead_lettered == 2
    assert sink.stats.dead_letters_offloaded == 1


async def test_a_tombstone_is_dead_lettered_as_a_tombstone(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    bus = MemoryBus(partitions=1)
    await feed(bus, source.iloc[:20])
    original = bus.append(TOPIC, None, b"AMZN", [("trace-id", b"gone")])
    await drain(bus, tmp_path)
    (dead,) = bus.records(dlq_topic(TOPIC))
    assert dead.value is None  # not an empty value: compaction still sees a tombstone
    assert dead.key == original.key
    headers = dict(dead.headers)
    assert headers["trace-id"] == b"gone"
    assert headers[REASON_HEADER] == b"empty message (tombstone)"
    assert headers[ORIGINAL_OFFSET_HEADER] == str(original.offset).encode()


async def test_a_dead_letter_the_bus_refuses_as_too_large_is_kept_in_the_store(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    # Like a DLQ topic's max.message.bytes: the bars (published through the bus) fit.
    bus = MemoryBus(partitions=1, max_message_bytes=1_500)
    await feed(bus, source.iloc[:100])
    refused = b"\xff" + b"x" * 3_000  # under --dlq-max-bytes, over what the DLQ takes
    big = bus.append(TOPIC, refused, b"AMZN")
    bus.append(TOPIC, b"[]", b"AXP")
    sink = await drain(bus, tmp_path, give_up_after_s=5)

    assert sum(bus.committed(TOPIC, "stockops-sink").values()) == 102
    dead = bus.records(dlq_topic(TOPIC))
    pointers = [r for r in dead if PAYLOAD_REF_HEADER in dict(r.headers)]
    assert [r.value for r in dead if r not in pointers] == [b"[]"]
    (pointer,) = pointers
    headers = dict(pointer.headers)
    assert headers[ORIGINAL_OFFSET_HEADER] == str(big.offset).encode()
    kept = tmp_path / f"bars/_dead-letters/{TOPIC}/0/{big.offset}"
    assert kept.read_bytes() == refused
    assert sink.stats.dead_letters_offloaded == 1


async def test_a_dlq_that_refuses_even_the_pointer_stops_the_sink_uncommitted(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    bus = MemoryBus(partitions=1, max_message_bytes=100)  # less than any pointer record
    for bar in frame_to_bars(source.iloc[:10]):
        bus.append(TOPIC, encode_bar(bar), bar.symbol.encode())
    bus.append(TOPIC, b"not json", b"AMZN")
    sink = Sink(bus, store_on(tmp_path), SinkConfig(topic=TOPIC, drain=True))
    with pytest.raises(DeadLetterError, match=f"max.message.bytes of {dlq_topic(TOPIC)}"):
        await asyncio.wait_for(sink.run(asyncio.Event()), timeout=60)
    assert bus.committed(TOPIC, "stockops-sink") == {}
    assert bus.records(dlq_topic(TOPIC)) == []
