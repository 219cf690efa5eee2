"""Layers whose arithmetic is the same on every x86-64 CPU: the LSTM, the logits and their initializers.

In ``portable`` numerics (``pipeline.model.numerics``, the default) every matrix product, forward and
backward, is pipeline.model.detgemm's kernel (:func:`~pipeline.model.detgemm.matmul`, and
:func:`~pipeline.model.detgemm.gates` for an LSTM step): each element one chain of fused multiply-adds over the
summed dimension, in order, with the same bits on every x86-64 CPU whatever its instruction set (AVX-512,
AVX2, none), cache sizes or core count, for sums of any length (a weight's gradient sums over the whole
slice of the batch in one chain; the steps' and slices' gradients are then added elementwise).
TensorFlow's Eigen product is not used: it cuts sums of more than ~300 terms into blocks sized by the
CPU's L1 cache (32 KB and 48 KB differ from 512 terms on). An LSTM step's product is one op,
:func:`gates` (the stacking of input, state and bias row inside it, and its gradient only the rows the
state and input need). The step's elementwise part (gates, tanh, the new cell state) is one op too,
:func:`pipeline.detgemm.lstm_cell`, in both modes, and so is its gradient: one pass over memory each
instead of ten and twenty-odd TensorFlow kernels. The rest (the optimizer, the loss) is TensorFlow's own
Eigen kernels, compiled into the wheel for one instruction set. The orthogonal initializer, whose
QR decomposition would go through blocked products, is computed in plain float64 arithmetic instead. In
``native`` numerics the products are TensorFlow's (oneDNN's kernels for the CPU at hand).

The layers compute what ``keras.layers.LSTM`` and ``keras.layers.Dense`` compute (same gates, same
initial distributions; tanh and sigmoid within 3e-7), so a model built from them is the seeds' network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.model import detgemm, numerics


def saved_as(module: str) -> Callable[[type], type]:
    """The module name Keras writes for the class in a saved model (``"module"`` in config.json is the class's
    ``__module__``): the one the committed models were saved with, so that a model's bytes do not depend on
    which file of this package defines its layers. Keras finds the class by its registered name
    (``pipeline>LSTM``) when loading; the module is only a label."""

    def label(cls: type) -> type:
        cls.__module__ = module
        return cls

    return label


def matmul(a: tf.Tensor, b: tf.Tensor, transpose_a: bool = False, transpose_b: bool = False) -> tf.Tensor:
    """``op(a) @ op(b)``: pipeline.model.detgemm's product (its gradients are too), or TensorFlow's where this
    process pinned ``native`` numerics. A process that loaded TensorFlow unpinned gets the portable one."""
    if numerics.pinned_mode() == "native":
        return tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    return detgemm.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)


def gates(weights: tf.Tensor, x: tf.Tensor, h: tf.Tensor) -> tf.Tensor:
    """An LSTM step's gate products ``weightsᵀ · [x; h; 1]`` (feature-major): pipeline.model.detgemm's one op,
    the bits of :func:`matmul` of the three stacked (its gradient computes only what x and h need), or
    TensorFlow's stacking and product where this process pinned ``native`` numerics."""
    if numerics.pinned_mode() == "native":
        ones = tf.ones((1, tf.shape(x)[1]), dtype=x.dtype)
        return tf.linalg.matmul(weights, tf.concat([x, h, ones], axis=0), transpose_a=True)
    return detgemm.gates(weights, x, h)


def warp_with_library(layer: keras.layers.RandomTranslation, pieces: int) -> keras.layers.RandomTranslation:
    """``layer`` (Keras' own, so that a saved model names Keras' class), whose training-time warp runs as
    pipeline.model.detgemm's :func:`~pipeline.model.detgemm.projective_transform` on ``pieces`` consecutive parts
    of the batch side by side, instead of TensorFlow's ``ImageProjectiveTransformV3`` on the whole batch.

    The same bits (each output pixel is computed alone, with TensorFlow's float operations in its order: the
    tests compare the two ops), but at the head of a training step, which TensorFlow's single-threaded kernel
    spent on one core while the other waited (about 2.2 ms of an MNIST step of 256 images on a 2-core AMD EPYC).
    Settings the op does not cover (another interpolation, fill mode or data format) keep Keras' own path.
    """
    keras_warp = layer._translate_inputs

    def warp(images: tf.Tensor, transformation: dict | None, interpolation: str) -> tf.Tensor:
        covered = (interpolation, layer.fill_mode, layer.data_format) == ("bilinear", "constant", "channels_last")
        if transformation is None or not covered or len(images.shape) != 4:
            return keras_warp(images, transformation, interpolation)
        transforms = tf.cast(layer._get_translation_matrix(transformation["translations"]), tf.float32)
        size, batch = tf.shape(images)[1:-1], tf.shape(images)[0]
        part = -(-batch // pieces)
        sizes = [tf.clip_by_value(batch - index * part, 0, part) for index in range(pieces)]
        parts = zip(tf.split(images, sizes), tf.split(transforms, sizes), strict=True)
        warped = [detgemm.projective_transform(part, transform, size, layer.fill_value) for part, transform in parts]
        return tf.ensure_shape(tf.concat(warped, axis=0) if pieces > 1 else warped[0], images.shape)

    layer._translate_inputs = warp
    return layer


@keras.saving.register_keras_serializable(package="pipeline")
@saved_as("pipeline.layers")
class PortableOrthogonal(keras.initializers.Initializer):
    """``keras.initializers.Orthogonal``'s distribution, computed the same way on every CPU.

    A seeded normal matrix (TensorFlow's counter-based generator: the same numbers everywhere) is
    orthonormalised by modified Gram-Schmidt in float64 with elementwise NumPy operations only (no BLAS,
    whose kernels and blocking depend on the CPU), and its columns signed as Q of a QR decomposition.
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None):
        self.gain, self.seed = gain, seed

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> tf.Tensor:
        rows, columns = int(np.prod(shape[:-1])), int(shape[-1])
        tall = (max(rows, columns), min(rows, columns))
        seed = (0, 0) if self.seed is None else (self.seed, 0)
        q = gram_schmidt(tf.random.stateless_normal(tall, seed=seed, dtype=tf.float64).numpy())
        if rows < columns:
            q = q.T
        return tf.constant((self.gain * q).reshape(shape), dtype=dtype or "float32")

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain, "seed": self.seed}


def gram_schmidt(a: np.ndarray) -> np.ndarray:
    """The orthonormal Q (same shape) of a tall matrix's QR decomposition, with R's diagonal positive.

    Modified Gram-Schmidt, each column projected twice for accuracy, in float64. Only elementwise
    operations and sums along axis 0 (one row after the other, a fixed order) are used: no BLAS, whose
    kernels and blocking depend on the CPU, so the bits are the same everywhere.
    """
    rows, columns = a.shape
    by_column = np.zeros((rows, columns))  # Q, filled column by column
    by_row = np.zeros((columns, rows))  # Qᵀ, the same numbers laid out for the second sum
    for j in range(columns):
        column = np.array(a[:, j], dtype=np.float64)
        for _ in range(2 if j else 0):
            projections = (by_column[:, :j] * column[:, None]).sum(axis=0)
            column = column - (by_row[:j] * projections[:, None]).sum(axis=0)
        column = column / np.sqrt((column * column).sum(axis=0))
        by_column[:, j], by_row[j] = column, column
    return by_column


@keras.saving.register_keras_serializable(package="pipeline")
@saved_as("pipeline.layers")
class LSTM(keras.layers.Layer):
    """What ``keras.layers.LSTM(units, unroll=True)`` computes, every product through :func:`matmul`.

    Glorot-uniform input kernel, orthogonal recurrent kernel, zero bias but 1 for the forget gate
    (``unit_forget_bias``), sigmoid gates and tanh. The gates' columns are laid out i, f, o, then the
    candidate cell. Unrolled over the (short, fixed) sequence, feature-major: each step one product of
    the stacked weights and the step's input, the state and a row of ones (the bias), :func:`gates`, then
    one :func:`pipeline.detgemm.lstm_cell` (in training the one that keeps its activations for the gradient).
    Returns the last step's output, or every step's with ``return_sequences``.
    """

    def __init__(self, units: int, return_sequences: bool = False, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.units, self.return_sequences, self.seed = units, return_sequences, seed

    def build(self, input_shape: tuple) -> None:
        features, units = input_shape[-1], self.units
        seed = self.seed
        self.kernel = self.add_weight(
            name="kernel", shape=(features, 4 * units), initializer=keras.initializers.GlorotUniform(seed=seed)
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(units, 4 * units), initializer=PortableOrthogonal(seed=seed)
        )
        self.bias = self.add_weight(name="bias", shape=(4 * units,), initializer=_ForgetBiasOne(units))

    def call(self, sequence: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        units = self.units
        # Feature-major: every state and step is (features, batch), so that each split below is a
        # contiguous block (no copy), and one product per step gives the gates: the weights stacked
        # (input kernel, recurrent kernel, bias) against the step's input, the state and a row of ones.
        weights = tf.concat(
            [
                tf.convert_to_tensor(self.kernel),
                tf.convert_to_tensor(self.recurrent_kernel),
                tf.convert_to_tensor(self.bias)[None, :],
            ],
            axis=0,
        )
        batch, steps, features = tf.shape(sequence)[0], sequence.shape[1], sequence.shape[2]
        h = c = tf.zeros((units, batch), dtype=sequence.dtype)
        outputs = []
        # The layout changes are pipeline.model.detgemm's transpose of the sequence as a matrix (batch,
        # steps x features; a reshape moves nothing): 0.4-0.9 ms of an inference slice where TensorFlow's took
        # 1.5-1.8. unstack and split (not indexing): their gradients are a concatenation, not a scatter into zeros.
        steps_major = tf.reshape(
            detgemm.transpose(tf.reshape(sequence, (batch, steps * features))), (steps, features, batch)
        )
        for x in tf.unstack(steps_major, axis=0):
            h, c = detgemm.lstm_cell(gates(weights, x, h), c, saving=bool(training))
            outputs.append(h)
        if not self.return_sequences:
            return detgemm.transpose(h)
        return tf.reshape(
            detgemm.transpose(tf.reshape(tf.stack(outputs), (steps * units, batch))), (batch, steps, units)
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[1], self.units) if self.return_sequences else (input_shape[0], self.units)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "return_sequences": self.return_sequences,
            "seed": self.seed,
        }


class _ForgetBiasOne(keras.initializers.Initializer):
    """Zeros, but ones for the forget gate's ``units`` (the second block): build time only, not saved."""

    def __init__(self, units: int):
        self.units = units

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> tf.Tensor:
        bias = np.zeros(shape, dtype=np.float32)
        bias[self.units : 2 * self.units] = 1.0
        return tf.constant(bias, dtype=dtype or "float32")


@keras.saving.register_keras_serializable(package="pipeline")
@saved_as("pipeline.layers")
class Dense(keras.layers.Layer):
    """``keras.layers.Dense(units)`` without activation (glorot-uniform kernel, zero bias), through
    :func:`matmul`."""

    def __init__(self, units: int, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.units, self.seed = units, seed

    def build(self, input_shape: tuple) -> None:
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.units),
            initializer=keras.initializers.GlorotUniform(seed=self.seed),
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return matmul(x, tf.convert_to_tensor(self.kernel)) + tf.convert_to_tensor(self.bias)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "seed": self.seed}
