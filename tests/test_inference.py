"""The loss recomputed outside Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.model.inference import logits_loss


def test_logits_loss_matches_keras():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], dtype=np.float32)
    labels = np.array([0, 1])
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert logits_loss(logits, labels) == pytest.approx(float(expected), rel=1e-6)
