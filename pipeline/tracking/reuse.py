"""Test metrics for a run whose evaluation DVC skipped: the evaluate stage's own, or those of an earlier
evaluation of the same model bytes (a run of this store, else the evaluation the committed dvc.lock records).

DVC skips the evaluate stage when the model file's bytes are unchanged (a resumed training that ends on the
bytes of an earlier run, ``dvc repro -f``, the same experiment twice, a fresh clone's ``make repro`` of the
committed lock): the train stage then copies that evaluation's metrics into its run and says where they were
measured, so every finished training carries its test metrics and becomes a registry version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from pipeline.files import file_digest, read_json
from pipeline.tracking.provenance import git, log_datasets
from pipeline.tracking.registry import register
from pipeline.tracking.store import TrackingError
from pipeline.tracking.tags import EVALUATED_BY_TAG, MODEL_DIGEST_TAG, NOTE_TAG, TEST_METRICS_TAG

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from pipeline.config import ModelPaths, Params
    from pipeline.tasks.base import Evaluation, Task


def test_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json's numbers as the run's metrics: their own names, except where a per-epoch training
    metric has the name already (the fable's ``accuracy`` and ``loss``, measured on the text): those become
    ``test_…``, so both experiments compare on ``test_accuracy``."""
    return {f"test_{name}" if name in ("loss", "accuracy") else name: float(value) for name, value in metrics.items()}


def _log_test_metrics(task: Task, params: Params, metrics: Mapping[str, float], source_run: str) -> None:
    """Test metrics (each linked to the testing dataset, if any) and where they come from, into the active run."""
    tested = log_datasets([dataset for dataset in task.datasets(params) if dataset.context == "testing"])
    mlflow.log_metrics(dict(metrics), dataset=tested)
    mlflow.set_tags({TEST_METRICS_TAG: json.dumps(sorted(metrics)), EVALUATED_BY_TAG: source_run})


def log_evaluation(task: Task, params: Params, evaluation: Evaluation, run_id: str) -> ModelVersion:
    """Metrics and reports into the model's run (open: :func:`evaluation_run`), then the run registered."""
    _log_test_metrics(task, params, test_metrics(evaluation.metrics), run_id)
    for path in evaluation.files:
        mlflow.log_artifact(path, artifact_path="reports")
    for name, figure in evaluation.figures.items():
        mlflow.log_figure(figure, f"plots/{name}")
    return register(task.name, run_id)


def carry_evaluation(task: Task, params: Params, run_id: str) -> str | None:
    """The test metrics of an earlier evaluation of the same model bytes, into the active run ``run_id``, which
    is then registered; where they were measured is returned (None: no such evaluation).

    DVC skips the evaluate stage when the model file's bytes are unchanged (a resumed training that ends on
    the bytes of an earlier run, ``dvc repro -f``, the same experiment twice, a fresh clone's ``make repro``
    of the committed lock): without this the run of that training would end without test metrics.
    An earlier run of this store is preferred; else the evaluation committed in dvc.lock.
    """
    client = MlflowClient()
    run = client.get_run(run_id)
    same_model = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{run.data.tags[MODEL_DIGEST_TAG]}'",
        order_by=["attributes.start_time DESC"],
    )
    for earlier in same_model:
        names = earlier.data.tags.get(TEST_METRICS_TAG)
        if earlier.info.run_id == run_id or not names:
            continue
        source = earlier.data.tags.get(EVALUATED_BY_TAG, earlier.info.run_id)
        metrics = {name: earlier.data.metrics[name] for name in json.loads(names) if name in earlier.data.metrics}
        _log_test_metrics(task, params, metrics, source)
        mlflow.set_tag(
            NOTE_TAG,
            f"same model bytes as run {earlier.info.run_id}: DVC reuses its evaluation, "
            f"whose test metrics (measured in run {source}) are copied here",
        )
        register(task.name, run_id)
        return source
    committed = committed_evaluation(params.paths_of(task.name))
    if committed is None:
        return None
    stage, metrics = committed
    commit = git("rev-parse", "--short", "HEAD")
    source = f"dvc.lock stage {stage}" + (f" at git commit {commit}" if commit else "")
    _log_test_metrics(task, params, test_metrics(metrics), source)
    mlflow.set_tag(
        NOTE_TAG,
        f"these model bytes are the ones {source} evaluated: DVC reuses that "
        "evaluation, whose metrics file's numbers are copied here",
    )
    register(task.name, run_id)
    return source


def committed_evaluation(paths: ModelPaths, lock: Path = Path("dvc.lock")) -> tuple[str, dict[str, Any]] | None:
    """The stage of ``lock`` that evaluated exactly the bytes now at ``paths.model`` into exactly the bytes now
    at ``paths.metrics``, and those metrics (None: there is none, or a file is missing or unreadable).

    A fresh clone has the committed lock and ``metrics/`` but an empty MLflow store: when its training ends on
    the committed model bytes, DVC skips the evaluate stage and this is the evaluation it reuses.
    """
    try:
        stages = yaml.safe_load(lock.read_text())["stages"]
        model_md5, metrics_md5 = file_digest(paths.model, "md5"), file_digest(paths.metrics, "md5")
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    for name, stage in stages.items():
        deps = {entry.get("path"): entry.get("md5") for entry in stage.get("deps", [])}
        outs = {entry.get("path"): entry.get("md5") for entry in stage.get("outs", [])}
        if deps.get(paths.model) == model_md5 and outs.get(paths.metrics) == metrics_md5:
            return name, read_json(paths.metrics, TrackingError)
    return None
