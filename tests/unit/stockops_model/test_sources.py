"""The replay and synthetic sources, their pacing, and the factory `stockops feed` uses."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockops_model.bars import Bar, bars_to_frame
from stockops_model.clock import FakeClock, SystemClock
from stockops_model.errors import SpecError
from stockops_model.loaders import load_bars
from stockops_model.sources import (
    BarSource,
    Pacer,
    ReplaySource,
    SyntheticSource,
    YahooSource,
    build_source,
)
from stockops_model.sources.synthetic import intraday_volume_curve

ROOT = Path(__file__).resolve().parents[3]
BARS_2018 = ROOT / "tests" / "data" / "bars-2018-1min"
SPY = ROOT / "examples" / "data" / "spy-2011-1min"
START = datetime(2024, 1, 1, tzinfo=UTC)


async def collect(stream: AsyncIterator[Bar], limit: int | None = None) -> list[Bar]:
    out: list[Bar] = []
    async for bar in stream:
        out.append(bar)
        if limit is not None and len(out) >= limit:
            break
    return out


def eastern_dates(ts: pd.Series) -> pd.Series:
    dates: pd.Series = ts.dt.tz_convert("America/New_York").dt.date
    return dates


# --- replay -------------------------------------------------------------------------------


async def test_replay_as_fast_as_possible_plays_every_bar_in_time_order() -> None:
    clock = FakeClock(START)
    bars = await collect(ReplaySource(BARS_2018, clock=clock).stream())
    expected = load_bars(BARS_2018)
    assert len(bars) == len(expected)
    assert [(b.ts, b.symbol) for b in bars] == sorted((b.ts, b.symbol) for b in bars)
    pd.testing.assert_frame_equal(bars_to_frame(bars), expected)
    assert clock.sleeps == []


async def test_replay_at_speed_60_plays_a_trading_hour_a_minute_and_skips_nights() -> None:
    clock = FakeClock(START)
    source = ReplaySource(BARS_2018, symbols=["AMZN"], clock=clock, speed=60)
    bars = await collect(source.stream())
    frame = load_bars(BARS_2018, symbols=["AMZN"])
    days = frame.groupby(eastern_dates(frame["ts"]))["ts"]
    session_seconds = (days.max() - days.min()).dt.total_seconds().sum()
    # Each session plays at 60x; each of the nights between them counts as one bar.
    expected = (session_seconds + 60 * (days.ngroups - 1)) / 60
    assert len(bars) == len(frame)
    assert math.isclose(sum(clock.sleeps), expected)
    assert max(clock.sleeps) < 60  # no night or weekend is slept through
    assert clock.now() == START + timedelta(seconds=expected)


async def test_replay_filters_dates_symbols_and_regular_hours() -> None:
    source = ReplaySource(SPY, start="2011-03-11", end=date(2011, 3, 14), regular_hours=True)
    bars = await collect(source.stream())
    frame = bars_to_frame(bars)
    assert set(eastern_dates(frame["ts"])) == {date(2011, 3, 11), date(2011, 3, 14)}
    local = frame["ts"].dt.tz_convert("America/New_York")
    minutes = local.dt.hour * 60 + local.dt.minute
    assert minutes.min() >= 9 * 60 + 30
    assert minutes.max() < 16 * 60


def test_replay_refuses_a_negative_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(SPY, speed=-1)


# --- pacing -------------------------------------------------------------------------------


async def test_pacer_sleeps_the_gap_over_speed_within_a_session_only() -> None:
    clock = FakeClock(START)
    pacer = Pacer(clock, speed=30)
    friday_close = datetime(2018, 3, 9, 20, 59, tzinfo=UTC)
    for ts in (
        friday_close,
        friday_close,  # a second symbol of the same minute: no wait
        friday_close + timedelta(minutes=1),  # 16:00 ET print, same day
        datetime(2018, 3, 12, 13, 30, tzinfo=UTC),  # Monday open after a weekend
        datetime(2018, 3, 12, 13, 35, tzinfo=UTC),  # five thin minutes later
    ):
        await pacer.wait_for(ts)
    assert clock.sleeps == [2.0, 2.0, 10.0]


async def test_pacer_without_speed_never_sleeps_on_the_clock() -> None:
    clock = FakeClock(START)
    pacer = Pacer(clock, speed=0)
    await pacer.wait_for(START)
    await pacer.wait_for(START + timedelta(hours=1))
    assert clock.sleeps == []


async def test_system_clock_is_utc_and_sleeps() -> None:
    clock = SystemClock()
    before = clock.now()
    await clock.sleep(0)
    assert before.tzinfo is UTC
    assert clock.now() >= before


def test_fake_clock_needs_an_aware_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2024, 1, 1))


# --- synthetic ----------------------------------------------------------------------------


async def synthetic(symbols: list[str], **options: object) -> pd.DataFrame:
    source = build_source("synthetic", symbols=symbols, clock=FakeClock(START), **options)
    return bars_to_frame(await collect(source.stream()))


async def test_synthetic_is_deterministic_per_seed_and_symbol() -> None:
    one = await synthetic(["AAPL", "MSFT"], seed=7, days=2)
    again = await synthetic(["AAPL", "MSFT"], seed=7, days=2)
    alone = await synthetic(["AAPL"], seed=7, days=2)
    other = await synthetic(["AAPL", "MSFT"], seed=8, days=2)
    pd.testing.assert_frame_equal(one, again)
    pd.testing.assert_frame_equal(one[one["symbol"] == "AAPL"].reset_index(drop=True), alone)
    assert not np.allclose(one["close"], other["close"])
    aapl, msft = (one.loc[one["symbol"] == s, "close"].to_numpy() for s in ("AAPL", "MSFT"))
    assert not np.allclose(aapl, msft)


async def test_synthetic_sessions_are_390_bars_of_weekdays_in_eastern_time() -> None:
    # Friday 2024-03-08 is EST, the weekend is skipped, Monday 2024-03-11 is EDT.
    frame = await synthetic(["AAPL"], start="2024-03-08", days=2)
    per_day = frame.groupby(eastern_dates(frame["ts"]))["ts"]
    assert per_day.size().to_dict() == {date(2024, 3, 8): 390, date(2024, 3, 11): 390}
    assert per_day.min().tolist() == [
        pd.Timestamp("2024-03-08 14:30", tz="UTC"),
        pd.Timestamp("2024-03-11 13:30", tz="UTC"),
    ]
    assert per_day.max().tolist() == [
        pd.Timestamp("2024-03-08 20:59", tz="UTC"),
        pd.Timestamp("2024-03-11 19:59", tz="UTC"),
    ]
    assert set(frame["source"]) == {"synthetic"}


async def test_synthetic_bars_are_valid_and_continuous() -> None:
    frame = await synthetic(["AAPL"], seed=1, days=1, bars_per_day=120, start_price=50)
    assert len(frame) == 120
    assert frame["open"].iloc[0] == 50
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    # Within a session each bar opens at the previous close.
    np.testing.assert_allclose(frame["open"].iloc[1:], frame["close"].iloc[:-1])


async def test_synthetic_volatility_and_volume_curve_are_realistic() -> None:
    frame = await synthetic(["AAPL"], seed=3, days=20, volatility=0.3, drift=0.0)
    ratio = np.log(frame["close"] / frame["open"])
    per_minute = 0.3 / math.sqrt(252 * 390)
    assert 0.9 < ratio.std() / per_minute < 1.1
    minute = frame.groupby(eastern_dates(frame["ts"])).cumcount()
    volume = frame["volume"].groupby(minute).mean()
    middle = volume.iloc[180:210].mean()
    assert volume.iloc[:30].mean() > 2 * middle
    assert volume.iloc[-30:].mean() > 2 * middle
    assert math.isclose(intraday_volume_curve().mean(), 1.0)


async def test_synthetic_without_days_is_endless() -> None:
    source = SyntheticSource(["AAPL"], days=None, bars_per_day=10)
    bars = await collect(source.stream(), limit=10 * 12)
    assert len({b.ts.date() for b in bars}) == 12


async def test_synthetic_speed_paces_on_the_clock() -> None:
    clock = FakeClock(START)
    source = SyntheticSource(["AAPL"], clock=clock, speed=120, days=2, bars_per_day=5)
    await collect(source.stream())
    assert clock.sleeps == [0.5] * 9  # 4 minutes a day + one bar for the night


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"days": 0}, "days must be >= 1"),
        ({"bars_per_day": 391}, "bars_per_day must be 1..390"),
        ({"start_price": -1.0}, "start_price must be a positive number"),
        ({"volatility": math.nan}, "volatility"),
        ({"start": "soon"}, "bad start date"),
    ],
)
def test_synthetic_rejects_bad_parameters(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build_source("synthetic", symbols=["AAPL"], **options)


# --- the factory --------------------------------------------------------------------------


def test_build_source_makes_each_kind_behind_one_interface() -> None:
    sources = [
        build_source("replay", symbols=["AMZN"], path=BARS_2018, speed=60),
        build_source("synthetic", symbols=["AAPL"], seed=1),
        build_source("yahoo", symbols=["AAPL"], base_url="http://127.0.0.1:9", poll_seconds=5),
    ]
    assert [type(s) for s in sources] == [ReplaySource, SyntheticSource, YahooSource]
    assert [s.name for s in sources] == ["replay", "synthetic", "yahoo"]
    assert all(isinstance(s, BarSource) for s in sources)


def test_build_source_explains_bad_requests() -> None:
    with pytest.raises(SpecError, match="unknown source 'kafka'; expected one of yahoo"):
        build_source("kafka", symbols=["AAPL"])
    with pytest.raises(SpecError, match=r"no option\(s\) speeed; it accepts .*speed"):
        build_source("synthetic", symbols=["AAPL"], speeed=60)
    with pytest.raises(SpecError, match="needs the option 'path'"):
        build_source("replay", symbols=["AAPL"])
    with pytest.raises(SpecError, match="at least one symbol"):
        build_source("yahoo", symbols=[])
    with pytest.raises(SpecError, match=r"\^GSPC do not fit the bar schema"):
        build_source("yahoo", symbols=["AAPL", "^GSPC"])
    with pytest.raises(SpecError, match="give_up_after_failures must be >= 1"):
        build_source("yahoo", symbols=["AAPL"], give_up_after_failures=0)


def test_a_yahoo_source_backs_off_a_failing_symbol_up_to_the_configured_wait() -> None:
    seen: list[tuple[str, str]] = []
    source = build_source(
        "yahoo",
        symbols=["AAPL"],
        poll_seconds=60,
        symbol_backoff_max=1800,
        on_symbol_error=lambda symbol, code: seen.append((symbol, code)),
    )
    assert isinstance(source, YahooSource)
    assert source.max_skip == 29  # a request every 30 polls, 30 minutes, at the longest
    assert source.on_symbol_error is not None
    source.on_symbol_error("AAPL", "Not Found")
    assert seen == [("AAPL", "Not Found")]
