"""Dead-letter records: context headers, the reason cap, the pointer that replaces a big one.

The whole policy (a sink dead-lettering through the bus, the store offload) is exercised in
test_sink.py on the in-memory bus and in tests/integration/test_data_plane.py on Kafka.
"""

from __future__ import annotations

from stockops_model.bus import Record
from stockops_model.deadletters import (
    HEADERS_DROPPED_HEADER,
    ORIGINAL_OFFSET_HEADER,
    PAYLOAD_BYTES_HEADER,
    PAYLOAD_REF_HEADER,
    REASON_HEADER,
    REASON_MAX_CHARS,
    DeadLetter,
    dlq_topic,
    record_size,
)

TOPIC = "bars"


def test_the_dlq_of_a_topic_is_named_after_it() -> None:
    assert dlq_topic(TOPIC) == "bars.dlq"


def test_a_long_reason_is_capped_so_it_cannot_double_the_record() -> None:
    rec = Record(TOPIC, 0, 7, b"AMZN", b"x" * 50)
    letter = DeadLetter.of(rec, "r" * 100_000)
    reason = dict(letter.headers)[REASON_HEADER].decode()
    assert len(reason) == REASON_MAX_CHARS
    assert reason.startswith("rrr")
    assert letter.size < 50 + 2 * REASON_MAX_CHARS
    assert record_size(b"k", b"v" * 1000, []) > 1000


def test_a_pointer_keeps_key_headers_and_context_but_not_the_value() -> None:
    rec = Record(TOPIC, 2, 41, b"AMZN", b"y" * 5000, (("trace-id", b"t1"),))
    pointer = DeadLetter.of(rec, "bad JSON").pointing_to("file:///s/x", 5000, 1000)
    headers = dict(pointer.headers)
    assert (pointer.key, pointer.value) == (b"AMZN", b"")
    assert headers["trace-id"] == b"t1"
    assert headers[ORIGINAL_OFFSET_HEADER] == b"41"
    assert headers[PAYLOAD_REF_HEADER] == b"file:///s/x"
    assert headers[PAYLOAD_BYTES_HEADER] == b"5000"
    assert pointer.size <= 1000


def test_a_pointer_drops_original_headers_only_when_they_alone_exceed_the_limit() -> None:
    rec = Record(TOPIC, 0, 1, b"AMZN", b"z" * 10, (("huge", b"h" * 3000),))
    pointer = DeadLetter.of(rec, "bad JSON").pointing_to("file:///s/y", 10, 1000)
    headers = dict(pointer.headers)
    assert "huge" not in headers
    assert headers[HEADERS_DROPPED_HEADER] == b"1"
    assert headers[PAYLOAD_REF_HEADER] == b"file:///s/y"
