"""The tracking store: where runs go, a quick check that a tracking server answers and accepts the login,
the experiments, and a lock for a SQLite store shared by parallel workers.

Where runs go: ``$MLFLOW_TRACKING_URI`` when set (a team's ``mlflow server``), else ``sqlite:///mlflow.db``
at the project root with artifacts in ``mlruns/`` beside it. The root is found even when DVC runs a
stage inside ``.dvc/tmp/exps/…`` (``dvc exp run --temp`` and ``--queue``), so every experiment lands in
the same store that ``mlflow ui`` shows.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import mlflow
import mlflow.pyfunc
import requests
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import PipelineError
from pipeline.tracking.tags import experiment_tags

STORE_FILE = "mlflow.db"
ARTIFACTS_DIRECTORY = "mlruns"  # where MLflow itself puts them beside mlflow.db


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
        requests.get(f"{base}/health", timeout=timeout)
    except requests.RequestException as error:
        # The operating system's reason ("[Errno 111] Connection refused"), not the layers of requests around it.
        reason = re.search(r"\[Errno [^\]]+\] [^'\")]+", str(error))
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers ({reason[0] if reason else type(error).__name__})"
        ) from None
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD", "")
    try:
        answer = requests.get(
            f"{base}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=(user, password) if user else None,
            timeout=timeout,
        )
    except requests.RequestException:
        return  # /health answered: MLflow's retries deal with a slow API
    if answer.status_code != 401:
        return  # signed in (or no sign-in needed); what else is wrong MLflow reports
    if user:
        raise TrackingError(
            f"authentication failed for user {user} at {uri} (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)"
        )
    raise TrackingError(
        f"the MLflow server at {uri} requires a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )


def experiment_id(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """The experiment ``name`` in the store, created (store included) under a lock if it is new, tagged as a
    model-training experiment with its description (pipeline.tracking.tags.experiment_tags; a store made
    before they existed gets them too).

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
        tags = experiment_tags(name)
        if experiment is None:
            location = (root / ARTIFACTS_DIRECTORY / name).as_uri() if local else None
            return client.create_experiment(name, artifact_location=location, tags=tags)
        for key, value in tags.items():
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id


def store_lock() -> contextlib.AbstractContextManager:
    """For a SQLite store (the default one or one named by MLFLOW_TRACKING_URI), a file lock beside it; else
    nothing. Parallel queue workers take it to create the store, an experiment or a registry version."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    database = Path(uri.removeprefix("sqlite:///"))
    return FileLock(str(database.with_name(f".{database.name}.lock")))
