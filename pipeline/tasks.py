"""What differs between the two seeds, declared once per model; everything else is shared.

A :class:`Task` is the small table of per-model pieces that the one training loop (pipeline.train)
and the one evaluation stage (pipeline.evaluate) call: how to load its data, how to build its network,
and how to judge it. ``pipeline.mnist`` and ``pipeline.fable`` each define one as ``TASK``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.numerics import pin_for
from pipeline.stage import run_stage, stage_parser

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


def get_task(name: str) -> Task:
    """The task table: each model's module defines its ``TASK`` (imported here, since they import this module)."""
    if name == "mnist":
        from pipeline.mnist import TASK  # noqa: PLC0415
    elif name == "fable":
        from pipeline.fable import TASK  # noqa: PLC0415
    else:
        raise PipelineError(f"unknown model {name!r}: expected one of {', '.join(TASK_NAMES)}")
    return TASK


def run_task_stage(
    stage: str, doc: str, work: Callable[[Task, Params], None], argv: Sequence[str] | None = None
) -> None:
    """``python -m pipeline.<stage> MODEL``: params read and checked, TensorFlow's kernels and threads pinned
    as they say (pipeline.numerics), then ``work(task, params)``, which may import TensorFlow."""
    parser = stage_parser(f"pipeline.{stage}", doc)
    parser.add_argument("model", choices=TASK_NAMES)
    args = parser.parse_args(argv)
    with run_stage(f"{stage} {args.model}"):
        params = load_params(args.params)
        pin_for(params, args.model, f"{stage} {args.model}")
        work(get_task(args.model), params)
