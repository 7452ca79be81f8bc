"""Dead letters of the sink: the DLQ record of a malformed message, and the too-large policy.

A malformed message (bad JSON, a schema violation, impossible prices, a bar the store
cannot hold) goes to the dead-letter topic ``<topic>.dlq``. Dead letters follow Kafka
Connect's ``errors.deadletterqueue.context.headers.enable``: the DLQ record's value is the
original value byte for byte (a tombstone stays a tombstone, a null value), its key is the
original key, the original headers are kept, and the context is in headers:
``stockops-error-reason`` (the decoder's reason, at most 1,000 characters),
``stockops-original-topic``, ``stockops-original-partition``, ``stockops-original-offset``
and ``stockops-original-timestamp`` (milliseconds since the epoch). A dead letter is
therefore a few hundred bytes larger than the message it replaces, which matters for a
message close to the topic's ``max.message.bytes``.

Policy for a dead letter the DLQ topic cannot take (it is larger than ``--dlq-max-bytes``,
default 1,000,000, or the broker or producer refuses it as too large, which the bus reports
as `MessageTooLargeError`; a refused batch is re-sent one record at a time to find the
culprit): the raw value is written unchanged to the bar store at
``{prefix}/_dead-letters/{topic}/{partition}/{offset}`` (the name makes a rewrite after a
crash harmless) and the DLQ gets a small record instead: same key, empty value, the same
context headers plus ``stockops-payload-ref`` (the URL of the stored bytes) and
``stockops-payload-bytes``. It is logged as an error and counted
(``stockops_sink_dead_letters_offloaded_total``). Nothing is lost and the batch commits,
so one oversized message can never crash-loop the sink. Only if even that pointer record
is refused (a DLQ topic configured absurdly small) does the sink stop with
`DeadLetterError` (exit 3) naming the record and the fix; its batch stays uncommitted.
Set ``--dlq-max-bytes`` to at most the DLQ topic's ``max.message.bytes`` (and the
producer's 1 MiB request limit); a record above that never reaches the broker.

The DLQ is at-least-once only: after a crash a malformed message can appear twice there;
its original topic/partition/offset headers identify it. Outages are not handled here:
every step runs under the sink's retry (see `stockops_model.sink`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from stockops_model.errors import DeadLetterError, MessageTooLargeError

if TYPE_CHECKING:
    from stockops_model.bus import Publisher, Record
    from stockops_model.store import BarStore

log = logging.getLogger(__name__)

_T = TypeVar("_T")

REASON_HEADER = "stockops-error-reason"
ORIGINAL_TOPIC_HEADER = "stockops-original-topic"
ORIGINAL_PARTITION_HEADER = "stockops-original-partition"
ORIGINAL_OFFSET_HEADER = "stockops-original-offset"
ORIGINAL_TIMESTAMP_HEADER = "stockops-original-timestamp"
PAYLOAD_REF_HEADER = "stockops-payload-ref"
PAYLOAD_BYTES_HEADER = "stockops-payload-bytes"
HEADERS_DROPPED_HEADER = "stockops-original-headers-dropped"
REASON_MAX_CHARS = 1000
# Below Kafka's default max.message.bytes (1,048,588) and aiokafka's max_request_size
# (1,048,576), leaving room for the record batch around one record.
DEFAULT_DLQ_MAX_BYTES = 1_000_000
# A record batch's fixed header, and the worst case of one record's varints and attributes.
_BATCH_OVERHEAD = 61
_RECORD_OVERHEAD = 21
_HEADER_OVERHEAD = 10


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return f"{topic}.dlq"


class Retry(Protocol):
    """Runs an action, retrying outages (the sink's `_retry`, bound to its stop event)."""

    def __call__(self, what: str, action: Callable[[], Awaitable[_T]]) -> Awaitable[_T]: ...


@dataclass(frozen=True)
class DeadLetter:
    """The DLQ record of one malformed message: original key and value, context headers."""

    record: Record
    reason: str
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    payload_ref: str | None = None

    @classmethod
    def of(cls, rec: Record, reason: str) -> DeadLetter:
        """The original value unchanged (None for a tombstone), original headers, the context."""
        return cls(rec, reason, rec.value, (*rec.headers, *_context_headers(rec, reason)))

    @property
    def key(self) -> bytes | None:
        return self.record.key

    @property
    def size(self) -> int:
        """An upper bound of this record's size in a produce request of its own."""
        return record_size(self.key, self.value, self.headers)

    def pointing_to(self, ref: str, length: int, limit: int) -> DeadLetter:
        """The small record that replaces this one when its value is kept at `ref`."""
        rec = self.record
        context = (
            *_context_headers(rec, self.reason),
            (PAYLOAD_REF_HEADER, ref.encode()),
            (PAYLOAD_BYTES_HEADER, str(length).encode()),
        )
        pointer = DeadLetter(rec, self.reason, b"", (*rec.headers, *context), ref)
        if pointer.size <= limit or not rec.headers:
            return pointer
        # Only headers larger than the limit themselves get here; say they were left out.
        dropped = (HEADERS_DROPPED_HEADER, str(len(rec.headers)).encode())
        return DeadLetter(rec, self.reason, b"", (*context, dropped), ref)


class DeadLetterQueue:
    """Publishes a sink's dead letters to ``<topic>.dlq``, keeping too-large ones in the store.

    `on_offload` is called once per dead letter kept in the store (the sink counts them).
    """

    def __init__(
        self,
        topic: str,
        store: BarStore,
        *,
        max_bytes: int = DEFAULT_DLQ_MAX_BYTES,
        on_offload: Callable[[], None] | None = None,
    ) -> None:
        self.topic = dlq_topic(topic)
        self.store = store
        self.max_bytes = max_bytes
        self._on_offload = on_offload

    async def send(
        self, rejected: Sequence[tuple[Record, str]], dlq: Publisher, retry: Retry
    ) -> None:
        """Publish the batch's dead letters and wait for their acknowledgements.

        Raises:
            DeadLetterError: the DLQ topic refuses even a pointer record.
            ServiceUnavailableError, StoreError: an outage outlasted `retry`'s patience.
        """
        topic = self.topic
        limit = self.max_bytes
        letters = [DeadLetter.of(rec, reason) for rec, reason in rejected]
        for i, letter in enumerate(letters):
            if letter.size > limit:
                why = f"{letter.size} bytes, over --dlq-max-bytes {limit}"
                offload = functools.partial(self._offload, letter, why)
                letters[i] = await retry("keep an oversized dead letter", offload)

        async def send_all() -> None:
            try:
                for letter in letters:
                    await self._publish(dlq, letter)
                await dlq.flush()
            except MessageTooLargeError as exc:
                # Kafka refuses a whole produce batch for one oversized record: find it.
                log.warning("%s refused a batch as too large (%s); sending one by one", topic, exc)
                for i, letter in enumerate(letters):
                    letters[i] = await self._send_one(dlq, letter)

        # The list is updated in place, so a retry after an outage re-sends the pointers.
        await retry("dead-letter malformed messages", send_all)

    async def _send_one(self, dlq: Publisher, letter: DeadLetter) -> DeadLetter:
        try:
            await self._publish(dlq, letter)
            await dlq.flush()
            return letter
        except MessageTooLargeError as exc:
            if letter.payload_ref is not None:
                raise self._pointer_refused(letter, exc) from exc
            why = str(exc)
        pointer = await self._offload(letter, why)
        try:
            await self._publish(dlq, pointer)
            await dlq.flush()
        except MessageTooLargeError as exc:
            raise self._pointer_refused(pointer, exc) from exc
        return pointer

    async def _publish(self, dlq: Publisher, letter: DeadLetter) -> None:
        await dlq.publish(self.topic, letter.value, key=letter.key, headers=letter.headers)

    async def _offload(self, letter: DeadLetter, why: str) -> DeadLetter:
        """Keep the raw value in the store; returns the small DLQ record that points to it."""
        rec = letter.record
        value = rec.value or b""
        ref = await self.store.put_dead_letter(
            rec.topic,
            rec.partition,
            rec.offset,
            value,
            metadata={
                "topic": rec.topic,
                "partition": str(rec.partition),
                "offset": str(rec.offset),
            },
        )
        pointer = letter.pointing_to(ref, len(value), self.max_bytes)
        if self._on_offload is not None:
            self._on_offload()
        log.error(
            "%s:%d@%d is malformed (%s) and too large for the DLQ (%s): its %d bytes are kept "
            "at %s and the DLQ record points there",
            rec.topic,
            rec.partition,
            rec.offset,
            letter.reason,
            why,
            len(value),
            ref,
        )
        return pointer

    def _pointer_refused(self, letter: DeadLetter, exc: Exception) -> DeadLetterError:
        rec = letter.record
        topic = self.topic
        return DeadLetterError(
            f"cannot dead-letter {rec.topic}:{rec.partition}@{rec.offset}: {topic} refuses even "
            f"a {letter.size}-byte pointer record ({exc}); its value is kept at "
            f"{letter.payload_ref}. Raise max.message.bytes of {topic} (kafka-configs.sh "
            f"--alter --entity-type topics --entity-name {topic} --add-config "
            f"max.message.bytes=1048588) and restart; the batch was not committed"
        )


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """An upper bound of the bytes one Kafka record takes alone in a record batch (v2)."""
    size = _BATCH_OVERHEAD + _RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    return size + sum(_HEADER_OVERHEAD + len(k.encode()) + len(v) for k, v in headers)


def _context_headers(rec: Record, reason: str) -> tuple[tuple[str, bytes], ...]:
    if len(reason) > REASON_MAX_CHARS:
        # A reason can quote the offending value; a huge one must not double the record.
        reason = reason[: REASON_MAX_CHARS - 1] + "\u2026"
    return (
        (REASON_HEADER, reason.encode()),
        (ORIGINAL_TOPIC_HEADER, rec.topic.encode()),
        (ORIGINAL_PARTITION_HEADER, str(rec.partition).encode()),
        (ORIGINAL_OFFSET_HEADER, str(rec.offset).encode()),
        (ORIGINAL_TIMESTAMP_HEADER, str(rec.timestamp_ms).encode()),
    )
