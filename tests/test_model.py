"""Saving without timestamps, loading in safe mode, the loss recomputed outside Keras."""

from __future__ import annotations

import copy
import time
import zipfile

import keras
import numpy as np
import pytest

from pipeline.config import parse_params
from pipeline.model import ModelError, load_model, logits_loss, recurrent_classifier, save_model, seed_everything


def small_model(raw, parallel_slices: int = 1) -> keras.Model:
    raw["mnist"].update(units=4, layers=2, parallel_slices=parallel_slices)
    seed_everything(0)
    inputs = keras.Input(shape=(5, 3), name="steps")
    return recurrent_classifier(inputs, inputs, parse_params(raw).mnist, classes=4, name="small")


def test_saving_twice_gives_identical_bytes(raw, tmp_path):
    model = small_model(raw)
    save_model(model, tmp_path / "a.keras")
    time.sleep(1.1)  # the zip and metadata timestamps have a resolution of seconds
    save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert "1980-01-01" in archive.read("metadata.json").decode()


def test_two_builds_of_the_same_model_save_identically(raw, tmp_path):
    # Keras writes Python object ids (memory addresses) into config.json; they must not reach the file.
    first, second = small_model(copy.deepcopy(raw)), small_model(copy.deepcopy(raw))
    save_model(first, tmp_path / "first.keras")
    save_model(second, tmp_path / "second.keras")
    assert (tmp_path / "first.keras").read_bytes() == (tmp_path / "second.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "first.keras") as archive:
        assert '"shared_object_id": 0' in archive.read("config.json").decode()


def test_reloaded_model_predicts_the_same(raw, tmp_path):
    model = small_model(raw)
    assert [layer.name for layer in model.layers][1:] == ["lstm_1", "lstm_2", "logits"]
    save_model(model, tmp_path / "m.keras")
    x = np.random.default_rng(0).random((2, 5, 3)).astype("float32")
    np.testing.assert_array_equal(load_model(tmp_path / "m.keras").predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("parts", [2, 3])
def test_batch_slices_give_every_example_the_output_of_the_whole_batch(raw, tmp_path, parts):
    whole, sliced = small_model(copy.deepcopy(raw)), small_model(copy.deepcopy(raw), parallel_slices=parts)
    assert [layer.name for layer in sliced.layers][1:] == ["slices", "lstm_1", "lstm_2", "logits", "joined"]
    assert len(sliced.weights) == len(whole.weights)  # the slices share one LSTM stack
    sliced.set_weights(whole.get_weights())
    x = np.random.default_rng(1).random((7, 5, 3)).astype("float32")
    for size in (1, 2, 6, 7):  # fewer examples than slices, divisible and not (padded, then trimmed)
        expected = whole.predict(x[:size], verbose=0)
        # equal up to float rounding: a matrix product may sum in another order for another batch size
        np.testing.assert_allclose(sliced.predict(x[:size], verbose=0), expected, rtol=1e-5, atol=1e-6)
    save_model(sliced, tmp_path / "sliced.keras")  # registered layers: loadable in safe mode
    reloaded = load_model(tmp_path / "sliced.keras")
    assert reloaded.get_layer("slices").parts == parts
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), sliced.predict(x, verbose=0))


def test_sliced_training_follows_the_same_gradient(raw):
    # The slices' gradients add up to the whole batch's, from the same weights.
    import tensorflow as tf

    whole, sliced = small_model(copy.deepcopy(raw)), small_model(copy.deepcopy(raw), parallel_slices=2)
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


def test_lambda_layers_are_refused(tmp_path):
    inputs = keras.Input(shape=(2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match=r"lambda\.keras: refused to load: .*[Ll]ambda"):
        load_model(tmp_path / "lambda.keras")


def test_missing_model_says_run_dvc_repro(tmp_path):
    with pytest.raises(ModelError, match=r"no trained model there \(run `dvc repro` first\)"):
        load_model(tmp_path / "absent.keras")


def test_logits_loss_matches_keras():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], dtype=np.float32)
    labels = np.array([0, 1])
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert logits_loss(logits, labels) == pytest.approx(float(expected), rel=1e-6)
