"""The CRDs in crds/ agree with the pydantic models, field by field, and are complete.

`stockops_model.crds` generates the CRDs from the models; these tests prove that the committed
files are that output (and that the Helm chart ships them verbatim), then check the result
independently of the generator: every model field against its schema node (type, bounds,
pattern, enum, default, required), descriptions and CEL-cost bounds everywhere, defaults applied
the way the API server applies them equal pydantic's, and every bound in the schema rejected by
pydantic too, with the same field path. tests/e2e/test_crd_validation.py checks the same bounds
and every CEL rule against the real API server.
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from stockops_model import crds, schema, spec

ROOT = Path(__file__).resolve().parents[2]
CHART_CRDS = ROOT / "charts" / "stockops" / "crds"


def _load(definition: crds.ResourceDefinition) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "crds" / definition.file_name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def _root_schema(definition: crds.ResourceDefinition) -> dict[str, Any]:
    version = _load(definition)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


DEFINITIONS = {d.kind: d for d in crds.DEFINITIONS}


# --------------------------------------------------------------------------- generated files


def test_committed_crds_are_what_the_models_generate() -> None:
    stale = crds.stale_files(ROOT)
    assert stale == [], "run `uv run python -m stockops_model.crds` and commit the result"


def test_check_mode_reports_a_hand_edit(tmp_path: Path) -> None:
    crds.write_crds(tmp_path)
    assert crds.main(["--root", str(tmp_path), "--check"]) == 0
    edited = tmp_path / "crds" / crds.STOCKMODEL.file_name
    edited.write_text(edited.read_text().replace("maxItems: 500", "maxItems: 501"))
    assert crds.stale_files(tmp_path) == [edited]
    assert crds.main(["--root", str(tmp_path), "--check"]) == 1


def test_chart_ships_the_crds_verbatim() -> None:
    for definition in crds.DEFINITIONS:
        source = (ROOT / "crds" / definition.file_name).read_bytes()
        assert (CHART_CRDS / definition.file_name).read_bytes() == source
    ours = {p.name for p in (ROOT / "crds").glob("*.yaml")}
    assert ours == {d.file_name for d in crds.DEFINITIONS}


def test_names_short_names_category_status_and_columns() -> None:
    for kind, short in (("StockModel", "sm"), ("RetrainSchedule", "rs")):
        crd = _load(DEFINITIONS[kind])
        names = crd["spec"]["names"]
        assert names["kind"] == kind
        assert names["shortNames"] == [short]
        assert names["categories"] == ["stockops"]
        assert crd["spec"]["scope"] == "Namespaced"
        version = crd["spec"]["versions"][0]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}
        schema = version["schema"]["openAPIV3Schema"]
        for column in version["additionalPrinterColumns"]:
            if column["jsonPath"].startswith(".metadata"):
                continue
            _schema_at(schema, column["jsonPath"])  # every column shows a real field
    columns = [
        c["name"]
        for c in _load(crds.STOCKMODEL)["spec"]["versions"][0]["additionalPrinterColumns"]
        if "priority" not in c
    ]
    assert columns == ["Tickers", "Production", "Serving", "RMSE", "Naive RMSE", "Ready", "Age"]


def _schema_at(schema: Mapping[str, Any], json_path: str) -> Mapping[str, Any]:
    node = schema
    for part in re.sub(r"\[\?\(.*?\)\]", "[]", json_path).strip(".").split("."):
        name = part.split("[", 1)[0]
        node = node["properties"][name]
        if "[" in part:
            node = node["items"]
    return node


# --------------------------------------------------------------------------- completeness


def _walk(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}".lstrip("."))
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("kind", DEFINITIONS)
def test_every_field_has_a_description(kind: str) -> None:
    missing = [
        path
        for path, node in _walk(_root_schema(DEFINITIONS[kind]))
        if path != "metadata" and not path.endswith("[]") and not node.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("kind", DEFINITIONS)
def test_strings_and_lists_are_bounded(kind: str) -> None:
    """Bounded sizes keep the CEL rules' estimated cost within the API server's budget."""
    unbounded = []
    for path, node in _walk(_root_schema(DEFINITIONS[kind])):
        if path in ("apiVersion", "kind"):
            continue
        if node.get("type") == "string" and not (
            "maxLength" in node or "enum" in node or "format" in node
        ):
            unbounded.append(path)
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded.append(path)
    assert unbounded == []


@pytest.mark.parametrize("kind", DEFINITIONS)
def test_spec_integers_have_both_bounds(kind: str) -> None:
    spec_schema = _root_schema(DEFINITIONS[kind])["properties"]["spec"]
    open_ended = [
        path
        for path, node in _walk(spec_schema)
        if node.get("type") == "integer" and not ("minimum" in node and "maximum" in node)
    ]
    assert open_ended == []


def test_no_floats_anywhere() -> None:
    for definition in crds.DEFINITIONS:
        types_used = {node.get("type") for _, node in _walk(_root_schema(definition))}
        assert "number" not in types_used


# --------------------------------------------------------------------------- field by field


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, f"unions are not structural: {annotation}"
        return args[0]
    return annotation


def _constraints(metadata: list[Any], node: Mapping[str, Any], where: str) -> None:
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            assert node["minimum"] == item.ge, where
        elif isinstance(item, annotated_types.Le):
            assert node["maximum"] == item.le, where
        elif isinstance(item, annotated_types.MinLen):
            key = "minItems" if node["type"] == "array" else "minLength"
            assert node[key] == item.min_length, where
        elif isinstance(item, annotated_types.MaxLen):
            key = "maxItems" if node["type"] == "array" else "maxLength"
            assert node[key] == item.max_length, where
        elif getattr(item, "pattern", None) is not None:
            assert node["pattern"] == item.pattern, where


def _compare_type(annotation: Any, metadata: list[Any], node: Mapping[str, Any], where: str) -> int:
    """Assert that `node` is the schema of `annotation`; returns the number of fields compared."""
    annotation = _strip_optional(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        nested = [m for info in extra for m in getattr(info, "metadata", [])]
        return _compare_type(inner, [*metadata, *nested], node, where)
    _constraints(metadata, node, where)
    origin = typing.get_origin(annotation)
    if origin is list:
        assert node["type"] == "array", where
        (item,) = typing.get_args(annotation)
        return _compare_type(item, [], node["items"], f"{where}[]")
    if origin is dict:
        assert node["type"] == "object", where
        return 1
    if origin is typing.Literal:
        assert node["enum"] == list(typing.get_args(annotation)), where
        return 1
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        assert node["type"] == "object", where
        return _compare_model(annotation, node, where)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        assert node["enum"] == [m.value for m in annotation], where
        return 1
    expected = {
        bool: ("boolean", None),
        int: ("integer", None),
        str: ("string", None),
        dt.date: ("string", "date"),
        dt.datetime: ("string", "date-time"),
    }[annotation]
    assert (node["type"], node.get("format")) == expected, where
    return 1


def _wire_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _compare_model(model: type[BaseModel], node: Mapping[str, Any], where: str) -> int:
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    assert set(node["properties"]) == set(fields), where
    required = {alias for alias, info in fields.items() if info.is_required()}
    assert set(node.get("required", [])) == required, where
    compared = 0
    for alias, info in fields.items():
        child = node["properties"][alias]
        field_where = f"{where}.{alias}"
        assert child["description"] == info.description, field_where
        if info.default is not PydanticUndefined and info.default is not None:
            assert child["default"] == _wire_default(info.default), field_where
        elif info.default_factory is None:
            assert "default" not in child, field_where
        compared += _compare_type(info.annotation, info.metadata, child, field_where)
    return compared


@pytest.mark.parametrize("kind", DEFINITIONS)
def test_schema_matches_models_field_by_field(kind: str) -> None:
    definition = DEFINITIONS[kind]
    properties = _root_schema(definition)["properties"]
    compared = _compare_model(definition.spec_model, properties["spec"], "spec")
    compared += _compare_model(definition.status_model, properties["status"], "status")
    assert compared > 30  # the walk reached the nested models


# --------------------------------------------------------------------------- defaults


def _apply_defaults(node: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: recursively, defaults included."""
    if isinstance(value, dict):
        for name, child in node.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _apply_defaults(child, value[name])
    elif isinstance(value, list) and "items" in node:
        return [_apply_defaults(node["items"], v) for v in value]
    return value


MINIMAL = {
    "StockModel": {
        "tickers": ["SPY"],
        "storage": {"path": "/data"},
        "mlflow": {"modelName": "m"},
    },
    "RetrainSchedule": {"modelRef": {"name": "demo"}, "interval": "15m"},
}


@pytest.mark.parametrize("kind", DEFINITIONS)
def test_server_side_defaults_equal_pydantic_defaults(kind: str) -> None:
    definition = DEFINITIONS[kind]
    spec_schema = _root_schema(definition)["properties"]["spec"]
    defaulted = _apply_defaults(spec_schema, copy.deepcopy(MINIMAL[kind]))
    validated = definition.spec_model.model_validate(MINIMAL[kind])
    assert isinstance(validated, schema.SpecModel)
    assert defaulted == validated.to_wire()


# --------------------------------------------------------------------------- bounds


def _documents(kind: str) -> list[dict[str, Any]]:
    """Valid documents that between them set every optional field, in namespace default."""
    cluster, local = crds.covering_documents(kind, ROOT)
    for document in (cluster, local):
        document["metadata"]["namespace"] = "default"
    return [cluster, local]


def _bound_cases(kind: str) -> list[crds.BoundCase]:
    schema = _root_schema(DEFINITIONS[kind])
    seen: dict[str, crds.BoundCase] = {}
    for document in _documents(kind):
        for case in crds.bound_cases(schema, document):
            seen.setdefault(case.id, case)
    return list(seen.values())


ALL_CASES = [case for kind in DEFINITIONS for case in _bound_cases(kind)]


def test_bound_cases_cover_the_schema() -> None:
    ids = {case.id for case in ALL_CASES}
    assert {
        "spec.tickers:maxItems",
        "spec.tickers[0]:pattern",
        "spec.storage.path:minLength",
        "spec.serving.azureml.compute:maxLength",
        "spec.serving.rollout.canarySteps[0]:maximum",
        "spec.runtime.env[0].name:pattern",
        "spec.timeZone:pattern",
        "spec.startingDeadlineSeconds:minimum",
    } <= ids
    assert len(ALL_CASES) > 150


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_pydantic_rejects_every_bound_naming_the_field(case: crds.BoundCase) -> None:
    model: type[BaseModel] = (
        spec.StockModel if case.document["kind"] == "StockModel" else (spec.RetrainSchedule)
    )
    for document in _documents(case.document["kind"]):
        model.model_validate(document)  # the unbroken documents are valid
    with pytest.raises(ValidationError) as caught:
        model.model_validate(case.document)
    described = spec.describe_spec_error("X", caught.value)
    assert any(
        line.startswith(f"X {case.path}:") or line.startswith(f"X {case.path}[")
        for line in described.splitlines()
    ), described
