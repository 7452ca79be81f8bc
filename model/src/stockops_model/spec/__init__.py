"""The custom resources `StockModel` and `RetrainSchedule` (stockops.io/v1alpha1): spec and status.

These pydantic models are the one definition shared by the operator, the workloads and local
mode. The CRD schemas in `crds/` are generated from them by `stockops_model.crds`, so the two
cannot drift (a test regenerates and compares). Field names are camelCase on the wire (as in
Kubernetes) and snake_case in Python. The status models live in `stockops_model.status` and the
shared patterns, base models and `cel`/`k8s` helpers in `stockops_model.schema`; the statuses
are re-exported here with the resources they belong to.

The package holds one module per concern, and every public name is re-exported here, so
callers import from `stockops_model.spec` alone: `spec.base` (group, version, name limits,
shared field types), `spec.stockmodel` (source, storage, features, training, MLflow,
promotion, runtime and `StockModelSpec`), `spec.serving` (serving targets and rollout),
`spec.schedule` (`RetrainScheduleSpec`, `parse_duration`) and `spec.manifests` (the
resources, `parse_resource`, `load_manifests`, `load_stockmodel`). It imports nothing but
pydantic and PyYAML, so the operator can use it without the ML stack.

Cross-field rules are written twice, side by side: once as a pydantic validator (used by
`stockops up`, the workloads and the operator) and once as a Kubernetes CEL rule (`cel(...)`,
evaluated by the API server). The unit and end-to-end tests check that both reject the same
specs. CEL cannot tell whether a time zone exists in all versions, so `timeZone` has a pattern
plus a CEL rule that asks CEL's own time-zone database; `zoneinfo` is the final judge here.

Following the Kubernetes API conventions there are no floats in specs or status: thresholds are
basis points (1 bp = 0.01 %), the learning rate and metrics are decimal strings.

`load_manifests` reads YAML manifests (a file, a directory or `STOCKOPS_SPEC_JSON`) and returns
validated resources; every validation error names the field, e.g.
`StockModel/demo spec.training.batchSize: Input should be greater than or equal to 1`.
"""

from __future__ import annotations

from stockops_model.spec.base import (
    API_VERSION,
    GROUP,
    RETRAINSCHEDULE_NAME_MAX,
    SPEC_ENV,
    STOCKMODEL_NAME_MAX,
    VERSION,
    Percent,
    Ticker,
)
from stockops_model.spec.manifests import (
    Metadata,
    Resource,
    RetrainSchedule,
    StockModel,
    describe_spec_error,
    load_manifests,
    load_stockmodel,
    parse_resource,
)
from stockops_model.spec.schedule import (
    ConcurrencyPolicy,
    ModelRef,
    RetrainScheduleSpec,
    parse_duration,
)
from stockops_model.spec.serving import (
    AzureMLSpec,
    KServeSpec,
    LocalServingSpec,
    RolloutSpec,
    ServingSpec,
    ServingTarget,
)
from stockops_model.spec.stockmodel import (
    DEFAULT_PERIODS,
    FeaturesSpec,
    IndicatorName,
    IndicatorSpec,
    KafkaSpec,
    MlflowSpec,
    PromotionSpec,
    PullPolicy,
    ReplaySpec,
    ResourceQuantities,
    ResourcesSpec,
    RuntimeSpec,
    SecretEnvVar,
    Significance,
    SourceKind,
    SourceSpec,
    StockModelSpec,
    StorageSpec,
    SyntheticSpec,
    Target,
    TrainingSpec,
    WorkloadRuntimeSpec,
    YahooSpec,
    default_indicators,
)

# The statuses belong to the resources defined here; callers import them from this package.
from stockops_model.status import (
    Condition,
    ConditionStatus,
    Decision,
    JobReference,
    LastRun,
    LastTraining,
    Metrics,
    RetrainScheduleStatus,
    RunOutcome,
    StockModelConditionType,
    StockModelStatus,
    TrainingMetrics,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_PERIODS",
    "GROUP",
    "RETRAINSCHEDULE_NAME_MAX",
    "SPEC_ENV",
    "STOCKMODEL_NAME_MAX",
    "VERSION",
    "AzureMLSpec",
    "ConcurrencyPolicy",
    "Condition",
    "ConditionStatus",
    "Decision",
    "FeaturesSpec",
    "IndicatorName",
    "IndicatorSpec",
    "JobReference",
    "KServeSpec",
    "KafkaSpec",
    "LastRun",
    "LastTraining",
    "LocalServingSpec",
    "Metadata",
    "Metrics",
    "MlflowSpec",
    "ModelRef",
    "Percent",
    "PromotionSpec",
    "PullPolicy",
    "ReplaySpec",
    "Resource",
    "ResourceQuantities",
    "ResourcesSpec",
    "RetrainSchedule",
    "RetrainScheduleSpec",
    "RetrainScheduleStatus",
    "RolloutSpec",
    "RunOutcome",
    "RuntimeSpec",
    "SecretEnvVar",
    "ServingSpec",
    "ServingTarget",
    "Significance",
    "SourceKind",
    "SourceSpec",
    "StockModel",
    "StockModelConditionType",
    "StockModelSpec",
    "StockModelStatus",
    "StorageSpec",
    "SyntheticSpec",
    "Target",
    "Ticker",
    "TrainingMetrics",
    "TrainingSpec",
    "WorkloadRuntimeSpec",
    "YahooSpec",
    "default_indicators",
    "describe_spec_error",
    "load_manifests",
    "load_stockmodel",
    "parse_duration",
    "parse_resource",
]
