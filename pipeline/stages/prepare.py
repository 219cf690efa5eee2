"""Stage prepare: the verified MNIST IDX files, split as the seed, as .npy arrays.

Run::

    python -m pipeline.stages.prepare

Validation is the first ``validation_size`` images of the 60,000-image training file, train the
``train_size`` after them, test the first ``test_size`` of the t10k file. Each split is written as
``x_<split>.npy`` and ``y_<split>.npy`` in ``paths.mnist.prepared`` (pipeline.datasets.splits).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.cli import run_stage, stage_parser
from pipeline.config import MNIST_CLASSES, MnistSplit, Params, load_params
from pipeline.datasets.idx import IdxError, parse_images, parse_labels
from pipeline.datasets.splits import save_splits
from pipeline.files import read_input


def load_mnist_files(raw_directory: Path, params: Params) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(images, labels) of the "train" and "test" IDX files in ``raw_directory``, parsed and checked."""
    files = params.data.mnist.files
    parts = {"train": (files.train_images, files.train_labels), "test": (files.test_images, files.test_labels)}
    arrays = {}
    for part, (images_file, labels_file) in parts.items():
        images_path, labels_path = raw_directory / images_file.name, raw_directory / labels_file.name
        images = parse_images(read_input(images_path, IdxError), str(images_path))
        labels = parse_labels(read_input(labels_path, IdxError), str(labels_path), MNIST_CLASSES)
        if len(images) != len(labels):
            raise IdxError(
                f"{raw_directory}: {images_file.name} has {len(images)} images "
                f"but {labels_file.name} has {len(labels)} labels"
            )
        arrays[part] = (images, labels)
    return arrays


def split_mnist(
    arrays: dict[str, tuple[np.ndarray, np.ndarray]], split: MnistSplit
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(images, labels) per split, as the seed: validation first, train after it, test from t10k."""
    (train_images, train_labels), (test_images, test_labels) = arrays["train"], arrays["test"]
    problem = split.misfit(len(train_images), len(test_images))
    if problem:
        raise IdxError(problem)
    needed = split.validation_size + split.train_size
    validation, train = slice(0, split.validation_size), slice(split.validation_size, needed)
    return {
        "train": (train_images[train], train_labels[train]),
        "validation": (train_images[validation], train_labels[validation]),
        "test": (test_images[: split.test_size], test_labels[: split.test_size]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.stages.prepare", __doc__)
    args = parser.parse_args(argv)
    with run_stage("prepare"):
        params = load_params(args.params)
        arrays = load_mnist_files(Path(params.paths.mnist.raw), params)
        splits = split_mnist(arrays, params.data.mnist.split)
        save_splits(splits, Path(params.paths.mnist.prepared))
        for name, (images, _) in splits.items():
            print(f"prepare: {name}: {images.shape[0]} images of {images.shape[1]}x{images.shape[2]}")


if __name__ == "__main__":
    main()
