"""Stage train: fit one model as params.yaml says, save it and record it as an MLflow run.

Run::

    python -m pipeline.train mnist
    python -m pipeline.train fable

TensorFlow loads only after pipeline.numerics has pinned its kernels and threads; the training loop
itself is pipeline.training.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import Params
from pipeline.tasks import Task, run_task_stage


def train(task: Task, params: Params) -> None:
    from pipeline import tracking  # noqa: PLC0415 - MLflow loads only in the stages that track

    tracking.require_server()  # a tracking server that is down or refuses the login: one line, before any work
    from pipeline import training  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned

    training.run(task, params)


def main(argv: Sequence[str] | None = None) -> None:
    run_task_stage("train", __doc__, train, argv)


if __name__ == "__main__":
    main()
