"""The promotion gate: move the `production` alias to a challenger only when it has earned it.

`promote_if_better` evaluates the challenger and the current champion end to end through their
registered pyfuncs (raw bars in, forecast close out) on the same latest bars, adds the naive
(last close) forecast computed straight from those bars, and asks `decide` - pure, unit-tested
logic - whether the challenger

1. beats the champion's RMSE by at least `minImprovementBps` (relative),
2. beats the naive RMSE by at least `minImprovementOverNaiveBps` (relative), and
3. passes the spec's significance test against the champion (one-sided Diebold-Mariano on
   squared errors, small-sample corrected, at `alphaBps`), if one is asked for.

Atomic and idempotent: the only registry change that serves traffic is one
`set_registered_model_alias` call (a single row update on the server), made after every check.
The decision is then written as tags on the challenger version (and its run); those tags are
the gate's commit record. Running the gate again for a challenger that carries them returns
the recorded decision and changes nothing. If the process dies between the alias move and the
tags, the rerun finds the challenger already in production and only records that.
Before moving the alias the champion is read again, and the move is abandoned (decision
"kept", reason says why, and no record, so a rerun judges the challenger against the new
champion) when another gate moved it meanwhile: MLflow has no compare-and-set,
so this narrows the race between two concurrent gates to the span of two calls, and the
operator's `concurrencyPolicy: Forbid` rules it out in practice.

Limits: the comparison is only as fresh as the bars given; the champion is judged on
bars it may have been trained on when they overlap its training range (the challenger is
not: `stockops train` passes its test part's start as `first_origin`), which favours the
champion, the safe direction.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from stockops_model.spec import PromotionSpec, Significance

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"
TAG_PREFIX = "stockops.gate."
TAG_DECISION = TAG_PREFIX + "decision"
TAG_REASON = TAG_PREFIX + "reason"
TAG_RECORD = TAG_PREFIX + "record"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GateMetrics:
    """Accuracy of one forecaster on the gate's bars (prices in quote currency)."""

    rmse: float
    mae: float
    mase: float
    directional_accuracy: float
    count: int
    # Share of up-moves among the bars that moved: the directional accuracy to beat is
    # max(up_base_rate, 1 - up_base_rate).
    up_base_rate: float = math.nan

    @classmethod
    def of(cls, actual: FloatArray, last_close: FloatArray, forecast: FloatArray) -> GateMetrics:
        """Metrics of `forecast` against `actual`, MASE scaled by the last-close forecast."""
        from stockops_model import evaluate

        accuracy, base_rate = evaluate.directional_accuracy(last_close, actual, forecast)
        return cls(
            rmse=float(evaluate.rmse(actual, forecast)),
            mae=float(evaluate.mae(actual, forecast)),
            mase=float(evaluate.mase(actual, forecast, last_close)),
            directional_accuracy=accuracy,
            count=len(actual),
            up_base_rate=base_rate,
        )


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one challenger, and why; printed as the Job's result."""

    model_name: str
    challenger_version: str
    champion_version: str | None
    promoted: bool
    reason: str
    production_version: str | None
    challenger: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] = field(default_factory=dict)
    naive: dict[str, float] = field(default_factory=dict)
    dm_statistic: float | None = None
    dm_p_value: float | None = None
    # True when the decision was read back from the registry rather than made now.
    repeated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN/inf become None)."""
        return dict(_json_safe(asdict(self)))

    def to_json(self) -> str:
        """The decision as one JSON line."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_record(cls, record: str) -> Decision:
        """Read back a decision recorded by `record_decision` (as a repeated decision)."""
        data = json.loads(record)
        data["repeated"] = True
        return cls(**data)


def decide(
    challenger: GateMetrics,
    champion: GateMetrics | None,
    naive: GateMetrics,
    policy: PromotionSpec,
    dm_p_value: float | None = None,
) -> tuple[bool, str]:
    """Whether the challenger may replace the champion, and the reason in one sentence.

    Args:
        challenger: the challenger's metrics on the gate bars.
        champion: the champion's on the same bars; None when there is no production model.
        naive: the last-close forecast's on the same bars.
        policy: the spec's promotion policy.
        dm_p_value: one-sided Diebold-Mariano p-value for "the challenger's squared errors are
            smaller than the champion's"; required when the policy asks for the test.

    Returns:
        (promote, reason).
    """
    if challenger.count == 0 or not math.isfinite(challenger.rmse):
        return False, "challenger produced no usable forecast on the gate bars"
    need_naive = policy.min_improvement_over_naive_bps / 10_000
    # Against persistence "at least m bp better" is not strict: with m = 0 a challenger that
    # ties the naive forecast may still replace a champion that is worse than both.
    if not challenger.rmse <= naive.rmse * (1.0 - need_naive):
        return False, (
            f"challenger RMSE {challenger.rmse:.6g} does not beat the naive forecast's "
            f"{naive.rmse:.6g} by {policy.min_improvement_over_naive_bps} bp"
        )
    if champion is None:
        return True, "no production model yet and the challenger beats the naive forecast"
    need = policy.min_improvement_bps / 10_000
    if not _beats(challenger.rmse, champion.rmse, need):
        return False, (
            f"challenger RMSE {challenger.rmse:.6g} does not beat the champion's "
            f"{champion.rmse:.6g} by {policy.min_improvement_bps} bp"
        )
    if policy.significance == Significance.DIEBOLD_MARIANO:
        alpha = policy.alpha_bps / 10_000
        if dm_p_value is None or not math.isfinite(dm_p_value):
            return False, "Diebold-Mariano test could not be computed on the gate bars"
        if dm_p_value >= alpha:
            return False, (
                f"challenger is better ({challenger.rmse:.6g} vs {champion.rmse:.6g}) but not "
                f"significantly: Diebold-Mariano p={dm_p_value:.3g} >= alpha {alpha:g}"
            )
        return True, (
            f"challenger RMSE {challenger.rmse:.6g} beats the champion's {champion.rmse:.6g} "
            f"by {_gain_bps(challenger.rmse, champion.rmse):.0f} bp, Diebold-Mariano "
            f"p={dm_p_value:.3g} < {alpha:g}"
        )
    return True, (
        f"challenger RMSE {challenger.rmse:.6g} beats the champion's {champion.rmse:.6g} "
        f"by {_gain_bps(challenger.rmse, champion.rmse):.0f} bp"
    )


def _beats(candidate: float, reference: float, min_relative: float) -> bool:
    # Strictly better, and by at least the relative margin: a tie never moves the alias.
    return candidate < reference and candidate <= reference * (1.0 - min_relative)


def _gain_bps(candidate: float, reference: float) -> float:
    return (1.0 - candidate / reference) * 10_000 if reference > 0 else 0.0


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------- evaluation


def gate_targets(bars: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Every bar that has a forecast target: symbol, ts, last_close, actual.

    Uses the training code's target definition (`windows.build_dataset` with a one-bar
    window on the close), so the gate scores exactly what the network was trained for:
    the close `horizon` minutes later, never across a session boundary.
    """
    from stockops_model.windows import build_dataset

    frame = bars.loc[:, ["symbol", "ts", "close"]]
    data = build_dataset(frame, ["close"], window=1, horizon=horizon, target="level")
    return pd.DataFrame(
        {
            "symbol": data.symbol.astype(str),
            "ts": pd.to_datetime(data.end_ts).tz_localize("UTC"),
            "last_close": data.last_close,
            "actual": data.future_close,
        }
    )


def forecast_all(model: Any, bars: pd.DataFrame) -> pd.DataFrame:
    """Forecasts of a loaded pyfunc from every bar it has enough history for.

    Bars of tickers the model does not know, or with too few bars, are left out rather than
    failing the whole gate; the comparison then runs on the tickers both models cover.
    """
    from stockops_model.registry import model_min_bars, model_tickers

    tickers = model_tickers(model)
    if tickers is not None:
        bars = bars[bars["symbol"].isin(tickers)]
    counts = bars.groupby("symbol")["ts"].transform("size")
    bars = bars[counts >= model_min_bars(model)]
    if bars.empty:
        return pd.DataFrame({"symbol": [], "ts": [], "forecast_close": []})
    columns = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    out = model.predict(bars.loc[:, columns].reset_index(drop=True), params={"origins": "all"})
    frame = pd.DataFrame(out).loc[:, ["symbol", "ts", "forecast_close"]]
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def gate_window(
    bars: pd.DataFrame, validation_bars: int, history: int, horizon: int
) -> pd.DataFrame:
    """The latest bars per ticker the gate needs: history for the models plus the window.

    A few bars more than `validation_bars + history` are kept because the last `horizon`
    bars of each session have no target.
    """
    keep = validation_bars + history + 4 * horizon + 8
    ordered = bars.sort_values(["symbol", "ts"], kind="stable")
    return ordered.groupby("symbol", sort=True).tail(keep).reset_index(drop=True)


def compare_on_bars(
    challenger: Any,
    champion: Any | None,
    bars: pd.DataFrame,
    validation_bars: int,
    horizon: int,
    first_origin: pd.Timestamp | None = None,
) -> tuple[GateMetrics, GateMetrics | None, GateMetrics, float | None, float | None, str]:
    """Score both pyfuncs and the naive forecast on the same latest origins.

    `first_origin` (UTC) leaves out earlier origins: `stockops train` passes the start of the
    challenger's test part, so the gate never scores it on windows it was fitted or
    early-stopped on, even when `validation_bars` reaches back past the test part.

    Returns:
        challenger, champion (None if there is none or it cannot forecast these bars),
        naive metrics, the DM statistic and one-sided p-value (challenger better), and a
        note (why the champion was left out, if it was).
    """
    from stockops_model.errors import DataError
    from stockops_model.evaluate import diebold_mariano
    from stockops_model.registry import model_min_bars

    history = max(model_min_bars(challenger), model_min_bars(champion) if champion else 1)
    window = gate_window(bars, validation_bars, history, horizon)
    targets = gate_targets(window, horizon)
    joined = targets.merge(
        forecast_all(challenger, window).rename(columns={"forecast_close": "challenger"}),
        on=["symbol", "ts"],
    )
    note = ""
    if champion is not None:
        try:
            theirs = forecast_all(champion, window).rename(columns={"forecast_close": "champion"})
            with_champion = joined.merge(theirs, on=["symbol", "ts"])
            if with_champion.empty:
                raise DataError("no origin in common with the challenger")
            joined = with_champion
        except DataError as exc:
            note = f"champion cannot forecast the gate bars ({exc}); judged against naive only"
            log.warning("%s", note)
            champion = None
    if first_origin is not None:
        floor = pd.Timestamp(first_origin)
        floor = floor.tz_localize("UTC") if floor.tzinfo is None else floor.tz_convert("UTC")
        joined = joined[joined["ts"] >= floor]
    joined = joined.sort_values(["symbol", "ts"]).groupby("symbol").tail(validation_bars)
    actual = joined["actual"].to_numpy(dtype=np.float64)
    last = joined["last_close"].to_numpy(dtype=np.float64)
    if len(joined) < 2:
        empty = GateMetrics(math.nan, math.nan, math.nan, math.nan, len(joined))
        return empty, None, empty, None, None, "fewer than 2 gate origins"
    mine = joined["challenger"].to_numpy(dtype=np.float64)
    metrics = GateMetrics.of(actual, last, mine)
    naive = GateMetrics.of(actual, last, last)
    if champion is None:
        return metrics, None, naive, None, None, note
    theirs_values = joined["champion"].to_numpy(dtype=np.float64)
    dm = diebold_mariano(actual - mine, actual - theirs_values, horizon=horizon)
    # evaluate's p-value is two-sided; the gate asks "is the challenger better" (one side).
    one_sided = dm.p_value / 2 if dm.statistic < 0 else 1.0 - dm.p_value / 2
    return (
        metrics,
        GateMetrics.of(actual, last, theirs_values),
        naive,
        dm.statistic,
        one_sided,
        note,
    )


# --------------------------------------------------------------------------- the gate


def promote_if_better(
    client: MlflowClient,
    model_name: str,
    challenger_version: str,
    bars: pd.DataFrame,
    policy: PromotionSpec,
    horizon: int,
    first_origin: pd.Timestamp | None = None,
) -> Decision:
    """Run the gate for one registered challenger version (see the module docstring).

    Args:
        client: MLflow client of the tracking server holding the registry.
        model_name: the registered model.
        challenger_version: the version to judge.
        bars: recent raw bars of the model's tickers; the latest `policy.validation_bars`
            forecast origins per ticker are scored.
        policy: the spec's promotion policy.
        horizon: forecast horizon in bars (for the targets and the DM test).
        first_origin: score no origin before this time (naive means UTC); `stockops train`
            passes the start of the challenger's test part (see `compare_on_bars`).

    Returns:
        The decision (also recorded as tags on the challenger version and its run).
    """
    from stockops_model.registry import PRODUCTION_ALIAS as ALIAS
    from stockops_model.registry import load_pyfunc, production_version

    version = client.get_model_version(model_name, challenger_version)
    if TAG_RECORD in (version.tags or {}):
        decision = Decision.from_record(version.tags[TAG_RECORD])
        log.info(
            "gate already decided for %s version %s: %s",
            model_name,
            challenger_version,
            "promoted" if decision.promoted else "kept",
        )
        return decision

    champion = production_version(client, model_name)
    champion_version = str(champion.version) if champion is not None else None
    if champion_version == str(challenger_version):
        decision = Decision(
            model_name,
            str(challenger_version),
            champion_version,
            True,
            "challenger is already the production model",
            champion_version,
        )
        record_decision(client, decision, version.run_id)
        return decision

    challenger_model = load_pyfunc(model_name, str(challenger_version))
    champion_model = load_pyfunc(model_name, champion_version) if champion_version else None
    mine, theirs, naive, dm_stat, dm_p, note = compare_on_bars(
        challenger_model, champion_model, bars, policy.validation_bars, horizon, first_origin
    )
    promote, reason = decide(mine, theirs, naive, policy, dm_p)
    if note:
        reason = f"{reason} ({note})"
    production = champion_version
    final = True
    if promote:
        current = production_version(client, model_name)
        current_version = str(current.version) if current is not None else None
        if current_version != champion_version:
            promote = False
            reason = (
                f"production moved from {champion_version} to {current_version} while "
                "the gate ran; not moved, rerun the gate against the new champion"
            )
            production = current_version
            # Not a verdict on this challenger: left without the record so a rerun judges
            # it against the new champion instead of replaying this outcome.
            final = False
        else:
            client.set_registered_model_alias(model_name, ALIAS, str(challenger_version))
            production = str(challenger_version)
    decision = Decision(
        model_name=model_name,
        challenger_version=str(challenger_version),
        champion_version=champion_version,
        promoted=promote,
        reason=reason,
        production_version=production,
        challenger=asdict(mine),
        champion=asdict(theirs) if theirs is not None else {},
        naive=asdict(naive),
        dm_statistic=dm_stat,
        dm_p_value=dm_p,
    )
    record_decision(client, decision, version.run_id, final=final)
    log.info(
        "gate for %s version %s: %s (%s)",
        model_name,
        challenger_version,
        "promoted" if promote else "kept",
        reason,
    )
    return decision


def decision_tags(decision: Decision, final: bool = True) -> dict[str, str]:
    """The MLflow tags that record a decision: outcome, reason, metric sets, full record.

    With `final=False` the full record is left out, so the gate judges the challenger
    again when it runs again (see `promote_if_better`).
    """
    tags = {
        TAG_DECISION: "promoted" if decision.promoted else "kept",
        TAG_REASON: decision.reason[:5000],
        TAG_PREFIX + "champion-version": str(decision.champion_version or ""),
    }
    for role in ("challenger", "champion", "naive"):
        for key, value in getattr(decision, role).items():
            tags[f"{TAG_PREFIX}{role}.{key}"] = (
                f"{value:.10g}" if isinstance(value, float) else str(value)
            )
    if decision.dm_p_value is not None:
        tags[TAG_PREFIX + "dm-p-value"] = f"{decision.dm_p_value:.6g}"
    if final:
        # Written last by record_decision: its presence marks the decision as complete.
        tags[TAG_RECORD] = decision.to_json()
    return tags


def record_decision(
    client: MlflowClient, decision: Decision, run_id: str | None, final: bool = True
) -> None:
    """Write the decision tags on the run first, then on the version, the record tag last."""
    from mlflow.entities import RunTag

    tags = decision_tags(decision, final)
    if run_id:
        # One request for the run's tags; versions have no batch call, hence one per tag.
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
    for key, value in tags.items():
        client.set_model_version_tag(decision.model_name, decision.challenger_version, key, value)
