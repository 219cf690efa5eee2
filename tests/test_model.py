"""The network: batch slices give every example the whole batch's output and gradient; it saves and reloads."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.model.saving import load_model, save_model


def test_reloaded_model_predicts_the_same(small_model, tmp_path):
    model = small_model()
    assert [layer.name for layer in model.layers][1:] == ["lstm_1", "lstm_2", "logits"]
    save_model(model, tmp_path / "m.keras")
    x = np.random.default_rng(0).random((2, 5, 3)).astype("float32")
    np.testing.assert_array_equal(load_model(tmp_path / "m.keras").predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("parts", [2, 3])
def test_batch_slices_give_every_example_the_output_of_the_whole_batch(small_model, tmp_path, parts):
    whole, sliced = small_model(), small_model(parallel_slices=parts)
    assert [layer.name for layer in sliced.layers][1:] == ["slices", "lstm_1", "lstm_2", "logits", "joined"]
    assert len(sliced.weights) == len(whole.weights)  # the slices share one LSTM stack
    sliced.set_weights(whole.get_weights())
    x = np.random.default_rng(1).random((7, 5, 3)).astype("float32")
    for size in (1, 2, 6, 7):  # fewer examples than slices, divisible and not (padded, then trimmed)
        # called eagerly: predict() would trace a graph per batch size
        expected = whole(x[:size], training=False).numpy()
        # equal up to float rounding: a matrix product may sum in another order for another batch size
        np.testing.assert_allclose(sliced(x[:size], training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    save_model(sliced, tmp_path / "sliced.keras")  # registered layers: loadable in safe mode
    reloaded = load_model(tmp_path / "sliced.keras")
    assert reloaded.get_layer("slices").parts == parts
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), sliced.predict(x, verbose=0))


def test_sliced_training_follows_the_same_gradient(small_model):
    # The slices' gradients add up to the whole batch's, from the same weights.
    import tensorflow as tf

    whole, sliced = small_model(), small_model(parallel_slices=2)
    sliced.set_weights(whole.get_weights())
    x = tf.constant(np.random.default_rng(2).random((6, 5, 3)).astype("float32"))
    y = tf.constant([0, 1, 2, 3, 0, 1])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    gradients = []
    for model in (whole, sliced):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        gradients.append(tape.gradient(value, model.trainable_weights))
    for a, b in zip(*gradients, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7)
