"""Exactly one MLflow run per trained model: opened by the train stage, found again by evaluation through the
model file's sha256, ended KILLED or FAILED when the stage is stopped or fails, closed by the next attempt
when a killed process left it RUNNING.

The train stage opens the run (params, per-epoch metrics, system metrics, its datasets, the model,
provenance tags) and tags it with the sha256 of the saved model file. The evaluate stage reopens the newest
run with that tag to add test metrics and reports: no run id ever enters a DVC-tracked file, so outputs
stay byte-reproducible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import mlflow
import mlflow.pyfunc
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from pipeline.files import file_digest
from pipeline.model import numerics
from pipeline.processes import process_alive
from pipeline.tasks.reports import training_curves
from pipeline.tracking.provenance import log_datasets, owner_tags, provenance_tags, run_params
from pipeline.tracking.store import experiment_id
from pipeline.tracking.tags import (
    HOST_TAG,
    MODEL_DIGEST_TAG,
    NOTE_TAG,
    PID_TAG,
    RESUMED_AFTER_TAG,
    RESUMES_TAG,
    sweep_tags,
)

if TYPE_CHECKING:
    from pipeline.config import Params
    from pipeline.tasks.base import Task


# Code an interrupt must not land in: one raised inside a store call (between an INSERT and its COMMIT, say)
# leaves SQLite's write lock held by a connection nobody closes, and ending the run then fails "database is locked".
_STORE_MODULES = ("mlflow.", "sqlalchemy.", "sqlite3")
_RETRY_S = 0.02


@contextlib.contextmanager
def run_status_on_exit() -> Iterator[None]:
    """End the active run KILLED on Ctrl-C or SIGTERM (what DVC sends), FAILED on any other error.

    The signal becomes a KeyboardInterrupt at once, unless it arrives inside MLflow's store: then it is raised
    again as soon as that call has returned.
    """
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except KeyboardInterrupt:
        for signum in previous:  # a second Ctrl-C must not stop the run's ending half-way
            signal.signal(signum, signal.SIG_IGN)
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if _in_store_call(frame):
        # To the main thread (where handlers run), so a sleep or a wait there is interrupted too.
        timer = threading.Timer(_RETRY_S, signal.pthread_kill, (threading.main_thread().ident, signum))
        timer.daemon = True
        timer.start()
        return
    raise KeyboardInterrupt(f"signal {signum}")


def _in_store_call(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_STORE_MODULES):
            return True
        frame = frame.f_back
    return False


def find_run_by_model(experiment: str, digest: str) -> str | None:
    """The newest run whose model file has sha256 ``digest``."""
    runs = MlflowClient().search_runs(
        [experiment],
        filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_resumed(rows: Sequence[Mapping[str, float]], epoch: int) -> None:
    """A resumed run: the epochs its checkpoint holds (logged by the killed attempt too), and where it resumed."""
    log_history(rows)
    mlflow.set_tag(RESUMED_AFTER_TAG, epoch)


def log_history(rows: Sequence[Mapping[str, float]]) -> None:
    """Per-epoch metrics of history rows (``epoch`` is the step): live, or from a checkpoint when resuming."""
    for row in rows:
        mlflow.log_metrics(
            {name: float(value) for name, value in row.items() if name != "epoch"}, step=int(row["epoch"])
        )


def close_abandoned_runs(experiment: str) -> list[str]:
    """End KILLED the runs this machine's processes left RUNNING when they died (``kill -9``, power loss).

    A run is abandoned when it was started on this host by a process that no longer exists; runs of
    live processes (a parallel ``dvc queue`` worker) and of other hosts are left alone.
    """
    client, host, closed = MlflowClient(), socket.gethostname(), []
    for run in client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'"):
        pid = run.data.tags.get(PID_TAG)
        if run.data.tags.get(HOST_TAG) != host or not (pid or "").isdigit() or process_alive(int(pid)):
            continue
        client.set_tag(
            run.info.run_id, NOTE_TAG, f"process {pid} died without ending this run; closed by the next attempt"
        )
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        print(f"MLflow run {run.info.run_id} was left RUNNING by process {pid}, which is gone: marked KILLED")
        closed.append(run.info.run_id)
    return closed


@contextlib.contextmanager
def training_run(task: Task, params: Params, resumes: str | None = None) -> Iterator[str]:
    """A new run in experiment ``task.name`` with params and provenance, its id yielded; ended FAILED/KILLED on errors.

    ``resumes``: the run of an interrupted attempt whose checkpoint this one continues from.
    """
    experiment = experiment_id(task.name)
    close_abandoned_runs(experiment)
    flat = run_params(params, task.name)
    tags = provenance_tags(flat, {name: Path(path) for name, path in task.input_paths(params).items()})
    tags |= owner_tags() | numerics.describe(params.numerics.mode) | sweep_tags(os.environ)
    if resumes:
        tags[RESUMES_TAG] = resumes
    # Named for what made it: the DVC experiment (a sweep's trial is one), else the model and short commit.
    commit = tags.get("mlflow.source.git.commit")
    name = os.environ.get("DVC_EXP_NAME") or (f"{task.name}-{commit[:7]}" if commit else None)
    description = (
        f"{task.name} model trained by `dvc repro`. Restore its code, params and data with: "
        f"{tags.get('restore', 'dvc checkout')}"
    )
    # CPU and memory while it trains, every $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's, 10 s).
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    run = mlflow.start_run(
        experiment_id=experiment, run_name=name, tags=tags, description=description, log_system_metrics=True
    )
    with run_status_on_exit():
        mlflow.log_params(flat)
        log_datasets([dataset for dataset in task.datasets(params) if dataset.context != "testing"])
        yield run.info.run_id
        mlflow.end_run()


def log_trained_model(
    task: Task, params: Params, model_path: Path, history_path: Path, artifacts: Sequence[str]
) -> None:
    """The model as a self-contained pyfunc model (pipeline.serving.pyfunc), its digest tag, the history, its
    curves and the task's other training files."""
    from pipeline.serving import pyfunc as serving  # noqa: PLC0415 - pandas and MLflow's pyfunc only where a model is logged

    mlflow.set_tag(MODEL_DIGEST_TAG, file_digest(model_path))
    package = serving.packaging(task.name, model_path, params)
    with _quiet_model_logging():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=package.python_model,
            artifacts=package.artifacts,
            model_config=package.model_config,
            code_paths=[str(serving.PACKAGE_DIRECTORY)],
            signature=package.signature,
            input_example=package.input_example,
            # Explicit requirements: inferring them would load the model again in a subprocess.
            pip_requirements=serving.requirements(),
        )
    for path in [history_path, *artifacts]:
        mlflow.log_artifact(str(path), artifact_path="reports")
    mlflow.log_figure(training_curves(history_path, f"{task.name} training"), "plots/training_curves.png")


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def _quiet_model_logging() -> Iterator[None]:
    """Without MLflow's notes while it logs a model: the CloudPickle caution (the wrapper class is pickled by
    reference to the package it carries), "validating input example", and a progress bar for copying the
    example back. Its errors still show; a ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` the user set is kept."""
    loggers = {logging.getLogger(name): logging.getLogger(name).level for name in ("mlflow.pyfunc", "mlflow.models")}
    ours = _PROGRESS_BAR not in os.environ
    if ours:
        os.environ[_PROGRESS_BAR] = "false"
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in loggers.items():
            logger.setLevel(level)
        if ours:
            os.environ.pop(_PROGRESS_BAR, None)


@contextlib.contextmanager
def evaluation_run(task: Task, params: Params, model_path: Path) -> Iterator[str]:
    """Reopen the run that trained the model at ``model_path`` (found by its sha256); yield its id.

    A model trained outside this store (pulled from a DVC remote, say) gets a run of its own, with the model.
    """
    experiment = experiment_id(task.name)
    digest = file_digest(model_path)
    run_id = find_run_by_model(experiment, digest)
    if run_id is None:
        with training_run(task, params) as run_id:
            mlflow.set_tag(NOTE_TAG, "model trained outside this MLflow store")
            paths = params.paths_of(task.name)
            log_trained_model(task, params, model_path, Path(paths.history), task.extra_artifacts(params))
    mlflow.start_run(run_id=run_id)
    # RUNNING again, now on behalf of this process: if it dies, the next attempt closes the run.
    mlflow.set_tags(owner_tags())
    with run_status_on_exit():
        yield run_id
        mlflow.end_run()
