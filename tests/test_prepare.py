"""The MNIST split: sizes and order as the seed, arrays stored without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import MnistSplit
from pipeline.datasets.idx import IdxError
from pipeline.datasets.splits import load_split, save_splits
from pipeline.stages.prepare import split_mnist


def arrays(train: int, test: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    def part(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.arange(offset, offset + count)
        return np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None], (count, 28, 28)).copy(), (ids % 10).astype(
            np.uint8
        )

    return {"train": part(train, 0), "test": part(test, 1000)}


def test_validation_is_the_first_images_train_the_next():
    splits = split_mnist(arrays(60, 10), MnistSplit(validation_size=5, train_size=50, test_size=8))
    assert {name: len(images) for name, (images, _) in splits.items()} == {"train": 50, "validation": 5, "test": 8}
    np.testing.assert_array_equal(splits["validation"][1], np.arange(0, 5) % 10)
    np.testing.assert_array_equal(splits["train"][1], np.arange(5, 55) % 10)
    np.testing.assert_array_equal(splits["test"][1], np.arange(1000, 1008) % 10)


def test_split_larger_than_the_files():
    with pytest.raises(
        IdxError, match=r"validation_size \+ train_size = 11 \+ 50 exceeds the 60 images of the training file"
    ):
        split_mnist(arrays(60, 10), MnistSplit(validation_size=11, train_size=50, test_size=8))


def test_saved_arrays_load_without_pickle_and_are_byte_stable(tmp_path):
    splits = split_mnist(arrays(60, 10), MnistSplit(validation_size=5, train_size=50, test_size=8))
    save_splits(splits, tmp_path / "a")
    save_splits(splits, tmp_path / "b")
    for name in ("train", "validation", "test"):
        images, labels = load_split(tmp_path / "a", name)  # np.load's default allow_pickle=False
        np.testing.assert_array_equal(images, splits[name][0])
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        for prefix in ("x", "y"):
            file = f"{prefix}_{name}.npy"
            assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
