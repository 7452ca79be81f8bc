"""`stockops up`: the stockops loop on one machine, from the same manifests as a cluster.

Local mode swaps adapters, not code paths:

1. data plane: the StockModel's source feeds the same `publish_bars` as `stockops feed`,
   through an embedded in-process bus (`MemoryBus`, with the same commit-after-durable-write
   contract as Kafka) into the same `Sink` and `BarStore` as `stockops sink`, writing day
   objects to a local directory in the Blob layout;
2. scoring server: the same app as `stockops serve`, on `spec.serving.local` (default
   http://127.0.0.1:8080, with the page at `/`), following the registered model's `serving`
   alias;
3. retraining: the same `train_and_register` as `stockops train` (the naive forecast is the
   first champion; the promotion gate decides), tracked in a local MLflow SQLite file
   (`spec.mlflow.trackingUri`, e.g. `sqlite:///.stockops/mlflow.db`);
4. rollout: the same `local` deploy target as `stockops deploy`, which moves the `serving`
   alias to the production version and waits until the server answers with it.

Steps 3 and 4 run once when the source has ended (replay and synthetic sources are finite),
then at every instant of the manifests' RetrainSchedule for this model (cron in its time zone,
or interval, as in the cluster) until Ctrl-C. With `--once` it stops after the first cycle;
with `--data-only` after the data plane. A live source (Yahoo) keeps feeding in the
background; its first training waits for the schedule's first instant.

Without `-f`, it runs on embedded defaults: a synthetic source (no data files needed) for
two tickers, landing in `./.stockops/bars`, retraining every 15 minutes.

Limits: one StockModel per run; the server always runs locally, whatever the manifest's
serving target (a cluster's azureml or kserve target is for `stockops deploy`); Ctrl-C during
a training run waits for nothing (the run is left unfinished in MLflow).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from stockops_model.errors import ExitCode, SpecError, StockopsError, StoreError
from stockops_model.server.command import API_KEY_ENV

if TYPE_CHECKING:
    import uvicorn
    from rich.console import Console

    from stockops_model.deploy.base import RolloutResult
    from stockops_model.deploy.local import LocalTarget
    from stockops_model.sink import Sink
    from stockops_model.spec import RetrainSchedule, StockModel
    from stockops_model.store import DayObject, StoreLocation
    from stockops_model.timing import Timing

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MANIFEST: dict[str, Any] = {
    "apiVersion": "stockops.io/v1alpha1",
    "kind": "StockModel",
    "metadata": {"name": "local"},
    "spec": {
        "tickers": ["AAA", "BBB"],
        "source": {"type": "synthetic", "synthetic": {"seed": 7, "days": 3, "speed": 0}},
        "storage": {"path": ".stockops/bars", "prefix": "bars"},
        "training": {"epochs": 3, "batchSize": 256},
        "mlflow": {
            "trackingUri": "sqlite:///.stockops/mlflow.db",
            "modelName": "local-forecaster",
        },
    },
}
DEFAULT_SCHEDULE: dict[str, Any] = {
    "apiVersion": "stockops.io/v1alpha1",
    "kind": "RetrainSchedule",
    "metadata": {"name": "local-every-15m"},
    "spec": {"modelRef": {"name": "local"}, "interval": "15m"},
}
SERVER_START_TIMEOUT_S = 30.0
SHOWN_METRICS = ("rmse", "mae", "mase", "directional_accuracy")


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
    parser.add_argument(
        "--port", type=int, help="override the scoring server's port (spec.serving.local.port)"
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument(
        "--once", action="store_true", help="stop after the first train-and-deploy cycle"
    )
    stop.add_argument(
        "--data-only", action="store_true", help="stop after the data plane (no model, no server)"
    )


def load_resources(path: str | None) -> tuple[StockModel, RetrainSchedule | None]:
    """The one StockModel of `path` (or the defaults) and its RetrainSchedule, if any.

    Raises:
        SpecError: not exactly one StockModel, or more than one schedule for it.
    """
    from stockops_model.spec import (
        RetrainSchedule,
        StockModel,
        load_manifests,
        load_stockmodel,
        parse_resource,
    )

    if path is None:
        model, schedule = parse_resource(DEFAULT_MANIFEST), parse_resource(DEFAULT_SCHEDULE)
        assert isinstance(model, StockModel)
        assert isinstance(schedule, RetrainSchedule)
        return model, schedule
    model = load_stockmodel(path)
    schedules = [
        r
        for r in load_manifests(path)
        if isinstance(r, RetrainSchedule) and r.spec.model_ref.name == model.metadata.name
    ]
    if len(schedules) > 1:
        names = ", ".join(s.metadata.name for s in schedules)
        raise SpecError(f"{path}: one RetrainSchedule per StockModel in local mode, got {names}")
    return model, (schedules[0] if schedules else None)


def run(args: argparse.Namespace) -> int:
    """Run the local loop (see the module docstring)."""
    from rich.console import Console

    from stockops_model.settings import DataPlaneSettings, store_target

    model, schedule = load_resources(args.file)
    settings = DataPlaneSettings.from_env()
    location, _ = store_target(settings, model.spec.storage, url=args.store)
    if location.scheme != "file":
        raise SpecError("stockops up writes to a local directory: give spec.storage.path")
    console = Console(stderr=True)
    if args.data_only:
        landed = asyncio.run(_run_data_plane(model, location, args.speed, console))
        _print_landed(Console(), model, landed)
        return int(ExitCode.OK)
    loop = LocalLoop(
        model, schedule, location, console, store_url=args.store, speed=args.speed, port=args.port
    )
    return asyncio.run(loop.run(once=args.once))


class LocalLoop:
    """Data plane, scoring server and scheduled train-and-deploy cycles in one process."""

    def __init__(
        self,
        model: StockModel,
        schedule: RetrainSchedule | None,
        location: StoreLocation,
        console: Console,
        *,
        store_url: str | None = None,
        speed: float | None = None,
        port: int | None = None,
    ) -> None:
        self.model = model
        self.schedule = schedule
        self.location = location
        self.store_url = store_url  # the --store override of spec.storage, if any
        self.console = console
        self.speed = speed
        self.serving = model.spec.serving.local
        if port is not None:
            self.serving = self.serving.model_copy(update={"port": port})
        self.tracking_uri = model.spec.mlflow.tracking_uri
        # The same key as `stockops serve`: unset, the local server is open to this machine.
        self.api_key = os.environ.get(API_KEY_ENV) or None
        self.cycles = 0
        self._target: LocalTarget | None = None  # one client to the server for every cycle

    @property
    def page_url(self) -> str:
        from stockops_model.deploy.local import server_url

        return server_url(self.serving) + "/"

    async def run(self, *, once: bool) -> int:
        """Serve, land bars, then train and deploy once and at every scheduled instant."""
        from rich.console import Console

        server = self._server()
        serving = asyncio.create_task(server.serve())
        await self._started(server, serving)
        self.console.print(f"scoring server and page on {self.page_url}")
        data_plane = asyncio.create_task(
            _run_data_plane(self.model, self.location, self.speed, self.console)
        )
        timing = self._timing()
        try:
            next_at = None if timing is None else timing.next_after(datetime.now(UTC))
            # The first cycle waits for a finite source to end, or for the first instant.
            await _first_of(data_plane, serving, _sleep_until(next_at))
            if data_plane.done():
                _print_landed(Console(), self.model, data_plane.result())
            while not serving.done():
                try:
                    await _in_daemon_thread(self.cycle)
                except StockopsError as exc:
                    # Too little data yet, a rolled-back rollout, MLflow away: the server
                    # keeps serving what it has, and the next instant tries again.
                    self.console.print(f"[bold red]cycle {self.cycles} failed:[/] {exc}")
                    if once:
                        return int(exc.exit_code)
                if once:
                    break
                if timing is None:
                    self.console.print("no RetrainSchedule for this model: serving until Ctrl-C")
                    await serving
                    break
                next_at = timing.next_after(datetime.now(UTC))
                self.console.print(f"next retraining at {next_at:%Y-%m-%d %H:%M:%S} UTC")
                await _first_of(serving, _sleep_until(next_at))
        finally:
            server.should_exit = True
            data_plane.cancel()
            await asyncio.gather(serving, data_plane, return_exceptions=True)
            if self._target is not None:
                self._target.close()
        for task in (serving, data_plane):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return int(ExitCode.OK)

    def cycle(self) -> RolloutResult | None:
        """Train, gate and register one challenger, then roll production out locally."""
        from rich.console import Console

        from stockops_model.deploy.base import Release
        from stockops_model.deploy.local import LocalTarget, server_url
        from stockops_model.registry import production_version
        from stockops_model.tracking import connect_mlflow
        from stockops_model.train import read_training_data, train_and_register

        self.cycles += 1
        self.console.rule(f"retraining {self.model.metadata.name} (cycle {self.cycles})")
        data = read_training_data(self.model.spec, store_url=self.store_url)
        result = train_and_register(self.model, data, tracking_uri=self.tracking_uri)
        _print_training(Console(), result)
        registry = connect_mlflow(self.tracking_uri)
        name = self.model.spec.mlflow.model_name
        production = production_version(registry, name)
        if production is None:
            self.console.print("no production version yet: nothing to deploy")
            return None
        if self._target is None:
            self._target = LocalTarget(registry, server_url(self.serving), api_key=self.api_key)
        release = Release(name, str(production.version), self.tracking_uri)
        rollout = self._target.rollout(release, self.model.spec.serving.rollout)
        Console().print(
            f"[bold]serving version {rollout.serving_version}[/bold] of {name} "
            f"({rollout.message}); page: {self.page_url}"
        )
        return rollout

    def _timing(self) -> Timing | None:
        from stockops_model.timing import build_timing

        if self.schedule is None:
            return None
        if self.schedule.spec.suspend:
            self.console.print(f"RetrainSchedule {self.schedule.metadata.name} is suspended")
            return None
        return build_timing(self.schedule.spec, datetime.now(UTC))

    def _server(self) -> uvicorn.Server:
        import uvicorn

        from stockops_model.deploy.local import SERVING_ALIAS
        from stockops_model.server.app import create_app
        from stockops_model.server.recent import StoreBars
        from stockops_model.server.runtime import ServerConfig
        from stockops_model.server.slot import MlflowLoader, ModelSource

        source = ModelSource.parse(f"models:/{self.model.spec.mlflow.model_name}@{SERVING_ALIAS}")
        app = create_app(
            source,
            MlflowLoader(source, self.tracking_uri),
            ServerConfig(api_key=self.api_key, poll_seconds=30.0),
            StoreBars.open(self.location),
        )
        config = uvicorn.Config(
            app,
            host=self.serving.host,
            port=self.serving.port,
            access_log=False,
            log_config=None,
            lifespan="on",
        )
        return uvicorn.Server(config)

    async def _started(self, server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not server.started:
            if serving.done() or time.monotonic() > deadline:
                await asyncio.gather(serving, return_exceptions=True)
                raise SpecError(
                    f"the scoring server could not listen on {self.serving.host}:"
                    f"{self.serving.port} (in use?); pick another with --port"
                )
            await asyncio.sleep(0.05)


async def _sleep_until(when: datetime | None) -> None:
    if when is None:
        await asyncio.Event().wait()  # forever: the caller waits for something else
        return
    await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()))


async def _first_of(*waits: Any) -> None:
    """Wait until the first of tasks or coroutines ends; cancel the coroutines' tasks."""
    tasks = [w if isinstance(w, asyncio.Task) else asyncio.ensure_future(w) for w in waits]
    owned = [t for t, w in zip(tasks, waits, strict=True) if t is not w]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in owned:
            task.cancel()


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a daemon thread: Ctrl-C during a training run does not wait for it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, value, None)

    threading.Thread(target=target, name="stockops-cycle", daemon=True).start()
    return await future


def _settle(future: asyncio.Future[T], value: T | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)  # type: ignore[arg-type]


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


def _print_training(console: Console, result: dict[str, Any]) -> None:
    """The gate's decision with the test metrics beside the naive forecast's."""
    from rich.table import Table

    decision = "promoted" if result.get("promoted") else "kept"
    table = Table(
        title=f"challenger version {result.get('challenger_version')}: {decision}",
        caption=str(result.get("reason") or ""),
    )
    sides = result.get("test") or {}
    table.add_column("test window")
    for name in SHOWN_METRICS:
        table.add_column(name, justify="right")
    for side, values in sides.items():
        table.add_row(side, *[f"{values[m]:.6g}" if m in values else "-" for m in SHOWN_METRICS])
    console.print(table)
