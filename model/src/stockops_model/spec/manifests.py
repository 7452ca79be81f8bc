"""Manifests of the stockops.io resources: validating documents and reading them from files.

`parse_resource` validates one document as a `StockModel` or `RetrainSchedule`;
`load_manifests` reads YAML manifests (a file, a directory or `STOCKOPS_SPEC_JSON`) and
`load_stockmodel` the single StockModel among them. Every validation error names the field
in camelCase, e.g. `StockModel/demo spec.training.batchSize: Input should be greater than or
equal to 1` (`describe_spec_error`). Object names are limited so that the names of the Jobs
and Deployments derived from them stay valid label values.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from stockops_model.errors import SpecError
from stockops_model.schema import DNS_LABEL_PATTERN
from stockops_model.spec.base import (
    API_VERSION,
    GROUP,
    RETRAINSCHEDULE_NAME_MAX,
    SPEC_ENV,
    STOCKMODEL_NAME_MAX,
)
from stockops_model.spec.schedule import RetrainScheduleSpec
from stockops_model.spec.stockmodel import StockModelSpec
from stockops_model.status import RetrainScheduleStatus, StockModelStatus


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
