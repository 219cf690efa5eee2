"""DVC experiments land in the same MLflow store; a DVC remote round trip restores everything."""

from __future__ import annotations

import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient


def commit_all(project, message: str) -> None:
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", message)


@pytest.mark.minutes(1.1)
def test_dvc_exp_run_lands_a_named_run(trained_copy):
    commit_all(trained_copy, "trained")
    # --temp: in a copy under .dvc/tmp/exps, tracked (and registered) in the project's own store all the same.
    trained_copy.dvc("exp", "run", "--temp", "-S", "mnist.units=8", "--name", "units-8")
    (baseline, newest) = sorted(trained_copy.runs("mnist"), key=lambda run: run.info.start_time)
    assert newest.info.status == "FINISHED"
    assert newest.data.params["mnist.units"] == "8" and "test_accuracy" in newest.data.metrics
    assert newest.data.tags["dvc.exp_name"] == "units-8" == newest.info.run_name
    assert newest.data.tags["restore"] == "dvc exp apply units-8"
    assert len(newest.data.tags["dvc.baseline_rev"]) == 40
    assert baseline.data.params["mnist.units"] == "16"
    # Registered like any evaluated training, naming its experiment.
    versions = {v.run_id: v for v in MlflowClient().search_model_versions("name = 'mnist'")}
    assert versions[newest.info.run_id].tags["dvc_experiment"] == "units-8"
    assert versions[newest.info.run_id].tags["test_accuracy"] == repr(newest.data.metrics["test_accuracy"])
    assert len(trained_copy.runs("fable")) == 1  # the fable's stages were up to date
    shown = trained_copy.dvc("exp", "show", "--json").stdout
    assert "units-8" in shown


@pytest.mark.minutes(1.8)
def test_queued_experiments_run_in_parallel_into_one_store(trained_copy):
    commit_all(trained_copy, "trained")
    before = len(trained_copy.runs("fable"))
    for units in (20, 28):
        trained_copy.dvc("exp", "run", "--queue", "-S", f"fable.units={units}", "--name", f"queued-{units}")
    trained_copy.dvc("queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = trained_copy.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    else:
        pytest.fail(f"queue still busy:\n{status}")
    assert status.count("Success") == 2, status
    runs = trained_copy.runs("fable")
    assert len(runs) == before + 2
    queued = {run.data.tags.get("dvc.exp_name"): run for run in runs}
    for units in (20, 28):
        run = queued[f"queued-{units}"]
        assert run.info.status == "FINISHED" and run.data.params["fable.units"] == str(units)
        assert "test_accuracy" in run.data.metrics
    registered = {v.tags["dvc_experiment"] for v in MlflowClient().search_model_versions("name = 'fable'")}
    assert registered >= {"queued-20", "queued-28"}


def test_dvc_remote_round_trip(trained_copy, tmp_path):
    remote = tmp_path / "remote"
    trained_copy.dvc("remote", "add", "-d", "storage", str(remote))
    commit_all(trained_copy, "trained, with a remote")
    trained_copy.dvc("push")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(trained_copy.root), str(clone)], check=True)
    cloned = type(trained_copy)(root=clone, env=trained_copy.env)
    cloned.dvc("pull")
    assert cloned.dvc("status").stdout.strip() == "Data and pipelines are up to date."
    assert (clone / "models/mnist.keras").read_bytes() == (trained_copy.root / "models/mnist.keras").read_bytes()
