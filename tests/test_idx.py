"""IDX parsing: good files, and every way a file can be wrong gives an error naming it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.datasets.idx import IMAGES_MAGIC, LABELS_MAGIC, IdxError, parse_images, parse_labels


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parses_images_and_labels():
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28) % 256
    parsed = parse_images(idx_bytes(IMAGES_MAGIC, images), "imgs")
    assert parsed.shape == (2, 28, 28) and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, images)
    np.testing.assert_array_equal(parse_labels(idx_bytes(LABELS_MAGIC, np.array([3, 9])), "lbls", 10), [3, 9])


def test_wrong_magic_names_the_file():
    with pytest.raises(IdxError, match=r"^imgs: magic number 2049, expected 2051$"):
        parse_images(idx_bytes(LABELS_MAGIC, np.zeros(4)), "imgs")


def test_truncated_file_names_expected_size():
    data = idx_bytes(IMAGES_MAGIC, np.zeros((3, 28, 28)))
    with pytest.raises(
        IdxError, match=r"imgs: 2367 bytes, but its header's dimensions \(3, 28, 28\) need exactly 2368"
    ):
        parse_images(data[:-1], "imgs")


def test_trailing_bytes_are_refused():
    with pytest.raises(IdxError, match="need exactly"):
        parse_labels(idx_bytes(LABELS_MAGIC, np.zeros(5)) + b"\0", "lbls", 10)


def test_shorter_than_header():
    with pytest.raises(IdxError, match=r"lbls: 3 bytes, shorter than the 8-byte IDX header"):
        parse_labels(b"\0\0\x08", "lbls", 10)


def test_corrupted_label_value():
    with pytest.raises(IdxError, match=r"lbls: label 200 is outside 0\.\.9"):
        parse_labels(idx_bytes(LABELS_MAGIC, np.array([1, 200])), "lbls", 10)


def test_real_mnist_files_parse(mirror):
    import gzip

    labels = parse_labels(gzip.decompress((mirror / "mnist/t10k-labels-idx1-ubyte.gz").read_bytes()), "t10k", 10)
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist()[:2] == [980, 1135]  # MNIST's published test class counts
