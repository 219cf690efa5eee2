"""The LSTM classifier both seeds use, and saving it so that equal weights give equal bytes."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import Training
from pipeline.errors import PipelineError
from pipeline.files import naming_storage_errors, write_bytes
from pipeline.layers import LSTM, Dense

# Keras writes the save time into metadata.json and every zip entry, and Python object ids
# (memory addresses) into config.json as `shared_object_id`; all are pinned or renumbered so that the
# archive's bytes depend on the model only and `dvc repro -f` leaves dvc.lock unchanged.
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_FIXED_DATE_SAVED = "1980-01-01@00:00:00"
# Inference only (validation, evaluation): a large batch is faster and changes no prediction.
INFERENCE_BATCH = 2000


class ModelError(PipelineError):
    """A model file is missing or cannot be loaded safely."""


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds (deterministic kernels: pipeline.numerics): same params, same bytes."""
    keras.utils.set_random_seed(seed)


@keras.saving.register_keras_serializable(package="pipeline")
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
        padded = keras.ops.concatenate([x, keras.ops.repeat(x[-1:], padding, axis=0)], axis=0)
        return keras.ops.split(padded, self.parts, axis=0)

    def compute_output_shape(self, input_shape: tuple) -> list[tuple]:
        return [(None, *input_shape[1:])] * self.parts

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "parts": self.parts}


@keras.saving.register_keras_serializable(package="pipeline")
class BatchJoin(keras.layers.Layer):
    """The outputs of :class:`BatchSlices`' slices joined in batch order, without its padding.

    Called on ``[*slice_outputs, batch]``: the last input, the batch before slicing, gives the size to keep.
    """

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        *outputs, batch = inputs
        return keras.ops.concatenate(outputs, axis=0)[: keras.ops.shape(batch)[0]]

    def compute_output_shape(self, input_shapes: list[tuple]) -> tuple:
        return (None, *input_shapes[0][1:])


def recurrent_classifier(inputs: keras.KerasTensor, sequence: keras.KerasTensor, training: Training,
                         classes: int, name: str) -> keras.Model:
    """``training.layers`` stacked LSTMs over ``sequence``; the last step's output -> ``classes`` logits.

    With ``training.parallel_slices`` > 1 the network runs on that many slices of the batch, with shared
    weights, and the logits are joined in batch order: every example gets the same output as without
    slicing. The layers are :mod:`pipeline.layers`', whose sums are the same on every CPU; each slice's
    weight gradients sum over its own examples only (at most ``CHUNK``, checked by pipeline.config).
    """
    stack = [LSTM(training.units, return_sequences=index < training.layers - 1, seed=training.seed + index,
                  name=f"lstm_{index + 1}") for index in range(training.layers)]
    stack.append(Dense(classes, seed=training.seed + training.layers, name="logits"))
    slices = [sequence] if training.parallel_slices == 1 else BatchSlices(training.parallel_slices, name="slices")(sequence)
    outputs = []
    for x in slices:
        for layer in stack:
            x = layer(x)
        outputs.append(x)
    logits = outputs[0] if len(outputs) == 1 else BatchJoin(name="joined")([*outputs, sequence])
    return keras.Model(inputs, logits, name=name)


def save_model(model: keras.Model, path: str | Path) -> None:
    """``model`` as a .keras archive with no timestamp in it, written atomically."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = os.path.join(scratch, "model.keras")
        with naming_storage_errors(Path(path)):
            model.save(saved)
        write_bytes(path, _without_timestamps(Path(saved).read_bytes()))


def _without_timestamps(archive: bytes) -> bytes:
    output = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(output, "w") as target:
        for entry in source.infolist():
            content = source.read(entry)
            if entry.filename == "metadata.json":
                metadata = json.loads(content)
                metadata["date_saved"] = _FIXED_DATE_SAVED
                content = json.dumps(metadata, sort_keys=True).encode()
            elif entry.filename == "config.json":
                content = json.dumps(_renumber_shared_objects(json.loads(content), {})).encode()
            pinned = zipfile.ZipInfo(entry.filename, date_time=_FIXED_ZIP_TIME)
            pinned.compress_type, pinned.external_attr = entry.compress_type, entry.external_attr
            target.writestr(pinned, content)
    return output.getvalue()


def _renumber_shared_objects(value: Any, numbers: dict[int, int]) -> Any:
    """Replace each ``shared_object_id`` by its order of first appearance: same sharing, stable bytes."""
    if isinstance(value, dict):
        renumbered = {key: _renumber_shared_objects(item, numbers) for key, item in value.items()}
        if "shared_object_id" in value:
            renumbered["shared_object_id"] = numbers.setdefault(value["shared_object_id"], len(numbers))
        return renumbered
    if isinstance(value, list):
        return [_renumber_shared_objects(item, numbers) for item in value]
    return value


def require_model(path: str | Path) -> None:
    """Fails with one line when there is no trained model at ``path``."""
    if not Path(path).is_file():
        raise ModelError(f"{path}: no trained model there (run `dvc repro` first)")


def load_model(path: str | Path) -> keras.Model:
    """A trained model; ``safe_mode`` refuses archives that would run arbitrary code (Lambda layers)."""
    require_model(path)
    try:
        return keras.models.load_model(path, safe_mode=True)
    except ValueError as error:
        raise ModelError(f"{path}: refused to load: {str(error).splitlines()[0]}") from None


def logits_function(model: keras.Model, batch_size: int = INFERENCE_BATCH) -> Callable[[np.ndarray], np.ndarray]:
    """``model``'s logits for a whole array, in batches of ``batch_size`` through one traced function.

    Keras's ``predict`` costs about 40 ms of set-up per batch of 2,000 images here, as much as half the
    model's own time (``make bench``: the inference profile next to the eval throughput).
    """
    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    def logits(x: np.ndarray) -> np.ndarray:
        return np.concatenate([forward(tf.constant(x[start:start + batch_size])).numpy()
                               for start in range(0, len(x), batch_size)])

    return logits


# Significant digits of a loss in metrics files: NumPy's float64 exp and log have CPU-specific code
# (AVX-512 or not) that may differ in the last bit; ten digits hide that, and no reader needs more.
LOSS_DIGITS = 10


def logits_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy, computed in float64 (the training loss, recomputed), to LOSS_DIGITS digits."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(f"{-log_probabilities[np.arange(len(labels)), labels].mean():.{LOSS_DIGITS}g}")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
