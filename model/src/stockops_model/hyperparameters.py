"""The hyperparameters of one training run, as one explicit dataclass.

`Hyperparameters.from_spec` resolves a StockModel spec (features, horizon, target, training)
into plain Python values: the learning rate becomes a float here and nowhere else, the
indicator list becomes feature column names. `as_params` is exactly what is logged to MLflow
as run parameters, so a run's parameters always say what the code trained with.

Limits: only what changes the fitted model lives here; where the bars come from (storage,
look-back dates) is recorded as data lineage by `stockops_model.training` instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from stockops_model.spec import StockModelSpec, Target, TrainingSpec


@dataclass(frozen=True)
class Hyperparameters:
    """Everything that decides the fitted network, with the spec's defaults.

    Attributes:
        window: bars per input window.
        horizon: bars ahead of the last bar of a window that the forecast is for.
        target: "return" (change relative to the last close) or "level" (MinMax-scaled close).
        units: LSTM units.
        epochs: maximum epochs; early stopping usually ends sooner.
        batch_size: windows per gradient step.
        learning_rate: Adam learning rate.
        patience: epochs without validation improvement before stopping.
        seed: seed of weights, shuffling and anything random.
        validation_bps: share of windows in the validation part, basis points.
        test_bps: share of windows in the test part, basis points.
    """

    window: int = 32
    horizon: int = 1
    target: str = Target.RETURN.value
    units: int = TrainingSpec.model_fields["units"].default
    epochs: int = TrainingSpec.model_fields["epochs"].default
    batch_size: int = TrainingSpec.model_fields["batch_size"].default
    learning_rate: float = float(TrainingSpec.model_fields["learning_rate"].default)
    patience: int = TrainingSpec.model_fields["patience"].default
    seed: int = TrainingSpec.model_fields["seed"].default
    validation_bps: int = TrainingSpec.model_fields["validation_bps"].default
    test_bps: int = TrainingSpec.model_fields["test_bps"].default

    @classmethod
    def from_spec(cls, spec: StockModelSpec) -> Hyperparameters:
        """The hyperparameters a StockModel spec asks for."""
        t = spec.training
        return cls(
            window=spec.features.window,
            horizon=spec.horizon,
            target=str(spec.target),
            units=t.units,
            epochs=t.epochs,
            batch_size=t.batch_size,
            learning_rate=float(t.learning_rate),
            patience=t.patience,
            seed=t.seed,
            validation_bps=t.validation_bps,
            test_bps=t.test_bps,
        )

    def with_changes(self, **changes: Any) -> Hyperparameters:
        """A copy with some fields replaced (benchmarks and tests shrink a model this way)."""
        return replace(self, **changes)

    def as_params(self) -> dict[str, str | int | float]:
        """The run parameters logged to MLflow, one per field, values as they are."""
        return dict(asdict(self))
