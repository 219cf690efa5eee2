"""Stage evaluate: judge a trained model and write its metrics and reports.

Run::

    python -m pipeline.evaluate mnist   # test_accuracy, test_loss, test_accuracy_first128 + confusion matrix
    python -m pipeline.evaluate fable   # accuracy over every window, ceiling, loss + the generated story
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipeline.config import Params, load_params
from pipeline.files import write_bytes, write_json
from pipeline.model import load_model
from pipeline.stage import add_params_argument, run_stage
from pipeline.tasks import TASK_NAMES, Evaluation, Task, get_task


def evaluate(task: Task, params: Params) -> Evaluation:
    model = load_model(params.paths_of(task.name).model)
    return task.evaluate(params, model)


def write_evaluation(evaluation: Evaluation, metrics_path: str) -> None:
    for path, content in evaluation.files.items():
        write_bytes(path, content)
    write_json(metrics_path, evaluation.metrics)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=TASK_NAMES)
    add_params_argument(parser)
    args = parser.parse_args(argv)
    with run_stage(f"evaluate {args.model}"):
        params = load_params(args.params)
        evaluation = evaluate(get_task(args.model), params)
        write_evaluation(evaluation, params.paths_of(args.model).metrics)
        print(f"evaluate {args.model}: " + ", ".join(f"{k} = {v}" for k, v in evaluation.metrics.items()))


if __name__ == "__main__":
    main()
