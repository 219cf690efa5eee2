"""A team's set-up on loopback: `mlflow server` on PostgreSQL, and the MLflow UI read in headless Chromium."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest
from conftest import free_port, wait_until_up
from mlflow.tracking import MlflowClient


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1, stopped when the block ends."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
         "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        process.wait(timeout=30)


def postgres_binary(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]), None)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (run as the `postgres` user when we are root)."""
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        # runuser lives in /usr/sbin (util-linux), which a non-login PATH may leave out
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "runuser"
        as_user = [runuser, "-u", "postgres", "--"]
        shutil.chown(directory, "postgres")
    data, port = directory / "data", free_port()
    run = lambda *command: subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        created = run(initdb, "-D", str(data), "-A", "trust", "-U", "mlflow")
        if created.returncode != 0:
            pytest.skip(f"PostgreSQL cannot start here: initdb failed: {created.stderr.strip()[-300:]}")
        started = run(pg_ctl, "-D", str(data), "-w", "-l", str(directory / "log"), "-o",
                      f"-c listen_addresses=127.0.0.1 -p {port} -k {directory}", "start")
        if started.returncode != 0:
            pytest.skip(f"PostgreSQL cannot start here: {started.stderr.strip()[-300:]}")
        yield f"postgresql://mlflow@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)


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


def chromium_page(url: str, screenshot: Path) -> str:
    """The page's DOM after its scripts ran, and a screenshot of it, from headless Chromium."""
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed (`make test` installs Debian's chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={screenshot.parent / 'chromium-profile'}",
             "--window-size=1600,1000", "--virtual-time-budget=20000"]
    subprocess.run([chromium, *flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    return dom.stdout


def test_mlflow_ui_shows_runs_and_test_accuracy_in_a_browser(trained_project, tmp_path):
    (run,) = trained_project.runs("mnist")
    experiment = mlflow.get_experiment_by_name("mnist")
    backend = f"sqlite:///{trained_project.root}/mlflow.db"
    with mlflow_server(backend, trained_project.root / "mlruns") as url:
        page = chromium_page(f"{url}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}",
                             tmp_path / "run.png")
    assert run.info.run_name in page, page[-2000:]
    assert "test_accuracy" in page
    assert f"{run.data.metrics['test_accuracy']}"[:4] in page
    assert "mnist-train" in page  # its datasets (the Dataset column of the runs table)
    assert (tmp_path / "run.png").stat().st_size > 10_000
    keep = os.environ.get("PIPELINE_UI_SCREENSHOT")  # set it to look at the page yourself
    if keep:
        shutil.copy(tmp_path / "run.png", keep)


def test_registry_pages_show_versions_aliases_and_metrics_in_a_browser(trained_project, tmp_path):
    """The Models page lists both registered models; a version's page shows its alias, tags and run."""
    trained_project.runs("mnist")  # points MLflow at the project's store
    version = MlflowClient().get_model_version_by_alias("mnist", "champion")
    backend = f"sqlite:///{trained_project.root}/mlflow.db"
    with mlflow_server(backend, trained_project.root / "mlruns") as url:
        models = chromium_page(f"{url}/#/models", tmp_path / "models.png")
        page = chromium_page(f"{url}/#/models/mnist/versions/{version.version}", tmp_path / "version.png")
    assert "mnist" in models and "fable" in models, models[-2000:]
    assert "champion" in page, page[-2000:]
    for tag in ("test_accuracy", "git_commit", "params_sha256"):
        assert tag in page
    assert version.tags["test_accuracy"][:4] in page
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("models.png", "version.png"))
    keep = os.environ.get("PIPELINE_UI_SCREENSHOT")
    if keep:
        for name in ("models.png", "version.png"):
            shutil.copy(tmp_path / name, Path(keep).with_name(f"{Path(keep).stem}-{name}"))
