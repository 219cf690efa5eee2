"""Stage train: fit one model as params.yaml says, save it and record it as an MLflow run.

Run::

    python -m pipeline.stages.train mnist
    python -m pipeline.stages.train fable

TensorFlow loads only after pipeline.model.numerics has pinned its kernels and threads; the training loop
itself is pipeline.training.loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import Params
from pipeline.stages.task_stage import run_task_stage
from pipeline.tasks.base import Task


def train(task: Task, params: Params) -> None:
    from pipeline.tracking.store import require_server  # noqa: PLC0415 - MLflow loads only in the stages that track

    require_server()  # a tracking server that is down or refuses the login: one line, before any work
    from pipeline.training import loop  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned

    loop.run(task, params)


def main(argv: Sequence[str] | None = None) -> None:
    run_task_stage("train", __doc__, train, argv)


if __name__ == "__main__":
    main()
