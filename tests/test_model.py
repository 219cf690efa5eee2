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


def small_model(raw) -> keras.Model:
    raw["mnist"].update(units=4, layers=2)
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
