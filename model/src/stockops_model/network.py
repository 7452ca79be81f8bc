"""The forecasting network: LSTM over a window of features, attention over time, one output.

Architecture (the original system's, made serialisable):
`Input(window, F) -> LSTM(units, return_sequences=True) -> TimeAttention -> Dense(1)`,
compiled with Adam and mean squared error. The output is the scaled target (a return or a
level, see `stockops_model.windows`); scaling and the inverse happen outside the network.

`TimeAttention` is registered as `stockops>TimeAttention`, so a `.keras` file saved here
loads in any process that has imported this module (the MLflow pyfunc ships the code).

For serving, `inference_function` wraps the model in a `tf.function` with a fixed input
signature: one window takes ~2 ms on 2 CPU cores instead of ~80 ms for `model.predict`
(measured, see ../shared/FACTS.md).

This is the only module of `stockops_model` that imports TensorFlow/Keras; import it
lazily from command modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from keras import ops

ATTENTION_LAYER_NAME = "attention"


@keras.saving.register_keras_serializable(package="stockops")
class TimeAttention(keras.layers.Layer):  # type: ignore[misc]
    """Additive attention over the time axis of a (batch, time, channels) sequence.

    score_t = tanh(x_t . W + b_t), weights = softmax over t of the scores, and the output
    is the weighted sum of x_t over t: a (batch, channels) context vector. The bias is one
    per time step (as in the original), which lets the layer learn a recency prior; it
    fixes the number of time steps when the layer is built.

    Call with `return_attention=True` to also get the (batch, time) weights.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = False

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"TimeAttention needs a (batch, time, channels) input with known time and "
                f"channels, got {input_shape}"
            )
        self.w = self.add_weight(
            name="w", shape=(int(input_shape[2]), 1), initializer="glorot_uniform"
        )
        self.b = self.add_weight(name="b", shape=(int(input_shape[1]), 1), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: Any, return_attention: bool = False) -> Any:
        scores = ops.tanh(ops.matmul(inputs, self.w) + self.b)  # (batch, time, 1)
        weights = ops.softmax(scores, axis=1)
        context = ops.sum(inputs * weights, axis=1)  # (batch, channels)
        if return_attention:
            return context, ops.squeeze(weights, axis=-1)
        return context

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], input_shape[2])

    def get_config(self) -> dict[str, Any]:
        # No constructor arguments of its own: the base config (name, dtype, trainable).
        config: dict[str, Any] = super().get_config()
        return config


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (weights, dropout, shuffling) in one call.

    Runs are repeatable on the same machine and thread count; TensorFlow does not promise
    bit-identical results across CPUs or with op determinism off.
    """
    keras.utils.set_random_seed(seed)


def build_network(
    window: int, n_features: int, units: int, learning_rate: float, seed: int
) -> keras.Model:
    """The compiled network (Adam, MSE) for (window, n_features) inputs and one output."""
    set_seeds(seed)
    inputs = keras.Input(shape=(window, n_features), name="window")
    sequence = keras.layers.LSTM(units, return_sequences=True, name="lstm")(inputs)
    context = TimeAttention(name=ATTENTION_LAYER_NAME)(sequence)
    output = keras.layers.Dense(1, name="forecast")(context)
    model = keras.Model(inputs, output, name="lstm_attention")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    return model


def attention_weights(
    model: keras.Model, x: npt.NDArray[np.floating], batch_size: int = 1024
) -> npt.NDArray[np.float32]:
    """The (N, window) attention weights of each window (rows sum to 1), for a heatmap."""
    layer = model.get_layer(ATTENTION_LAYER_NAME)
    sequence_model = keras.Model(model.input, layer.input)
    out: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(x), batch_size):
        batch = np.asarray(x[start : start + batch_size], dtype=np.float32)
        sequence = sequence_model(batch, training=False)
        _, weights = layer(sequence, return_attention=True)
        out.append(np.asarray(keras.ops.convert_to_numpy(weights), dtype=np.float32))
    if not out:
        return np.empty((0, int(layer.input.shape[1])), dtype=np.float32)
    return np.concatenate(out)


def inference_function(
    model: keras.Model,
) -> Callable[[npt.NDArray[np.floating]], npt.NDArray[np.float32]]:
    """A fast predict: (N, window, F) -> (N,), traced once with a (None, window, F) signature.

    The first call traces (about a second); later calls of any N reuse the graph.
    """
    _, window, n_features = model.input_shape
    signature = [tf.TensorSpec(shape=(None, window, n_features), dtype=tf.float32)]

    @tf.function(input_signature=signature, reduce_retracing=True)  # type: ignore[untyped-decorator]
    def call(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    def predict(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        tensor = tf.convert_to_tensor(np.asarray(x, dtype=np.float32))
        return np.asarray(call(tensor).numpy(), dtype=np.float32).reshape(-1)

    return predict


def load_network(path: str) -> keras.Model:
    """Load a `.keras` file saved from `build_network` (this module registers the layer)."""
    return keras.saving.load_model(path)
