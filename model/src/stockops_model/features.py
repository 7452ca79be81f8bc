"""Technical-indicator features of the network, computed per ticker and strictly causally.

`build_features` turns canonical bars (see `stockops_model.bars`) into one row per bar with
`symbol`, `ts`, `close` and the feature columns named by `feature_columns`: one column per
configured indicator (`IndicatorSpec.column`, e.g. `rsi_30`) followed by a one-hot column
`ticker_<SYMBOL>` per configured ticker. `feature_matrix` gives one ticker's rows from plain
numpy arrays, without pandas: the scoring server's per-request path (same values, tested).

Formulas (they follow the `stockstats` package the original system used, which the unit
tests use as an oracle; `n` is the indicator's period):

- `close`: the bar's close.
- `macd`: EMA12(close) - EMA26(close), EMAs with span 12/26 and pandas' `adjust=True`
  weights (the MACD line only; the signal line is not a feature).
- `bollUpper_n` / `bollLower_n`: SMA_n(close) +/- 2 * rolling standard deviation of close
  over n bars (sample deviation, ddof=1).
- `rsi_n`: 100 * SMMA_n(up moves) / (SMMA_n(up) + SMMA_n(down)), SMMA being an EWM with
  alpha = 1/n (Wilder's smoothing); 50 when there was no move at all.
- `cci_n`: (TP - SMA_n(TP)) / (0.015 * mean absolute deviation of TP over n bars), with
  TP = (high + low + close) / 3; 0 when the deviation is 0.
- `dx_n`: 100 * |+DI - -DI| / (+DI + -DI), +DI/-DI = SMMA_n(+DM/-DM) / SMMA_n(true range);
  0 when both are 0.
- `sma_n`: mean close over the last n bars.
- `aroon_n`: Aroon oscillator, 100 * (bars since the lowest low - bars since the highest
  high) / n over the last n bars (ties resolve to the most recent bar).

Causality: every value at bar t is a function of bars up to and including t only (rolling
windows look back, EWMs run forward). A unit test perturbs a later bar and checks that no
earlier row changes.

Time handling, decided on the shared 2018 data (44 days, 30 tickers: at most a handful of
missing minutes per ticker and day, all single minutes with no trade):

- Indicators run over the sequence of *observed* bars of a ticker. A missing minute is not
  filled: a forward-filled bar would be a made-up zero-range, zero-move bar that drags
  RSI, DX and CCI towards "no movement". Periods therefore count bars, not minutes.
- Overnight and weekend gaps do not reset the indicators: the first bar of a session sees
  the previous session's last bars, as in the original system (which ran stockstats over
  90 days of concatenated bars). A reset would cost `warmup_bars` bars (over half a
  session with the default indicators) every morning. The overnight jump enters as one
  large bar-to-bar move. The forecast *target* never spans a session boundary: see
  `stockops_model.windows.build_dataset`.

Warm-up: the first `warmup_bars(indicators)` bars of each ticker are dropped, so every
returned value is finite (no NaN reaches the network) and, for the exponentially weighted
indicators (MACD, RSI, DX), the weight left on bars before the input's first bar is at most
`EWM_TAIL_WEIGHT`. A caller that has only recent bars (the pyfunc at serving time) thus
needs `window + warmup_bars(indicators)` bars per ticker to fill one window, and gets
values equal to those computed on the full history up to that tail weight.

Limits: prices are taken as given (unadjusted for splits and dividends); a ticker with no
more than `warmup_bars` bars contributes no rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from stockops_model.errors import DataError
from stockops_model.spec import IndicatorName, IndicatorSpec

FloatArray = npt.NDArray[np.float64]

MACD_FAST = 12
MACD_SLOW = 26
BOLL_STD_TIMES = 2.0
CCI_CONSTANT = 0.015
# Largest share of an EWM's weight that may fall on bars before the first one available.
# 1e-3 keeps a truncated-history feature within 0.1 % of the weighted sum of the full one.
EWM_TAIL_WEIGHT = 1e-3
TICKER_PREFIX = "ticker_"
_BAR_COLUMNS = ("symbol", "ts", "high", "low", "close")


def feature_columns(indicators: Sequence[IndicatorSpec], tickers: Sequence[str]) -> list[str]:
    """The network's input columns, in order: indicators, then one-hot `ticker_<SYMBOL>`."""
    return [i.column for i in indicators] + [f"{TICKER_PREFIX}{t}" for t in tickers]


def _ewm_bars(alpha: float) -> int:
    # Bars after which an EWM with this alpha puts at most EWM_TAIL_WEIGHT on older bars.
    return math.ceil(math.log(EWM_TAIL_WEIGHT) / math.log(1.0 - alpha))


def _lookback(indicator: IndicatorSpec) -> int:
    """Bars before bar t that the indicator at t needs (EWMs: until the tail is negligible)."""
    name = indicator.name
    period = indicator.effective_period
    if name == IndicatorName.CLOSE:
        return 0
    if name == IndicatorName.MACD:
        return _ewm_bars(2.0 / (MACD_SLOW + 1))
    assert period is not None  # every other indicator has a default period
    if name in (IndicatorName.RSI, IndicatorName.DX):
        # +1: both start from a bar-to-bar difference.
        return _ewm_bars(1.0 / period) + 1
    return period - 1


def warmup_bars(indicators: Sequence[IndicatorSpec]) -> int:
    """Bars per ticker dropped before the first feature row (see the module docstring).

    A caller needs `window + warmup_bars(indicators)` raw bars per ticker for one window.
    """
    return max((_lookback(i) for i in indicators), default=0)


# --------------------------------------------------------------------------- primitives


def _ewm_mean(x: FloatArray, alpha: float) -> FloatArray:
    """pandas' `ewm(alpha=alpha, adjust=True).mean()` of a series without NaN, in numpy.

    y_t = sum_i (1-alpha)^i x_(t-i) / sum_i (1-alpha)^i over i = 0..t: the numerator is a
    one-pole IIR filter (`lfilter`), the denominator a geometric sum in closed form. Equal to
    pandas to ~1e-15 relative (a unit test checks it) and several times faster on the few
    hundred bars of a serving request.
    """
    from scipy.signal import lfilter

    if len(x) == 0:
        return np.asarray(x, dtype=np.float64).copy()
    decay = 1.0 - alpha
    numerator: FloatArray = lfilter([1.0], [1.0, -decay], x)
    denominator = (1.0 - decay ** np.arange(1, len(x) + 1, dtype=np.float64)) / alpha
    return numerator / denominator


def _ema_span(x: FloatArray, span: int) -> FloatArray:
    return _ewm_mean(x, 2.0 / (span + 1.0))


def _smma(x: FloatArray, period: int) -> FloatArray:
    return _ewm_mean(x, 1.0 / period)


def _rolling_mean(x: FloatArray, period: int) -> FloatArray:
    return pd.Series(x).rolling(period, min_periods=1).mean().to_numpy()


def _diff0(x: FloatArray) -> FloatArray:
    """First difference with 0 at the first bar (no move before the first observed bar)."""
    out = np.zeros_like(x)
    out[1:] = np.diff(x)
    return out


def _safe_ratio(num: FloatArray, den: FloatArray, fallback: float) -> FloatArray:
    out = np.full_like(num, fallback)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _strided_windows(x: FloatArray, period: int) -> FloatArray:
    """(T - period + 1, period) read-only view of the trailing windows of a 1-D array.

    What `sliding_window_view(x, period)` gives, without its argument checking, which
    costs more than the reduction over a serving request's few hundred bars.
    """
    x = np.ascontiguousarray(x)
    count = max(len(x) - period + 1, 0)
    step = x.strides[0]
    view: FloatArray = np.lib.stride_tricks.as_strided(
        x, shape=(count, period), strides=(step, step), writeable=False
    )
    return view


def _windows_of(x: FloatArray, period: int) -> FloatArray:
    """(T, period) view of the trailing windows, padded at the start by repeating x[0]."""
    padded = np.concatenate([np.full(period - 1, x[0]), x])
    return _strided_windows(padded, period)


# --------------------------------------------------------------------------- indicators

Bars = dict[str, FloatArray]


def _close(b: Bars, _: int | None) -> FloatArray:
    return b["close"]


def _macd(b: Bars, _: int | None) -> FloatArray:
    return _ema_span(b["close"], MACD_FAST) - _ema_span(b["close"], MACD_SLOW)


def _boll(sign: float) -> Callable[[Bars, int | None], FloatArray]:
    def band(b: Bars, period: int | None) -> FloatArray:
        assert period is not None
        rolling = pd.Series(b["close"]).rolling(period, min_periods=1)
        # std over a single bar is NaN with ddof=1; those bars are inside the warm-up.
        return (rolling.mean() + sign * BOLL_STD_TIMES * rolling.std()).to_numpy()

    return band


def _rsi(b: Bars, period: int | None) -> FloatArray:
    assert period is not None
    diff = _diff0(b["close"])
    up = _smma(np.where(diff > 0, diff, 0.0), period)
    down = _smma(np.where(diff < 0, -diff, 0.0), period)
    return 100.0 * _safe_ratio(up, up + down, 0.5)


def _cci(b: Bars, period: int | None) -> FloatArray:
    assert period is not None
    tp = (b["high"] + b["low"] + b["close"]) / 3.0
    windows = _windows_of(tp, period)
    mean = windows.mean(axis=1)
    mad = np.abs(windows - mean[:, None]).mean(axis=1)
    return _safe_ratio(tp - mean, CCI_CONSTANT * mad, 0.0)


def _dx(b: Bars, period: int | None) -> FloatArray:
    assert period is not None
    high, low, close = b["high"], b["low"], b["close"]
    up_move = _diff0(high)
    down_move = -_diff0(low)
    plus_dm = np.where((up_move > 0) & (up_move > down_move), up_move, 0.0)
    minus_dm = np.where((down_move > 0) & (down_move > up_move), down_move, 0.0)
    prev_close = np.concatenate([close[:1], close[:-1]])
    true_range = np.maximum(
        high - low, np.maximum(np.abs(high - prev_close), np.abs(low - prev_close))
    )
    atr = _smma(true_range, period)
    plus_di = _safe_ratio(_smma(plus_dm, period), atr, 0.0)
    minus_di = _safe_ratio(_smma(minus_dm, period), atr, 0.0)
    return 100.0 * _safe_ratio(np.abs(plus_di - minus_di), plus_di + minus_di, 0.0)


def _sma(b: Bars, period: int | None) -> FloatArray:
    assert period is not None
    return _rolling_mean(b["close"], period)


def _aroon(b: Bars, period: int | None) -> FloatArray:
    assert period is not None
    # argmax over the reversed window finds the most recent extreme, i.e. bars since it.
    since_high = _windows_of(b["high"], period)[:, ::-1].argmax(axis=1)
    since_low = _windows_of(b["low"], period)[:, ::-1].argmin(axis=1)
    oscillator: FloatArray = 100.0 * (since_low - since_high).astype(np.float64) / period
    return oscillator


_INDICATORS: dict[str, Callable[[Bars, int | None], FloatArray]] = {
    IndicatorName.CLOSE: _close,
    IndicatorName.MACD: _macd,
    IndicatorName.BOLL_UPPER: _boll(+1.0),
    IndicatorName.BOLL_LOWER: _boll(-1.0),
    IndicatorName.RSI: _rsi,
    IndicatorName.CCI: _cci,
    IndicatorName.DX: _dx,
    IndicatorName.SMA: _sma,
    IndicatorName.AROON: _aroon,
}


# --------------------------------------------------------------------------- serving path


def _full_windows(x: FloatArray, period: int) -> FloatArray:
    """(T - period + 1, period) trailing windows of x, no padding."""
    return _strided_windows(x, period)


def _tail_sma(b: Bars, period: int | None) -> FloatArray:
    assert period is not None
    out = np.full(len(b["close"]), np.nan)
    if len(out) >= period:
        out[period - 1 :] = _full_windows(b["close"], period).mean(axis=1)
    return out


def _tail_boll(sign: float) -> Callable[[Bars, int | None], FloatArray]:
    def band(b: Bars, period: int | None) -> FloatArray:
        assert period is not None
        out = np.full(len(b["close"]), np.nan)
        if len(out) >= period:
            windows = _full_windows(b["close"], period)
            spread = BOLL_STD_TIMES * windows.std(axis=1, ddof=1)
            out[period - 1 :] = windows.mean(axis=1) + sign * spread
        return out

    return band


# The rolling indicators in numpy, defined from the first full window on (earlier rows are
# NaN; they are inside the warm-up, which `feature_matrix` drops). pandas' rolling
# primitives cost more than the whole rest of a serving request's features.
_TAIL_INDICATORS: dict[str, Callable[[Bars, int | None], FloatArray]] = {
    **_INDICATORS,
    IndicatorName.SMA: _tail_sma,
    IndicatorName.BOLL_UPPER: _tail_boll(+1.0),
    IndicatorName.BOLL_LOWER: _tail_boll(-1.0),
}
# Indicators over a fixed trailing window of `period` bars: their last rows need only the
# last `rows + period - 1` bars (the EWM-based ones need the whole input).
_ROLLING = frozenset(
    {
        IndicatorName.SMA,
        IndicatorName.BOLL_UPPER,
        IndicatorName.BOLL_LOWER,
        IndicatorName.CCI,
        IndicatorName.AROON,
    }
)


def feature_matrix(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    indicators: Sequence[IndicatorSpec],
    tickers: Sequence[str],
    symbol: str,
    last: int | None = None,
) -> FloatArray:
    """The feature rows of one ticker from plain arrays: `build_features` without pandas.

    The serving fast path: the same rows and columns as `build_features` gives for this
    ticker's bars (a unit test checks they are equal), in numpy only.

    Args:
        high, low, close: the ticker's bars in time order, finite and positive.
        indicators: the spec's indicators, in network-input order.
        tickers: the spec's tickers (one-hot columns); `symbol` must be one of them.
        symbol: the ticker these bars are of.
        last: only the last `last` rows (the rolling indicators then read only the bars
            those rows need); None for all.

    Returns:
        (T - warmup_bars(indicators), F) float64 (at most `last` rows), F =
        len(feature_columns(...)); no rows when T <= warmup.

    Raises:
        DataError: `symbol` is not among `tickers`, or a feature is not finite.
    """
    if symbol not in tickers:
        raise DataError(f"bars of ticker {symbol} not in the model's tickers {', '.join(tickers)}")
    warmup = warmup_bars(indicators)
    rows = max(len(close) - warmup, 0)
    if last is not None:
        rows = min(rows, max(last, 0))
    out = np.zeros((rows, len(indicators) + len(tickers)), dtype=np.float64)
    if rows == 0:
        return out
    arrays: Bars = {
        "high": np.asarray(high, dtype=np.float64),
        "low": np.asarray(low, dtype=np.float64),
        "close": np.asarray(close, dtype=np.float64),
    }
    for column, indicator in enumerate(indicators):
        period = indicator.effective_period
        source = arrays
        if indicator.name in _ROLLING and period is not None:
            start = max(len(close) - (rows + period - 1), 0)
            source = {name: values[start:] for name, values in arrays.items()}
        values = _TAIL_INDICATORS[indicator.name](source, period)
        out[:, column] = values[len(values) - rows :]
    out[:, len(indicators) + list(tickers).index(symbol)] = 1.0
    if not np.isfinite(out).all():
        raise DataError(f"non-finite feature for {symbol}: check the input prices")
    return out


def compute_indicators(bars: pd.DataFrame, indicators: Sequence[IndicatorSpec]) -> pd.DataFrame:
    """The indicator columns of one ticker's bars (sorted by ts), warm-up rows included.

    Exposed for the oracle tests and for plots; the network reads `build_features`.
    """
    arrays: Bars = {c: bars[c].to_numpy(dtype=np.float64) for c in ("high", "low", "close")}
    data = {i.column: _INDICATORS[i.name](arrays, i.effective_period) for i in indicators}
    return pd.DataFrame(data, index=bars.index)


def build_features(
    bars: pd.DataFrame,
    indicators: Sequence[IndicatorSpec],
    tickers: Sequence[str],
) -> pd.DataFrame:
    """Feature rows per ticker, strictly causal, with no NaN.

    Args:
        bars: canonical bars (columns symbol, ts, open, high, low, close, volume, ...), any
            order; duplicates on (symbol, ts) are not allowed (use `normalise_frame`).
        indicators: the spec's indicators, in network-input order.
        tickers: the spec's tickers; defines the one-hot columns and their order.

    Returns:
        Columns `symbol`, `ts`, `close` and then `feature_columns(indicators, tickers)`
        (float64), sorted by (symbol, ts) with a fresh RangeIndex. The first
        `warmup_bars(indicators)` bars of each ticker are dropped.

    Raises:
        DataError: a column is missing, a bar's symbol is not among `tickers`, a
            (symbol, ts) pair repeats, or a feature is not finite (a non-positive or
            missing price in the input).
    """
    missing = [c for c in _BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(f"bars lack column(s) {', '.join(missing)}")
    unknown = sorted({str(s) for s in bars["symbol"].unique()} - set(tickers))
    if unknown:
        raise DataError(
            f"bars of ticker(s) {', '.join(unknown)} not in the model's tickers "
            f"{', '.join(tickers)}"
        )
    if bars.duplicated(subset=["symbol", "ts"]).any():
        raise DataError("bars repeat a (symbol, ts) pair; deduplicate them first")

    columns = feature_columns(indicators, tickers)
    warmup = warmup_bars(indicators)
    ordered = bars.sort_values(["symbol", "ts"], kind="stable")
    parts: list[pd.DataFrame] = []
    for symbol, group in ordered.groupby("symbol", sort=True):
        if len(group) <= warmup:
            continue
        part = compute_indicators(group, indicators).iloc[warmup:]
        for ticker in tickers:
            part[f"{TICKER_PREFIX}{ticker}"] = 1.0 if ticker == symbol else 0.0
        part.insert(0, "symbol", str(symbol))
        # .array keeps the time zone (to_numpy would box every stamp as an object)
        part.insert(1, "ts", group["ts"].iloc[warmup:].array)
        # "close" may also be a feature column; the frame carries it once.
        if "close" not in part.columns:
            part.insert(2, "close", group["close"].iloc[warmup:].to_numpy(dtype=np.float64))
        parts.append(part)

    if not parts:
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in ["close", *columns]})
        empty.insert(0, "symbol", pd.Series(dtype="str"))
        empty.insert(1, "ts", pd.Series(dtype="datetime64[ns, UTC]"))
        return empty
    out = pd.concat(parts, ignore_index=True)
    out = out.loc[:, ["symbol", "ts", "close", *[c for c in columns if c != "close"]]]
    values = out.loc[:, ["close", *columns]].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        bad = out.loc[~np.isfinite(values).all(axis=1), ["symbol", "ts"]].iloc[0]
        raise DataError(
            f"non-finite feature for {bad['symbol']} at {bad['ts']}: check the input prices"
        )
    return out
