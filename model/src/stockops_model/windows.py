"""Input windows, forecast targets and the chronological train/validation/test split.

A sample is one window of `window` consecutive feature rows of one ticker (ending at bar
`end_ts`, whose close is `last_close`) and the close `horizon` minutes later
(`future_close`). Windows are strided views of the feature matrix (no Python loop).

Target (`StockModelSpec.target`):

- `return`: the simple return `future_close / last_close - 1`; `to_price` inverts it as
  `last_close * (1 + y)`. Chosen over the log return because the inverse is exact in
  float arithmetic and the two differ by less than 1e-7 at one-minute horizons.
- `level`: `future_close` itself (the original system's target).

What "the close `horizon` minutes later" means, given real data:

- Bars are grouped into sessions: consecutive bars of a ticker more than
  `SESSION_GAP` apart belong to different sessions (overnight, weekends, halts).
- The future close is the close of the last observed bar at or before
  `end_ts + horizon` minutes (a minute with no trade has no bar; the last traded price
  stands), and a sample is kept only if that instant is inside the window's session (no
  later than the session's last bar). So no target spans an overnight gap, and the
  16:00 bar of a session is never a window end for horizon 1.

Split: `chronological_split` cuts by window end time, with cut points shared by all
tickers, and purges samples at the start of the validation and test parts so that no
window or target of one part overlaps a window or target of another.

Limits: the whole dataset is held in memory as float32 (N * window * F * 4 bytes;
2 tickers x 44 days x window 32 x 12 features is about 52 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from stockops_model.errors import DataError

TargetKind = Literal["return", "level"]
ScalarT = TypeVar("ScalarT", bound=np.generic)
SESSION_GAP = pd.Timedelta(minutes=30)
_MINUTE = np.timedelta64(60_000_000_000, "ns")


@dataclass(frozen=True)
class Dataset:
    """Samples of all tickers, concatenated ticker by ticker, each in time order.

    Attributes:
        X: (N, window, F) float32 input windows (unscaled).
        y: (N,) float64 target (a return or a level, see `target`).
        last_close: (N,) close of the window's last bar.
        future_close: (N,) the close `horizon` minutes after `end_ts`.
        end_ts: (N,) datetime64[ns] (UTC, naive) start of the window's last bar.
        start_ts: (N,) datetime64[ns] start of the window's first bar.
        target_ts: (N,) datetime64[ns] start of the bar whose close is `future_close`.
        symbol: (N,) ticker of each sample.
        columns: the F feature names, in order.
        target: "return" or "level".
        horizon: forecast horizon in minutes.
    """

    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.float64]
    last_close: npt.NDArray[np.float64]
    future_close: npt.NDArray[np.float64]
    end_ts: npt.NDArray[np.datetime64]
    start_ts: npt.NDArray[np.datetime64]
    target_ts: npt.NDArray[np.datetime64]
    symbol: npt.NDArray[np.str_]
    columns: tuple[str, ...]
    target: TargetKind
    horizon: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: npt.NDArray[np.int64]) -> Dataset:
        """The samples at `index` (e.g. `Split.train`), as a new Dataset."""
        return Dataset(
            X=self.X[index],
            y=self.y[index],
            last_close=self.last_close[index],
            future_close=self.future_close[index],
            end_ts=self.end_ts[index],
            start_ts=self.start_ts[index],
            target_ts=self.target_ts[index],
            symbol=self.symbol[index],
            columns=self.columns,
            target=self.target,
            horizon=self.horizon,
        )


@dataclass(frozen=True)
class Split:
    """Index arrays into a Dataset, and the end-time cut points used.

    `validation_start` and `test_start` are the first window end times of each part
    before purging; the purge then drops samples at the start of a part as needed.
    """

    train: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]
    validation_start: np.datetime64
    test_start: np.datetime64


def sliding_windows(values: npt.NDArray[ScalarT], window: int) -> npt.NDArray[ScalarT]:
    """All windows of `window` consecutive rows of a (T, F) array, as a read-only view.

    Returns:
        (T - window + 1, window, F); row i is `values[i : i + window]`. Empty (0, window, F)
        when T < window.
    """
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (T, F), got shape {values.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if values.shape[0] < window:
        return np.empty((0, window, values.shape[1]), dtype=values.dtype)
    # A (window, F) window shape keeps each window one contiguous block of memory, so
    # gathering windows copies whole blocks: (T-w+1, 1, w, F) -> (T-w+1, w, F).
    view: npt.NDArray[ScalarT] = np.lib.stride_tricks.sliding_window_view(
        values, (window, values.shape[1])
    )[:, 0]
    return view


def make_target(
    future_close: npt.NDArray[np.float64],
    last_close: npt.NDArray[np.float64],
    target: TargetKind,
) -> npt.NDArray[np.float64]:
    """The network's target from prices: a simple return, or the level itself."""
    if target == "return":
        return np.asarray(future_close / last_close - 1.0, dtype=np.float64)
    if target == "level":
        return np.asarray(future_close, dtype=np.float64).copy()
    raise ValueError(f"unknown target {target!r}")


def to_price(
    pred: npt.NDArray[np.floating],
    last_close: npt.NDArray[np.float64],
    target: TargetKind,
) -> npt.NDArray[np.float64]:
    """Forecast close from a network output (unscaled), the inverse of `make_target`."""
    pred64 = np.asarray(pred, dtype=np.float64).reshape(-1)
    if target == "return":
        return np.asarray(last_close * (1.0 + pred64), dtype=np.float64)
    if target == "level":
        return pred64
    raise ValueError(f"unknown target {target!r}")


def _session_ends(ts: npt.NDArray[np.datetime64]) -> npt.NDArray[np.datetime64]:
    """For each bar, the start of the last bar of its session (sorted input)."""
    gap = np.diff(ts) > SESSION_GAP.to_timedelta64()
    last_of_session = np.flatnonzero(np.append(gap, True))
    session_id = np.concatenate([[0], np.cumsum(gap)])
    ends: npt.NDArray[np.datetime64] = ts[last_of_session][session_id]
    return ends


def build_dataset(
    features: pd.DataFrame,
    columns: list[str] | tuple[str, ...],
    window: int,
    horizon: int,
    target: TargetKind,
) -> Dataset:
    """Windows and targets per ticker, concatenated (see the module docstring).

    Args:
        features: the frame of `stockops_model.features.build_features` (symbol, ts,
            close and the feature columns).
        columns: the feature columns, in network-input order.
        window: bars per window.
        horizon: forecast horizon in minutes (bars of 1 minute).
        target: "return" or "level".

    Raises:
        DataError: a column is missing, or a value is not finite.
    """
    if window < 1 or horizon < 1:
        raise ValueError(f"window and horizon must be >= 1, got {window}, {horizon}")
    missing = [c for c in ("symbol", "ts", "close", *columns) if c not in features.columns]
    if missing:
        raise DataError(f"features lack column(s) {', '.join(missing)}")
    n_features = len(columns)
    # Per ticker: the strided view of all its windows and which of them are samples;
    # gathered once into one preallocated array (a concatenate would copy 50 MB twice).
    views: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]] = []
    last: list[npt.NDArray[np.float64]] = []
    future: list[npt.NDArray[np.float64]] = []
    ends: list[npt.NDArray[np.datetime64]] = []
    starts: list[npt.NDArray[np.datetime64]] = []
    targets_ts: list[npt.NDArray[np.datetime64]] = []
    symbols: list[npt.NDArray[np.str_]] = []
    ordered = features.sort_values(["symbol", "ts"], kind="stable")
    for symbol, group in ordered.groupby("symbol", sort=True):
        if len(group) < window:
            continue
        values = group.loc[:, list(columns)].to_numpy(dtype=np.float32)
        if not np.isfinite(values).all():
            raise DataError(f"non-finite feature values for {symbol}")
        # Converted to UTC before dropping the zone: the arrays are naive UTC everywhere
        # (naive input is taken as UTC, like `bars.normalise_frame`).
        utc = pd.DatetimeIndex(pd.to_datetime(group["ts"], utc=True))
        ts = utc.tz_localize(None).to_numpy("datetime64[ns]")
        close = group["close"].to_numpy(dtype=np.float64)
        end_pos = np.arange(window - 1, len(group))
        end_ts = ts[end_pos]
        want = (end_ts + horizon * _MINUTE).astype("datetime64[ns]")
        keep = np.less_equal(want, _session_ends(ts)[end_pos])
        # Last bar at or before end_ts + horizon: the last traded price at that instant.
        target_pos = np.searchsorted(ts, want[keep], side="right") - 1
        views.append((sliding_windows(values, window), np.flatnonzero(keep)))
        last.append(close[end_pos[keep]])
        future.append(close[target_pos])
        ends.append(end_ts[keep])
        starts.append(ts[end_pos[keep] - window + 1])
        targets_ts.append(ts[target_pos])
        symbols.append(np.full(int(keep.sum()), str(symbol)))

    if not views:
        empty_ts = np.empty(0, dtype="datetime64[ns]")
        return Dataset(
            X=np.empty((0, window, n_features), dtype=np.float32),
            y=np.empty(0),
            last_close=np.empty(0),
            future_close=np.empty(0),
            end_ts=empty_ts,
            start_ts=empty_ts,
            target_ts=empty_ts,
            symbol=np.empty(0, dtype=np.str_),
            columns=tuple(columns),
            target=target,
            horizon=horizon,
        )
    last_close = np.concatenate(last)
    future_close = np.concatenate(future)
    return Dataset(
        X=_gather(views, window, n_features),
        y=make_target(future_close, last_close, target),
        last_close=last_close,
        future_close=future_close,
        end_ts=np.concatenate(ends),
        start_ts=np.concatenate(starts),
        target_ts=np.concatenate(targets_ts),
        symbol=np.concatenate(symbols),
        columns=tuple(columns),
        target=target,
        horizon=horizon,
    )


def _gather(
    views: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]],
    window: int,
    n_features: int,
) -> npt.NDArray[np.float32]:
    out = np.empty((sum(len(i) for _, i in views), window, n_features), dtype=np.float32)
    offset = 0
    for view, index in views:
        out[offset : offset + len(index)] = view[index]
        offset += len(index)
    return out


def chronological_split(
    end_ts: npt.NDArray[np.datetime64],
    window: int,
    horizon: int,
    validation_bps: int,
    test_bps: int,
    *,
    start_ts: npt.NDArray[np.datetime64] | None = None,
    target_ts: npt.NDArray[np.datetime64] | None = None,
) -> Split:
    """Train, validation and test indices by window end time, purged at the boundaries.

    The distinct end times of all samples form the time axis. The last `test_bps` share
    of samples (in basis points) is the test part, the `validation_bps` share before it
    the validation part, the rest training; the cut points are end times, so they are the
    same for every ticker. Then the first `window + horizon - 1` distinct end times of the
    validation and of the test part are dropped, so at least `window + horizon` end times
    separate the last sample of a part from the first of the next: with one bar per
    minute, no window or target of one part overlaps another.

    When bars are missing, `window` bars of a ticker can span more than `window` distinct
    end times; pass `start_ts` and `target_ts` (a `Dataset` has them) to also drop any
    later-part sample whose window starts at or before the latest target of an earlier
    part. Always pass them for real data.

    Raises:
        DataError: too few samples to leave every part non-empty after purging.
    """
    if not 0 < validation_bps < 10_000 or not 0 < test_bps < 10_000:
        raise ValueError("validation_bps and test_bps must be in (0, 10000)")
    if validation_bps + test_bps >= 10_000:
        raise ValueError("validation_bps + test_bps must leave a training part")
    ts = np.asarray(end_ts).astype("datetime64[ns]")
    n = ts.shape[0]
    order = np.argsort(ts, kind="stable")
    sorted_ts = ts[order]
    test_start = sorted_ts[min(n - 1, int(n * (10_000 - test_bps) // 10_000))]
    val_start = sorted_ts[min(n - 1, int(n * (10_000 - test_bps - validation_bps) // 10_000))]

    times = np.unique(ts)
    pos = np.searchsorted(times, ts)
    purge = window + horizon - 1
    val_first = int(np.searchsorted(times, val_start))
    test_first = int(np.searchsorted(times, test_start))
    train_mask = pos < val_first
    val_mask = (pos >= val_first + purge) & (pos < test_first)
    test_mask = pos >= test_first + purge

    if start_ts is not None and target_ts is not None:
        starts = np.asarray(start_ts).astype("datetime64[ns]")
        targets = np.asarray(target_ts).astype("datetime64[ns]")
        if train_mask.any():
            val_mask &= starts > targets[train_mask].max()
        if val_mask.any():
            test_mask &= starts > targets[val_mask].max()
        if train_mask.any():
            test_mask &= starts > targets[train_mask].max()

    parts = {"train": train_mask, "validation": val_mask, "test": test_mask}
    empty = [name for name, mask in parts.items() if not mask.any()]
    if empty:
        raise DataError(
            f"{n} samples are too few for a chronological split with window {window}, "
            f"horizon {horizon}: no {', '.join(empty)} samples left after purging"
        )
    return Split(
        train=np.flatnonzero(train_mask).astype(np.int64),
        validation=np.flatnonzero(val_mask).astype(np.int64),
        test=np.flatnonzero(test_mask).astype(np.int64),
        validation_start=val_start,
        test_start=test_start,
    )
