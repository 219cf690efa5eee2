"""Stage evaluate: judge a trained model and write its metrics and reports.

Run::

    python -m pipeline.evaluate mnist   # test_accuracy, test_loss, test_accuracy_first128 + confusion matrix
    python -m pipeline.evaluate fable   # accuracy over every window, ceiling, loss + the generated story

With the kernels and threads of training (pipeline.numerics); the work itself is pipeline.evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import Params
from pipeline.tasks import Task, run_task_stage


def evaluate(task: Task, params: Params) -> None:
    from pipeline import tracking  # noqa: PLC0415 - MLflow loads only in the stages that track

    tracking.require_server()  # a tracking server that is down or refuses the login: one line, before any work
    from pipeline import evaluation  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned

    evaluation.run(task, params)


def main(argv: Sequence[str] | None = None) -> None:
    run_task_stage("evaluate", __doc__, evaluate, argv)


if __name__ == "__main__":
    main()
