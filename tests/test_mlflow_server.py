"""A team's set-up on loopback: `mlflow server` on PostgreSQL, and the MLflow UI read in headless Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest
from browser import as_the_ui_shows, page_text, value_beside
from conftest import free_port, stack_directory, wait_until_up
from mlflow.tracking import MlflowClient

from pipeline.team import control
from pipeline.team.stack import DATABASE_USER, load_or_create


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1, stopped when the block ends."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            artifacts.as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        process.wait(timeout=30)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL on 127.0.0.1: the team stack's (pipeline.team.postgres) on its own."""
    stack = load_or_create(stack_directory())
    try:
        control.start(stack, "postgres")
        yield (
            f"postgresql://{DATABASE_USER}:{stack.secrets['database_password']}@127.0.0.1:"
            f"{stack.ports['postgres']}/mlflow"
        )
    finally:
        control.stop(stack, "postgres")
        shutil.rmtree(stack.directory, ignore_errors=True)


@pytest.mark.minutes(1.3)
def test_pipeline_logs_to_an_mlflow_server_on_postgresql(trained_copy, tmp_path):
    with postgres() as database, mlflow_server(database, tmp_path / "artifacts") as url:
        trained_copy.env["MLFLOW_TRACKING_URI"] = url
        trained_copy.dvc("repro", "-f", "train_fable", "evaluate_fable")
        (run,) = trained_copy.runs("fable", store=url)
        assert run.info.status == "FINISHED"
        assert "test_accuracy" in run.data.metrics and run.data.params["fable.units"] == "32"
        assert len(MlflowClient().get_metric_history(run.info.run_id, "loss")) == 2
        stored = {item.path for item in MlflowClient().list_artifacts(run.info.run_id, "reports")}
        assert "reports/fable_story.txt" in stored
        (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
        assert len(mlflow.pyfunc.load_model(f"models:/{logged.model_id}").predict(["long ago ,"])) == 1
    # Nothing went to the local store: the server is where the team's runs are.
    assert len(trained_copy.runs("fable")) == 1


def test_mlflow_ui_shows_runs_and_test_accuracy_in_a_browser(trained_project, tmp_path):
    (run,) = trained_project.runs("mnist")
    backend = f"sqlite:///{trained_project.root}/mlflow.db"
    stored = MlflowClient(backend).get_run(run.info.run_id)  # what the store holds, not what the page may say
    (training,) = [item.dataset for item in stored.inputs.dataset_inputs if item.dataset.name == "mnist-train"]
    with mlflow_server(backend, trained_project.root / "mlruns") as url:
        page = page_text(
            f"{url}/#/experiments/{stored.info.experiment_id}/runs/{run.info.run_id}",
            tmp_path / "run.png",
            until="test_accuracy",
        )
        # The experiment in the UI's model-training view (its sidebar switch, or this URL parameter; the GenAI
        # view of traces and token usage otherwise): the training run, by name, under the experiment's description.
        experiment_page = page_text(
            f"{url}/#/experiments/{stored.info.experiment_id}?workflowType=machine_learning",
            tmp_path / "experiment.png",
            until=stored.info.run_name,
        )
    assert "Training runs of the mnist model: " in experiment_page, experiment_page[-3000:]
    assert "Token Usage" not in experiment_page and "1 matching run" in experiment_page
    assert stored.info.run_name in page, page[-2000:]
    assert value_beside(page, "test_accuracy") == as_the_ui_shows(stored.data.metrics["test_accuracy"]), page[-3000:]
    assert f"{training.name} ({training.digest})" in page  # its training dataset
    assert (tmp_path / "run.png").stat().st_size > 10_000
    keep = os.environ.get("PIPELINE_UI_SCREENSHOT")  # set it to look at the page yourself
    if keep:
        shutil.copy(tmp_path / "run.png", keep)


def test_registry_pages_show_versions_aliases_and_metrics_in_a_browser(trained_project, tmp_path):
    """The Models page lists both registered models at their latest versions; a version's page shows its
    alias, its source run and its tags."""
    trained_project.runs("mnist")  # points MLflow at the project's store
    client = MlflowClient()
    latest = {
        name: max(int(version.version) for version in client.search_model_versions(f"name = '{name}'"))
        for name in ("mnist", "fable")
    }
    version = client.get_model_version_by_alias("mnist", "champion")
    source_run = client.get_run(version.run_id).info.run_name
    backend = f"sqlite:///{trained_project.root}/mlflow.db"
    with mlflow_server(backend, trained_project.root / "mlruns") as url:
        models = page_text(f"{url}/#/models", tmp_path / "models.png", until="mnist")
        page = page_text(
            f"{url}/#/models/mnist/versions/{version.version}",
            tmp_path / "version.png",
            until=("params_sha256", source_run),  # the run's name arrives by a request of its own
        )
    for name, number in latest.items():
        assert value_beside(models, name) == f"Version {number}", models[-2000:]
    assert value_beside(page, "Aliases") == "@ champion", page[-2000:]
    assert value_beside(page, "Source Run") == source_run
    for tag in ("test_accuracy", "git_commit", "params_sha256"):
        assert value_beside(page, tag) == version.tags[tag], tag
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("models.png", "version.png"))
    keep = os.environ.get("PIPELINE_UI_SCREENSHOT")
    if keep:
        for name in ("models.png", "version.png"):
            shutil.copy(tmp_path / name, Path(keep).with_name(f"{Path(keep).stem}-{name}"))
