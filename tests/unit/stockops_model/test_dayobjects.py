"""Day objects without I/O: names by US/Eastern trading day, deterministic bytes, the merge.

The store that reads and writes them (conditional writes, quarantine) is tested in
test_store.py.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from stockops_model.bars import normalise_frame
from stockops_model.dayobjects import (
    day_object_name,
    dead_letter_object_name,
    decode_day,
    encode_day,
    frame_to_table,
    merge_day,
    parse_day_object_name,
    quarantine_object_name,
    trading_day,
)
from stockops_model.errors import CorruptObjectError, StoreError
from stockops_model.loaders import load_bars

DATA = Path(__file__).parents[2] / "data" / "bars-2018-1min"


@pytest.fixture(scope="module")
def one_day() -> pd.DataFrame:
    """Real bars: one trading day of AXP."""
    bars = normalise_frame(load_bars(DATA))
    return normalise_frame(bars[(bars["symbol"] == "AXP") & (bars["ts"] < "2018-03-09")])


def test_day_objects_are_named_by_the_eastern_trading_day() -> None:
    # 20:30 ET on 2018-03-12 is already 00:30 UTC on the 13th: it still belongs to the 12th.
    late = pd.Timestamp("2018-03-13 00:30", tz="UTC")
    assert trading_day(late) == date(2018, 3, 12)
    name = day_object_name("bars", "AMZN", trading_day(late))
    assert name == "bars/AMZN/2018/03/12.parquet"
    assert parse_day_object_name("bars", name) == ("AMZN", date(2018, 3, 12))
    assert parse_day_object_name("bars", "bars/AMZN/2018/03/12.csv") is None
    assert day_object_name("", "AMZN", date(2018, 3, 12)) == "AMZN/2018/03/12.parquet"


def test_an_unreadable_day_object_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="Parquet"):
        decode_day(b"not parquet at all")


def test_a_corrupt_object_error_names_the_object() -> None:
    with pytest.raises(CorruptObjectError) as caught:
        decode_day(b"PAR1 truncated")
    assert caught.value.name == "a day object"


def test_the_bytes_depend_only_on_the_rows(one_day: pd.DataFrame) -> None:
    shuffled = one_day.sample(frac=1.0, random_state=7)
    data = encode_day(one_day)
    assert encode_day(shuffled) == data
    pd.testing.assert_frame_equal(decode_day(data), one_day)


def test_merge_keeps_each_timestamp_once_and_the_incoming_bar_wins(
    one_day: pd.DataFrame,
) -> None:
    stored = frame_to_table(one_day.iloc[:200])
    corrected = one_day.iloc[150:250].copy()
    corrected["volume"] = corrected["volume"] + 1
    merged = merge_day(stored, frame_to_table(corrected)).to_pandas()
    assert len(merged) == 250
    assert merged["ts"].is_monotonic_increasing
    assert merged["ts"].is_unique
    assert (merged["volume"].iloc[150:250].to_numpy() == corrected["volume"].to_numpy()).all()
    assert (merged["volume"].iloc[:150].to_numpy() == one_day["volume"].iloc[:150].to_numpy()).all()


def test_quarantine_and_dead_letter_names_stay_out_of_the_symbols_folders() -> None:
    name = "bars/AMZN/2018/03/12.parquet"
    first = quarantine_object_name("bars", name, b"broken")
    assert first.startswith("bars/_quarantine/AMZN/2018/03/12.parquet.")
    assert quarantine_object_name("bars", name, b"broken") == first  # same bytes, same name
    assert quarantine_object_name("bars", name, b"broken too") != first
    assert dead_letter_object_name("bars", "ticks", 3, 41) == "bars/_dead-letters/ticks/3/41"
    assert parse_day_object_name("bars", first) is None
