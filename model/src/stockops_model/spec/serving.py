"""The serving section of a StockModel: the target (Azure ML, KServe, local) and the rollout.

`ServingSpec` says where the production model is served and how a new version takes traffic
(canary steps, readiness wait, automatic rollback). Limits: only the settings the `deploy`
workload uses are modelled; anything else of a target is configured outside stockops.
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from stockops_model.schema import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    UUID_PATTERN,
    SpecModel,
    cel,
    k8s,
)
from stockops_model.spec.base import Percent


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
    base_image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Base image of the serving environment (with conda), e.g. Azure ML's "
        "minimal Python 3.11 inference image mirrored into your registry; defaults to the "
        "deploy Job's STOCKOPS_AZUREML_BASE_IMAGE.",
    )

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
