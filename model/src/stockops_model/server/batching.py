"""Micro-batching: one worker thread runs the network on the windows of many requests at once.

A request puts its windows on a queue and awaits a future. The worker takes everything
queued (up to `max_windows`, more only when one request alone is larger), runs one
`forecast_windows` call per model and resolves each request's future with its slice.
Batching is natural, with no timer: while one call runs, the next batch accumulates, so an
idle server answers a lone request at once and a busy one amortises each network call over
several requests (one window costs ~2.3 ms, eight in one call ~6 ms on 2 cores).
TensorFlow releases the GIL inside the call, so the event loop keeps parsing requests.

Windows of different models (a hot swap while requests are queued) are never mixed: each
request is forecast by the model it took at its start.

Limits: one worker, so one network call at a time; on 2 cores a second worker only
competes with the event loop for the same CPU.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

DEFAULT_MAX_WINDOWS = 64


class WindowForecaster(Protocol):
    """What the batcher runs: unscaled feature windows (N, window, F) and their last closes
    to the forecast close per window (N,). A `Forecaster` is one, and so is its network
    compiled for serving (`stockops_model.server.compiled.CompiledNetwork`)."""

    def forecast_windows(
        self, x: npt.NDArray[np.floating] | None, last_close: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]: ...


@dataclass
class _Job:
    forecaster: WindowForecaster
    x: npt.NDArray[np.float32]
    last_close: npt.NDArray[np.float64]
    future: asyncio.Future[npt.NDArray[np.float64]]
    loop: asyncio.AbstractEventLoop


class Batcher:
    """Runs `forecast_windows` for queued requests in one worker thread (module docstring)."""

    def __init__(
        self,
        max_windows: int = DEFAULT_MAX_WINDOWS,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """`on_batch(windows)` is called after each network call (for a metric)."""
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {max_windows}")
        self.max_windows = max_windows
        self.on_batch = on_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0  # network calls made, for tests and logs
        self.largest_batch = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stockops-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Let the worker finish what is queued, then end it."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def forecast(
        self,
        forecaster: WindowForecaster,
        x: npt.NDArray[np.float32],
        last_close: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """Forecast close for these windows, batched with whatever else is queued."""
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[npt.NDArray[np.float64]] = loop.create_future()
        self._queue.put(_Job(forecaster, x, last_close, future, loop))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            size = len(first.x)
            while size < self.max_windows:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
                size += len(job.x)
            self._forecast(batch)
            if stop:
                return

    def _forecast(self, batch: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = {}
        for job in batch:
            groups.setdefault(id(job.forecaster), []).append(job)
        for jobs in groups.values():
            try:
                x = np.concatenate([j.x for j in jobs])
                last_close = np.concatenate([j.last_close for j in jobs])
                forecast = jobs[0].forecaster.forecast_windows(x, last_close)
            except Exception as exc:  # the requests get it; the worker lives on
                for job in jobs:
                    _call_in_loop(job, _fail, exc)
                continue
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(x))
            if self.on_batch is not None:
                self.on_batch(len(x))
            start = 0
            for job in jobs:
                part = forecast[start : start + len(job.x)]
                start += len(job.x)
                _call_in_loop(job, _resolve, part)


def _call_in_loop(job: _Job, callback: Callable[..., None], value: object) -> None:
    try:
        job.loop.call_soon_threadsafe(callback, job.future, value)
    except RuntimeError:  # the loop closed meanwhile: nobody waits for this answer
        log.debug("dropped a forecast for a closed event loop")


def _resolve(
    future: asyncio.Future[npt.NDArray[np.float64]], value: npt.NDArray[np.float64]
) -> None:
    if not future.done():  # the client may have gone away meanwhile
        future.set_result(value)


def _fail(future: asyncio.Future[npt.NDArray[np.float64]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
