"""Building blocks of the custom resources' schemas: field patterns, CEL rules, base models.

`spec.py` (the specs) and `status.py` (the statuses) are written with these; `crds.py` turns
the models into CRD OpenAPI schemas, keeping the Kubernetes extensions that `cel(...)` and
`k8s(...)` attach (`x-kubernetes-validations`, list types). The patterns are shared by the
pydantic models and the generated CRDs, so the API server and pydantic check the same shapes.

Limits: the patterns are what both Python's `re` and the API server's RE2 accept; keep new
ones within that common subset (no look-arounds, no back-references).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

TICKER_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,14}$"
TOPIC_PATTERN = r"^[a-zA-Z0-9._\-]{1,200}$"
MODEL_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._\-]{0,62}$"
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
# Five cron fields, or one of the macros CronJob accepts (no @every: that is `interval`).
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+( +\S+){4})$"
# An IANA zone name such as UTC, America/New_York, America/Argentina/Buenos_Aires or
# Etc/GMT+5; offsets such as +01:00 (which CEL would accept) are excluded.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$"
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


def cel(
    rule: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: str | None = None,
) -> dict[str, str]:
    """One Kubernetes CEL validation rule (`x-kubernetes-validations` entry).

    Args:
        rule: the CEL expression; `self` is the object the rule is declared on, `oldSelf`
            its previous value (a transition rule, checked on update only).
        message: what the API server answers when the rule fails; name the field.
        field_path: JSON path, relative to `self`, of the field the error is reported on.
        reason: `FieldValueInvalid` (default), `FieldValueForbidden` or `FieldValueRequired`
            (`FieldValueDuplicate` would drop the message: the server says "Duplicate value").
    """
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def k8s(
    *rules: dict[str, str],
    list_type: Literal["atomic", "set", "map"] | None = None,
    list_map_keys: list[str] | None = None,
) -> dict[str, Any]:
    """Kubernetes schema extensions for a field or a model (`json_schema_extra`)."""
    extra: dict[str, Any] = {}
    if rules:
        extra["x-kubernetes-validations"] = list(rules)
    if list_type is not None:
        extra["x-kubernetes-list-type"] = list_type
    if list_map_keys is not None:
        extra["x-kubernetes-list-map-keys"] = list_map_keys
    return extra


class SpecModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form, as stored in the Kubernetes object."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(BaseModel):
    """Base of status models: camelCase aliases; unknown fields ignored so that an operator
    reading a status written by a newer version does not fail."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form, as written to the status subresource."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
