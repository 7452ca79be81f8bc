"""The `synthetic` source: seeded geometric Brownian motion bars, for examples with no files.

Each symbol follows its own GBM, minute by minute, through the US regular session
(09:30-16:00 US/Eastern, converted to UTC with DST) of consecutive weekdays. The open of
a bar is the previous close; high and low reach beyond the open and close by a random
fraction of one minute's volatility, so every bar is valid by construction. Between
sessions the price takes one extra "overnight" step worth an hour of volatility. Volume
follows the U-shaped intraday curve of real equities (heavy at the open and the close,
light at lunch) times log-normal noise.

Deterministic: the same seed, symbol and parameters give the same bars, whatever other
symbols are generated beside it. Limits: no holidays, no half days, no jumps, no
volatility clustering; prices are rounded to cents.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from stockops_model.bars import Bar, validate_frame
from stockops_model.clock import Clock, SystemClock
from stockops_model.errors import SpecError
from stockops_model.sources.base import Pacer, iterate_frame

SESSION_OPEN = time(9, 30)
SESSION_MINUTES = 390
TRADING_DAYS_PER_YEAR = 252
_EASTERN = "America/New_York"
_OVERNIGHT_MINUTES = 60


@dataclass(frozen=True)
class SyntheticParams:
    """Parameters of the generated market (annualised drift and volatility).

    Attributes:
        seed: the random seed; same seed, same bars.
        start: the first session (moved forward to a weekday).
        days: number of sessions; None for an endless stream.
        bars_per_day: bars of each session from 09:30 ET, 1..390.
        start_price: the first open of every symbol.
        drift: annualised drift of the log price (0.05 = 5 % a year).
        volatility: annualised volatility (0.2 = 20 %).
        base_volume: mean shares a minute over a full session.
    """

    seed: int = 0
    start: date = date(2024, 1, 2)
    days: int | None = 5
    bars_per_day: int = SESSION_MINUTES
    start_price: float = 100.0
    drift: float = 0.05
    volatility: float = 0.2
    base_volume: float = 10_000.0

    def __post_init__(self) -> None:
        problems = []
        if self.days is not None and self.days < 1:
            problems.append(f"days must be >= 1 or None, got {self.days}")
        if not 1 <= self.bars_per_day <= SESSION_MINUTES:
            problems.append(f"bars_per_day must be 1..{SESSION_MINUTES}, got {self.bars_per_day}")
        if not (math.isfinite(self.start_price) and self.start_price > 0):
            problems.append(f"start_price must be a positive number, got {self.start_price}")
        if not (math.isfinite(self.volatility) and 0 <= self.volatility <= 5):
            problems.append(f"volatility must be in [0, 5], got {self.volatility}")
        if not (math.isfinite(self.drift) and abs(self.drift) <= 5):
            problems.append(f"drift must be in [-5, 5], got {self.drift}")
        if not (math.isfinite(self.base_volume) and self.base_volume >= 0):
            problems.append(f"base_volume must be >= 0, got {self.base_volume}")
        if problems:
            raise SpecError("synthetic source: " + "; ".join(problems))


def intraday_volume_curve(minutes: int = SESSION_MINUTES) -> npt.NDArray[np.float64]:
    """Relative volume of the first `minutes` minutes of a session: U-shaped, 3.5x higher
    at the open and the close than at midday, mean 1 over a full 390-minute session."""
    full = 1.0 + 2.5 * ((np.arange(SESSION_MINUTES) + 0.5) / SESSION_MINUTES * 2.0 - 1.0) ** 2
    return np.asarray(full[:minutes] / full.mean(), dtype=np.float64)


def session_dates(start: date, days: int | None) -> Iterator[date]:
    """Consecutive weekdays from `start` (moved forward off a weekend)."""
    day = start
    produced = 0
    while days is None or produced < days:
        if day.weekday() < 5:
            yield day
            produced += 1
        day += timedelta(days=1)


class _SymbolWalk:
    """One symbol's random walk, carried from session to session."""

    def __init__(self, symbol: str, params: SyntheticParams) -> None:
        # crc32, not hash(): str hashes change between processes.
        self.rng = np.random.default_rng([params.seed, zlib.crc32(symbol.encode())])
        self.symbol = symbol
        self.params = params
        self.close = params.start_price
        self.first = True

    def session(self) -> dict[str, npt.NDArray[np.float64]]:
        p = self.params
        n = p.bars_per_day
        dt = 1.0 / (TRADING_DAYS_PER_YEAR * SESSION_MINUTES)
        sigma = p.volatility * math.sqrt(dt)
        mu = (p.drift - 0.5 * p.volatility**2) * dt
        shocks = self.rng.standard_normal(n)
        overnight = 0.0
        if not self.first:
            overnight_sigma = p.volatility * math.sqrt(dt * _OVERNIGHT_MINUTES)
            overnight = overnight_sigma * float(self.rng.standard_normal())
        self.first = False
        log_close = math.log(self.close) + overnight + np.cumsum(mu + sigma * shocks)
        close = np.exp(log_close)
        open_ = np.empty(n)
        open_[0] = self.close * math.exp(overnight)
        open_[1:] = close[:-1]
        reach = np.abs(self.rng.standard_normal((2, n))) * sigma * 0.5
        high = np.maximum(open_, close) * np.exp(reach[0])
        low = np.minimum(open_, close) * np.exp(-reach[1])
        noise = self.rng.lognormal(mean=-0.045, sigma=0.3, size=n)  # mean ~1
        volume = np.round(p.base_volume * intraday_volume_curve(n) * noise)
        self.close = float(close[-1])
        # Rounding is monotone, so low <= open, close <= high survives it; the floor keeps
        # prices positive if a long, volatile walk drifts towards zero.
        return {
            "open": np.maximum(np.round(open_, 2), 0.01),
            "high": np.maximum(np.round(high, 2), 0.01),
            "low": np.maximum(np.round(low, 2), 0.01),
            "close": np.maximum(np.round(close, 2), 0.01),
            "volume": volume,
        }


def generate_session(walks: Sequence[_SymbolWalk], day: date, source: str) -> pd.DataFrame:
    """The canonical, validated frame of one session for every walk, sorted by (symbol, ts)."""
    n = walks[0].params.bars_per_day
    first = pd.Timestamp(datetime.combine(day, SESSION_OPEN)).tz_localize(_EASTERN)
    ts = pd.date_range(first, periods=n, freq="min").tz_convert("UTC")
    parts = []
    for walk in sorted(walks, key=lambda w: w.symbol):
        columns = walk.session()
        parts.append(pd.DataFrame({"symbol": walk.symbol, "ts": ts, **columns, "source": source}))
    frame = pd.concat(parts, ignore_index=True)
    frame["ts"] = frame["ts"].astype("datetime64[ns, UTC]")
    frame["symbol"] = frame["symbol"].astype(str)
    frame["source"] = frame["source"].astype(str)
    return validate_frame(frame)


def generate_frame(
    symbols: Sequence[str], params: SyntheticParams, source: str = "synthetic"
) -> pd.DataFrame:
    """All sessions at once as one frame (needs a finite `params.days`)."""
    if params.days is None:
        raise SpecError("synthetic source: generate_frame needs a finite number of days")
    walks = [_SymbolWalk(s, params) for s in symbols]
    days = session_dates(params.start, params.days)
    sessions = [generate_session(walks, d, source) for d in days]
    frame = pd.concat(sessions, ignore_index=True)
    return frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


class SyntheticSource:
    """Generated bars through the `BarSource` interface.

    Args:
        symbols: the tickers to generate (each gets its own walk from the same seed).
        clock: what to sleep on when `speed` is set.
        speed: None or 0 = as fast as possible; S > 0 = S simulated seconds per second.
        source: the `source` label of the bars.
        seed, start, days, bars_per_day, start_price, drift, volatility, base_volume:
            the fields of `SyntheticParams` (start None = its default date).
        regular_hours: accepted for symmetry with the other sources; synthetic bars are
            always regular-session bars.
    """

    name = "synthetic"

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        clock: Clock | None = None,
        speed: float | None = None,
        source: str = "synthetic",
        seed: int = 0,
        start: date | str | None = None,
        days: int | None = SyntheticParams.days,
        bars_per_day: int = SyntheticParams.bars_per_day,
        start_price: float = SyntheticParams.start_price,
        drift: float = SyntheticParams.drift,
        volatility: float = SyntheticParams.volatility,
        base_volume: float = SyntheticParams.base_volume,
        regular_hours: bool = True,
    ) -> None:
        # Every generated bar is a regular-session bar; the option exists so that one set
        # of feed options (e.g. --regular-hours) fits every source.
        del regular_hours
        if not symbols:
            raise SpecError("synthetic source: at least one symbol is needed")
        if speed is not None and speed < 0:
            raise SpecError(f"synthetic source: speed must be >= 0, got {speed}")
        if start is None:
            start = SyntheticParams.start
        elif isinstance(start, str):
            try:
                start = date.fromisoformat(start)
            except ValueError:
                raise SpecError(f"synthetic source: bad start date {start!r}") from None
        self.symbols = [s.upper() for s in symbols]
        self.params = SyntheticParams(
            seed=seed,
            start=start,
            days=days,
            bars_per_day=bars_per_day,
            start_price=start_price,
            drift=drift,
            volatility=volatility,
            base_volume=base_volume,
        )
        self.clock: Clock = clock or SystemClock()
        self.speed = speed
        self.source = source

    async def stream(self) -> AsyncIterator[Bar]:
        """Yield the sessions' bars in (ts, symbol) order; endless when `days` is None."""
        walks = [_SymbolWalk(s, self.params) for s in self.symbols]
        pacer = Pacer(self.clock, self.speed)
        for day in session_dates(self.params.start, self.params.days):
            async for bar in iterate_frame(generate_session(walks, day, self.source), pacer):
                yield bar
