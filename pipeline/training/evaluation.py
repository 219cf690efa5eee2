"""Judging a trained model: its metrics and reports, written for DVC and logged to its MLflow run
(the evaluate stage, ``python -m pipeline.stages.evaluate``, runs it)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.files import write_bytes, write_json
from pipeline.model.saving import load_model, require_model
from pipeline.tasks.base import Evaluation, Task
from pipeline.tracking import reuse, runs


def evaluate(task: Task, params: Params) -> Evaluation:
    model = load_model(params.paths_of(task.name).model)
    return task.evaluate(params, model)


def write_evaluation(evaluation: Evaluation, metrics_path: str) -> None:
    for path, content in evaluation.files.items():
        write_bytes(path, content)
    write_json(metrics_path, evaluation.metrics)


def run(task: Task, params: Params) -> None:
    """The evaluate stage's work: metrics and reports of the workspace model, into DVC's files and MLflow."""
    paths = params.paths_of(task.name)
    require_model(paths.model)
    with runs.evaluation_run(task, params, Path(paths.model)) as run_id:
        evaluation = evaluate(task, params)
        write_evaluation(evaluation, paths.metrics)
        reuse.log_evaluation(task, params, evaluation, run_id)
    print(f"evaluate {task.name}: " + ", ".join(f"{k} = {v}" for k, v in evaluation.metrics.items()))
