"""Stage evaluate: judge a trained model and write its metrics and reports.

Run::

    python -m pipeline.stages.evaluate mnist   # test_accuracy, test_loss, test_accuracy_first128 + confusion matrix
    python -m pipeline.stages.evaluate fable   # accuracy over every window, ceiling, loss + the generated story

With the kernels and threads of training (pipeline.model.numerics); the work itself is pipeline.training.evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import Params
from pipeline.stages.task_stage import run_task_stage
from pipeline.tasks.base import Task


def evaluate(task: Task, params: Params) -> None:
    from pipeline.tracking.store import require_server  # noqa: PLC0415 - MLflow loads only in the stages that track

    require_server()  # a tracking server that is down or refuses the login: one line, before any work
    from pipeline.training import evaluation  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned

    evaluation.run(task, params)


def main(argv: Sequence[str] | None = None) -> None:
    run_task_stage("evaluate", __doc__, evaluate, argv)


if __name__ == "__main__":
    main()
