"""Operator settings from STOCKOPS_* variables."""

from __future__ import annotations

import pytest

from stockops_model.errors import SpecError
from stockops_operator.settings import DEFAULT_RESOURCES, load_settings


def test_defaults_without_variables() -> None:
    s = load_settings({})
    assert s.peering_name == "stockops"
    assert s.peering_lifetime == 60  # kopf's own default: unchanged unless asked
    assert s.resources == DEFAULT_RESOURCES


def test_variables_override_and_parse() -> None:
    s = load_settings(
        {
            "STOCKOPS_WORKLOAD_IMAGE": "img:2",
            "STOCKOPS_AZURE_WORKLOAD_IDENTITY": "true",
            "STOCKOPS_SCHEDULE_TICK_SECONDS": "2.5",
            "STOCKOPS_METRICS_PORT": "0",
            "STOCKOPS_PEERING_LIFETIME": "20",
            "STOCKOPS_RESOURCES_JSON": '{"train": {"requests": {"cpu": "2"}}}',
        }
    )
    assert s.workload_image == "img:2"
    assert s.azure_workload_identity is True
    assert s.schedule_tick_seconds == 2.5
    assert s.metrics_port == 0
    assert s.peering_lifetime == 20
    assert s.resources["train"] == {"requests": {"cpu": "2"}}
    assert s.resources["feed"] == DEFAULT_RESOURCES["feed"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STOCKOPS_METRICS_PORT", "ninety"),
        ("STOCKOPS_LOG_JSON", "maybe"),
        ("STOCKOPS_RESOURCES_JSON", '{"gpu": {}}'),
        ("STOCKOPS_SCHEDULE_TICK_SECONDS", "0"),
        ("STOCKOPS_PEERING_LIFETIME", "5"),  # shorter than kopf's refresh margin
        ("STOCKOPS_PEERING_LIFETIME", "1m"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SpecError, match=name.removeprefix("STOCKOPS_")):
        load_settings({name: value})
