"""Running a trained model on arrays: logits in large batches, the loss and the probabilities."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

# Inference only (validation, evaluation): a large batch is faster and changes no prediction.
INFERENCE_BATCH = 2000


def logits_function(model: keras.Model, batch_size: int = INFERENCE_BATCH) -> Callable[[np.ndarray], np.ndarray]:
    """``model``'s logits for a whole array, in batches of ``batch_size`` through one traced function.

    Keras's ``predict`` costs about 40 ms of set-up per batch of 2,000 images here, as much as half the
    model's own time (``make bench``: the inference profile next to the eval throughput).
    """
    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    def logits(x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [forward(tf.constant(x[start : start + batch_size])).numpy() for start in range(0, len(x), batch_size)]
        )

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
