"""The MLflow UI of the trained project's store, served by `mlflow server` on loopback, read in headless Chromium.

MLflow on PostgreSQL with the object store behind it is the team stack's (tests/test_team.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import as_the_ui_shows, page_text, value_beside
from conftest import free_port, wait_until_up
from mlflow.tracking import MlflowClient

from pipeline.processes import stop_group

pytestmark = pytest.mark.xdist_group("mlflow_ui")


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
        stop_group(process, grace=30)


# One server on the trained project's store for both pages' tests (on one worker: xdist_group).
@pytest.fixture(scope="module")
def ui_server(trained_project) -> Iterator[str]:
    with mlflow_server(f"sqlite:///{trained_project.root}/mlflow.db", trained_project.root / "mlruns") as url:
        yield url


def test_mlflow_ui_shows_runs_and_test_accuracy_in_a_browser(trained_project, ui_server, tmp_path):
    (run,) = trained_project.runs("mnist")
    backend = f"sqlite:///{trained_project.root}/mlflow.db"
    stored = MlflowClient(backend).get_run(run.info.run_id)  # what the store holds, not what the page may say
    (training,) = [item.dataset for item in stored.inputs.dataset_inputs if item.dataset.name == "mnist-train"]
    page = page_text(
        f"{ui_server}/#/experiments/{stored.info.experiment_id}/runs/{run.info.run_id}",
        tmp_path / "run.png",
        until="test_accuracy",
    )
    # The experiment in the UI's model-training view (its sidebar switch, or this URL parameter; the GenAI
    # view of traces and token usage otherwise): the training run, by name, under the experiment's description.
    experiment_page = page_text(
        f"{ui_server}/#/experiments/{stored.info.experiment_id}?workflowType=machine_learning",
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


def test_registry_pages_show_versions_aliases_and_metrics_in_a_browser(trained_project, ui_server, tmp_path):
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
    models = page_text(f"{ui_server}/#/models", tmp_path / "models.png", until="mnist")
    page = page_text(
        f"{ui_server}/#/models/mnist/versions/{version.version}",
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
