"""MLflow tracking: exactly one run per trained model, found again by evaluation through the model's digest.

The only module that imports ``mlflow``: the stages hand it what to record.

Where runs go: ``$MLFLOW_TRACKING_URI`` when set (a team's ``mlflow server``), else ``sqlite:///mlflow.db``
at the project root with artifacts in ``mlruns/`` beside it. The root is found even when DVC runs a
stage inside ``.dvc/tmp/exps/…`` (``dvc exp run --temp`` and ``--queue``), so every experiment lands in
the same store that ``mlflow ui`` shows.

The train stage opens the run (params, per-epoch metrics, model, provenance tags) and tags it with the
sha256 of the saved model file. The evaluate stage reopens the newest run with that tag to add test
metrics and reports: no run id ever enters a DVC-tracked file, so outputs stay byte-reproducible.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import mlflow
import mlflow.pyfunc
from filelock import FileLock
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from pipeline import numerics
from pipeline.config import Params
from pipeline.errors import PipelineError
from pipeline.files import file_digest, json_digest
from pipeline.reports import training_curves
from pipeline.tasks import Evaluation, Task

STORE_FILE = "mlflow.db"
ARTIFACTS_DIRECTORY = "mlruns"  # where MLflow itself puts them beside mlflow.db
MODEL_DIGEST_TAG = "pipeline.model_sha256"
RESUMES_TAG = "pipeline.resumes_run"  # the interrupted run whose checkpoint a run continued from
RESUMED_AFTER_TAG = "pipeline.resumed_after_epoch"
HOST_TAG, PID_TAG = "pipeline.host", "pipeline.pid"  # who runs it: to close runs a killed process left open
# Code and configuration whose changes make a run's commit not the whole story ("dirty").
_SOURCE_PATHS = ("pipeline", "params.yaml", "dvc.yaml", "requirements.txt")


def project_root(environ: Mapping[str, str] = os.environ) -> Path:
    """The project's root, also from inside a DVC experiment's temporary copy of it."""
    root = Path(environ.get("DVC_ROOT") or os.getcwd()).resolve()
    parts = root.parts
    for index in range(len(parts) - 2):
        if parts[index : index + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:index])
    return root


def tracking_uri(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root(environ) / STORE_FILE}"


class TrackingError(PipelineError):
    """The tracking store cannot be reached."""


def require_server(uri: str, timeout: float = 10.0) -> None:
    """For an ``http(s)://`` store: one quick request to its ``/health``, so that an unreachable server fails
    in one line at once rather than after MLflow's minutes of retries."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answers: authentication and the rest are MLflow's to report
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers ({reason})") from None


def experiment_id(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """The experiment ``name`` in the store, created (store included) under a lock if it is new.

    The lock keeps parallel queue workers (``dvc queue start -j 2``) from racing the SQLite schema
    migration or creating one experiment twice.
    """
    local = "MLFLOW_TRACKING_URI" not in environ  # checked first: set_tracking_uri exports the variable
    uri = tracking_uri(environ)
    require_server(uri)
    mlflow.set_tracking_uri(uri)
    root = project_root(environ)
    # Any SQLite store, the default one or one named by MLFLOW_TRACKING_URI, is created under a lock beside it.
    database = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    lock = FileLock(str(database.with_name(f".{database.name}.lock"))) if database else contextlib.nullcontext()
    with lock:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = (root / ARTIFACTS_DIRECTORY / name).as_uri() if local else None
        return client.create_experiment(name, artifact_location=location)


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: params.yaml's own dotted key names."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else value}


def _git(*arguments: str) -> str | None:
    # In the workspace the stage runs in: a queued experiment's own checkout, not the project's.
    workspace = os.environ.get("DVC_ROOT") or os.getcwd()
    try:
        result = subprocess.run(["git", *arguments], capture_output=True, text=True, timeout=30, cwd=workspace)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def provenance_tags(params_flat: Mapping[str, Any], input_files: Mapping[str, Path],
                    environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Git commit and dirtiness, the DVC experiment, input data digests and the params hash."""
    tags: dict[str, str] = {}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *_SOURCE_PATHS)
        tags["git.dirty"] = str(bool(dirty)).lower()
    experiment = environ.get("DVC_EXP_NAME")
    if experiment:
        tags["dvc.exp_name"] = experiment
        tags["dvc.baseline_rev"] = environ.get("DVC_EXP_BASELINE_REV", "")
        tags["restore"] = f"dvc exp apply {experiment}"
    elif commit:
        tags["restore"] = f"git checkout {commit} && dvc checkout"
    for name, path in input_files.items():
        tags[f"data.{name}.sha256"] = file_digest(path)
    tags["params.sha256"] = json_digest(dict(params_flat))
    return tags


@contextlib.contextmanager
def run_status_on_exit() -> Iterator[None]:
    """End the active run KILLED on Ctrl-C or SIGTERM (what DVC sends), FAILED on any other error."""
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def find_run_by_model(experiment: str, digest: str) -> str | None:
    """The newest run whose model file has sha256 ``digest``."""
    runs = MlflowClient().search_runs(
        [experiment], filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


# --- what the train and evaluate stages log ---------------------------------------------------------


def run_params(params: Params, task: str) -> dict[str, Any]:
    """The model's and its data's params.yaml values, under params.yaml's dotted names."""
    return {
        **flatten(params.training(task).model_dump(), task),
        **flatten(params.numerics.model_dump(), "numerics"),
        **flatten(getattr(params.data, task).model_dump(), f"data.{task}"),
    }


class EpochLogger(keras.callbacks.Callback):
    """Per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` to the active run (step = epoch)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        log_history([{"epoch": epoch + 1, **(logs or {})}])


def log_resumed(rows: Sequence[Mapping[str, float]], epoch: int) -> None:
    """A resumed run: the epochs its checkpoint holds (logged by the killed attempt too), and where it resumed."""
    log_history(rows)
    mlflow.set_tag(RESUMED_AFTER_TAG, epoch)


def log_history(rows: Sequence[Mapping[str, float]]) -> None:
    """Per-epoch metrics of history rows (``epoch`` is the step): live, or from a checkpoint when resuming."""
    for row in rows:
        mlflow.log_metrics({name: float(value) for name, value in row.items() if name != "epoch"}, step=int(row["epoch"]))


def close_abandoned_runs(experiment: str) -> list[str]:
    """End KILLED the runs this machine's processes left RUNNING when they died (``kill -9``, power loss).

    A run is abandoned when it was started on this host by a process that no longer exists; runs of
    live processes (a parallel ``dvc queue`` worker) and of other hosts are left alone.
    """
    client, host, closed = MlflowClient(), socket.gethostname(), []
    for run in client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'"):
        pid = run.data.tags.get(PID_TAG)
        if run.data.tags.get(HOST_TAG) != host or not (pid or "").isdigit() or _alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "pipeline.note", f"process {pid} died without ending this run; closed by the next attempt")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        print(f"MLflow run {run.info.run_id} was left RUNNING by process {pid}, which is gone: marked KILLED")
        closed.append(run.info.run_id)
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_tags() -> dict[str, str]:
    """Which process on which host has the run open: to close the runs a killed process left RUNNING."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


@contextlib.contextmanager
def training_run(task: Task, params: Params, resumes: str | None = None) -> Iterator[str]:
    """A new run in experiment ``task.name`` with params and provenance, its id yielded; ended FAILED/KILLED on errors.

    ``resumes``: the run of an interrupted attempt whose checkpoint this one continues from.
    """
    experiment = experiment_id(task.name)
    close_abandoned_runs(experiment)
    flat = run_params(params, task.name)
    tags = provenance_tags(flat, {name: Path(path) for name, path in task.input_paths(params).items()})
    tags |= _owner_tags() | numerics.describe(params.numerics.mode)
    if resumes:
        tags[RESUMES_TAG] = resumes
    exp_name = os.environ.get("DVC_EXP_NAME")
    description = (f"{task.name} model trained by `dvc repro`. Restore its code, params and data with: "
                   f"{tags.get('restore', 'dvc checkout')}")
    run = mlflow.start_run(experiment_id=experiment, run_name=exp_name or None, tags=tags, description=description)
    with run_status_on_exit():
        mlflow.log_params(flat)
        yield run.info.run_id
        mlflow.end_run()


def log_trained_model(task: Task, params: Params, model_path: Path, history_path: Path,
                      artifacts: Sequence[str]) -> None:
    """The model as a self-contained pyfunc model (pipeline.serving), its digest tag, the history, its
    curves and the task's other training files."""
    from pipeline import serving  # noqa: PLC0415 - pandas and MLflow's pyfunc only where a model is logged

    mlflow.set_tag(MODEL_DIGEST_TAG, file_digest(model_path))
    package = serving.packaging(task.name, model_path, params)
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


@contextlib.contextmanager
def evaluation_run(task: Task, params: Params, model_path: Path) -> Iterator[str]:
    """Reopen the run that trained the model at ``model_path`` (found by its sha256); yield its id.

    A model trained outside this store (pulled from a DVC remote, say) gets a run of its own.
    """
    experiment = experiment_id(task.name)
    digest = file_digest(model_path)
    run_id = find_run_by_model(experiment, digest)
    if run_id is None:
        with training_run(task, params) as run_id:
            mlflow.set_tags({MODEL_DIGEST_TAG: digest, "pipeline.note": "model trained outside this MLflow store"})
    mlflow.start_run(run_id=run_id)
    # RUNNING again, now on behalf of this process: if it dies, the next attempt closes the run.
    mlflow.set_tags(_owner_tags())
    with run_status_on_exit():
        yield run_id
        mlflow.end_run()


def log_evaluation(evaluation: Evaluation) -> None:
    """Metrics and reports into the model's run (open: :func:`evaluation_run`).

    Metrics keep their metrics.json names, except where a per-epoch training metric has the name
    already (the fable's ``accuracy`` and ``loss``, measured on the text): those become ``test_…``,
    so both experiments compare on ``test_accuracy``.
    """
    mlflow.log_metrics({f"test_{name}" if name in ("loss", "accuracy") else name: float(value)
                        for name, value in evaluation.metrics.items()})
    for path in evaluation.files:
        mlflow.log_artifact(path, artifact_path="reports")
    for name, figure in evaluation.figures.items():
        mlflow.log_figure(figure, f"plots/{name}")
