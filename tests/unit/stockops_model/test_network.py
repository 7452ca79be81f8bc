"""The network: the attention layer's maths and serialisation, save/load, fast inference."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from stockops_model.network import (
    TimeAttention,
    attention_weights,
    build_network,
    inference_function,
    load_network,
    set_seeds,
)

WINDOW, FEATURES, UNITS = 8, 3, 6


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return build_network(WINDOW, FEATURES, UNITS, learning_rate=0.01, seed=1)


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(20, WINDOW, FEATURES)).astype(np.float32)


def test_architecture_is_lstm_attention_dense(model: keras.Model) -> None:
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "LSTM", "TimeAttention", "Dense"]
    assert model.input_shape == (None, WINDOW, FEATURES)
    assert model.output_shape == (None, 1)
    assert model.get_layer("lstm").return_sequences
    assert model.loss == "mse"


def test_attention_is_a_softmax_weighted_sum_over_time() -> None:
    layer = TimeAttention()
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    context, weights = layer(x, return_attention=True)
    w, b = (np.asarray(v) for v in (layer.w, layer.b))
    scores = np.tanh(x @ w + b)[..., 0]
    expected = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(weights), expected, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(context), (x * expected[..., None]).sum(axis=1), rtol=1e-5, atol=1e-6
    )
    assert np.asarray(layer(x)).shape == (4, 3)


def test_layer_config_round_trip() -> None:
    layer = TimeAttention(name="att", dtype="float32")
    config = layer.get_config()
    clone = TimeAttention.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "stockops>TimeAttention"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(restored, TimeAttention)
    assert restored.name == "att"


def test_saved_model_loads_with_identical_predictions(
    model: keras.Model, windows: np.ndarray, tmp_path: Path
) -> None:
    # Train one step first so the saved weights are not the initial ones.
    model.fit(windows, windows[:, -1, :1], epochs=1, batch_size=10, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_network(str(path))
    np.testing.assert_array_equal(
        loaded.predict(windows, verbose=0), model.predict(windows, verbose=0)
    )
    assert isinstance(loaded.get_layer("attention"), TimeAttention)


def test_inference_function_matches_predict_for_any_batch_size(
    model: keras.Model, windows: np.ndarray
) -> None:
    predict = inference_function(model)
    expected = model.predict(windows, verbose=0).reshape(-1)
    np.testing.assert_allclose(predict(windows), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict(windows[:1]), expected[:1], rtol=1e-5, atol=1e-6)
    assert predict(windows[:1].astype(np.float64)).shape == (1,)


def test_attention_weights_are_distributions_over_the_window(
    model: keras.Model, windows: np.ndarray
) -> None:
    weights = attention_weights(model, windows, batch_size=7)
    assert weights.shape == (len(windows), WINDOW)
    assert (weights > 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    # the same as computing them through the layer by hand
    lstm_out = keras.Model(model.input, model.get_layer("lstm").output)(windows)
    _, direct = model.get_layer("attention")(lstm_out, return_attention=True)
    np.testing.assert_allclose(weights, np.asarray(direct), rtol=1e-5)


def test_same_seed_same_initial_weights() -> None:
    a = build_network(WINDOW, FEATURES, UNITS, 0.001, seed=9)
    b = build_network(WINDOW, FEATURES, UNITS, 0.001, seed=9)
    c = build_network(WINDOW, FEATURES, UNITS, 0.001, seed=10)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


@pytest.mark.slow
def test_network_learns_a_simple_function_of_the_window() -> None:
    # y = mean of the first feature over the window: learnable through attention.
    set_seeds(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, WINDOW, FEATURES)).astype(np.float32)
    y = x[:, :, 0].mean(axis=1, keepdims=True)
    net = build_network(WINDOW, FEATURES, 16, learning_rate=0.01, seed=0)
    before = float(net.evaluate(x, y, verbose=0))
    net.fit(x, y, epochs=15, batch_size=64, verbose=0)
    after = float(net.evaluate(x, y, verbose=0))
    assert after < 0.25 * before
