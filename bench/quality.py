"""Quality benchmark: chronological walk-forward backtest over the 30 shared tickers.

For every ticker of ../shared/data/bars-2018-1min: RMSE, MAE-scaled MASE and directional
accuracy of the naive (last close) forecast, the original approach (`bench/original.py`:
stockstats, MinMax level target, random split of overlapping windows, batch 16) and ours
(`stockops_model.backtest`: return target, chronological purged split, early stopping),
and ours with the level target, all on exactly the same test windows.

Budget, chosen to stay under 30 minutes on 2 cores (measured 28 minutes with other jobs
loading the machine to a load average of about 9): tickers are modelled in
pairs (alphabetical), like the original's AMZN + AXP model (12 features); 2 walk-forward
folds, each testing one trading day (the last two days of the set) after training on the
5 trading days before it; ours uses the spec's defaults (batch 256, up to 30 epochs, early
stopping); the original runs 5 epochs at batch 16 instead of its 30 (about 1,000 gradient
steps on this much data; 30 epochs would make the original alone take over an hour).
Every model is refitted per fold, scalers included.

MASE here is MAE / MAE of the naive forecast on the same windows (below 1 beats naive);
`mase_ours` on the last line is the mean of the per-ticker values.
Writes the `## quality` section of docs/benchmarks.md. Run: `uv run python bench/quality.py`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import original
from retrain import DOC, write_section

from stockops_model.evaluate import directional_accuracy, mase, rmse
from stockops_model.windows import TargetKind

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bars-2018-1min"
WINDOW = 32
UNITS = 50


def backtest_ours(
    bars: pd.DataFrame, pair: list[str], target: str, folds: int, train_days: int
) -> pd.DataFrame:
    from stockops_model.backtest import run_backtest
    from stockops_model.forecaster import InputSpec
    from stockops_model.hyperparameters import Hyperparameters
    from stockops_model.spec import default_indicators

    kind: TargetKind = "level" if target == "level" else "return"
    inputs = InputSpec(tuple(pair), tuple(default_indicators()), WINDOW, 1, kind)
    params = Hyperparameters(window=WINDOW, units=UNITS, target=kind)
    outcome = run_backtest(bars, inputs, params, folds=folds, test_days=1, train_days=train_days)
    frame: pd.DataFrame = outcome["predictions"]
    return frame


def backtest_original(
    bars: pd.DataFrame, pair: list[str], test: pd.DataFrame, train_days: int, epochs: int
) -> npt.NDArray[np.float64]:
    """Original-approach forecasts for the windows of `test` (NaN where it has none)."""
    forecasts = np.full(len(test), np.nan)
    days = pd.DatetimeIndex(bars["ts"]).tz_convert("America/New_York").normalize()
    all_days = sorted(set(days))
    for fold, part in test.groupby("fold"):
        origin = part["end_ts"].min()
        test_day = origin.tz_convert("America/New_York").normalize()
        position = all_days.index(test_day)
        first_day = all_days[max(0, position - train_days)]
        upto = bars[days <= test_day]
        features = original.stockstats_features(upto, pair)
        # Window only the fold's days; indicators still saw the full history before them.
        sliced = {s: f[f["ts"] >= first_day.tz_convert("UTC")] for s, f in features.items()}
        sliced = {s: f.reset_index(drop=True) for s, f in sliced.items()}
        origin_naive = origin.tz_convert("UTC").tz_localize(None)
        data = original.iloc_windows(sliced, pair, WINDOW, 1, fit_until=origin_naive)
        cutoff = np.datetime64(origin_naive - pd.Timedelta(minutes=WINDOW + 1), "ns")
        train_index = np.flatnonzero(data.end_ts < cutoff)
        run = original.train_original(data, train_index, units=UNITS, epochs=epochs)
        values = original.forecast_matching(run, data, part)
        forecasts[np.flatnonzero((test["fold"] == fold).to_numpy())] = values
        print(f"  {'+'.join(pair)} fold {fold}: original {run.seconds['fit']:.0f} s", flush=True)
    return forecasts


def score(frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, float]]:
    actual = frame["actual"].to_numpy()
    last = frame["last_close"].to_numpy()
    out: dict[str, dict[str, float]] = {}
    for column in ["naive", *columns]:
        forecast = frame[column].to_numpy()
        accuracy, base = directional_accuracy(last, actual, forecast)
        out[column] = {
            "rmse": rmse(actual, forecast),
            "mase": mase(actual, forecast, last),
            "da": accuracy,
            "up": base,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tickers", nargs="*", help="default: every file in --data")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--train-days", type=int, default=5)
    parser.add_argument("--epochs-original", type=int, default=5)
    parser.add_argument("--no-level", action="store_true", help="skip ours with a level target")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from stockops_model.loaders import load_bars

    started = time.perf_counter()
    tickers = sorted(args.tickers or [p.stem for p in args.data.glob("*.csv")])
    bars_all = load_bars(args.data, symbols=tickers)
    pairs = [tickers[i : i + 2] for i in range(0, len(tickers), 2)]
    frames = []
    for pair in pairs:
        t0 = time.perf_counter()
        bars = bars_all[bars_all["symbol"].isin(pair)].reset_index(drop=True)
        frame = backtest_ours(bars, pair, "return", args.folds, args.train_days)
        frame = frame.rename(columns={"model": "ours"})
        if not args.no_level:
            level = backtest_ours(bars, pair, "level", args.folds, args.train_days)
            frame = frame.merge(
                level[["symbol", "end_ts", "model"]].rename(columns={"model": "ours_level"}),
                on=["symbol", "end_ts"],
                how="left",
            )
        frame["original"] = backtest_original(
            bars, pair, frame, args.train_days, args.epochs_original
        )
        frames.append(frame)
        print(f"{'+'.join(pair)} done in {time.perf_counter() - t0:.0f} s", flush=True)
    predictions = pd.concat(frames, ignore_index=True)
    columns = ["original", "ours", *([] if args.no_level else ["ours_level"])]
    complete = predictions.dropna(subset=columns)
    per_ticker = {s: score(g, columns) for s, g in complete.groupby("symbol")}

    names = {"naive": "naive", "original": "original", "ours": "ours", "ours_level": "ours level"}
    shown = ["naive", *columns]
    header = (
        "| ticker | windows | "
        + " | ".join(f"RMSE {names[c]}" for c in shown)
        + " | "
        + " | ".join(f"MASE {names[c]}" for c in columns)
        + " | "
        + " | ".join(f"DA {names[c]}" for c in columns)
        + " | up rate |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]

    def row(label: str, count: int, m: dict[str, dict[str, float]]) -> str:
        return (
            f"| {label} | {count} | "
            + " | ".join(f"{m[c]['rmse']:.4f}" for c in shown)
            + " | "
            + " | ".join(f"{m[c]['mase']:.3f}" for c in columns)
            + " | "
            + " | ".join(f"{m[c]['da']:.3f}" for c in columns)
            + f" | {m['naive']['up']:.3f} |"
        )

    for symbol, metrics in per_ticker.items():
        lines.append(row(str(symbol), int((complete["symbol"] == symbol).sum()), metrics))
    mean: dict[str, dict[str, float]] = {
        c: {
            k: float(np.mean([per_ticker[s][c][k] for s in per_ticker]))
            for k in ("rmse", "mase", "da", "up")
        }
        for c in shown
    }
    lines.append(row("**mean of tickers**", len(complete), mean))
    beats = {c: sum(per_ticker[s][c]["mase"] < 1 for s in per_ticker) for c in columns}
    seconds = time.perf_counter() - started
    print("\n".join(lines))
    mase_ours = mean["ours"]["mase"]
    if not args.no_doc:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        test_days = sorted(set(complete["end_ts"].dt.tz_convert("America/New_York").dt.date))
        body = "\n".join(
            [
                f"`uv run python bench/quality.py` on {when}, {os.cpu_count()} cores "
                f"({platform.machine()}), {seconds / 60:.1f} minutes. {len(per_ticker)} "
                f"tickers modelled in pairs; {args.folds} walk-forward folds testing one "
                f"trading day each ({test_days[0]} .. {test_days[-1]}), each trained on the "
                f"{args.train_days} trading days before it with scalers refitted per fold. "
                "Window 32, LSTM(50) + attention, next-minute close. Original: stockstats, "
                f"MinMax level target, random split, batch 16, {args.epochs_original} epochs. "
                "Ours: return target, purged chronological split, batch 256, early stopping; "
                "'ours level' is the same pipeline with the level target. MASE = MAE / naive "
                "MAE on the same windows; DA = share of moves called in the right direction "
                "(a no-change forecast counts as wrong, so naive scores 0).",
                "",
                *lines,
                "",
                "Tickers with MASE below 1 (beating naive): "
                + ", ".join(f"{names[c]} {beats[c]}/{len(per_ticker)}" for c in columns)
                + ".",
                "",
                f"mase_ours: {mase_ours:.4f}",
            ]
        )
        write_section(DOC, "quality", body)
    print(f"total {seconds / 60:.1f} min")
    print(f"mase_ours: {mase_ours:.4f}" if math.isfinite(mase_ours) else "mase_ours: nan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
