"""The tools built from pinned Go modules work: helm lints and renders, tofu formats.

Other tests lean on them to check charts/stockops and infra-terraform/, so these prove that a
failure there would be the chart's or the configuration's, not the tool's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from stockops_model.testing.gotools import HELM_VERSION, TOFU_VERSION, ToolFailedError

pytestmark = pytest.mark.kube


def test_helm_reports_the_pinned_version(helm: Callable[..., str]) -> None:
    assert helm("version", "--short").startswith(HELM_VERSION)


def test_helm_lints_and_renders_a_chart_with_overridden_values(
    helm: Callable[..., str], tiny_chart: Path
) -> None:
    lint = helm("lint", tiny_chart)
    rendered = list(
        yaml.safe_load_all(helm("template", "demo", tiny_chart, "--set", "greeting=bonjour"))
    )

    assert "1 chart(s) linted, 0 chart(s) failed" in lint
    assert [doc["metadata"]["name"] for doc in rendered] == ["demo-settings"]
    assert rendered[0]["data"] == {"greeting": "bonjour", "replicas": "2"}


def test_helm_lint_fails_on_a_broken_template(helm: Callable[..., str], tiny_chart: Path) -> None:
    (tiny_chart / "templates" / "broken.yaml").write_text("data: {{ .Values.greeting \n")

    with pytest.raises(ToolFailedError) as failed:
        helm("lint", tiny_chart)

    assert "broken.yaml" in str(failed.value)


def test_tofu_reports_the_pinned_version(tofu: Callable[..., str]) -> None:
    assert tofu("version").splitlines()[0] == f"OpenTofu {TOFU_VERSION}"


def test_tofu_fmt_check_tells_formatted_from_unformatted_files(
    tofu: Callable[..., str], tmp_path: Path
) -> None:
    (tmp_path / "tidy.tf").write_text('variable "location" {\n  default = "westeurope"\n}\n')
    (tmp_path / "messy.tf").write_text('variable "prefix" {\ndefault="stockops"\n}\n')

    with pytest.raises(ToolFailedError) as failed:
        tofu("fmt", "-check", "-recursive", cwd=tmp_path)
    tofu("fmt", "-recursive", cwd=tmp_path)
    tofu("fmt", "-check", "-recursive", cwd=tmp_path)

    assert failed.value.stdout.split() == ["messy.tf"]
    assert (tmp_path / "messy.tf").read_text() == (
        'variable "prefix" {\n  default = "stockops"\n}\n'
    )
