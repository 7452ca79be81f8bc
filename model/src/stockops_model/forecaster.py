"""Fitted forecasters that take raw recent bars and return the forecast close per ticker.

A forecaster carries everything between raw bars and a price: the part of the spec that
shapes the input (tickers, indicators, window, horizon, target), the scalers fitted on the
training part and the Keras network. Clients never scale anything; the MLflow pyfunc
(`stockops_model.registry`) and the scoring server wrap these classes unchanged.

Input: a DataFrame (or JSON records) with `symbol`, `ts` (bar start; timezone-aware, or
naive taken as UTC, or ISO 8601 strings), `open`, `high`, `low`, `close`, `volume`; extra
columns are ignored. Per ticker the bars must be in time order without repeated `ts`, and
the network needs at least `min_bars` of them (window + indicator warm-up). Every problem
raises `DataError` naming the field and the ticker.

Output: `symbol`, `ts` (start of the last bar used, UTC), `forecast_close`, `horizon` (bars).
`origins="last"` gives one row per ticker (the serving case); `origins="all"` forecasts
from every bar that has enough history (the promotion gate evaluates a whole window of
bars in one call this way).

The scoring server skips the DataFrames: it validates the request itself into
`TickerBars` arrays, calls `prepare_windows` (numpy features, `features.feature_matrix`) and
runs `forecast_windows` on windows of many requests at once. Both give what `predict` gives.

`NaiveForecaster` is the persistence baseline (forecast = last close) behind the same
interface, so it can be registered and served like the network.

Limits: the network forecaster imports TensorFlow when loaded or fitted; `NaiveForecaster`
does not. Forecasts from windows that straddle an overnight gap are produced like any other
(the indicators do not reset overnight, see `stockops_model.features`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from stockops_model.errors import DataError
from stockops_model.features import build_features, feature_columns, feature_matrix, warmup_bars
from stockops_model.scalers import Scaler, scaler_from_dict
from stockops_model.spec import IndicatorSpec, StockModelSpec
from stockops_model.windows import TargetKind, sliding_windows, to_price

if TYPE_CHECKING:
    import keras

INPUT_COLUMNS: tuple[str, ...] = ("symbol", "ts", "open", "high", "low", "close", "volume")
OUTPUT_COLUMNS: tuple[str, ...] = ("symbol", "ts", "forecast_close", "horizon")
PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close")
CONFIG_FILE = "forecaster.json"
NETWORK_FILE = "network.keras"
FORMAT_VERSION = 1
# Windows per network call when forecasting many origins: bounds memory, not speed.
PREDICT_BATCH = 4096

Origins = Literal["last", "all"]


@dataclass(frozen=True)
class InputSpec:
    """The part of a StockModel spec that turns raw bars into network input."""

    tickers: tuple[str, ...]
    indicators: tuple[IndicatorSpec, ...]
    window: int
    horizon: int
    target: TargetKind

    @classmethod
    def from_spec(cls, spec: StockModelSpec) -> InputSpec:
        return cls(
            tickers=tuple(spec.tickers),
            indicators=tuple(spec.features.indicators),
            window=spec.features.window,
            horizon=spec.horizon,
            target="level" if str(spec.target) == "level" else "return",
        )

    @property
    def columns(self) -> list[str]:
        """Network input columns, in order."""
        return feature_columns(self.indicators, self.tickers)

    @property
    def min_bars(self) -> int:
        """Raw bars per ticker needed for one forecast: indicator warm-up plus one window."""
        return warmup_bars(self.indicators) + self.window

    def to_dict(self) -> dict[str, Any]:
        return {
            "tickers": list(self.tickers),
            "indicators": [i.to_wire() for i in self.indicators],
            "window": self.window,
            "horizon": self.horizon,
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        target = data["target"]
        if target not in ("return", "level"):
            raise ValueError(f"unknown target {target!r}")
        return cls(
            tickers=tuple(data["tickers"]),
            indicators=tuple(IndicatorSpec.model_validate(i) for i in data["indicators"]),
            window=int(data["window"]),
            horizon=int(data["horizon"]),
            target=target,
        )


def prepare_bars(
    bars: pd.DataFrame | Sequence[dict[str, Any]],
    tickers: Sequence[str],
    min_bars: int,
) -> pd.DataFrame:
    """Validate raw input bars and return them typed (ts UTC, prices float64).

    Raises:
        DataError: a missing column, an unknown ticker, an unreadable, unsorted or repeated
            `ts`, a missing, non-finite or non-positive price, a negative volume, or fewer
            than `min_bars` bars for a ticker. The message names the field and the ticker.
    """
    frame = bars if isinstance(bars, pd.DataFrame) else pd.DataFrame(list(bars))
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"input bars lack column(s) {', '.join(missing)}")
    if frame.empty:
        raise DataError("input bars: no rows")
    out = frame.loc[:, list(INPUT_COLUMNS)].copy()
    out["symbol"] = out["symbol"].astype(object).astype(str)
    unknown = sorted(set(out["symbol"]) - set(tickers))
    if unknown:
        raise DataError(
            f"symbol: unknown ticker(s) {', '.join(unknown)}; this model forecasts "
            f"{', '.join(tickers)}"
        )
    try:
        out["ts"] = pd.to_datetime(out["ts"], utc=True).astype("datetime64[ns, UTC]")
    except (ValueError, TypeError) as exc:
        raise DataError(f"ts: cannot be read as timestamps: {exc}") from None
    if out["ts"].isna().any():
        raise DataError(f"ts: {int(out['ts'].isna().sum())} missing timestamp(s)")
    for name in (*PRICE_FIELDS, "volume"):
        try:
            values = pd.to_numeric(out[name], errors="raise").astype("float64")
        except (ValueError, TypeError) as exc:
            raise DataError(f"{name}: not numeric: {exc}") from None
        array = values.to_numpy()
        bad = ~np.isfinite(array) | ((array <= 0) if name != "volume" else (array < 0))
        if bad.any():
            row = out.loc[bad].iloc[0]
            rule = "finite and >= 0" if name == "volume" else "finite and positive"
            raise DataError(
                f"{name}: {int(bad.sum())} value(s) not {rule}, first {row['symbol']} at "
                f"{row['ts']}: {array[bad][0]}"
            )
        out[name] = values
    for symbol, ts in out.groupby("symbol", sort=False)["ts"]:
        steps = np.diff(pd.DatetimeIndex(ts).asi8)
        if (steps == 0).any():
            first = ts.iloc[int(np.flatnonzero(steps == 0)[0]) + 1]
            raise DataError(f"ts: repeated timestamp {first} for {symbol}")
        if (steps < 0).any():
            first = ts.iloc[int(np.flatnonzero(steps < 0)[0]) + 1]
            raise DataError(f"ts: not in time order for {symbol} (at {first})")
        if len(ts) < min_bars:
            raise DataError(
                f"ts: {len(ts)} bar(s) of {symbol}, need at least {min_bars} (window plus "
                f"indicator warm-up)"
            )
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class TickerBars:
    """One ticker's validated bars as plain arrays: the scoring server's fast-path input.

    The caller has already checked what `prepare_bars` checks (known ticker, ts strictly
    increasing, prices finite and positive, at least `min_bars` bars); only the columns the
    features read are carried.
    """

    symbol: str
    ts: npt.NDArray[np.datetime64]  # datetime64[ns], UTC
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Windows:
    """Forecast origins ready for `forecast_windows`, with what identifies each one.

    `x` is the (N, window, F) unscaled network input (None for the naive forecaster, which
    needs no window); `last_close`, `symbols` and `ts` have one entry per origin.
    """

    symbols: list[str]
    ts: npt.NDArray[np.datetime64]
    last_close: npt.NDArray[np.float64]
    x: npt.NDArray[np.float32] | None

    def __len__(self) -> int:
        return len(self.last_close)


def _check_fast_input(bars: TickerBars, tickers: Sequence[str], min_bars: int) -> None:
    if bars.symbol not in tickers:
        raise DataError(
            f"symbol: unknown ticker(s) {bars.symbol}; this model forecasts {', '.join(tickers)}"
        )
    if len(bars.close) < min_bars:
        raise DataError(
            f"ts: {len(bars.close)} bar(s) of {bars.symbol}, need at least {min_bars} (window "
            f"plus indicator warm-up)"
        )


def _origin_windows(
    bars: Sequence[TickerBars],
    tickers: Sequence[str],
    min_bars: int,
    origins: int,
    windows_of: Callable[[TickerBars, int], npt.NDArray[np.float32]] | None,
) -> Windows:
    """The last `origins` forecast origins of each ticker, tickers in name order."""
    symbols: list[str] = []
    stamps: list[npt.NDArray[np.datetime64]] = []
    closes: list[npt.NDArray[np.float64]] = []
    xs: list[npt.NDArray[np.float32]] = []
    for one in sorted(bars, key=lambda b: b.symbol):
        _check_fast_input(one, tickers, min_bars)
        count = min(origins, len(one.close) - min_bars + 1)
        symbols.extend([one.symbol] * count)
        stamps.append(one.ts[len(one.ts) - count :])
        closes.append(np.asarray(one.close[len(one.close) - count :], dtype=np.float64))
        if windows_of is not None:
            xs.append(windows_of(one, count))
    return Windows(
        symbols=symbols,
        ts=np.concatenate(stamps) if stamps else np.empty(0, dtype="datetime64[ns]"),
        last_close=np.concatenate(closes) if closes else np.empty(0, dtype=np.float64),
        x=np.concatenate(xs) if xs else None,
    )


def _output(symbols: Sequence[str], ts: Sequence[Any], forecast: Any, horizon: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series(list(symbols), dtype=object).astype(str),
            "ts": pd.to_datetime(pd.Series(list(ts)), utc=True).astype("datetime64[ns, UTC]"),
            "forecast_close": np.asarray(forecast, dtype=np.float64),
            "horizon": np.full(len(symbols), horizon, dtype=np.int64),
        }
    )


@dataclass
class NaiveForecaster:
    """Persistence: the forecast close at any horizon is the last observed close."""

    tickers: tuple[str, ...]
    horizon: int = 1
    kind: str = field(default="naive", init=False)

    @property
    def min_bars(self) -> int:
        return 1

    def predict(
        self, bars: pd.DataFrame | Sequence[dict[str, Any]], origins: Origins = "last"
    ) -> pd.DataFrame:
        """Forecast close per ticker (see the module docstring)."""
        frame = prepare_bars(bars, self.tickers, self.min_bars)
        if origins == "last":
            frame = frame.groupby("symbol", sort=True).tail(1)
        frame = frame.sort_values(["symbol", "ts"], kind="stable")
        return _output(frame["symbol"].tolist(), frame["ts"].tolist(), frame["close"], self.horizon)

    def prepare_windows(self, bars: Sequence[TickerBars], origins: int = 1) -> Windows:
        """The last `origins` origins per ticker from validated arrays (no window needed)."""
        return _origin_windows(bars, self.tickers, self.min_bars, origins, None)

    def forecast_windows(
        self, x: npt.NDArray[np.floating] | None, last_close: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Persistence: the forecast is the last close (`x` is ignored)."""
        return np.array(last_close, dtype=np.float64)

    def save(self, path: str | Path) -> None:
        """Write `forecaster.json` (tickers, horizon) into `path`."""
        _write_config(path, self.kind, {"tickers": list(self.tickers), "horizon": self.horizon})

    def describe(self) -> dict[str, Any]:
        """What the registry records about this forecaster (MLmodel metadata)."""
        return _summary(self)


@dataclass
class NetworkForecaster:
    """The LSTM-attention network with its input spec and fitted scalers."""

    inputs: InputSpec
    x_scaler: Scaler
    y_scaler: Scaler
    network: keras.Model
    kind: str = field(default="network", init=False)
    _predict_fn: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]] | None = field(
        default=None, init=False, repr=False
    )

    @property
    def tickers(self) -> tuple[str, ...]:
        return self.inputs.tickers

    @property
    def horizon(self) -> int:
        return self.inputs.horizon

    @property
    def min_bars(self) -> int:
        return self.inputs.min_bars

    def predict(
        self, bars: pd.DataFrame | Sequence[dict[str, Any]], origins: Origins = "last"
    ) -> pd.DataFrame:
        """Forecast close per ticker from raw bars (see the module docstring)."""
        frame = prepare_bars(bars, self.tickers, self.min_bars)
        features = build_features(frame, self.inputs.indicators, self.tickers)
        columns = self.inputs.columns
        window = self.inputs.window
        xs: list[npt.NDArray[np.float32]] = []
        symbols: list[str] = []
        stamps: list[Any] = []
        last_close: list[npt.NDArray[np.float64]] = []
        for symbol, group in features.groupby("symbol", sort=True):
            values = group.loc[:, columns].to_numpy(dtype=np.float32)
            windows = sliding_windows(values, window)
            if origins == "last":
                windows = windows[-1:]
            count = len(windows)
            xs.append(np.asarray(windows))
            symbols.extend([str(symbol)] * count)
            stamps.extend(group["ts"].iloc[len(group) - count :].tolist())
            last_close.append(group["close"].to_numpy(dtype=np.float64)[len(group) - count :])
        x = np.concatenate(xs)
        forecast = self.forecast_windows(x, np.concatenate(last_close))
        return _output(symbols, stamps, forecast, self.horizon)

    def prepare_windows(self, bars: Sequence[TickerBars], origins: int = 1) -> Windows:
        """Network input for the last `origins` origins per ticker, from validated arrays.

        The fast path of `predict` for the scoring server: numpy only (`feature_matrix`),
        and the same windows `predict` builds from the same bars (a unit test checks it).
        Tickers come in name order, each ticker's origins in time order, as in `predict`.

        Raises:
            DataError: a ticker the model does not know, or fewer than `min_bars` bars.
        """
        inputs = self.inputs

        def windows_of(one: TickerBars, count: int) -> npt.NDArray[np.float32]:
            # The last `count` windows span the last count + window - 1 feature rows.
            features = feature_matrix(
                one.high,
                one.low,
                one.close,
                inputs.indicators,
                inputs.tickers,
                one.symbol,
                last=count + inputs.window - 1,
            )
            # Valid but huge prices (1e300) overflow float32 to inf: the caller checks the
            # windows are finite (the server answers invalid_price), so no warning per call.
            with np.errstate(over="ignore"):
                narrow = features.astype(np.float32)
            return sliding_windows(narrow, inputs.window)[-count:]

        return _origin_windows(bars, self.tickers, self.min_bars, origins, windows_of)

    def forecast_windows(
        self, x: npt.NDArray[np.floating] | None, last_close: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Forecast close for unscaled feature windows (N, window, F) and their last closes."""
        if x is None:
            raise DataError("the network forecaster needs input windows")
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        if self._predict_fn is None:
            from stockops_model.network import inference_function

            self._predict_fn = inference_function(self.network)
        return self.forecast_windows_with(self._predict_fn, PREDICT_BATCH, x, last_close)

    def forecast_windows_with(
        self,
        call: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
        chunk: int,
        x: npt.NDArray[np.floating],
        last_close: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """`forecast_windows` with another forward pass of the network.

        Scales the windows, runs `call` on chunks of at most `chunk` windows, unscales its
        outputs and turns them into prices: the serving server passes its XLA-compiled
        network (`stockops_model.server.compiled`), this class its plain tf.function.
        """
        scaled = self.x_scaler.transform(x)
        outputs = [call(scaled[start : start + chunk]) for start in range(0, len(scaled), chunk)]
        y = self.y_scaler.inverse_transform(np.concatenate(outputs).reshape(-1, 1)).reshape(-1)
        return to_price(y, last_close, self.inputs.target)

    def save(self, path: str | Path) -> None:
        """Write `forecaster.json` (input spec, scalers) and `network.keras` into `path`."""
        config = {
            "inputs": self.inputs.to_dict(),
            "x_scaler": self.x_scaler.to_dict(),
            "y_scaler": self.y_scaler.to_dict(),
        }
        directory = _write_config(path, self.kind, config)
        self.network.save(directory / NETWORK_FILE)

    def describe(self) -> dict[str, Any]:
        """What the registry records about this forecaster (MLmodel metadata)."""
        return {**_summary(self), "window": self.inputs.window, "target": self.inputs.target}


Forecaster = NaiveForecaster | NetworkForecaster


def _write_config(path: str | Path, kind: str, config: dict[str, Any]) -> Path:
    """Create `path` and write `forecaster.json` with the format, the kind and `config`."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT_VERSION, "kind": kind, **config}
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2))
    return directory


def _summary(forecaster: Forecaster) -> dict[str, Any]:
    """The metadata every forecaster records: what it is and the input it needs."""
    return {
        "kind": forecaster.kind,
        "tickers": list(forecaster.tickers),
        "min_bars": forecaster.min_bars,
        "horizon": forecaster.horizon,
    }


def load_forecaster(path: str | Path) -> Forecaster:
    """Load a forecaster saved with `save` (imports TensorFlow only for the network).

    Raises:
        DataError: the directory holds no forecaster of a known format.
    """
    directory = Path(path)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{directory}: not a saved forecaster: {exc}") from None
    if config.get("format") != FORMAT_VERSION:
        raise DataError(f"{directory}: forecaster format {config.get('format')!r} unsupported")
    if config["kind"] == "naive":
        return NaiveForecaster(tuple(config["tickers"]), int(config["horizon"]))
    if config["kind"] == "network":
        from stockops_model.network import load_network

        return NetworkForecaster(
            inputs=InputSpec.from_dict(config["inputs"]),
            x_scaler=scaler_from_dict(config["x_scaler"]),
            y_scaler=scaler_from_dict(config["y_scaler"]),
            network=load_network(str(directory / NETWORK_FILE)),
        )
    raise DataError(f"{directory}: unknown forecaster kind {config['kind']!r}")
