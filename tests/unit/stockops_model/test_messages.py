"""The Kafka wire format of a bar: encode, decode, and the reasons a bad message gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockops_model.bars import Bar
from stockops_model.errors import BarValidationError
from stockops_model.messages import WIRE_VERSION, decode_bar, encode_bar, encode_key

BAR = Bar.parse(
    {
        "symbol": "AAPL",
        "ts": datetime(2018, 2, 16, 14, 30, tzinfo=UTC),
        "open": 172.36,
        "high": 172.47,
        "low": 172.19,
        "close": 172.25,
        "volume": 1667756.0,
        "source": "replay",
    }
)


def test_encoding_is_the_documented_json() -> None:
    payload = json.loads(encode_bar(BAR))
    assert payload == {
        "v": 1,
        "symbol": "AAPL",
        "ts": "2018-02-16T14:30:00Z",
        "open": 172.36,
        "high": 172.47,
        "low": 172.19,
        "close": 172.25,
        "volume": 1667756.0,
        "source": "replay",
    }


def test_the_key_is_the_symbol() -> None:
    assert encode_key(BAR) == b"AAPL"


def test_decode_inverts_encode() -> None:
    assert decode_bar(encode_bar(BAR)) == BAR


@given(
    price=st.floats(min_value=1e-4, max_value=1e7, allow_nan=False, allow_infinity=False),
    minute=st.integers(min_value=0, max_value=60 * 24 * 365 * 30),
    volume=st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
)
def test_round_trip_is_exact_for_any_valid_bar(price: float, minute: int, volume: float) -> None:
    bar = Bar.parse(
        {
            "symbol": "BRK.B",
            "ts": datetime.fromtimestamp(946684800 + minute * 60, UTC),
            "open": price,
            "high": price * 1.01,
            "low": price * 0.99,
            "close": price,
            "volume": volume,
            "source": "yahoo",
        }
    )
    assert decode_bar(encode_bar(bar)) == bar


def message(**changes: object) -> bytes:
    payload = json.loads(encode_bar(BAR))
    payload.update(changes)
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message (tombstone)"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "bad JSON"),
        (b'{"open": NaN}', "bad JSON: NaN is not a valid number"),
        (b"[1, 2]", "message must be a JSON object, got list"),
        (message(v=2), "unsupported message version 2"),
        (message(v=True), "unsupported message version True"),
        (message(v="1"), "unsupported message version '1'"),
        (message(close=-1), "close: "),
        (message(ts="2018-02-16T14:30:00"), "ts: timestamp must carry a time zone"),
        (message(ts="2018-02-16T14:30:05Z"), "not on a minute boundary"),
        (message(open="172.36"), "open: must be a number"),
        (message(extra=1), "extra: Extra inputs are not permitted"),
        (
            b'{"v":1,"symbol":"AAPL","ts":"2018-02-16T14:30:00Z","open":1e400,"high":1,'
            b'"low":1,"close":1,"volume":1,"source":"x"}',
            "open: ",
        ),
    ],
)
def test_bad_messages_raise_only_bar_validation_errors(value: bytes | None, reason: str) -> None:
    with pytest.raises(BarValidationError) as info:
        decode_bar(value)
    assert reason in str(info.value)


def test_missing_version_is_refused() -> None:
    payload = json.loads(encode_bar(BAR))
    del payload["v"]
    expected = f"unsupported message version None, expected {WIRE_VERSION}"
    with pytest.raises(BarValidationError, match=expected):
        decode_bar(json.dumps(payload).encode())
