"""Saving without timestamps (equal weights, equal bytes), loading in safe mode."""

from __future__ import annotations

import time
import zipfile

import keras
import pytest

from pipeline.model.saving import ModelError, load_model, save_model


def test_saving_twice_gives_identical_bytes(small_model, tmp_path):
    model = small_model()
    save_model(model, tmp_path / "a.keras")
    time.sleep(1.1)  # the zip and metadata timestamps have a resolution of seconds
    save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert "1980-01-01" in archive.read("metadata.json").decode()


def test_two_builds_of_the_same_model_save_identically(small_model, tmp_path):
    # Keras writes Python object ids (memory addresses) into config.json; they must not reach the file.
    first, second = small_model(), small_model()
    save_model(first, tmp_path / "first.keras")
    save_model(second, tmp_path / "second.keras")
    assert (tmp_path / "first.keras").read_bytes() == (tmp_path / "second.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "first.keras") as archive:
        assert '"shared_object_id": 0' in archive.read("config.json").decode()


def test_lambda_layers_are_refused(tmp_path):
    inputs = keras.Input(shape=(2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match=r"lambda\.keras: refused to load: .*[Ll]ambda"):
        load_model(tmp_path / "lambda.keras")


def test_missing_model_says_run_dvc_repro(tmp_path):
    with pytest.raises(ModelError, match=r"no trained model there \(run `dvc repro` first\)"):
        load_model(tmp_path / "absent.keras")
