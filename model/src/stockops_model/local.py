"""`stockops up`: the stockops loop on one machine, from the same manifests as a cluster.

Local mode swaps adapters, not code paths: the StockModel's source feeds the same
`publish_bars` as `stockops feed`, through an embedded in-process bus (`MemoryBus`, with the
same commit-after-durable-write contract as Kafka) into the same `Sink` and `BarStore` as
`stockops sink`, writing day objects to a local directory in the Blob layout.

Today it runs the data plane: it replays (or generates) the bars, lands them, and prints
what landed per ticker and day. Scheduled retraining, promotion and the local scoring server
join this loop in the local-mode issue.

Without `-f`, it runs on embedded defaults: a synthetic source (no data files needed) for
two tickers, landing in `./.stockops/bars`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops_model.errors import ExitCode, SpecError, StoreError

if TYPE_CHECKING:
    from rich.console import Console

    from stockops_model.sink import Sink
    from stockops_model.spec import StockModel
    from stockops_model.store import DayObject, StoreLocation

log = logging.getLogger(__name__)

DEFAULT_MANIFEST: dict[str, Any] = {
    "apiVersion": "stockops.io/v1alpha1",
    "kind": "StockModel",
    "metadata": {"name": "local"},
    "spec": {
        "tickers": ["AAA", "BBB"],
        "source": {"type": "synthetic", "synthetic": {"seed": 7, "days": 3, "speed": 0}},
        "storage": {"path": ".stockops/bars", "prefix": "bars"},
        "mlflow": {
            "trackingUri": "sqlite:///.stockops/mlflow.db",
            "modelName": "local-forecaster",
        },
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `stockops up`."""
    parser.add_argument(
        "-f",
        "--file",
        help="manifest file or directory (StockModel, optional RetrainSchedule); "
        "default: embedded defaults (synthetic bars)",
    )
    parser.add_argument(
        "--store", help="override the store: file:///path (default: spec.storage.path)"
    )
    parser.add_argument(
        "--speed", type=float, help="override the source's clock acceleration (0 = no waiting)"
    )


def load_model(path: str | None) -> StockModel:
    """The StockModel of `path`, or the embedded default one."""
    from stockops_model.spec import StockModel, load_stockmodel, parse_resource

    if path is None:
        resource = parse_resource(DEFAULT_MANIFEST)
        assert isinstance(resource, StockModel)
        return resource
    return load_stockmodel(path)


def run(args: argparse.Namespace) -> int:
    """Run the local data plane until the source ends (or Ctrl-C), then report."""
    from rich.console import Console

    from stockops_model.settings import DataPlaneSettings, store_target

    model = load_model(args.file)
    settings = DataPlaneSettings.from_env()
    location, _ = store_target(settings, model.spec.storage, url=args.store)
    if location.scheme != "file":
        raise SpecError("stockops up writes to a local directory: give spec.storage.path")
    console = Console(stderr=True)
    landed = asyncio.run(_run_data_plane(model, location, args.speed, console))
    _print_landed(Console(), model, landed)
    return int(ExitCode.OK)


async def _run_data_plane(
    model: StockModel, location: StoreLocation, speed: float | None, console: Console
) -> list[DayObject]:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from stockops_model.bus import MemoryBus
    from stockops_model.feed import publish_bars, source_options
    from stockops_model.sink import Sink, SinkConfig
    from stockops_model.sources import build_source
    from stockops_model.store import open_store

    kind, symbols, options = source_options(model)
    if speed is not None and kind in ("replay", "synthetic"):
        options["speed"] = speed or None
    source = build_source(kind, symbols=symbols, **options)
    topic = model.spec.source.topic
    bus = MemoryBus()
    await bus.ensure_topics([topic])
    publisher = bus.publisher()
    await publisher.start()
    stop = asyncio.Event()

    async with open_store(location, create=True) as store:
        sink = Sink(bus, store, SinkConfig(topic=topic, group="stockops-local", drain=False))
        started = time.monotonic()
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"{kind} -> {topic} -> {store.url}", detail="")
            sink_task = asyncio.create_task(sink.run(stop))
            feed_task = asyncio.create_task(publish_bars(source.stream(), publisher, topic))
            while not feed_task.done():
                progress.update(task, detail=_detail(bus.records(topic), sink))
                await asyncio.wait({feed_task, sink_task}, timeout=0.2)
                if sink_task.done():
                    # The sink gave up (an outage outlasted its patience): stop the source
                    # and surface the sink's error rather than feed a bus nobody reads.
                    feed_task.cancel()
                    await sink_task
                    raise StoreError("the sink stopped before the source ended")
            published = await feed_task
            # The sink is a live consumer: once the finite source has ended, let it catch
            # up with everything published, then stop it (it commits before returning).
            while sink.stats.records < published and not sink_task.done():
                await asyncio.wait({sink_task}, timeout=0.05)
            stop.set()
            await sink_task
            progress.update(task, detail=_detail(bus.records(topic), sink))
        elapsed = time.monotonic() - started
        console.print(
            f"landed {sink.stats.bars:,} bars from {published:,} messages in {elapsed:.1f}s "
            f"({sink.stats.dead_lettered} dead-lettered) into {store.url}"
        )
        return await store.list_days(symbols)


def _detail(records: list[Any], sink: Sink) -> str:
    return f"published {len(records):,}  landed {sink.stats.bars:,}"


def _print_landed(console: Console, model: StockModel, days: list[DayObject]) -> None:
    from rich.table import Table

    table = Table(title=f"StockModel {model.metadata.name}: day objects in the store")
    for column in ("symbol", "days", "bars", "first day", "last day", "example object"):
        table.add_column(column)
    for symbol in model.spec.tickers:
        mine = [d for d in days if d.symbol == symbol]
        if not mine:
            table.add_row(symbol, "0", "0", "-", "-", "-")
            continue
        rows = sum(d.rows or 0 for d in mine)
        table.add_row(
            symbol,
            str(len(mine)),
            f"{rows:,}",
            mine[0].day.isoformat(),
            mine[-1].day.isoformat(),
            str(Path(mine[-1].name)),
        )
    console.print(table)
