"""The contract every serving target implements, and the result a rollout reports.

A `Release` is what to roll out: one version of the StockModel's registered MLflow model.
A `DeployTarget` rolls it out under a `RolloutSpec` (canary steps, readiness wait, step
observation time, automatic rollback) and returns a `RolloutResult`, which `stockops deploy`
prints as one JSON line for the operator (see `stockops_model.results`).

Semantics every target keeps:

- Idempotent: rolling out the version that already takes all the traffic changes nothing
  and reports success (a Job retried by Kubernetes must not redeploy).
- The old version keeps serving until the new one is ready and has passed its checks.
- On any failure after the new version started taking traffic, and `autoRollback` is on,
  the target restores the previous version's full traffic and raises `RolloutError`
  carrying the result (`rolled_back=True`, `serving_version` the old version), so the
  process exits with `ExitCode.ROLLOUT_FAILED` and still prints its JSON line.
- A dependency that cannot be reached before anything changed raises
  `ServiceUnavailableError` (retry later); an invalid target setting raises `SpecError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from stockops_model.errors import RolloutError
from stockops_model.spec import RolloutSpec, StockModel


@dataclass(frozen=True)
class Release:
    """One registered model version to serve."""

    model_name: str  # the registered MLflow model (spec.mlflow.modelName)
    version: str  # its version, e.g. "7"
    tracking_uri: str  # where the registry lives

    @property
    def model_uri(self) -> str:
        """The pinned MLflow URI of this version (`models:/NAME/VERSION`)."""
        return f"models:/{self.model_name}/{self.version}"


@dataclass
class RolloutResult:
    """What a rollout did; `to_json()` is the line the operator reads."""

    target: str  # azureml | kserve | local
    requested_version: str  # the version this rollout was asked to serve
    serving_version: str | None  # the version taking (most) traffic now
    previous_version: str | None  # the version serving before the rollout
    endpoint_url: str | None  # the scoring URL clients call
    traffic: dict[str, int] = field(default_factory=dict)  # version -> percent
    rolled_back: bool = False
    message: str = ""
    steps: list[int] = field(default_factory=list)  # traffic percentages applied, in order

    @classmethod
    def unchanged(cls, model: StockModel, version: str, message: str) -> RolloutResult:
        """The result of a rollout that stopped before changing anything."""
        return cls(
            target=str(model.spec.serving.target),
            requested_version=version,
            serving_version=None,
            previous_version=None,
            endpoint_url=None,
            message=message,
        )

    @property
    def succeeded(self) -> bool:
        return not self.rolled_back and self.serving_version == self.requested_version

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "requested_version": self.requested_version,
            "serving_version": self.serving_version,
            "previous_version": self.previous_version,
            "endpoint_url": self.endpoint_url,
            "traffic": dict(self.traffic),
            "rolled_back": self.rolled_back,
            "succeeded": self.succeeded,
            "message": self.message,
            "steps": list(self.steps),
        }


class RolloutFailedError(RolloutError):
    """A rollout failed; `result` says what is serving now (after any rollback)."""

    def __init__(self, message: str, result: RolloutResult) -> None:
        super().__init__(message)
        self.result = result


class DeployTarget(Protocol):
    """A serving target: where a StockModel's production version answers requests."""

    name: str

    def serving_version(self) -> str | None:
        """The version that takes all (or most) traffic now; None when nothing is deployed."""
        ...

    def rollout(self, release: Release, policy: RolloutSpec) -> RolloutResult:
        """Serve `release` under `policy`; raises `RolloutFailedError` after a rollback."""
        ...


class Clock(Protocol):
    """Time for waits and polls; tests pass a fake so rollouts do not sleep."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
