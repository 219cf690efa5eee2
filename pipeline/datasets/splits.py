"""The prepared MNIST splits on disk: what the prepare stage writes and the MNIST task reads.

Each split is ``x_<split>.npy`` (uint8, N×28×28) and ``y_<split>.npy`` (uint8, N) in
``paths.mnist.prepared``: plain .npy is loaded without pickle and, unlike .npz, holds no timestamp,
so equal data gives equal bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pipeline.files import write_bytes


def save_splits(splits: dict[str, tuple[np.ndarray, np.ndarray]], directory: Path) -> None:
    for name, (images, labels) in splits.items():
        for prefix, array in (("x", images), ("y", labels)):
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            write_bytes(directory / f"{prefix}_{name}.npy", buffer.getvalue())


def split_files(directory: str | Path, name: str) -> tuple[Path, Path]:
    """The images' and the labels' file of one split."""
    return Path(directory) / f"x_{name}.npy", Path(directory) / f"y_{name}.npy"


def load_split(directory: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split written by this stage."""
    images, labels = split_files(directory, name)
    return np.load(images, allow_pickle=False), np.load(labels, allow_pickle=False)
