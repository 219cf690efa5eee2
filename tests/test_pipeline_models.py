"""Both models through the real stages (`dvc repro`) on shrunken params, in a copy of the project."""

from __future__ import annotations

import hashlib
import json
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image


def sha256s(project, paths):
    return {path: hashlib.sha256((project.root / path).read_bytes()).hexdigest() for path in paths}


def test_every_stage_ran_and_metrics_have_the_promised_keys(trained_project):
    root = trained_project.root
    mnist = json.loads((root / "metrics/mnist.json").read_text())
    assert {"test_accuracy", "test_loss", "test_accuracy_first128"} <= mnist.keys()
    assert 0.0 <= mnist["test_accuracy"] <= 1.0 and mnist["test_images"] == 200
    fable = json.loads((root / "metrics/fable.json").read_text())
    assert {"accuracy", "ceiling", "loss", "story_reproduces_text"} <= fable.keys()
    assert fable["ceiling"] == pytest.approx(199 / 201) and fable["windows"] == 201

    confusion = (root / "metrics/mnist_confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 201
    story = (root / "metrics/fable_story.txt").read_text().split()
    assert story[:3] == ["long", "ago", ","] and len(story) == 3 + 32  # fable.prompt null: the text's start

    history = (root / "metrics/mnist_history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy" and len(history) == 1 + 2
    assert (root / "metrics/fable_history.csv").read_text().splitlines()[0] == "epoch,loss,accuracy"


def test_models_reload_in_safe_mode_and_match_the_metrics(trained_project):
    root = trained_project.root
    model = keras.models.load_model(root / "models/mnist.keras", safe_mode=True)
    assert model.input_shape == (None, 28, 28) and model.output_shape == (None, 10)
    images, labels = np.load(root / "data/prepared/mnist/x_test.npy"), np.load(root / "data/prepared/mnist/y_test.npy")
    accuracy = float((model.predict(images, verbose=0).argmax(axis=1) == labels).mean())
    assert accuracy == json.loads((root / "metrics/mnist.json").read_text())["test_accuracy"]
    fable = keras.models.load_model(root / "models/fable.keras", safe_mode=True)
    assert fable.input_shape == (None, 3) and fable.output_shape == (None, 112)
    with zipfile.ZipFile(root / "models/fable.keras") as archive:
        assert {entry.date_time for entry in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_dvc_sees_metrics_and_plots(trained_project):
    shown = json.loads(trained_project.dvc("metrics", "show", "--json").stdout)
    workspace = next(iter(shown.values()))["data"]  # the workspace (DVC 3 names it "")
    assert "test_accuracy" in workspace["metrics/mnist.json"]["data"]
    assert "accuracy" in workspace["metrics/fable.json"]["data"]
    assert trained_project.dvc("status").stdout.strip() == "Data and pipelines are up to date."
    plots = json.loads(trained_project.dvc("plots", "show", "--json").stdout)["data"]
    assert set(plots) == {"Training curves (loss)", "Training curves (accuracy)", "MNIST confusion matrix"}
    curves = plots["Training curves (loss)"][0]["content"]["data"]["values"]
    assert {row["filename::field"].split("::")[0] for row in curves} == {"mnist_history.csv", "fable_history.csv"}
    confusion = plots["MNIST confusion matrix"][0]["content"]["data"]["values"]
    assert len(confusion) == 200 and {"actual", "predicted"} <= confusion[0].keys()


def test_generate_cli(trained_project):
    result = trained_project.python("-m", "pipeline.generate", "had a general", "--words", "5")
    words = result.stdout.split()
    assert words[:3] == ["had", "a", "general"] and len(words) == 8
    # no prompt: the stage's own story, from the text's first tokens
    story = trained_project.python("-m", "pipeline.generate").stdout
    assert story == (trained_project.root / "metrics/fable_story.txt").read_text()


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("had a unicorn", "generate: error: prompt 'had a unicorn': 'unicorn' not in data/vocabulary/fable.json"),
        ("had a", "generate: error: prompt 'had a' has 2 tokens ['had', 'a']; the model reads exactly 3"),
    ],
)
def test_generate_refuses_bad_prompts(trained_project, prompt, message):
    result = trained_project.python("-m", "pipeline.generate", prompt, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == message


def test_predict_cli_reads_a_png_as_the_model_reads_the_test_set(trained_project, tmp_path):
    """The test image the (shrunken, barely trained) model labels right with the highest probability, as a
    lossless PNG: the CLI answers its label with the model's own probability (an image read otherwise,
    inverted or scaled, would not give the same probability)."""
    from pipeline.model.inference import logits_function, softmax
    from pipeline.model.saving import load_model

    root = trained_project.root
    images, labels = (np.load(root / f"data/prepared/mnist/{name}_test.npy") for name in "xy")
    probabilities = softmax(logits_function(load_model(root / "models/mnist.keras"))(images))
    right = probabilities.argmax(axis=1) == labels
    index = int(np.argmax(np.where(right, probabilities.max(axis=1), 0.0)))
    top_two = np.sort(probabilities[index])[-2:]
    assert right[index] and top_two[1] - top_two[0] > 1e-3, "the shrunken model labels no test image clearly"
    Image.fromarray(images[index]).save(tmp_path / "digit.png")
    result = trained_project.python("-m", "pipeline.predict", str(tmp_path / "digit.png"))
    predicted, probability = result.stdout.split(" (probability ")
    assert int(predicted) == labels[index]
    assert abs(float(probability.rstrip(")\n")) - probabilities[index].max()) < 1e-3


def test_predict_refuses_a_non_image(trained_project, tmp_path):
    (tmp_path / "notes.png").write_text("not really a picture")
    result = trained_project.python("-m", "pipeline.predict", str(tmp_path / "notes.png"), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"predict: error: {tmp_path / 'notes.png'}: not an image Pillow can read (UnidentifiedImageError)"
    )


def test_a_stage_prints_its_progress_and_nothing_of_its_libraries(trained_copy):
    """No TensorFlow start-up log, no MLflow notes or progress bars: one line per epoch, then the registry's."""
    result = trained_copy.python("-m", "pipeline.stages.train", "fable")
    lines = (result.stdout + result.stderr).strip().splitlines()
    epochs = trained_copy.params()["fable"]["epochs"]
    assert [line.split(":")[0] for line in lines[:epochs]] == [
        f"fable epoch {n}/{epochs}" for n in range(1, epochs + 1)
    ]
    # The same bytes as the evaluated model: its test metrics are carried over and the run registered.
    assert len(lines) == epochs + 1 and lines[-1].startswith("registered model fable version 2"), lines
