"""The custom resources `StockModel` and `RetrainSchedule` (stockops.io/v1alpha1): spec and status.

These pydantic models are the one definition shared by the operator, the workloads and local
mode. The CRD schemas in `crds/` are generated from them by `stockops_model.crds`, so the two
cannot drift (a test regenerates and compares). Field names are camelCase on the wire (as in
Kubernetes) and snake_case in Python. The status models live in `stockops_model.status` and the
shared patterns, base models and `cel`/`k8s` helpers in `stockops_model.schema`; the statuses
are re-exported here with the resources they belong to.

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

import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from stockops_model.errors import SpecError
from stockops_model.schema import (
    CRON_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    ENV_NAME_PATTERN,
    MODEL_NAME_PATTERN,
    QUANTITY_PATTERN,
    TICKER_PATTERN,
    TIME_ZONE_PATTERN,
    TOPIC_PATTERN,
    UUID_PATTERN,
    SpecModel,
    cel,
    k8s,
)

# Re-exported (`X as X`): the statuses belong to the resources defined here, and callers
# import them from this module.
from stockops_model.status import Condition as Condition
from stockops_model.status import ConditionStatus as ConditionStatus
from stockops_model.status import Decision as Decision
from stockops_model.status import JobReference as JobReference
from stockops_model.status import LastRun as LastRun
from stockops_model.status import LastTraining as LastTraining
from stockops_model.status import Metrics as Metrics
from stockops_model.status import RetrainScheduleStatus as RetrainScheduleStatus
from stockops_model.status import RunOutcome as RunOutcome
from stockops_model.status import StockModelConditionType as StockModelConditionType
from stockops_model.status import StockModelStatus as StockModelStatus
from stockops_model.status import TrainingMetrics as TrainingMetrics

GROUP = "stockops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
SPEC_ENV = "STOCKOPS_SPEC_JSON"

# Longest object names: generated children (`<name>-feed`, `<name>-deploy-<version>`, Job names
# with a schedule hash) must stay within the 63 characters of a label value, like CronJob's 52.
STOCKMODEL_NAME_MAX = 45
RETRAINSCHEDULE_NAME_MAX = 52

Ticker = Annotated[
    str, Field(pattern=TICKER_PATTERN, max_length=15, description="Ticker symbol, upper case")
]
Percent = Annotated[int, Field(ge=1, le=100, description="Traffic percentage.")]


# --------------------------------------------------------------------------- StockModel


class SourceKind(StrEnum):
    YAHOO = "yahoo"
    REPLAY = "replay"
    SYNTHETIC = "synthetic"


class KafkaSpec(SpecModel):
    """How the feed and the sink reach the Kafka-protocol bus (Kafka or Event Hubs)."""

    bootstrap_servers: str = Field(
        default="kafka:9092",
        min_length=1,
        max_length=1024,
        description="Comma-separated host:port list of the Kafka bootstrap servers.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="Kafka security protocol; SASL_SSL for the Azure Event Hubs Kafka endpoint.",
    )
    sasl_secret_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Secret with keys `username` and `password` for SASL PLAIN (Event Hubs).",
    )


class YahooSpec(SpecModel):
    """Polling settings of the Yahoo Finance v8 chart source."""

    poll_seconds: int = Field(
        default=30, ge=5, le=3600, description="Seconds between two polls of each ticker."
    )
    include_pre_post: bool = Field(
        default=False, description="Also publish pre- and post-market bars."
    )


class ReplaySpec(SpecModel):
    """Replay of recorded 1-minute bar files through the live interface."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "!has(self.start) || !has(self.end) || self.start <= self.end",
                "start must not be after end",
                field_path=".start",
            )
        )
    )

    path: str = Field(
        default="examples/data",
        min_length=1,
        max_length=4096,
        description="File or directory of recorded bars (Alpha Vantage CSV or NinjaTrader format).",
    )
    speed: int = Field(
        default=60,
        ge=0,
        le=1_000_000,
        description="Clock acceleration: 60 plays a trading hour a minute; 0 as fast as possible.",
    )
    start: date | None = Field(default=None, description="First trading day to replay.")
    end: date | None = Field(default=None, description="Last trading day to replay (inclusive).")
    regular_hours: bool = Field(default=True, description="Replay regular trading hours only.")

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("start must not be after end")
        return self


class SyntheticSpec(SpecModel):
    """Seeded geometric Brownian motion bars, for examples that need no data files."""

    seed: int = Field(
        default=7,
        ge=0,
        le=2**31 - 1,
        description="Random seed; the same seed gives the same bars.",
    )
    days: int = Field(default=5, ge=1, le=3650, description="Number of trading days to generate.")
    start_date: date = Field(default=date(2024, 1, 2), description="First trading day.")
    speed: int = Field(
        default=0, ge=0, le=1_000_000, description="Clock acceleration; 0 as fast as possible."
    )


class SourceSpec(SpecModel):
    """Where bars come from and the Kafka topic they are published to."""

    type: SourceKind = Field(default=SourceKind.SYNTHETIC, description="The market-data source.")
    topic: str = Field(
        default="stockops.bars",
        pattern=TOPIC_PATTERN,
        max_length=200,
        description="Kafka topic of closed bars.",
    )
    kafka: KafkaSpec = Field(default_factory=KafkaSpec, description="Kafka connection.")
    yahoo: YahooSpec = Field(default_factory=YahooSpec, description="Settings of the yahoo source.")
    replay: ReplaySpec = Field(
        default_factory=ReplaySpec, description="Settings of the replay source."
    )
    synthetic: SyntheticSpec = Field(
        default_factory=SyntheticSpec, description="Settings of the synthetic source."
    )


class StorageSpec(SpecModel):
    """Where day objects of bars live: an Azure Blob container, or a local directory."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "has(self.account) == has(self.container)",
                "account and container must be set together",
                field_path=".container",
            ),
            cel(
                "has(self.account) != has(self.path)",
                "set exactly one of account+container (Blob) or path (local)",
                field_path=".path",
            ),
        )
    )

    account: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]{3,24}$",
        max_length=24,
        description="Azure Storage account (with `container`), reached with workload identity.",
    )
    container: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$",
        max_length=63,
        description="Blob container name (with `account`).",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Local directory instead of Blob (local mode).",
    )
    prefix: str = Field(
        default="bars",
        pattern=r"^[a-zA-Z0-9._\-]+(/[a-zA-Z0-9._\-]+)*$",
        max_length=512,
        description="Path prefix of the day objects: {prefix}/{symbol}/{yyyy}/{mm}/{dd}.parquet.",
    )

    @model_validator(mode="after")
    def _one_location(self) -> Self:
        blob = self.account is not None or self.container is not None
        if blob and (self.account is None or self.container is None):
            raise ValueError("account and container must be set together")
        if blob == (self.path is not None):
            raise ValueError("set exactly one of account+container (Blob) or path (local)")
        return self


class IndicatorName(StrEnum):
    CLOSE = "close"
    MACD = "macd"
    BOLL_UPPER = "bollUpper"
    BOLL_LOWER = "bollLower"
    RSI = "rsi"
    CCI = "cci"
    DX = "dx"
    SMA = "sma"
    AROON = "aroon"


# Indicators that take a period, and the period used when the spec gives none.
DEFAULT_PERIODS: dict[str, int] = {
    IndicatorName.BOLL_UPPER: 20,
    IndicatorName.BOLL_LOWER: 20,
    IndicatorName.RSI: 14,
    IndicatorName.CCI: 14,
    IndicatorName.DX: 14,
    IndicatorName.SMA: 30,
    IndicatorName.AROON: 25,
}


def _cel_effective_period(var: str) -> str:
    """CEL for `IndicatorSpec.effective_period` of the list item `var` (0 when it has none)."""
    periods = ", ".join(f"'{name}': {p}" for name, p in DEFAULT_PERIODS.items())
    return (
        f"(has({var}.period) ? {var}.period : "
        f"({var}.name in {{{periods}}} ? {{{periods}}}[{var}.name] : 0))"
    )


class IndicatorSpec(SpecModel):
    """One input feature of the network."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "!has(self.period) || !(self.name in ['close', 'macd'])",
                "period is not allowed for close and macd",
                field_path=".period",
                reason="FieldValueForbidden",
            )
        )
    )

    name: IndicatorName = Field(description="Indicator to compute per ticker, causally.")
    period: int | None = Field(
        default=None,
        ge=2,
        le=1000,
        description="Look-back in bars; not allowed for close and macd (fixed 12/26/9).",
    )

    @model_validator(mode="after")
    def _period_allowed(self) -> Self:
        if self.period is not None and self.name not in DEFAULT_PERIODS:
            raise ValueError(f"indicator {self.name} takes no period")
        return self

    @property
    def effective_period(self) -> int | None:
        """The period in force: the spec's, else the indicator's default (None if it has none)."""
        return self.period if self.period is not None else DEFAULT_PERIODS.get(self.name)

    @property
    def column(self) -> str:
        """Feature column name, e.g. `rsi_30`, `sma_60`, `macd`."""
        p = self.effective_period
        return str(self.name) if p is None else f"{self.name}_{p}"


def default_indicators() -> list[IndicatorSpec]:
    """The original inputs: close, MACD, Bollinger bands, RSI/CCI/DX-30, SMA-30/60, Aroon."""
    return [
        IndicatorSpec(name=IndicatorName.CLOSE),
        IndicatorSpec(name=IndicatorName.MACD),
        IndicatorSpec(name=IndicatorName.BOLL_UPPER, period=20),
        IndicatorSpec(name=IndicatorName.BOLL_LOWER, period=20),
        IndicatorSpec(name=IndicatorName.RSI, period=30),
        IndicatorSpec(name=IndicatorName.CCI, period=30),
        IndicatorSpec(name=IndicatorName.DX, period=30),
        IndicatorSpec(name=IndicatorName.SMA, period=30),
        IndicatorSpec(name=IndicatorName.SMA, period=60),
        IndicatorSpec(name=IndicatorName.AROON, period=25),
    ]


class FeaturesSpec(SpecModel):
    """Network inputs: which indicators, and how many past bars make one window."""

    indicators: list[IndicatorSpec] = Field(
        default_factory=default_indicators,
        min_length=1,
        max_length=32,
        description="Indicators computed per ticker; a one-hot ticker column is added per ticker.",
        json_schema_extra=k8s(
            cel(
                "self.all(a, self.exists_one(b, b.name == a.name && "
                f"{_cel_effective_period('b')} == {_cel_effective_period('a')}))",
                "indicators must be unique (same name and effective period)",
            )
        ),
    )
    window: int = Field(default=32, ge=4, le=1024, description="Bars per input window.")

    @field_validator("indicators")
    @classmethod
    def _unique_columns(cls, value: list[IndicatorSpec]) -> list[IndicatorSpec]:
        columns = [i.column for i in value]
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate indicator(s): {', '.join(dupes)}")
        return value


class Target(StrEnum):
    RETURN = "return"
    LEVEL = "level"


class TrainingSpec(SpecModel):
    """Network and training hyperparameters (defaults measured on a 2-core CPU machine)."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "self.validationBps + self.testBps <= 6000",
                "validationBps + testBps must leave at least 40% for training",
                field_path=".testBps",
            )
        )
    )

    units: int = Field(default=50, ge=1, le=1024, description="LSTM units.")
    epochs: int = Field(default=30, ge=1, le=1000, description="Maximum epochs (early stopping).")
    batch_size: int = Field(default=256, ge=1, le=65536, description="Windows per gradient step.")
    learning_rate: str = Field(
        default="0.001",
        pattern=r"^[0-9]*\.?[0-9]+([eE]-?[0-9]+)?$",
        max_length=32,
        description="Adam learning rate as a decimal string in (0, 1] (no floats in specs).",
        json_schema_extra=k8s(
            cel("double(self) > 0.0 && double(self) <= 1.0", "learningRate must be in (0, 1]")
        ),
    )
    patience: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Epochs without validation improvement before stopping.",
    )
    seed: int = Field(
        default=42, ge=0, le=2**31 - 1, description="Seed for weights, shuffling and splits."
    )
    lookback_days: int = Field(
        default=90, ge=1, le=3650, description="Trading days of bars read for one training run."
    )
    validation_bps: int = Field(
        default=1500, ge=100, le=5000, description="Share of windows for validation, in bp."
    )
    test_bps: int = Field(
        default=1500, ge=100, le=5000, description="Share of windows for the final test, in bp."
    )

    @field_validator("learning_rate")
    @classmethod
    def _positive_rate(cls, value: str) -> str:
        try:
            rate = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        if not Decimal(0) < rate <= Decimal(1):
            raise ValueError("must be in (0, 1]")
        return value

    @model_validator(mode="after")
    def _leaves_training_data(self) -> Self:
        if self.validation_bps + self.test_bps > 6000:
            raise ValueError("validationBps + testBps must leave at least 40% for training")
        return self


class MlflowSpec(SpecModel):
    """Where runs are tracked and the model is registered."""

    tracking_uri: str = Field(
        default="http://mlflow:5000",
        min_length=1,
        max_length=2048,
        description="MLflow tracking server URI.",
    )
    model_name: str = Field(
        pattern=MODEL_NAME_PATTERN,
        max_length=63,
        description="Registered model name; immutable once set.",
        json_schema_extra=k8s(cel("self == oldSelf", "modelName is immutable")),
    )
    experiment: str | None = Field(
        default=None, max_length=256, description="Experiment name; defaults to the model name."
    )


class Significance(StrEnum):
    NONE = "none"
    DIEBOLD_MARIANO = "dieboldMariano"


class PromotionSpec(SpecModel):
    """When a challenger may replace the production model."""

    min_improvement_bps: int = Field(
        default=0,
        ge=0,
        le=10000,
        description="Minimum relative RMSE improvement over the champion, in bp.",
    )
    min_improvement_over_naive_bps: int = Field(
        default=0,
        ge=0,
        le=10000,
        description="Minimum relative RMSE improvement over the naive (last-close) forecast, bp.",
    )
    significance: Significance = Field(
        default=Significance.DIEBOLD_MARIANO,
        description="Test the challenger must pass against the champion.",
    )
    alpha_bps: int = Field(
        default=500, ge=1, le=5000, description="Significance level in bp (500 = 5 %)."
    )
    validation_bars: int = Field(
        default=390,
        ge=30,
        le=100_000,
        description="Latest bars per ticker on which challenger and champion are compared.",
    )


class ServingTarget(StrEnum):
    AZUREML = "azureml"
    KSERVE = "kserve"
    LOCAL = "local"


class AzureMLSpec(SpecModel):
    """An Azure ML online endpoint (managed, or Kubernetes/AKS)."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "(self.endpointKind == 'kubernetes') == has(self.compute)",
                "compute is required for, and only for, endpointKind kubernetes",
                field_path=".compute",
            )
        )
    )

    subscription_id: str = Field(
        pattern=UUID_PATTERN, max_length=36, description="Azure subscription ID (a GUID)."
    )
    resource_group: str = Field(
        min_length=1, max_length=90, description="Resource group of the workspace."
    )
    workspace: str = Field(min_length=1, max_length=260, description="Azure ML workspace name.")
    endpoint_name: str = Field(
        pattern=r"^[a-zA-Z][a-zA-Z0-9\-]{1,30}[a-zA-Z0-9]$",
        max_length=32,
        description="Online endpoint name (3-32 characters, unique in the region).",
    )
    endpoint_kind: Literal["managed", "kubernetes"] = Field(
        default="managed", description="Managed online endpoint, or Kubernetes (AKS) endpoint."
    )
    compute: str | None = Field(
        default=None,
        min_length=1,
        max_length=260,
        description="Attached Kubernetes compute name (endpointKind kubernetes).",
    )
    instance_type: str = Field(
        default="Standard_DS3_v2",
        min_length=1,
        max_length=128,
        description="VM size or instance type.",
    )
    instance_count: int = Field(default=1, ge=1, le=100, description="Instances per deployment.")

    @model_validator(mode="after")
    def _compute_for_kubernetes(self) -> Self:
        if (self.endpoint_kind == "kubernetes") != (self.compute is not None):
            raise ValueError("compute is required for, and only for, endpointKind kubernetes")
        return self


class KServeSpec(SpecModel):
    """A KServe InferenceService running `stockops serve`."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must not exceed maxReplicas",
                field_path=".minReplicas",
            )
        )
    )

    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Namespace; defaults to the model's.",
    )
    service_account_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="ServiceAccount of the predictor pods.",
    )
    min_replicas: int = Field(default=1, ge=0, le=100, description="Minimum replicas.")
    max_replicas: int = Field(default=3, ge=1, le=100, description="Maximum replicas.")

    @model_validator(mode="after")
    def _min_below_max(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class LocalServingSpec(SpecModel):
    """The local scoring server (`stockops serve`), used by `stockops up`."""

    host: str = Field(
        default="127.0.0.1", min_length=1, max_length=253, description="Address to bind."
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Port to bind.")


class RolloutSpec(SpecModel):
    """How a new version takes traffic."""

    canary_steps: list[Percent] = Field(
        default_factory=lambda: [10, 50, 100],
        min_length=1,
        max_length=10,
        description="Traffic percentages of the new version, increasing, ending at 100.",
        json_schema_extra=k8s(
            cel(
                "self.isSorted() && self.all(x, self.exists_one(y, y == x))",
                "canarySteps must be strictly increasing",
            ),
            cel("self[size(self) - 1] == 100", "the last of canarySteps must be 100"),
        ),
    )
    readiness_timeout_seconds: int = Field(
        default=900, ge=10, le=7200, description="Wait for the new version to become ready."
    )
    step_wait_seconds: int = Field(
        default=60, ge=0, le=3600, description="Observation time between two traffic steps."
    )
    auto_rollback: bool = Field(default=True, description="Restore the old version on failure.")

    @field_validator("canary_steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("canarySteps must be strictly increasing")
        if steps[-1] != 100:
            raise ValueError("the last of canarySteps must be 100")
        return steps


class ServingSpec(SpecModel):
    """Where the production model is served and how it is rolled out."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "self.target != 'azureml' || has(self.azureml)",
                "target azureml requires the azureml settings",
                field_path=".azureml",
                reason="FieldValueRequired",
            )
        )
    )

    target: ServingTarget = Field(default=ServingTarget.LOCAL, description="Serving target.")
    azureml: AzureMLSpec | None = Field(default=None, description="Settings of target azureml.")
    kserve: KServeSpec | None = Field(default=None, description="Settings of target kserve.")
    local: LocalServingSpec = Field(
        default_factory=LocalServingSpec, description="Settings of target local."
    )
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rollout policy.")

    @model_validator(mode="after")
    def _settings_for_target(self) -> Self:
        if self.target == ServingTarget.AZUREML and self.azureml is None:
            raise ValueError("target azureml requires the azureml settings")
        return self


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ResourceQuantities(SpecModel):
    """CPU and memory as Kubernetes quantities (strings such as `500m`, `2Gi`)."""

    cpu: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN, max_length=32, description="CPU, e.g. 500m."
    )
    memory: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN, max_length=32, description="Memory, e.g. 2Gi."
    )


class ResourcesSpec(SpecModel):
    """Compute requests and limits of one workload's container."""

    requests: ResourceQuantities | None = Field(
        default=None, description="Requested resources; chart defaults when omitted."
    )
    limits: ResourceQuantities | None = Field(
        default=None, description="Resource limits; chart defaults when omitted."
    )


class SecretEnvVar(SpecModel):
    """An environment variable read from a Secret key (connection strings, API keys)."""

    name: str = Field(
        pattern=ENV_NAME_PATTERN, max_length=128, description="Environment variable name."
    )
    secret_name: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Secret in the same namespace."
    )
    key: str = Field(
        pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="Key within the Secret."
    )
    optional: bool = Field(default=False, description="Start even if the Secret or key is absent.")


class WorkloadRuntimeSpec(SpecModel):
    """Settings of one workload's pods (feed, sink, train, deploy or serve)."""

    resources: ResourcesSpec | None = Field(
        default=None, description="Requests and limits; the chart's defaults when omitted."
    )
    env: list[SecretEnvVar] | None = Field(
        default=None,
        max_length=32,
        description="Extra environment variables from Secrets, for this workload only.",
        json_schema_extra=k8s(list_type="map", list_map_keys=["name"]),
    )


class RuntimeSpec(SpecModel):
    """How the operator runs this model's workloads; every field falls back to chart defaults."""

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Workload image (`stockops` console script); the chart's default if omitted.",
    )
    image_pull_policy: PullPolicy | None = Field(
        default=None, description="Image pull policy of the workload containers."
    )
    service_account_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="ServiceAccount of the workload pods (federated for Azure workload identity).",
    )
    azure_client_id: str | None = Field(
        default=None,
        pattern=UUID_PATTERN,
        max_length=36,
        description="Client ID of the managed identity the pods use through workload identity.",
    )
    env: list[SecretEnvVar] | None = Field(
        default=None,
        max_length=32,
        description="Environment variables from Secrets for every workload.",
        json_schema_extra=k8s(list_type="map", list_map_keys=["name"]),
    )
    feed: WorkloadRuntimeSpec | None = Field(default=None, description="The feed Deployment.")
    sink: WorkloadRuntimeSpec | None = Field(default=None, description="The sink Deployment.")
    train: WorkloadRuntimeSpec | None = Field(default=None, description="The train Jobs.")
    deploy: WorkloadRuntimeSpec | None = Field(default=None, description="The deploy Jobs.")
    serve: WorkloadRuntimeSpec | None = Field(default=None, description="The serve Deployment.")


class StockModelSpec(SpecModel):
    """What to forecast, from which data, and where to serve it."""

    tickers: list[Ticker] = Field(
        min_length=1,
        max_length=500,
        description="Tickers forecast by this one model.",
        json_schema_extra=k8s(list_type="set"),
    )
    interval: Literal["1m"] = Field(default="1m", description="Bar interval.")
    source: SourceSpec = Field(default_factory=SourceSpec, description="Market-data source.")
    storage: StorageSpec = Field(description="Where the bars land.")
    features: FeaturesSpec = Field(default_factory=FeaturesSpec, description="Network inputs.")
    horizon: int = Field(
        default=1, ge=1, le=390, description="Forecast horizon in bars (1 = the next minute)."
    )
    target: Target = Field(
        default=Target.RETURN,
        description="What the network predicts: the return over the horizon, or the price level.",
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Hyperparameters.")
    mlflow: MlflowSpec = Field(description="Tracking and registry.")
    promotion: PromotionSpec = Field(default_factory=PromotionSpec, description="Promotion gate.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Serving target.")
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec, description="Images, identities and resources of workloads."
    )

    @field_validator("tickers")
    @classmethod
    def _unique_tickers(cls, tickers: list[str]) -> list[str]:
        if len(set(tickers)) != len(tickers):
            raise ValueError("tickers must be unique")
        return tickers


# --------------------------------------------------------------------------- RetrainSchedule


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class ModelRef(SpecModel):
    """A reference to a StockModel in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=STOCKMODEL_NAME_MAX,
        pattern=DNS_LABEL_PATTERN,
        description="Name of the StockModel.",
    )


class RetrainScheduleSpec(SpecModel):
    """When to retrain one StockModel; CronJob semantics where they apply."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "has(self.schedule) != has(self.interval)",
                "set exactly one of schedule and interval",
            )
        )
    )

    model_ref: ModelRef = Field(description="The StockModel to retrain (same namespace).")
    schedule: str | None = Field(
        default=None,
        pattern=CRON_PATTERN,
        max_length=128,
        description="Cron expression (5 fields); exactly one of schedule, interval.",
    )
    interval: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        max_length=32,
        description="Fixed interval such as 15m or 1h30m; exactly one of schedule, interval.",
        json_schema_extra=k8s(cel("self.matches('[1-9]')", "interval must be positive, e.g. 15m")),
    )
    time_zone: str = Field(
        default="UTC",
        pattern=TIME_ZONE_PATTERN,
        max_length=64,
        description="IANA time zone of the cron schedule, e.g. America/New_York.",
        json_schema_extra=k8s(
            # Evaluating getHours in the zone fails for a zone CEL does not know; the API server
            # then reports "unknown time zone" on this field.
            cel(
                "self != 'Local' && timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0",
                "timeZone must be an IANA time zone such as America/New_York",
            )
        ),
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.FORBID, description="What to do when a run is still active."
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="A run missed by more than this is skipped; at most one catch-up run.",
    )
    suspend: bool = Field(default=False, description="Pause scheduling (active runs go on).")
    successful_runs_history_limit: int = Field(
        default=3, ge=0, le=100, description="Finished successful runs to keep."
    )
    failed_runs_history_limit: int = Field(
        default=1, ge=0, le=100, description="Finished failed runs to keep."
    )
    active_deadline_seconds: int = Field(
        default=3600, ge=60, le=86400, description="Kill a run after this long."
    )
    backoff_limit: int = Field(default=1, ge=0, le=10, description="Retries of a failed run.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @field_validator("schedule")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5 and not value.startswith("@"):
            raise ValueError("cron schedule must have 5 fields (minute hour dom month dow)")
        return value

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) <= 0:
            raise ValueError("interval must be positive, e.g. 15m")
        return value

    @model_validator(mode="after")
    def _schedule_xor_interval(self) -> Self:
        if (self.schedule is None) == (self.interval is None):
            raise ValueError("set exactly one of schedule and interval")
        return self


def parse_duration(text: str) -> int:
    """Seconds in a duration such as `1h30m`, `15m` or `45s`."""
    match = re.fullmatch(DURATION_PATTERN, text)
    if match is None or not text:
        raise ValueError(f"{text!r} is not a duration like 15m or 1h30m")
    hours, minutes, seconds = (int(g[:-1]) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


# --------------------------------------------------------------------------- manifests


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=253)
    namespace: str = "default"
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


def _check_name(metadata: Metadata, longest: int) -> None:
    if len(metadata.name) > longest or re.fullmatch(DNS_LABEL_PATTERN, metadata.name) is None:
        raise ValueError(
            f"metadata.name must be a DNS label of at most {longest} characters "
            "(names of the Jobs and Deployments are derived from it)"
        )


class StockModel(BaseModel):
    """A StockModel manifest: metadata plus a validated spec (and status, when read back)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["stockops.io/v1alpha1"] = Field(
        default="stockops.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["StockModel"] = "StockModel"
    metadata: Metadata
    spec: StockModelSpec
    status: StockModelStatus | None = None

    @model_validator(mode="after")
    def _name_fits(self) -> Self:
        _check_name(self.metadata, STOCKMODEL_NAME_MAX)
        return self


class RetrainSchedule(BaseModel):
    """A RetrainSchedule manifest: metadata plus a validated spec (and status, when read back)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["stockops.io/v1alpha1"] = Field(
        default="stockops.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["RetrainSchedule"] = "RetrainSchedule"
    metadata: Metadata
    spec: RetrainScheduleSpec
    status: RetrainScheduleStatus | None = None

    @model_validator(mode="after")
    def _name_fits(self) -> Self:
        _check_name(self.metadata, RETRAINSCHEDULE_NAME_MAX)
        return self


Resource = StockModel | RetrainSchedule
_KINDS: dict[str, type[StockModel] | type[RetrainSchedule]] = {
    "StockModel": StockModel,
    "RetrainSchedule": RetrainSchedule,
}


def parse_resource(document: Mapping[str, Any]) -> Resource:
    """Validate one manifest document.

    Raises:
        SpecError: unknown kind or apiVersion, or a field that does not validate; the
            message is `Kind/name field.path: reason` for each error.
    """
    kind = document.get("kind")
    model = _KINDS.get(str(kind))
    name = (document.get("metadata") or {}).get("name", "?")
    if model is None:
        raise SpecError(f"unknown kind {kind!r}; expected one of {', '.join(_KINDS)}")
    if document.get("apiVersion") != API_VERSION:
        raise SpecError(f"{kind}/{name}: apiVersion must be {API_VERSION}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise SpecError(describe_spec_error(f"{kind}/{name}", exc)) from None


def describe_spec_error(what: str, exc: ValidationError) -> str:
    """One line per error: `Kind/name spec.training.batchSize: reason` (camelCase paths)."""
    lines = []
    for err in exc.errors(include_url=False):
        path = "".join(_camel(p) for p in err["loc"]).removeprefix(".")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{what} {path}: {msg}" if path else f"{what}: {msg}")
    return "\n".join(lines)


def _camel(part: int | str) -> str:
    """One step of a Kubernetes-style field path: `.batchSize` or `[0]`."""
    return f"[{part}]" if isinstance(part, int) else f".{to_camel(part)}"


def _documents_in(path: Path) -> Iterable[Mapping[str, Any]]:
    files = sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})
    for file in files if path.is_dir() else [path]:
        try:
            docs = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            raise SpecError(f"{file}: not valid YAML: {exc}") from None
        for doc in docs:
            if isinstance(doc, Mapping) and doc.get("apiVersion", "").startswith(GROUP + "/"):
                yield doc


def load_manifests(
    path: str | Path | None = None, env: Mapping[str, str] = os.environ
) -> list[Resource]:
    """Read StockModel and RetrainSchedule manifests from a file, a directory, or the env.

    Args:
        path: a YAML file (several documents allowed) or a directory of them; if None, the
            JSON manifest in the environment variable `STOCKOPS_SPEC_JSON` is used.
        env: the environment to read `STOCKOPS_SPEC_JSON` from.

    Raises:
        SpecError: nothing to read, or an invalid document.
    """
    if path is None:
        raw = env.get(SPEC_ENV)
        if not raw:
            raise SpecError(f"no manifest given: pass -f FILE or set {SPEC_ENV}")
        try:
            return [parse_resource(json.loads(raw))]
        except json.JSONDecodeError as exc:
            raise SpecError(f"{SPEC_ENV} is not valid JSON: {exc}") from None
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such file or directory")
    resources = [parse_resource(doc) for doc in _documents_in(path)]
    if not resources:
        raise SpecError(f"{path}: no stockops.io resources found")
    return resources


def load_stockmodel(
    path: str | Path | None = None, env: Mapping[str, str] = os.environ
) -> StockModel:
    """The single StockModel in `path` (or `STOCKOPS_SPEC_JSON`); see `load_manifests`."""
    models = [r for r in load_manifests(path, env) if isinstance(r, StockModel)]
    if len(models) != 1:
        where = path if path is not None else SPEC_ENV
        raise SpecError(f"{where}: expected exactly one StockModel, found {len(models)}")
    return models[0]
