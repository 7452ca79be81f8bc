"""The `StockModel` spec: source, storage, features, training, MLflow, promotion, runtime.

`StockModelSpec` is the whole spec; its serving section (`ServingSpec`) is in
`stockops_model.spec.serving`. Each cross-field rule is written twice, as a pydantic
validator and as a CEL rule for the API server (see `stockops_model.spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from stockops_model.schema import (
    DNS_SUBDOMAIN_PATTERN,
    ENV_NAME_PATTERN,
    MODEL_NAME_PATTERN,
    QUANTITY_PATTERN,
    TOPIC_PATTERN,
    UUID_PATTERN,
    SpecModel,
    cel,
    k8s,
)
from stockops_model.spec.base import Ticker
from stockops_model.spec.serving import ServingSpec


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

    def container_env(self, workload: str, plain: Mapping[str, str]) -> list[dict[str, Any]]:
        """A workload container's `env`: `plain` values, the Azure client ID, then the Secret
        references of every workload and of this one (a workload's own entry wins)."""
        env: dict[str, dict[str, Any]] = {k: {"name": k, "value": v} for k, v in plain.items()}
        if self.azure_client_id is not None:
            env["AZURE_CLIENT_ID"] = {"name": "AZURE_CLIENT_ID", "value": self.azure_client_id}
        own: WorkloadRuntimeSpec | None = getattr(self, workload)
        for var in [*(self.env or []), *((own.env if own else None) or [])]:
            env[var.name] = {
                "name": var.name,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": var.secret_name,
                        "key": var.key,
                        "optional": var.optional,
                    }
                },
            }
        return list(env.values())


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
