"""The Job result line: whole on stdout, and a valid JSON object in the termination log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockops_model.results import TERMINATION_LOG_LIMIT, emit_result, fit_termination_log


def test_a_long_message_is_shortened_not_cut_through_the_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    log.write_text("")
    monkeypatch.setenv("STOCKOPS_TERMINATION_LOG", str(log))
    result = {
        "target": "kserve",
        "serving_version": "2",
        "traffic": {"2": 100, "3": 0},
        "message": "revision never ready: " + "x" * 9000,
    }

    emit_result(result)

    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == result  # stdout keeps everything
    written = log.read_text()
    assert len(written.encode()) <= TERMINATION_LOG_LIMIT
    kept = json.loads(written)
    assert kept["target"] == "kserve"
    assert kept["traffic"] == {"2": 100, "3": 0}
    assert kept["message"].startswith("revision never ready: ")
    assert kept["message"].endswith("...")


def test_a_short_result_is_written_unchanged() -> None:
    result = {"promoted": True, "reason": "better", "challenger_version": "7"}
    assert json.loads(fit_termination_log(result)) == result


def test_a_result_with_nothing_to_shorten_still_gives_valid_json() -> None:
    result = {f"k{i}": i for i in range(1000)}
    assert json.loads(fit_termination_log(result, limit=200)) == {"truncated": True}
