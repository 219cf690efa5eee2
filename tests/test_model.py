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


def translation_graph(layer: keras.layers.Layer, images: np.ndarray):
    """The layer's training-time output on ``images`` and the op types of its traced graph."""
    import tensorflow as tf

    function = tf.function(lambda x: layer(x, training=True))
    graph = function.get_concrete_function(tf.TensorSpec((None, *images.shape[1:]), tf.float32)).graph
    return function(tf.constant(images)).numpy(), [op.type for op in graph.get_operations()]


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_the_librarys_warp_translates_as_keras_does_on_parts_of_the_batch_side_by_side(pieces):
    from pipeline.model.layers import warp_with_library

    images = np.random.default_rng(3).random((7, 28, 28, 1)).astype("float32")

    def translation(fill_mode: str = "constant") -> keras.layers.RandomTranslation:
        return keras.layers.RandomTranslation(0.2, 0.2, fill_mode=fill_mode, seed=11, name="shift")

    for size in (1, 2, 6, 7):  # fewer images than pieces, divisible and not
        expected, keras_ops = translation_graph(translation(), images[:size])
        warped, ops = translation_graph(warp_with_library(translation(), pieces), images[:size])
        assert warped.tobytes() == expected.tobytes(), size
        assert not np.array_equal(warped, images[:size])  # it did translate
        assert "ImageProjectiveTransformV3" in keras_ops and "ImageProjectiveTransformV3" not in ops
        assert ops.count("DetProjectiveTransform") == pieces
    # what the library's op does not cover keeps Keras' own path, and a saved model names Keras' class
    reflected, ops = translation_graph(warp_with_library(translation("reflect"), pieces), images)
    assert reflected.tobytes() == translation_graph(translation("reflect"), images)[0].tobytes()
    assert "DetProjectiveTransform" not in ops
    wrapped = warp_with_library(translation(), pieces)
    assert keras.saving.serialize_keras_object(wrapped) == keras.saving.serialize_keras_object(translation())
