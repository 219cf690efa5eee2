"""What differs between the two seeds, declared once per model; everything else is shared.

A :class:`Task` is the small table of per-model pieces that the one training loop (pipeline.training.loop)
and the one evaluation (pipeline.training.evaluation) call: how to load its data, how to build its network,
and how to judge it. ``pipeline.tasks.mnist`` and ``pipeline.tasks.fable`` each define one as ``TASK``;
pipeline.tasks.registry lists them. A leaf: it imports nothing of the project at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # keras is imported by the stages that train, not by this module
    import keras

    from pipeline.config import Params

TASK_NAMES = ("mnist", "fable")


@dataclass(frozen=True)
class Examples:
    """Inputs and integer class labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TrainingData:
    train: Examples
    validation: Examples | None  # the fable has no held-out text: it is judged on every window
    classes: int


@dataclass(frozen=True)
class Evaluation:
    """Metrics for metrics.json, the files evaluation writes (path -> content), and pictures for MLflow."""

    metrics: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # artifact name -> matplotlib Figure


@dataclass(frozen=True)
class Dataset:
    """A dataset a model is trained, validated or tested on, as MLflow's Dataset column shows it."""

    name: str  # e.g. mnist-train
    context: str  # training, validation or testing
    files: tuple[str, ...]  # its bytes: their sha256 is its digest
    source: str  # where the data comes from (params.yaml's URL)


@dataclass(frozen=True)
class Task:
    name: str
    load_training_data: Callable[[Params], TrainingData]
    build_model: Callable[[Params, TrainingData], keras.Model]
    evaluate: Callable[[Params, keras.Model], Evaluation]
    # The files training reads, by name: their digests tag each MLflow run.
    input_paths: Callable[[Params], dict[str, str]]
    # What it is trained, validated and tested on (MLflow's Dataset column).
    datasets: Callable[[Params], list[Dataset]]
    # Files logged with the run besides the model and its history (the fable's vocabulary).
    extra_artifacts: Callable[[Params], list[str]] = lambda params: []
