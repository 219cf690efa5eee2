"""Stage evaluate: judge a trained model and write its metrics and reports.

Run::

    python -m pipeline.evaluate mnist   # test_accuracy, test_loss, test_accuracy_first128 + confusion matrix
    python -m pipeline.evaluate fable   # accuracy over every window, ceiling, loss + the generated story
"""

from __future__ import annotations

from collections.abc import Sequence

from pathlib import Path

import mlflow

from pipeline import tracking
from pipeline.config import Params, load_params
from pipeline.files import write_bytes, write_json
from pipeline.model import load_model, use_cores
from pipeline.stage import run_stage, stage_parser
from pipeline.tasks import TASK_NAMES, Evaluation, Task, get_task


def evaluate(task: Task, params: Params) -> Evaluation:
    model = load_model(params.paths_of(task.name).model)
    return task.evaluate(params, model)


def write_evaluation(evaluation: Evaluation, metrics_path: str) -> None:
    for path, content in evaluation.files.items():
        write_bytes(path, content)
    write_json(metrics_path, evaluation.metrics)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.evaluate", __doc__)
    parser.add_argument("model", choices=TASK_NAMES)
    args = parser.parse_args(argv)
    with run_stage(f"evaluate {args.model}"):
        params = load_params(args.params)
        task, paths = get_task(args.model), params.paths_of(args.model)
        use_cores(params.training(task.name).parallel_slices)  # the model's slices, as in training
        with tracking.evaluation_run(task, params, Path(paths.model)):
            evaluation = evaluate(task, params)
            write_evaluation(evaluation, paths.metrics)
            log_evaluation(evaluation)
        print(f"evaluate {args.model}: " + ", ".join(f"{k} = {v}" for k, v in evaluation.metrics.items()))


def log_evaluation(evaluation: Evaluation) -> None:
    """Metrics and reports into the model's MLflow run.

    Metrics keep their metrics.json names, except where a per-epoch training metric has the name
    already (the fable's ``accuracy`` and ``loss``, measured on the text): those become ``test_…``,
    so both experiments compare on ``test_accuracy``.
    """
    metrics = {}
    for name, value in evaluation.metrics.items():
        key = f"test_{name}" if name in ("loss", "accuracy") else name
        metrics[key] = float(value)
    mlflow.log_metrics(metrics)
    for path in evaluation.files:
        mlflow.log_artifact(path, artifact_path="reports")
    for name, figure in evaluation.figures.items():
        mlflow.log_figure(figure, f"plots/{name}")


if __name__ == "__main__":
    main()
