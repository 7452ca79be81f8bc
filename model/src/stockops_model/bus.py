"""The message bus between `feed` and `sink`: Kafka in a cluster, an in-memory bus locally.

Two small interfaces hide which one is used:

* `Publisher.publish(topic, value, key=..., headers=...)` queues a message (a value of
  None is a tombstone); `flush()` returns once every queued message is acknowledged
  (raising if one failed). A message refused for its size raises `MessageTooLargeError`
  (from `publish` or `flush`), never `ServiceUnavailableError`: retrying cannot help.
* `Subscription.poll(...)` returns records of one consumer group; `commit(offsets)` stores
  the NEXT offset to read per partition. Nothing is committed behind the caller's back, so
  a consumer that commits only after its own durable write is at-least-once.

`KafkaBus` uses aiokafka: an idempotent producer (``enable_idempotence=True``,
``acks=all``, compression), and group consumers with auto-commit off. `MemoryBus` keeps
partitioned logs and committed offsets in the process, for ``stockops up`` (feed and sink in
one process, no broker); it has the same partitioning by key and the same commit semantics,
but allows one live subscription per group (no rebalancing) and does not survive a restart;
its optional ``max_message_bytes`` counts only key, value and header bytes, not Kafka's
record framing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stockops_model.errors import MessageTooLargeError, ServiceUnavailableError

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class Record:
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


class Publisher(Protocol):
    """Sends messages; `flush` is the durability point."""

    async def start(self) -> None: ...

    async def publish(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        """Queue one message; a `value` of None is a tombstone.

        Raises:
            MessageTooLargeError: the message is over the producer's or the bus's size limit.
            ServiceUnavailableError: the bus cannot take it now; retrying may help.
        """
        ...

    async def flush(self) -> None:
        """Wait until every published message is acknowledged; raise if one was not.

        Raises:
            MessageTooLargeError: the broker refused a message (or its batch) as too large.
            ServiceUnavailableError: a message was not acknowledged for another reason.
        """
        ...

    async def stop(self) -> None: ...


class Subscription(Protocol):
    """A consumer-group member on one topic, with explicit commits."""

    async def start(self) -> None: ...

    async def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records` records, waiting at most `timeout_s` for the first."""
        ...

    async def commit(self, offsets: dict[TopicPartitionKey, int]) -> bool:
        """Store, per (topic, partition), the offset of the next record to read.

        Returns False when the group refused the commit because the partitions moved to
        another member (a rebalance); raises `ServiceUnavailableError` on an outage.
        """
        ...

    async def caught_up(self) -> bool:
        """True when this member holds partitions and has read all they contain."""
        ...

    async def stop(self) -> None: ...


class Bus(Protocol):
    """A factory of publishers and subscriptions on one broker (or in memory)."""

    def publisher(self) -> Publisher: ...

    def subscription(
        self,
        topic: str,
        group: str,
        *,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
    ) -> Subscription: ...

    async def ensure_topics(self, topics: Sequence[str]) -> None: ...


# --------------------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class KafkaConfig:
    """Connection and client settings of the Kafka bus (see `settings.DataPlaneSettings`)."""

    bootstrap: str
    client_id: str = "stockops"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = None
    compression: str | None = "gzip"
    linger_ms: int = 20
    partitions: int = 6
    replication_factor: int = 1
    request_timeout_ms: int = 30_000

    def client_options(self) -> dict[str, Any]:
        """Options every aiokafka client of this bus takes."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            opts["ssl_context"] = ssl.create_default_context()
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password
        return opts


async def _start_client(client: Any, bootstrap: str) -> None:
    """Start an aiokafka producer or consumer; on failure stop it and say Kafka is unreachable."""
    try:
        await client.start()
    except Exception as exc:
        await client.stop()
        raise ServiceUnavailableError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc


class KafkaPublisher:
    """Idempotent aiokafka producer: ``acks=all``, no duplicates from its own retries."""

    # Acks we wait for before back-pressuring the caller; bounds memory on a fast replay.
    MAX_PENDING = 20_000

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._producer: Any = None
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(
            **self.config.client_options(),
            acks="all",
            enable_idempotence=True,
            compression_type=self.config.compression,
            linger_ms=self.config.linger_ms,
            max_batch_size=256 * 1024,
        )
        await _start_client(self._producer, self.config.bootstrap)

    async def publish(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        from aiokafka.errors import KafkaError

        try:
            fut = await self._producer.send(topic, value, key=key, headers=list(headers) or None)
        except KafkaError as exc:
            if _too_large(exc):
                raise MessageTooLargeError(
                    f"Kafka producer refused a message to {topic} as too large: {exc}"
                ) from exc
            raise ServiceUnavailableError(f"cannot publish to Kafka topic {topic}: {exc}") from exc
        self._pending.append(fut)
        if len(self._pending) >= self.MAX_PENDING:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        await self._producer.flush()
        results = await asyncio.gather(*pending, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return
        too_large = [e for e in errors if _too_large(e)]
        if too_large:
            # Kafka refuses a whole record batch for one oversized record, so every message
            # of that batch fails the same way: the caller has to find the culprit.
            raise MessageTooLargeError(
                f"Kafka refused {len(too_large)} of {len(pending)} message(s) as too large: "
                f"{too_large[0]}"
            ) from too_large[0]
        raise ServiceUnavailableError(
            f"Kafka did not acknowledge {len(errors)} of {len(pending)} message(s): {errors[0]}"
        )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


def _too_large(exc: BaseException) -> bool:
    """Whether aiokafka refused a message for its size (client-side or by the broker)."""
    from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

    return isinstance(exc, (MessageSizeTooLargeError, RecordListTooLargeError))


class KafkaSubscription:
    """An aiokafka group consumer with auto-commit off and earliest reset."""

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        group: str,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.topic = topic
        self.group = group
        self._on_revoke = on_revoke
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        on_revoke = self._on_revoke

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            # aiokafka awaits this before giving the partitions away, so the member can
            # finish and commit its in-flight batch instead of leaving it to be redelivered.
            async def on_partitions_revoked(self, revoked: Any) -> None:
                if on_revoke is not None and revoked:
                    await on_revoke()

            async def on_partitions_assigned(self, assigned: Any) -> None:
                names = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)
                log.info("assigned partitions %s", names)

        self._consumer = AIOKafkaConsumer(
            **self.config.client_options(),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer.subscribe([self.topic], listener=Listener())
        await _start_client(self._consumer, self.config.bootstrap)

    async def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        from aiokafka.errors import KafkaError

        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=max_records
            )
        except KafkaError as exc:
            raise ServiceUnavailableError(f"cannot fetch from Kafka: {exc}") from exc
        out: list[Record] = []
        for tp, msgs in batches.items():
            for m in msgs:
                out.append(
                    Record(
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=m.offset,
                        key=m.key,
                        value=m.value,
                        headers=tuple(m.headers or ()),
                        timestamp_ms=int(m.timestamp or 0),
                    )
                )
        return out

    async def commit(self, offsets: dict[TopicPartitionKey, int]) -> bool:
        from aiokafka import TopicPartition
        from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

        if not offsets:
            return True
        try:
            await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit refused: %s", exc)
            return False
        except KafkaError as exc:
            raise ServiceUnavailableError(f"cannot commit offsets to Kafka: {exc}") from exc
        return True

    async def caught_up(self) -> bool:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return False
        ends = await self._consumer.end_offsets(assigned)
        for tp in assigned:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


class KafkaBus:
    """Publishers and subscriptions on one Kafka cluster."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config

    def publisher(self) -> Publisher:
        return KafkaPublisher(self.config)

    def subscription(
        self,
        topic: str,
        group: str,
        *,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
    ) -> Subscription:
        return KafkaSubscription(self.config, topic, group, on_revoke)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics with the configured partitions and replication."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(**self.config.client_options())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [t for t in topics if t not in existing]
            if wanted:
                response = await admin.create_topics(
                    [
                        NewTopic(t, self.config.partitions, self.config.replication_factor)
                        for t in wanted
                    ]
                )
                for topic, code, *rest in response.topic_errors:
                    if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a racing creator)
                        raise ServiceUnavailableError(
                            f"Kafka refused to create topic {topic}: error {code} {rest}"
                        )
                log.info("created topic(s) %s", ", ".join(wanted))
        except ServiceUnavailableError:
            raise
        except Exception as exc:
            raise ServiceUnavailableError(
                f"cannot create topics on Kafka at {self.config.bootstrap}: {exc}"
            ) from exc
        finally:
            await admin.close()


# --------------------------------------------------------------------------- in memory


@dataclass
class _Topic:
    partitions: list[list[Record]]


@dataclass
class MemoryBus:
    """A partitioned in-process log with consumer-group offsets, for local mode and tests."""

    partitions: int = 4
    # Like a topic's max.message.bytes, for tests of size refusals; None: no limit.
    max_message_bytes: int | None = None
    _topics: dict[str, _Topic] = field(default_factory=dict)
    _committed: dict[tuple[str, str, int], int] = field(default_factory=dict)
    _active: set[tuple[str, str]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _topic(self, name: str) -> _Topic:
        if name not in self._topics:
            self._topics[name] = _Topic([[] for _ in range(self.partitions)])
        return self._topics[name]

    def append(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers = ()
    ) -> Record:
        """Append one message (partition by CRC32 of the key, like a stable hash partitioner)."""
        t = self._topic(topic)
        partition = zlib.crc32(key) % self.partitions if key else 0
        log_ = t.partitions[partition]
        record = Record(topic, partition, len(log_), key, value, tuple(headers))
        log_.append(record)
        self._changed.set()
        return record

    def records(self, topic: str) -> list[Record]:
        """Every record of a topic, partition by partition (for tests and inspection)."""
        return [r for p in self._topic(topic).partitions for r in p]

    def committed(self, topic: str, group: str) -> dict[int, int]:
        """Committed next offsets of a group, by partition."""
        return {p: o for (g, t, p), o in self._committed.items() if g == group and t == topic}

    def publisher(self) -> Publisher:
        return MemoryPublisher(self)

    def subscription(
        self,
        topic: str,
        group: str,
        *,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
    ) -> Subscription:
        return MemorySubscription(self, topic, group)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        for t in topics:
            self._topic(t)


class MemoryPublisher:
    """Appends synchronously: a published message is immediately durable (in this process)."""

    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus

    async def start(self) -> None:
        return None

    async def publish(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        limit = self.bus.max_message_bytes
        if limit is not None:
            size = len(key or b"") + len(value or b"")
            size += sum(len(k.encode()) + len(v) for k, v in headers)
            if size > limit:
                raise MessageTooLargeError(
                    f"the in-memory bus refused a {size}-byte message to {topic} as too large "
                    f"(max_message_bytes {limit})"
                )
        self.bus.append(topic, value, key, headers)
        # Yield so a consumer in the same loop gets to run during a fast replay.
        await asyncio.sleep(0)

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class MemorySubscription:
    """The only member of its group: owns every partition, resumes from committed offsets."""

    def __init__(self, bus: MemoryBus, topic: str, group: str) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self._positions: list[int] = []

    async def start(self) -> None:
        key = (self.group, self.topic)
        if key in self.bus._active:
            raise RuntimeError(f"group {self.group!r} already has a member on {self.topic!r}")
        self.bus._active.add(key)
        n = len(self.bus._topic(self.topic).partitions)
        self._positions = [
            self.bus._committed.get((self.group, self.topic, p), 0) for p in range(n)
        ]

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        parts = self.bus._topic(self.topic).partitions
        for p, log_ in enumerate(parts):
            room = max_records - len(out)
            if room <= 0:
                break
            chunk = log_[self._positions[p] : self._positions[p] + room]
            self._positions[p] += len(chunk)
            out.extend(chunk)
        return out

    async def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        got = self._take(max_records)
        if got:
            return got
        self.bus._changed.clear()
        try:
            await asyncio.wait_for(self.bus._changed.wait(), timeout_s)
        except TimeoutError:
            return []
        return self._take(max_records)

    async def commit(self, offsets: dict[TopicPartitionKey, int]) -> bool:
        for (topic, partition), offset in offsets.items():
            self.bus._committed[(self.group, topic, partition)] = offset
        return True

    async def caught_up(self) -> bool:
        parts = self.bus._topic(self.topic).partitions
        return all(self._positions[p] >= len(log_) for p, log_ in enumerate(parts))

    async def stop(self) -> None:
        self.bus._active.discard((self.group, self.topic))
