"""Loaders of the real bar files: both formats, their quirks, filters and regular hours."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stockops_model.bars import BAR_COLUMNS, validate_frame
from stockops_model.errors import BarValidationError, DataError
from stockops_model.loaders import (
    detect_format,
    is_regular_hours,
    load_alphavantage_csv,
    load_bars,
    load_ninjatrader_csv,
    regular_hours_mask,
)

ROOT = Path(__file__).resolve().parents[3]
BARS_2018 = ROOT / "tests" / "data" / "bars-2018-1min"
DIS = ROOT / "tests" / "data" / "bars-2018-dis-duplicates" / "DIS.csv"
SPY = ROOT / "examples" / "data" / "spy-2011-1min"


def csv_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()[1:]]


def nt_rows(path: Path) -> list[list[str]]:
    return [line.split(";") for line in path.read_text().splitlines()]


def test_formats_are_detected_from_the_first_line(tmp_path: Path) -> None:
    assert detect_format(BARS_2018 / "AMZN.csv") == "alphavantage"
    assert detect_format(SPY / "nt-spy-minute-2011-01.csv") == "ninjatrader"
    other = tmp_path / "x.csv"
    other.write_text("time,price\n1,2\n")
    with pytest.raises(DataError, match="unknown bar file format"):
        detect_format(other)


def test_alphavantage_eastern_wall_clock_becomes_utc_bar_start_across_dst() -> None:
    frame = load_alphavantage_csv(BARS_2018 / "AMZN.csv")
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert set(frame["symbol"]) == {"AMZN"}
    assert set(frame["source"]) == {"replay"}
    first_of_day = frame.groupby(frame["ts"].dt.date)["ts"].min()
    # EST (UTC-5) before Sunday 2018-03-11, EDT (UTC-4) after.
    assert first_of_day[date(2018, 3, 9)] == pd.Timestamp("2018-03-09 14:30", tz="UTC")
    assert first_of_day[date(2018, 3, 12)] == pd.Timestamp("2018-03-12 13:30", tz="UTC")


def test_alphavantage_values_are_the_file_values() -> None:
    rows = csv_rows(BARS_2018 / "AXP.csv")
    frame = load_alphavantage_csv(BARS_2018 / "AXP.csv", source="files")
    assert len(frame) == len(rows)
    first = rows[0]
    wall = pd.Timestamp(f"{first[0]} {first[1]}", tz="America/New_York").tz_convert("UTC")
    row = frame.iloc[0]
    assert row["ts"] == wall
    assert [row[c] for c in ("open", "high", "low", "close", "volume")] == [
        float(x) for x in first[2:]
    ]
    assert row["source"] == "files"


def test_the_closing_auction_print_is_kept_at_1600_and_is_not_regular_hours() -> None:
    frame = load_alphavantage_csv(BARS_2018 / "AMZN.csv")
    local = frame["ts"].dt.tz_convert("America/New_York")
    closing = frame[(local.dt.hour == 16) & (local.dt.minute == 0)]
    closing_rows = [r for r in csv_rows(BARS_2018 / "AMZN.csv") if r[1] == "16:00:00"]
    assert len(closing) == len(closing_rows)
    assert not regular_hours_mask(closing["ts"]).any()
    regular = load_bars(BARS_2018 / "AMZN.csv", regular_hours=True)
    assert len(regular) == len(frame) - len(closing)


def test_dis_duplicates_are_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    rows = csv_rows(DIS)
    stamps = [(r[0], r[1]) for r in rows]
    duplicates = len(stamps) - len(set(stamps))
    assert duplicates > 0  # the slice carries the quirk
    with caplog.at_level(logging.INFO, logger="stockops_model.loaders"):
        frame = load_alphavantage_csv(DIS)
    assert len(frame) == len(set(stamps))
    assert frame["ts"].is_monotonic_increasing
    assert frame["ts"].is_unique
    assert f"dropped {duplicates} exact duplicate bar(s)" in caplog.text


def test_conflicting_duplicates_keep_the_first_row_and_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "KO.csv"
    path.write_text(
        "date,ToD,open,high,low,close,volume\n"
        "2018-02-16,09:31:00,45.1,45.2,45.0,45.1,100.0\n"
        "2018-02-16,09:30:00,45.0,45.1,44.9,45.0,100.0\n"
        "2018-02-16,09:30:00,46.0,46.1,45.9,46.0,100.0\n"
    )
    with caplog.at_level(logging.WARNING, logger="stockops_model.loaders"):
        frame = load_alphavantage_csv(path)
    assert list(frame["open"]) == [45.0, 45.1]
    assert "1 of them with different values" in caplog.text


def test_ninjatrader_end_stamps_become_bar_starts() -> None:
    path = SPY / "nt-spy-minute-2011-01.csv"
    rows = nt_rows(path)
    frame = load_ninjatrader_csv(path)
    assert len(frame) == len(rows)
    stamp = datetime.strptime(rows[0][0], "%Y%m%d %H%M%S").replace(tzinfo=UTC)
    assert frame["ts"].iloc[0] == pd.Timestamp(stamp) - pd.Timedelta(minutes=1)
    assert frame["close"].iloc[0] == float(rows[0][4])
    assert set(frame["symbol"]) == {"SPY"}


def test_spy_extended_hours_and_the_dst_change() -> None:
    frame = load_bars(SPY)
    assert set(frame["symbol"]) == {"SPY"}
    assert len(frame) == sum(len(nt_rows(p)) for p in SPY.glob("*.csv"))
    regular = load_bars(SPY, regular_hours=True)
    assert 0 < len(regular) < len(frame)  # pre- and post-market bars exist
    utc_first = regular.groupby(regular["ts"].dt.tz_convert("America/New_York").dt.date)["ts"].min()
    assert utc_first[date(2011, 3, 11)].hour == 14  # 09:30 EST
    assert utc_first[date(2011, 3, 14)].hour == 13  # 09:30 EDT


def test_load_bars_reads_a_directory_and_filters(tmp_path: Path) -> None:
    both = load_bars(BARS_2018)
    assert set(both["symbol"]) == {"AMZN", "AXP"}
    assert list(both["symbol"]) == sorted(both["symbol"])
    only = load_bars(BARS_2018, symbols=["axp"], start="2018-03-09", end=date(2018, 3, 12))
    days = set(only["ts"].dt.tz_convert("America/New_York").dt.date)
    assert days == {date(2018, 3, 9), date(2018, 3, 12)}
    assert set(only["symbol"]) == {"AXP"}
    validate_frame(only)


def test_a_data_directory_is_searched_recursively_skipping_other_csvs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "notes.csv").write_text("what,when\nlunch,noon\n")
    everything = load_bars([ROOT / "examples" / "data", tmp_path])
    assert set(everything["symbol"]) == {"SPY"}
    assert len(everything) == len(load_bars(SPY))
    assert "unknown bar file format" in caplog.text
    with pytest.raises(DataError, match="unknown bar file format"):
        load_bars(tmp_path / "notes.csv")


def test_load_bars_takes_a_list_and_dedupes_overlapping_files() -> None:
    path = SPY / "nt-spy-minute-2011-01.csv"
    twice = load_bars([path, path])
    assert len(twice) == len(nt_rows(path))


def test_load_bars_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no bar file for symbol.*MSFT"):
        load_bars(BARS_2018, symbols=["AMZN", "MSFT"])
    with pytest.raises(DataError, match="does not exist"):
        load_bars(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no bar files \(\*\.csv in a known format\)"):
        load_bars(tmp_path)
    with pytest.raises(DataError, match="bad date"):
        load_bars(BARS_2018, start="March 9")


def test_a_bad_row_fails_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "KO.csv"
    path.write_text(
        "date,ToD,open,high,low,close,volume\n2018-02-16,09:30:00,45.0,44.0,44.9,45.0,100.0\n"
    )
    with pytest.raises(BarValidationError, match=r"KO\.csv: 1 bar\(s\) invalid.*high must be"):
        load_alphavantage_csv(path)


def test_regular_hours_mask_is_dst_aware_and_skips_weekends() -> None:
    ts = pd.DatetimeIndex(
        [
            "2018-03-09 14:29",  # Fri 09:29 EST
            "2018-03-09 14:30",  # Fri 09:30 EST
            "2018-03-09 20:59",  # Fri 15:59 EST
            "2018-03-09 21:00",  # Fri 16:00 EST
            "2018-03-12 13:30",  # Mon 09:30 EDT
            "2018-03-12 14:30",  # Mon 10:30 EDT
            "2018-03-12 20:00",  # Mon 16:00 EDT
            "2018-03-10 15:00",  # Saturday
        ],
        tz="UTC",
    )
    assert regular_hours_mask(ts).tolist() == [False, True, True, False, True, True, False, False]
    assert regular_hours_mask(pd.Series(ts)).dtype == np.bool_
    assert is_regular_hours(datetime(2018, 3, 12, 13, 30, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        is_regular_hours(datetime(2018, 3, 12, 13, 30))
