"""The network's forward pass compiled with XLA for the batch sizes the server runs.

`network.inference_function` (a plain tf.function) costs ~0.85 ms of CPU for one window
and ~1.3 ms for eight on this machine's 2 cores; the same forward pass compiled with XLA
(`jit_compile=True`) costs ~0.4 and ~0.5 ms, and the network call is the largest single
part of a request's CPU. XLA compiles once per input shape, so batches are padded up to
a fixed set of sizes (`BUCKETS`), each compiled while the model loads (about half a second
each), never while a request waits.

`CompiledNetwork.forecast_windows` is `NetworkForecaster.forecast_windows_with` (scale,
network, unscale, to price) with the compiled call, so it keeps the forecaster's contract
and its results to float32 rounding (a unit test compares them). If XLA cannot compile on
the platform, the slot serves the plain tf.function instead and logs why.

Limits: batches larger than the largest bucket run in chunks of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from stockops_model.forecaster import NetworkForecaster

log = logging.getLogger(__name__)

BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


class CompiledNetwork:
    """A NetworkForecaster's windows -> forecast close, through an XLA-compiled network."""

    def __init__(self, forecaster: NetworkForecaster, buckets: tuple[int, ...] = BUCKETS) -> None:
        import tensorflow as tf

        self.forecaster = forecaster
        self.buckets = tuple(sorted(buckets))
        model = forecaster.network
        _, window, features = model.input_shape
        self.shape = (int(window), int(features))
        signature = [tf.TensorSpec(shape=(None, window, features), dtype=tf.float32)]

        @tf.function(input_signature=signature, jit_compile=True)  # type: ignore[untyped-decorator]
        def call(x: Any) -> Any:
            return model(x, training=False)

        self._call: Callable[[Any], Any] = call
        self._tf = tf

    def compile(self) -> None:
        """Compile every bucket now (raises if XLA cannot compile this network)."""
        for size in self.buckets:
            self._run(np.zeros((size, *self.shape), dtype=np.float32))

    def forecast_windows(
        self, x: npt.NDArray[np.floating] | None, last_close: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Forecast close for unscaled windows (N, window, F) and their last closes."""
        if x is None or len(x) == 0:
            return self.forecaster.forecast_windows(x, last_close)
        return self.forecaster.forecast_windows_with(self._run, self.buckets[-1], x, last_close)

    def _run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        count = len(batch)
        size = next(b for b in self.buckets if b >= count)
        if size > count:
            padding = np.zeros((size - count, *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, padding])
        out = self._call(self._tf.convert_to_tensor(batch, dtype=self._tf.float32))
        return np.asarray(out.numpy(), dtype=np.float32).reshape(-1)[:count]


def compile_network(forecaster: NetworkForecaster) -> CompiledNetwork | None:
    """The XLA-compiled network of `forecaster`, or None (logged) when XLA fails here."""
    try:
        compiled = CompiledNetwork(forecaster)
        compiled.compile()
    except Exception as exc:  # any XLA/TensorFlow failure: serve the plain function
        log.warning("XLA cannot compile the network (%s); serving the plain tf.function", exc)
        return None
    return compiled
