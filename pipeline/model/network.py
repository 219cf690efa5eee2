"""The LSTM classifier both seeds use: its batch-slicing layers and how the network is built.

The LSTM and dense layers are pipeline.model.layers'; compiling is training's (pipeline.training.loop), saving and
loading pipeline.model.saving's, running a trained model pipeline.model.inference's. Saved models name the
module of the two slicing layers ``pipeline.model`` (their first home): :func:`~pipeline.model.layers.saved_as`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pipeline.config import Training
from pipeline.model.layers import LSTM, Dense, saved_as


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds (deterministic kernels: pipeline.model.numerics): same params, same bytes."""
    keras.utils.set_random_seed(seed)


@keras.saving.register_keras_serializable(package="pipeline")
@saved_as("pipeline.model")
class BatchSlices(keras.layers.Layer):
    """The batch cut into ``parts`` consecutive slices of equal size, for layers to run on side by side.

    A batch that ``parts`` does not divide is first padded with copies of its last example, so that no
    slice is empty (a single image still goes through); :class:`BatchJoin` drops the padding again.
    """

    def __init__(self, parts: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.parts = parts

    def call(self, x: tf.Tensor) -> list[tf.Tensor]:
        padding = -keras.ops.shape(x)[0] % self.parts
        # Only a batch that needs padding is copied: the slices of an unpadded one share its buffer (the
        # copy cost 0.55 ms of an inference batch of 2,000 on one core before the slices could start).
        padded = keras.ops.cond(
            padding > 0,
            lambda: keras.ops.concatenate([x, keras.ops.repeat(x[-1:], padding, axis=0)], axis=0),
            lambda: x,
        )
        return keras.ops.split(padded, self.parts, axis=0)

    def compute_output_shape(self, input_shape: tuple) -> list[tuple]:
        return [(None, *input_shape[1:])] * self.parts

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "parts": self.parts}


@keras.saving.register_keras_serializable(package="pipeline")
@saved_as("pipeline.model")
class BatchJoin(keras.layers.Layer):
    """The outputs of :class:`BatchSlices`' slices joined in batch order, without its padding.

    Called on ``[*slice_outputs, batch]``: the last input, the batch before slicing, gives the size to keep.
    """

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        *outputs, batch = inputs
        return keras.ops.concatenate(outputs, axis=0)[: keras.ops.shape(batch)[0]]

    def compute_output_shape(self, input_shapes: list[tuple]) -> tuple:
        return (None, *input_shapes[0][1:])


def recurrent_classifier(
    inputs: keras.KerasTensor, sequence: keras.KerasTensor, training: Training, classes: int, name: str
) -> keras.Model:
    """``training.layers`` stacked LSTMs over ``sequence``; the last step's output -> ``classes`` logits.

    With ``training.parallel_slices`` > 1 the network runs on that many slices of the batch, with shared
    weights, and the logits are joined in batch order: every example gets the same output as without
    slicing. The layers are :mod:`pipeline.model.layers`', whose sums are the same on every CPU; each slice's
    weight gradients sum over its own examples, and TensorFlow adds the slices' and steps' gradients
    elementwise (AddN), the same way on every CPU.
    """
    stack = [
        LSTM(
            training.units,
            return_sequences=index < training.layers - 1,
            seed=training.seed + index,
            name=f"lstm_{index + 1}",
        )
        for index in range(training.layers)
    ]
    stack.append(Dense(classes, seed=training.seed + training.layers, name="logits"))
    slices = (
        [sequence] if training.parallel_slices == 1 else BatchSlices(training.parallel_slices, name="slices")(sequence)
    )
    outputs = []
    for x in slices:
        for layer in stack:
            x = layer(x)
        outputs.append(x)
    logits = outputs[0] if len(outputs) == 1 else BatchJoin(name="joined")([*outputs, sequence])
    return keras.Model(inputs, logits, name=name)
