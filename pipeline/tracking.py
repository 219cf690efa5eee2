"""MLflow tracking: exactly one run per trained model, found again by evaluation through the model's digest.

The only module that imports ``mlflow``: the stages hand it what to record.

Where runs go: ``$MLFLOW_TRACKING_URI`` when set (a team's ``mlflow server``), else ``sqlite:///mlflow.db``
at the project root with artifacts in ``mlruns/`` beside it. The root is found even when DVC runs a
stage inside ``.dvc/tmp/exps/…`` (``dvc exp run --temp`` and ``--queue``), so every experiment lands in
the same store that ``mlflow ui`` shows.

The train stage opens the run (params, per-epoch metrics, system metrics, its datasets, the model,
provenance tags) and tags it with the sha256 of the saved model file. The evaluate stage reopens the newest
run with that tag to add test metrics and reports: no run id ever enters a DVC-tracked file, so outputs
stay byte-reproducible. When DVC skips the evaluate stage because the model's bytes were evaluated before
(a resume that ended on the same bytes, ``dvc repro -f``), the train stage copies that evaluation's
metrics into its run and says which run they come from; in a fresh clone, where no run has measured the
model yet, they come from the committed evaluation (dvc.lock and ``metrics/``).

Every evaluated run becomes a version of the registered model named after its task (``mnist``,
``fable``): alias ``champion`` on the best by test accuracy, moved only when a new version beats it (a tie
keeps the older); ``@latest``, the newest version, MLflow resolves itself (a reserved alias name).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import yaml
from filelock import FileLock
from mlflow.entities import RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import numerics
from pipeline.config import ModelPaths, Params
from pipeline.errors import PipelineError
from pipeline.files import file_digest, json_digest, read_json, sha256_file
from pipeline.reports import training_curves
from pipeline.stage import process_alive
from pipeline.tasks import Dataset, Evaluation, Task
from pipeline.team import authorization

STORE_FILE = "mlflow.db"
ARTIFACTS_DIRECTORY = "mlruns"  # where MLflow itself puts them beside mlflow.db
MODEL_DIGEST_TAG = "pipeline.model_sha256"
RESUMES_TAG = "pipeline.resumes_run"  # the interrupted run whose checkpoint a run continued from
RESUMED_AFTER_TAG = "pipeline.resumed_after_epoch"
HOST_TAG, PID_TAG = "pipeline.host", "pipeline.pid"  # who runs it: to close runs a killed process left open
TEST_METRICS_TAG = "pipeline.test_metrics"  # the names of the evaluation's metrics in the run (a JSON list)
EVALUATED_BY_TAG = "pipeline.test_metrics_from"  # the run whose evaluate stage measured them
CHAMPION = "champion"  # the registered models' alias of the best version (MLflow resolves @latest itself)
DIGEST_LENGTH = 36  # MLflow stores a dataset digest in 36 characters: the first 36 hex digits of the sha256
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


def load_model_uri(uri: str, answers: str) -> mlflow.pyfunc.PyFuncModel:
    """The MLflow model at ``uri`` (``models:/mnist@champion``, ``runs:/<run id>/model``, a directory), from
    this project's store (:func:`tracking_uri`), whose signature has the output column ``answers``; one line
    naming the URI when it cannot be loaded or is another kind of model."""
    store = tracking_uri()
    require_server(store)
    mlflow.set_tracking_uri(store)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as error:
        lines = str(getattr(error, "message", error)).strip().splitlines()
        raise TrackingError(f"model {uri} (store {store}): {lines[0] if lines else type(error).__name__}") from None
    signature = model.metadata.signature
    outputs = signature.outputs.input_names() if signature else []
    if answers not in outputs:
        raise TrackingError(f"model {uri}: it answers {outputs or 'without a signature'}, not {answers!r}")
    return model


# MLflow's own retries of a failed request (7, backing off from 2 s and doubling) take 4 minutes before an
# error. An unreachable server is caught at once by require_server; these bound the wait for one that goes
# away mid-run (a restart, an upgrade) to about a minute (2 + 4 + 8 + 16 + 32 s), each request to 30 s.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def require_server(uri: str | None = None, timeout: float = 5.0, environ: Mapping[str, str] = os.environ) -> None:
    """For an ``http(s)://`` store (``uri``, else :func:`tracking_uri`): quick requests to its ``/health`` and, as
    ``$MLFLOW_TRACKING_USERNAME`` if set, to its API, so that an unreachable server or a refused login fails in
    one line at once rather than after MLflow's minutes of retries or in the middle of a stage.
    MLflow's retries of later requests are bounded (:data:`HTTP_DEFAULTS`, unless set)."""
    uri = uri or tracking_uri(environ)
    if not uri.startswith(("http://", "https://")):
        return
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # it answers
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers ({reason})") from None
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD", "")
    headers = {"Authorization": authorization(user, password)} if user else {}
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as error:
        if error.code != 401:
            return  # signed in (or no sign-in needed); what else is wrong MLflow reports
    except (urllib.error.URLError, OSError):
        return  # /health answered: MLflow's retries deal with a slow API
    if user:
        raise TrackingError(
            f"authentication failed for user {user} at {uri} (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)"
        ) from None
    raise TrackingError(
        f"the MLflow server at {uri} requires a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    ) from None


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
    with store_lock():
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = (root / ARTIFACTS_DIRECTORY / name).as_uri() if local else None
        return client.create_experiment(name, artifact_location=location)


def store_lock() -> contextlib.AbstractContextManager:
    """For a SQLite store (the default one or one named by MLFLOW_TRACKING_URI), a file lock beside it; else
    nothing. Parallel queue workers take it to create the store, an experiment or a registry version."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    database = Path(uri.removeprefix("sqlite:///"))
    return FileLock(str(database.with_name(f".{database.name}.lock")))


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


def provenance_tags(
    params_flat: Mapping[str, Any], input_files: Mapping[str, Path], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
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
        [experiment],
        filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
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
            run.info.run_id, "pipeline.note", f"process {pid} died without ending this run; closed by the next attempt"
        )
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        print(f"MLflow run {run.info.run_id} was left RUNNING by process {pid}, which is gone: marked KILLED")
        closed.append(run.info.run_id)
    return closed


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
    description = (
        f"{task.name} model trained by `dvc repro`. Restore its code, params and data with: "
        f"{tags.get('restore', 'dvc checkout')}"
    )
    # CPU and memory while it trains, every $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's, 10 s).
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    run = mlflow.start_run(
        experiment_id=experiment, run_name=exp_name or None, tags=tags, description=description, log_system_metrics=True
    )
    with run_status_on_exit():
        mlflow.log_params(flat)
        log_datasets([dataset for dataset in task.datasets(params) if dataset.context != "testing"])
        yield run.info.run_id
        mlflow.end_run()


def dataset_digest(files: Sequence[str | Path]) -> str:
    """The sha256 of the files' bytes one after the other (of one file: what ``sha256sum`` prints), cut to
    the :data:`DIGEST_LENGTH` characters MLflow keeps."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:DIGEST_LENGTH]


def log_datasets(datasets: Sequence[Dataset]) -> Any:
    """Each dataset as an input of the active run (the runs table's Dataset column); the last one returned."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source  # noqa: PLC0415
    from mlflow.data.meta_dataset import MetaDataset  # noqa: PLC0415

    logged = None
    for dataset in datasets:
        logged = MetaDataset(
            resolve_dataset_source(dataset.source), name=dataset.name, digest=dataset_digest(dataset.files)
        )
        mlflow.log_input(logged, context=dataset.context)
    return logged


def log_trained_model(
    task: Task, params: Params, model_path: Path, history_path: Path, artifacts: Sequence[str]
) -> None:
    """The model as a self-contained pyfunc model (pipeline.serving), its digest tag, the history, its
    curves and the task's other training files."""
    from pipeline import serving  # noqa: PLC0415 - pandas and MLflow's pyfunc only where a model is logged

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
            mlflow.set_tag("pipeline.note", "model trained outside this MLflow store")
            paths = params.paths_of(task.name)
            log_trained_model(task, params, model_path, Path(paths.history), task.extra_artifacts(params))
    mlflow.start_run(run_id=run_id)
    # RUNNING again, now on behalf of this process: if it dies, the next attempt closes the run.
    mlflow.set_tags(_owner_tags())
    with run_status_on_exit():
        yield run_id
        mlflow.end_run()


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
            "pipeline.note",
            f"same model bytes as run {earlier.info.run_id}: DVC reuses its evaluation, "
            f"whose test metrics (measured in run {source}) are copied here",
        )
        register(task.name, run_id)
        return source
    committed = committed_evaluation(params.paths_of(task.name))
    if committed is None:
        return None
    stage, metrics = committed
    commit = _git("rev-parse", "--short", "HEAD")
    source = f"dvc.lock stage {stage}" + (f" at git commit {commit}" if commit else "")
    _log_test_metrics(task, params, test_metrics(metrics), source)
    mlflow.set_tag(
        "pipeline.note",
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
        model_md5, metrics_md5 = sha256_file(paths.model, "md5"), sha256_file(paths.metrics, "md5")
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    for name, stage in stages.items():
        deps = {entry.get("path"): entry.get("md5") for entry in stage.get("deps", [])}
        outs = {entry.get("path"): entry.get("md5") for entry in stage.get("outs", [])}
        if deps.get(paths.model) == model_md5 and outs.get(paths.metrics) == metrics_md5:
            return name, read_json(paths.metrics, TrackingError)
    return None


# --- the model registry ---------------------------------------------------------------------------------


# A version's tags, from its run's: provenance (besides its test metrics).
_VERSION_TAGS = {
    "git_commit": "mlflow.source.git.commit",
    "dvc_experiment": "dvc.exp_name",
    "params_sha256": "params.sha256",
    "model_sha256": MODEL_DIGEST_TAG,
    "test_metrics_from": EVALUATED_BY_TAG,
}


def register(name: str, run_id: str) -> ModelVersion:
    """The model of run ``run_id`` as a version of registered model ``name`` (once: again only updates its
    tags), tagged with its test metrics, git commit, DVC experiment and params digest; aliases moved."""
    client = MlflowClient()
    run = client.get_run(run_id)
    model_ids = [output.model_id for output in (run.outputs.model_outputs if run.outputs else [])]
    if not model_ids:
        raise TrackingError(f"MLflow run {run_id} has no logged model to register as {name!r}")
    tags = {key: run.data.tags.get(tag, "") for key, tag in _VERSION_TAGS.items()}
    tags |= {
        metric: repr(run.data.metrics[metric])
        for metric in json.loads(run.data.tags.get(TEST_METRICS_TAG, "[]"))
        if metric in run.data.metrics
    }
    with store_lock():
        try:
            client.create_registered_model(name, description=f"The {name} models this pipeline trained and evaluated.")
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if existing:
            version = existing[0]
            for key, value in tags.items():
                client.set_model_version_tag(name, version.version, key, value)
            version = client.get_model_version(name, version.version)
        else:
            version = client.create_model_version(
                name,
                source=f"models:/{model_ids[-1]}",
                run_id=run_id,
                tags=tags,
                model_id=model_ids[-1],
                description=f"Trained and evaluated by `dvc repro`: MLflow run {run_id}.",
            )
        champion = _move_champion(client, name, version)
    print(
        f"registered model {name} version {version.version} (test_accuracy {tags.get('test_accuracy', '-')}); "
        f"{CHAMPION}: version {champion}"
    )
    return version


def _move_champion(client: MlflowClient, name: str, version: ModelVersion) -> str:
    """``champion`` to ``version`` if there is none or ``version`` has a higher test accuracy (a tie keeps the
    older); the champion's version number is returned. ``latest`` is MLflow's own: a reserved alias name that
    it resolves to the newest version (``models:/mnist@latest``), so it is never set here."""
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is None or _accuracy(version) > _accuracy(champion):
        client.set_registered_model_alias(name, CHAMPION, str(version.version))
        return str(version.version)
    return str(champion.version)


def _accuracy(version: ModelVersion) -> float:
    value = version.tags.get("test_accuracy")
    return float(value) if value else float("-inf")
