"""The IDX format of the MNIST files, parsed with every header field checked.

Layout (http://yann.lecun.com/exdb/mnist/): a big-endian 32-bit magic number, whose third byte is the
element type (0x08: unsigned byte) and fourth the number of dimensions, then one big-endian 32-bit size
per dimension, then the elements. Images are magic 2051 (3 dimensions), labels 2049 (1 dimension).
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_DIMENSIONS = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}


class IdxError(PipelineError):
    """A file is not the IDX content it should be."""


def parse_idx(data: bytes, magic: int, name: str) -> np.ndarray:
    """The uint8 array in ``data``, which must be an IDX file with ``magic``; ``name`` is used in errors."""
    dimensions = _DIMENSIONS[magic]
    header_size = 4 + 4 * dimensions
    if len(data) >= 4 and (found := int.from_bytes(data[:4], "big")) != magic:
        raise IdxError(f"{name}: magic number {found}, expected {magic}")
    if len(data) < header_size:
        raise IdxError(f"{name}: {len(data)} bytes, shorter than the {header_size}-byte IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected_size:
        raise IdxError(f"{name}: {len(data)} bytes, but its header's dimensions {shape} need exactly {expected_size}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def parse_images(data: bytes, name: str) -> np.ndarray:
    images = parse_idx(data, IMAGES_MAGIC, name)
    if 0 in images.shape:
        raise IdxError(f"{name}: empty image dimensions {images.shape}")
    return images


def parse_labels(data: bytes, name: str, classes: int) -> np.ndarray:
    labels = parse_idx(data, LABELS_MAGIC, name)
    if labels.size and int(labels.max()) >= classes:
        raise IdxError(f"{name}: label {int(labels.max())} is outside 0..{classes - 1}")
    return labels
