"""The `stockops serve` command line: what it refuses before starting anything."""

from __future__ import annotations

import pytest

from stockops_model import cli
from stockops_model.errors import ExitCode


def test_without_a_model_or_a_spec_it_exits_with_the_spec_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STOCKOPS_SPEC_JSON", raising=False)
    assert cli.main(["serve"]) == ExitCode.INVALID_SPEC
    assert "--model" in capsys.readouterr().err


def test_a_registry_uri_needs_a_tracking_uri(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STOCKOPS_SPEC_JSON", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["serve", "--model", "models:/stocks@production"]) == ExitCode.INVALID_SPEC
    assert "tracking URI" in capsys.readouterr().err


def test_limits_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["serve", "--model", "/tmp/model", "--max-bars", "0"])
    assert code == ExitCode.INVALID_SPEC
    assert "--max-bars" in capsys.readouterr().err
