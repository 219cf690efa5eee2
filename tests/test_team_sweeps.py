"""A sweep shared by two workers in two clones against the team stack (pipeline/sweeps/ on pipeline/team/): the
study in the stack's PostgreSQL, one worker killed with kill -9 mid-training and started again, nothing lost or
counted twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import FAULTS, ProjectCopy, clone_project
from team_fixtures import on_team_server, team_command

from pipeline.files import file_digest
from pipeline.team.stack import client_environment, load_or_create
from pipeline.tracking.tags import MODEL_DIGEST_TAG

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("team")]

SPEC = """name: team-units
model: fable
metric: test_accuracy
direction: maximize
trials: 3
sampler: grid
fixed:
  fable.epochs: 2
space:
  fable.units: [8, 12, 16]
"""
GRID = ["12", "16", "8"]


def sweep_clone(team_project: ProjectCopy, root: Path, env: dict[str, str]) -> ProjectCopy:
    """A clone of the trained project (its origin: the project, as a team's git remote), sharing its DVC cache."""
    clone = clone_project(team_project.root, root, env)
    clone.dvc("config", "--local", "cache.dir", str(team_project.root / ".dvc" / "cache"))
    clone.dvc("checkout", "--quiet")
    (clone.root / "team-units.yaml").write_text(SPEC)
    return clone


def start_worker(clone: ProjectCopy, log: Path, **env_extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.sweeps", "run", "team-units.yaml"],
        cwd=clone.root,
        env={**clone.env, **env_extra},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the worker exited ({process.returncode}) before the pause"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.5)


@pytest.mark.minutes(5)
def test_two_workers_share_a_grid_and_a_worker_killed_mid_training_loses_nothing(team_stack, team_project, tmp_path):
    made = team_command(team_stack.directory, "user", "sweeper", "trainer")
    assert made.returncode == 0, made.stderr
    stack = load_or_create(team_stack.directory, environ={})
    first = sweep_clone(team_project, tmp_path / "first", team_project.env)
    second = sweep_clone(
        team_project, tmp_path / "second", {**team_project.env, **client_environment(stack, "sweeper")}
    )

    began = time.monotonic()
    paused = tmp_path / "paused"
    killed = start_worker(first, tmp_path / "first-killed.log", PYTHONPATH=str(FAULTS), PIPELINE_PAUSE_AT=f"1:{paused}")
    other = start_worker(second, tmp_path / "second.log")
    wait_for(paused, killed, timeout=300)  # the first worker's trial is after epoch 1 of 2
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    again = start_worker(first, tmp_path / "first-again.log")
    for worker in (other, again):
        assert worker.wait(timeout=900) == 0, (tmp_path / "second.log").read_text() + (
            tmp_path / "first-again.log"
        ).read_text()
    print(f"\nteam sweep, 3 trials, two workers (one killed and started again): {time.monotonic() - began:.0f} s")
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("first-killed", "second", "first-again")}
    assert logs["second"].startswith(
        "sweep team-units: study in the team's database (postgresql+psycopg://sweeper:***@"
    )
    assert "sweep team-units: done, 3 trials finished" in logs["first-again"]

    # The study: three finished trials, one per grid point; the killed attempt failed and retried.
    study = optuna.load_study(study_name="team-units", storage=team_project.env["PIPELINE_SWEEP_STORAGE"])
    finished = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(str(trial.params["fable.units"]) for trial in finished) == GRID
    failed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.FAIL]
    retried = {number for trial in study.trials for number in trial.system_attrs.get("retry_history", [])}
    assert failed and {trial.number for trial in failed} <= retried

    # MLflow: one FINISHED run per finished trial, tagged with the sweep, with its test metrics; the killed
    # attempt's run ended KILLED.
    client = on_team_server(stack)
    experiment = client.get_experiment_by_name("fable").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.sweep = 'team-units'")
    done = [run for run in runs if run.info.status == "FINISHED"]
    assert sorted(run.info.run_id for run in done) == sorted(trial.user_attrs["mlflow_run"] for trial in finished)
    assert sorted(run.data.params["fable.units"] for run in done) == GRID
    assert all("test_accuracy" in run.data.metrics and run.data.params["fable.epochs"] == "2" for run in done)
    stopped = [run for run in runs if run.info.status in ("KILLED", "FAILED")]
    assert {run.data.tags["sweep.trial"] for run in stopped} & {str(trial.number) for trial in failed}
    assert not [run for run in runs if run.info.status == "RUNNING"]

    # The experiments on the git remote (the project both clones came from), and the best named.
    remote = team_project.run("git", "for-each-ref", "--format=%(refname:lstrip=-1)", "refs/exps").stdout.split()
    assert set(trial.user_attrs["dvc_experiment"] for trial in finished) <= set(remote)
    best = max(sorted(finished, key=lambda trial: trial.number), key=lambda trial: trial.value)
    shown = first.python("-m", "pipeline.sweeps", "show", "team-units.yaml").stdout
    assert "sweep team-units: 3 of 3 trials finished" in shown
    assert f"best: trial {best.number} " in shown and f"dvc exp apply {best.user_attrs['dvc_experiment']}" in shown

    # Anyone restores the best from the remotes alone: the experiment from git, its outputs from the DVC remote.
    viewer = clone_project(team_project.root, tmp_path / "viewer", team_project.env)
    viewer.dvc("exp", "pull", "--remote", "team", "origin", best.user_attrs["dvc_experiment"])
    viewer.dvc("exp", "apply", best.user_attrs["dvc_experiment"])
    assert viewer.params()["fable"]["units"] == best.params["fable.units"]
    model = viewer.root / "models" / "fable.keras"
    assert file_digest(model) == client.get_run(best.user_attrs["mlflow_run"]).data.tags[MODEL_DIGEST_TAG]
