"""The transpose (pipeline/model/native/detgemm_layout.cc): the LSTM's changes of layout, every element in its
place, its gradient, one-line errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipeline.model import detgemm


def digest(array) -> str:
    return hashlib.sha256(np.asarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (5, 3), (37, 129), (128, 1000), (1000, 784)])
def test_the_transpose_moves_every_element_to_its_place(shape):
    x = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    transposed = detgemm.transpose(x).numpy()
    assert transposed.shape == shape[::-1]
    assert digest(transposed) == digest(np.ascontiguousarray(x.T))


def test_the_transposes_gradient_is_the_transpose_of_its_outputs_gradient():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    x, weights = tf.constant(rng.standard_normal((6, 11), dtype=np.float32)), rng.standard_normal((11, 6))
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(detgemm.transpose(x) * weights.astype(np.float32))
    assert digest(tape.gradient(total, x).numpy()) == digest(np.ascontiguousarray(weights.T.astype(np.float32)))


def test_a_transpose_of_anything_but_a_matrix_is_one_line_naming_its_shape():
    import tensorflow as tf

    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="must be rank 2"):
        detgemm.transpose(np.zeros((2, 3, 4), np.float32))
