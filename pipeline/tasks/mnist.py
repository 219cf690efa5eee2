"""The MNIST seed's pieces: each 28×28 image read as 28 time steps of 28 pixels.

The network takes raw uint8 pixels and rescales them itself, so the saved model is all that
evaluation and ``python -m pipeline.predict`` need.
"""

from __future__ import annotations

import io

import keras
import numpy as np

from pipeline.config import MNIST_CLASSES, Params
from pipeline.datasets.splits import load_split, split_files
from pipeline.model.inference import logits_function, logits_loss
from pipeline.model.layers import warp_with_library
from pipeline.model.network import recurrent_classifier
from pipeline.tasks.base import Dataset, Evaluation, Examples, Task, TrainingData
from pipeline.tasks.reports import confusion_matrix

# The seed's own figure was the accuracy on the first 128 test images only.
SEED_REPORTED_IMAGES = 128


def load_training_data(params: Params) -> TrainingData:
    directory = params.paths.mnist.prepared
    return TrainingData(
        train=Examples(*load_split(directory, "train")),
        validation=Examples(*load_split(directory, "validation")),
        classes=MNIST_CLASSES,
    )


def build_model(params: Params, data: TrainingData) -> keras.Model:
    training = params.mnist
    rows, columns = data.train.x.shape[1:]
    inputs = keras.Input(shape=(rows, columns), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
    if training.augment_shift > 0:
        x = keras.layers.Reshape((rows, columns, 1), name="as_image")(x)
        shift = training.augment_shift
        translation = keras.layers.RandomTranslation(
            shift, shift, fill_mode="constant", seed=training.seed, name="shift"
        )
        x = warp_with_library(translation, pieces=training.parallel_slices)(x)
        x = keras.layers.Reshape((rows, columns), name="as_rows")(x)
    return recurrent_classifier(inputs, x, training, data.classes, name="mnist_lstm")


def evaluate(params: Params, model: keras.Model) -> Evaluation:
    images, labels = load_split(params.paths.mnist.prepared, "test")
    logits = logits_function(model)(images)
    predicted = logits.argmax(axis=1)
    correct = predicted == labels
    metrics = {
        "test_accuracy": float(correct.mean()),
        "test_loss": logits_loss(logits, labels),
        "test_accuracy_first128": float(correct[:SEED_REPORTED_IMAGES].mean()),
        "test_images": int(len(labels)),
    }
    return Evaluation(
        metrics=metrics,
        files={params.paths.mnist.confusion: confusion_csv(labels, predicted)},
        figures={"confusion_matrix.png": confusion_matrix(labels, predicted, MNIST_CLASSES)},
    )


def confusion_csv(actual: np.ndarray, predicted: np.ndarray) -> bytes:
    """One row per test image, the layout of DVC's ``confusion`` plot template."""
    text = io.StringIO()
    text.write("actual,predicted\n")
    for truth, guess in zip(actual.tolist(), predicted.tolist(), strict=True):
        text.write(f"{truth},{guess}\n")
    return text.getvalue().encode()


def datasets(params: Params) -> list[Dataset]:
    """The three splits, each named by the file of params.yaml's first mirror it was cut from."""
    mnist = params.data.mnist
    origin = {
        "train": mnist.files.train_images.name,
        "validation": mnist.files.train_images.name,
        "test": mnist.files.test_images.name,
    }
    contexts = {"train": "training", "validation": "validation", "test": "testing"}
    return [
        Dataset(
            f"mnist-{split}",
            contexts[split],
            tuple(map(str, split_files(params.paths.mnist.prepared, split))),
            f"{mnist.mirrors[0]}{origin[split]}.gz",
        )
        for split in contexts
    ]


TASK = Task(
    name="mnist",
    load_training_data=load_training_data,
    build_model=build_model,
    evaluate=evaluate,
    input_paths=lambda params: {"prepared": params.paths.mnist.prepared},
    datasets=datasets,
)
