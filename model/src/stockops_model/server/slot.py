"""The model slot: which model serves, loading it, and swapping it atomically when its alias moves.

`ModelSource` says what to serve (`models:/NAME@ALIAS` follows an alias, `models:/NAME/3`
is pinned, a `runs:/` URI or a path is loaded once). A `ModelLoader` tells the version the
source points at now and loads one (`MlflowLoader`; tests pass a fake).

`ModelSlot.refresh` (called every `--poll-seconds` and by `POST /v1/models/reload`) asks the
loader for the current version; when it differs from the one serving it loads the new one
in a worker thread, warms it (one forecast per ticker on synthetic bars,
`stockops_model.examples.synthetic_bars`, so the network's tf.function is traced, and
compiled with XLA, before real traffic reaches it, and a model that answers a non-finite
forecast is refused), and then replaces a single reference. A request reads
`slot.current` once at its start and keeps that object, so requests in flight finish on
the model they started with; the old model is freed when the last of them is done.

A failed load keeps the old model serving, counts `stockops_serve_reloads_total{outcome=
"failed"}`, logs, and shows in `last_reload_error`. While nothing is loaded, every poll
retries: a pinned `models:/NAME/V` (a KServe predictor) that met one transient registry or
blob error at start must not stay 503 forever. While an older version serves, a version
that failed is retried with capped exponential backoff (after one retry interval, the poll
interval by default, then twice that, and so on up to `MAX_RETRY_SECONDS`), so a broken
artifact is not downloaded again every 30 s yet a transient failure heals by itself; a
forced refresh (`POST /v1/models/reload`) retries at once.

An alias that is not set yet (`models:/NAME@serving` before the first rollout, or no
registered model NAME yet) is the normal state of a fresh `stockops up`, not a failure: it
is logged once at WARNING ("waiting for alias serving of NAME"), shows in
`last_reload_error`, and is not counted as a failed reload; ERROR is for real failures.

Limits: one model at a time; loading holds old and new model in memory together.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np

from stockops_model.errors import DataError, ServiceUnavailableError
from stockops_model.examples import synthetic_bars
from stockops_model.forecaster import Forecaster
from stockops_model.server.batching import WindowForecaster
from stockops_model.server.inputs import bars_from_records
from stockops_model.server.metrics import ServerMetrics
from stockops_model.tracking import is_not_found

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 600.0  # the longest wait before a failed version is tried again
DEFAULT_RETRY_SECONDS = 30.0  # the first wait (the server passes its poll interval)

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


class AliasNotSetError(ServiceUnavailableError):
    """The alias (or the registered model) does not exist yet: nothing is deployed."""


@dataclass(frozen=True)
class ModelSource:
    """What the server was asked to serve."""

    uri: str
    name: str  # the registered model name, else the last part of the URI
    alias: str | None = None
    version: str | None = None  # pinned in the URI

    @classmethod
    def parse(cls, uri: str) -> ModelSource:
        """What `uri` asks for: `models:/NAME@ALIAS` follows the alias, `models:/NAME/V` pins
        version V; any other URI (`runs:/…`, a path) is loaded once and named by its last
        part."""
        match = _REGISTRY_URI.match(uri)
        if match:
            return cls(uri, match["name"], match["alias"], match["version"])
        name = uri.rstrip("/").rsplit("/", 1)[-1] or "model"
        return cls(uri, name)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve; requests hold on to the one they started with.

    `runner` computes forecasts from prepared windows: the forecaster itself, or its
    network compiled for serving (`stockops_model.server.compiled`).
    """

    source: ModelSource
    version: str | None
    forecaster: Forecaster
    loaded_at: datetime
    runner: WindowForecaster

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def uri(self) -> str:
        """The URI this exact model was loaded from (pinned to its version when known)."""
        if self.version is not None and self.source.uri.startswith("models:/"):
            return f"models:/{self.source.name}/{self.version}"
        return self.source.uri


class ModelLoader(Protocol):
    """Where models come from; the methods block (they run in worker threads)."""

    def resolve(self) -> str | None:
        """The version the source points at now (None when the source has no versions)."""
        ...

    def load(self, version: str | None) -> Forecaster:
        """Load that version's forecaster; raise on any failure."""
        ...


class MlflowLoader:
    """Models from an MLflow registry (or any MLflow model URI) as stockops forecasters."""

    def __init__(self, source: ModelSource, tracking_uri: str | None) -> None:
        self.source = source
        self.tracking_uri = tracking_uri
        self._client: object | None = None

    def _mlflow_client(self) -> object:
        if self._client is None:
            import mlflow

            if self.tracking_uri:
                mlflow.set_tracking_uri(self.tracking_uri)
            self._client = mlflow.MlflowClient(self.tracking_uri)
        return self._client

    def resolve(self) -> str | None:
        if self.source.version is not None:
            return self.source.version
        if self.source.alias is None:
            return None
        from mlflow.exceptions import MlflowException

        client = self._mlflow_client()
        try:
            found = client.get_model_version_by_alias(  # type: ignore[attr-defined]
                self.source.name, self.source.alias
            )
        except MlflowException as exc:
            if is_not_found(exc):
                raise AliasNotSetError(
                    f"waiting for alias {self.source.alias} of {self.source.name} "
                    f"(not set yet: {exc})"
                ) from None
            raise ServiceUnavailableError(
                f"cannot read alias {self.source.name}@{self.source.alias}: {exc}"
            ) from None
        return str(found.version)

    def load(self, version: str | None) -> Forecaster:
        import mlflow.pyfunc

        self._mlflow_client()  # sets the tracking URI for load_model
        uri = self.source.uri
        if version is not None and self.source.uri.startswith("models:/"):
            uri = f"models:/{self.source.name}/{version}"
        model = mlflow.pyfunc.load_model(uri)
        python_model = model.unwrap_python_model()
        forecaster = getattr(python_model, "forecaster", None)
        if forecaster is None or not hasattr(forecaster, "prepare_windows"):
            raise DataError(f"{uri} is not a stockops forecaster (ForecasterModel pyfunc)")
        loaded: Forecaster = forecaster
        return loaded


def plain_runner(forecaster: Forecaster) -> WindowForecaster:
    """Forecasts through the forecaster's own `forecast_windows`."""
    return forecaster


def compiled_runner(forecaster: Forecaster) -> WindowForecaster:
    """A network forecaster's XLA-compiled network when XLA works here, else the forecaster."""
    from stockops_model.forecaster import NetworkForecaster

    if not isinstance(forecaster, NetworkForecaster):
        return forecaster
    from stockops_model.server.compiled import compile_network

    return compile_network(forecaster) or forecaster


def warm_up(forecaster: Forecaster, runner: WindowForecaster | None = None) -> None:
    """One forecast per ticker on synthetic bars: traces the network's tf.function before
    traffic. The bars go through the server's own input path, as a request's would.

    Raises whatever the forecaster raises: a model that cannot forecast is not swapped in.
    """
    count = forecaster.min_bars
    records = synthetic_bars(forecaster.tickers, count)
    bars = bars_from_records({"bars": records}, forecaster.tickers, count, len(records))
    windows = forecaster.prepare_windows(bars)
    forecast = (runner or forecaster).forecast_windows(windows.x, windows.last_close)
    if not np.isfinite(forecast).all():
        raise DataError("the model's warm-up forecast is not finite")


class ModelSlot:
    """The serving model and how it is replaced (see the module docstring)."""

    def __init__(
        self,
        source: ModelSource,
        loader: ModelLoader,
        metrics: ServerMetrics | None = None,
        runner_for: Callable[[Forecaster], WindowForecaster] = plain_runner,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
    ) -> None:
        """`retry_seconds`: the first wait before a failed version is tried again while
        another version serves; it doubles at each further failure up to
        `MAX_RETRY_SECONDS`."""
        self.source = source
        self.loader = loader
        self.metrics = metrics
        self.runner_for = runner_for
        self.clock = clock
        self.current: LoadedModel | None = None
        self.reloads = 0  # swaps after the first load
        self.last_reload_error: str | None = None
        self.retry_seconds = retry_seconds
        self._failed_version: str | None = None
        self._failures = 0  # consecutive failed loads of `_failed_version`
        self._retry_at: datetime | None = None
        self._waiting_logged = False  # "waiting for alias" said once, until it is set
        self._lock = asyncio.Lock()

    async def refresh(self, force: bool = False) -> LoadedModel | None:
        """Load the version the source points at if it is not the one serving.

        Never raises for a registry or load failure: the old model keeps serving and the
        failure shows in `last_reload_error`. Returns the model serving afterwards.
        """
        async with self._lock:
            try:
                version = await asyncio.to_thread(self.loader.resolve)
            except AliasNotSetError as exc:
                self._waiting(exc)
                return self.current
            except Exception as exc:
                self._failed("cannot resolve the model version", exc)
                return self.current
            self._waiting_logged = False
            current = self.current
            if current is not None and current.version == version:
                return current
            if current is not None and not force and self._backing_off(version):
                return current
            try:
                forecaster, runner = await asyncio.to_thread(self._load, version)
            except Exception as exc:
                self._note_failed_load(version)
                self._failed(f"cannot load version {version}", exc)
                return self.current
            self._swap(LoadedModel(self.source, version, forecaster, self.clock(), runner))
            return self.current

    def _backing_off(self, version: str | None) -> bool:
        """Whether `version` failed to load and its next retry is not due yet."""
        if version is None or version != self._failed_version or self._retry_at is None:
            return False
        return self.clock() < self._retry_at

    def _note_failed_load(self, version: str | None) -> None:
        self._failures = self._failures + 1 if version == self._failed_version else 1
        self._failed_version = version
        wait = min(self.retry_seconds * 2 ** min(self._failures - 1, 20), MAX_RETRY_SECONDS)
        self._retry_at = self.clock() + timedelta(seconds=wait)

    def _load(self, version: str | None) -> tuple[Forecaster, WindowForecaster]:
        forecaster = self.loader.load(version)
        runner = self.runner_for(forecaster)
        warm_up(forecaster, runner)
        return forecaster, runner

    def _swap(self, model: LoadedModel) -> None:
        previous = self.current
        self.current = model  # the one reference requests read; the old model stays intact
        if previous is not None:
            self.reloads += 1
        self.last_reload_error = None
        self._failed_version = None
        self._failures = 0
        self._retry_at = None
        if self.metrics is not None:
            self.metrics.reloads.labels("loaded").inc()
            self.metrics.serving(model.name, model.version or "")
        log.info(
            "serving %s version %s (%s)%s",
            model.name,
            model.version,
            model.forecaster.kind,
            f", replacing version {previous.version}" if previous is not None else "",
        )

    def _waiting(self, exc: AliasNotSetError) -> None:
        self.last_reload_error = str(exc)[:2000]
        level = logging.DEBUG if self._waiting_logged else logging.WARNING
        self._waiting_logged = True
        serving = self.current.version if self.current is not None else None
        log.log(level, "%s; still serving version %s", self.last_reload_error, serving)

    def _failed(self, what: str, exc: Exception) -> None:
        self.last_reload_error = f"{what}: {type(exc).__name__}: {exc}"[:2000]
        if self.metrics is not None:
            self.metrics.reloads.labels("failed").inc()
        serving = self.current.version if self.current is not None else None
        log.error("%s; still serving version %s", self.last_reload_error, serving)

    async def poll(self, every: float) -> None:
        """Refresh now and then every `every` seconds, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(every)
