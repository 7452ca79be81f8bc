"""Shared parts of the stockops.io/v1alpha1 resources: group and version, name limits, types.

The base model (`SpecModel`: camelCase aliases, no unknown fields) and the `cel`/`k8s`
helpers that attach Kubernetes validation rules to a field live in `stockops_model.schema`,
beside the patterns; this module holds what the spec modules of this package share.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from stockops_model.schema import TICKER_PATTERN

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
