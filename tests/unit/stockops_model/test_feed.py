"""`stockops feed`: what it builds from a spec and flags, and what it publishes."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import pytest

from stockops_model import feed
from stockops_model.bus import MemoryBus
from stockops_model.cli import main
from stockops_model.errors import ExitCode
from stockops_model.messages import decode_bar
from stockops_model.sources import build_source

EXAMPLE = Path(__file__).parents[3] / "examples" / "local" / "stockmodel.yaml"
DATA = Path(__file__).parents[2] / "data" / "bars-2018-1min"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    feed.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_source_comes_from_the_spec_and_flags_override_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STOCKOPS_SPEC_JSON", raising=False)
    model, kind, symbols, options = feed._resolve(parse("-f", str(EXAMPLE)))
    assert model is not None
    assert (kind, symbols) == ("replay", ["SPY"])
    assert options["speed"] is None  # speed 0 in the spec: as fast as possible
    _, kind, symbols, options = feed._resolve(
        parse("-f", str(EXAMPLE), "--symbols", "amzn,axp", "--path", str(DATA), "--speed", "60",
              "--start", "2018-03-09")
    )  # fmt: skip
    assert (kind, symbols, options["speed"], options["path"]) == (
        "replay", ["AMZN", "AXP"], 60.0, str(DATA)
    )  # fmt: skip
    assert options["start"] == date(2018, 3, 9)


def test_without_spec_or_source_the_feed_exits_with_the_spec_error_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STOCKOPS_SPEC_JSON", raising=False)
    assert main(["feed", "--bootstrap", "127.0.0.1:1"]) == ExitCode.INVALID_SPEC
    assert "no StockModel" in capsys.readouterr().err


async def test_published_messages_are_the_wire_format_keyed_by_symbol() -> None:
    source = build_source("replay", symbols=["AXP"], path=str(DATA), end="2018-03-08")
    bus = MemoryBus(partitions=2)
    count = await feed.publish_bars(source.stream(), bus.publisher(), "bars", limit=50)
    records = bus.records("bars")
    assert count == len(records) == 50
    for rec in records:
        bar = decode_bar(rec.value)
        assert rec.key == b"AXP" == bar.symbol.encode()


async def test_published_bars_are_counted_when_the_feed_has_metrics() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = feed.FeedMetrics(registry)
    source = build_source("replay", symbols=["AMZN"], path=str(DATA), end="2018-03-08")
    bus = MemoryBus(partitions=1)
    count = await feed.publish_bars(
        source.stream(), bus.publisher(), "bars", limit=30, metrics=metrics
    )
    assert registry.get_sample_value("stockops_feed_bars_published_total") == count == 30
    metrics.source_error("XYZ", "Not Found")
    labels = {"symbol": "XYZ", "code": "Not Found"}
    assert registry.get_sample_value("stockops_feed_source_errors_total", labels) == 1
    assert parse("--metrics-port", "9108").metrics_port == 9108
