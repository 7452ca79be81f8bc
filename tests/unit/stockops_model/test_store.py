"""BarStore on the file backend: layout, idempotent merge, conditional writes, reads."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockops_model.bars import normalise_frame
from stockops_model.errors import BarValidationError, CorruptObjectError, StoreError
from stockops_model.loaders import load_bars
from stockops_model.store import (
    BarStore,
    FileBackend,
    PreconditionFailedError,
    StoreLocation,
    connect_backend,
    encode_day,
    open_store,
    quarantine_object_name,
    read_bars,
    validate_storable,
)

DATA = Path(__file__).parents[2] / "data" / "bars-2018-1min"


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    """Real bars: AMZN and AXP, four trading days around the 2018 DST change."""
    return normalise_frame(load_bars(DATA))


def store_on(path: Path) -> BarStore:
    return BarStore(FileBackend(path), "bars")


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*.parquet")}


async def test_write_then_read_returns_every_bar_once_with_source_values(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    store = store_on(tmp_path)
    results = await store.write(source)
    assert {(r.symbol, r.day) for r in results} == {
        (s, d)
        for s in ("AMZN", "AXP")
        for d in pd.to_datetime(["2018-03-08", "2018-03-09", "2018-03-12", "2018-03-13"]).date
    }
    back = await store.read(["AMZN", "AXP"], "2018-03-01", "2018-04-01")
    pd.testing.assert_frame_equal(back, source)
    assert tmp_path / "bars/AXP/2018/03/12.parquet" in snapshot(tmp_path)


async def test_replaying_stored_bars_changes_no_byte(tmp_path: Path, source: pd.DataFrame) -> None:
    store = store_on(tmp_path)
    await store.write(source)
    before = snapshot(tmp_path)
    fresh = store_on(tmp_path)  # no cache: must read, merge and find nothing new
    again = await fresh.write(source.sample(frac=1.0, random_state=1))
    assert not any(r.written for r in again)
    assert all(r.added == 0 for r in again)
    assert snapshot(tmp_path) == before


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=60, max_value=400), min_size=1, max_size=4),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_any_replay_order_and_chunking_yields_the_same_bytes(
    tmp_path_factory: pytest.TempPathFactory, source: pd.DataFrame, sizes: list[int], seed: int
) -> None:
    one_day = source[(source["symbol"] == "AXP") & (source["ts"] < "2018-03-09")]
    shuffled = one_day.sample(frac=1.0, random_state=seed)
    at_once = encode_day(one_day)
    root = tmp_path_factory.mktemp("replay")

    async def replay() -> None:
        store = store_on(root)
        pos, i = 0, 0
        while pos < len(shuffled):
            size = sizes[i % len(sizes)]
            await store.write(shuffled.iloc[pos : pos + size])
            # Re-apply part of what was already written, as after a crash before a commit.
            await store.write(shuffled.iloc[max(0, pos - size // 2) : pos + size])
            pos, i = pos + size, i + 1

    asyncio.run(replay())
    assert (root / "bars/AXP/2018/03/08.parquet").read_bytes() == at_once


async def test_an_incoming_bar_replaces_the_stored_bar_with_the_same_timestamp(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    store = store_on(tmp_path)
    day = source[(source["symbol"] == "AMZN") & (source["ts"] < "2018-03-09")]
    await store.write(day)
    corrected = day.iloc[[10]].copy()
    corrected["close"] = corrected["high"]
    corrected["source"] = "yahoo"
    await store.write(corrected)
    back = await store.read(["AMZN"], "2018-03-08", "2018-03-09")
    assert len(back) == len(day)
    row = back[back["ts"] == corrected["ts"].iloc[0]].iloc[0]
    assert row["close"] == corrected["close"].iloc[0]
    assert row["source"] == "yahoo"


async def test_two_writers_never_lose_each_others_bars(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    day = source[(source["symbol"] == "AMZN") & (source["ts"] < "2018-03-09")]
    odd, even = day.iloc[1::2], day.iloc[::2]
    a, b = store_on(tmp_path), store_on(tmp_path)
    await a.write(odd.iloc[:5])  # a now caches a version b is about to replace
    await asyncio.gather(
        *(a.write(odd.iloc[i : i + 20]) for i in range(5, len(odd), 20)),
        *(b.write(even.iloc[i : i + 20]) for i in range(0, len(even), 20)),
    )
    back = await store_on(tmp_path).read(["AMZN"], "2018-03-08", "2018-03-09")
    pd.testing.assert_frame_equal(back, normalise_frame(day))


async def test_file_backend_writes_are_compare_and_swap(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    etag = await backend.put("x/1.parquet", b"one", if_match=None, metadata={})
    with pytest.raises(PreconditionFailedError):
        await backend.put("x/1.parquet", b"again", if_match=None, metadata={})
    with pytest.raises(PreconditionFailedError):
        await backend.put("x/1.parquet", b"two", if_match='"stale"', metadata={})
    etag2 = await backend.put("x/1.parquet", b"two", if_match=etag, metadata={})
    assert etag2 != etag
    assert await backend.get("x/1.parquet") == (b"two", etag2)
    assert await backend.get("x/2.parquet") is None
    with pytest.raises(StoreError, match="escapes"):
        await backend.get("../outside")


async def test_list_days_gives_lineage_matching_what_read_downloaded(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    store = store_on(tmp_path)
    await store.write(source)
    listed = await store.list_days(["AXP"], date(2018, 3, 9), date(2018, 3, 13))
    assert [d.day for d in listed] == [date(2018, 3, 9), date(2018, 3, 12)]
    frame, lineage = await store.read_with_lineage(["AXP"], date(2018, 3, 9), date(2018, 3, 13))
    assert [(d.name, d.etag, d.rows) for d in lineage] == [(d.name, d.etag, d.rows) for d in listed]
    assert sum(d.rows or 0 for d in listed) == len(frame)
    expected = source[
        (source["symbol"] == "AXP") & (source["ts"] >= "2018-03-09") & (source["ts"] < "2018-03-13")
    ]
    assert len(frame) == len(expected)


async def test_read_is_half_open_and_filters_symbols(tmp_path: Path, source: pd.DataFrame) -> None:
    store = store_on(tmp_path)
    await store.write(source)
    start, end = (
        pd.Timestamp("2018-03-09 15:00", tz="UTC"),
        pd.Timestamp("2018-03-12 14:00", tz="UTC"),
    )
    back = await store.read(["AMZN"], start, end)
    assert set(back["symbol"]) == {"AMZN"}
    assert back["ts"].min() >= start
    assert back["ts"].max() < end
    expected = source[(source["symbol"] == "AMZN") & (source["ts"] >= start) & (source["ts"] < end)]
    pd.testing.assert_frame_equal(back, expected.reset_index(drop=True))
    assert (await store.read(["MSFT"], start, end)).empty


def test_store_urls_parse_or_fail_clearly() -> None:
    loc = StoreLocation.parse("azblob://bars-container/prod/bars")
    assert (loc.scheme, loc.container, loc.prefix) == ("azblob", "bars-container", "prod/bars")
    loc = StoreLocation.parse("file:///var/lib/stockops")
    assert loc.root == Path("/var/lib/stockops")
    for bad in ("s3://bucket/x", "file://relative/path", "azblob:///nocontainer"):
        with pytest.raises(StoreError):
            StoreLocation.parse(bad)


def test_a_file_location_without_a_root_is_a_store_error_not_an_assert() -> None:
    # A hand-built location (parse always sets root); an assert would vanish under -O.
    with pytest.raises(StoreError, match="no root path"):
        connect_backend(StoreLocation(scheme="file"))


async def test_a_bar_too_early_to_file_by_eastern_day_is_a_validation_error(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    # 00:13 UTC on 1677-09-21 is inside pandas' range, but its US/Eastern day is not:
    # the store cannot name its day object and must say so as invalid data.
    frame = source.iloc[:2].copy()
    frame.loc[frame.index[0], "ts"] = pd.Timestamp("1677-09-21T00:13:00Z")
    with pytest.raises(BarValidationError, match="ts: "):
        validate_storable(frame)
    with pytest.raises(BarValidationError, match="ts: "):
        await store_on(tmp_path).write(frame)
    assert validate_storable(source).equals(source)


def test_read_bars_is_usable_from_synchronous_code(tmp_path: Path, source: pd.DataFrame) -> None:
    async def write() -> None:
        async with open_store(tmp_path.as_uri()) as store:
            await store.write(source)

    asyncio.run(write())
    frame, lineage = read_bars(tmp_path.as_uri(), ["AMZN", "AXP"], "2018-03-08", "2018-03-14")
    pd.testing.assert_frame_equal(frame, source)
    assert len(lineage) == 8


def corrupt_versions(day: pd.DataFrame) -> dict[str, bytes]:
    """Three ways a stored day object can be unreadable, built from a real one."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    good = encode_day(day)
    other = io.BytesIO()
    pq.write_table(pa.table({"symbol": ["AMZN"], "price": [1.0]}), other)
    return {
        "truncated": good[: len(good) // 2],
        "not-parquet": b"PK\x03\x04 a zip archive, not Parquet",
        "wrong-schema": other.getvalue(),
    }


@pytest.mark.parametrize("kind", ["truncated", "not-parquet", "wrong-schema"])
async def test_an_unreadable_day_object_is_quarantined_and_the_day_rewritten(
    tmp_path: Path, source: pd.DataFrame, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    day = source[(source["symbol"] == "AMZN") & (source["ts"] < "2018-03-09")]
    bad = corrupt_versions(day)[kind]
    name = "bars/AMZN/2018/03/08.parquet"
    (tmp_path / name).parent.mkdir(parents=True)
    (tmp_path / name).write_bytes(bad)

    # A reader names the blob instead of surfacing a bare pyarrow error.
    with pytest.raises(CorruptObjectError) as info:
        await store_on(tmp_path).read(["AMZN"], "2018-03-08", "2018-03-09")
    assert info.value.name == f"{tmp_path.as_uri()}/{name}"
    assert name in str(info.value)
    assert "not readable Parquet" in str(info.value)

    (result,) = await store_on(tmp_path).write(day.iloc[:100])
    copy = quarantine_object_name("bars", name, bad)
    assert result.quarantined == copy
    assert copy.startswith("bars/_quarantine/AMZN/2018/03/08.parquet.")
    assert (tmp_path / copy).read_bytes() == bad  # not one byte lost
    assert result.written
    assert result.rows == 100
    assert any(name in r.getMessage() and copy in r.getMessage() for r in caplog.records)
    back = await store_on(tmp_path).read(["AMZN"], "2018-03-08", "2018-03-09")
    pd.testing.assert_frame_equal(back, normalise_frame(day.iloc[:100]))
    # Later writes merge as usual; the quarantine folder is never taken for a symbol's.
    (again,) = await store_on(tmp_path).write(day)
    assert again.quarantined is None
    assert again.added == len(day) - 100
    assert [d.name for d in await store_on(tmp_path).list_days(["AMZN"])] == [name]


async def test_the_same_corrupt_bytes_are_quarantined_once_and_distinct_ones_apart(
    tmp_path: Path, source: pd.DataFrame
) -> None:
    day = source[(source["symbol"] == "AXP") & (source["ts"] < "2018-03-09")]
    versions = corrupt_versions(day)
    path = tmp_path / "bars/AXP/2018/03/08.parquet"
    path.parent.mkdir(parents=True)
    copies = []
    for bad in (versions["truncated"], versions["truncated"], versions["not-parquet"]):
        path.write_bytes(bad)
        (result,) = await store_on(tmp_path).write(day.iloc[:10])
        copies.append(result.quarantined)
    assert copies[0] == copies[1] != copies[2]
    kept = sorted((tmp_path / "bars/_quarantine").rglob("*.parquet.*"))
    assert sorted(p.read_bytes() for p in kept) == sorted(
        {versions["truncated"], versions["not-parquet"]}
    )
