"""The team stack's fixtures (pipeline.team): one stack per test session, shared by tests/test_team*.py, with a
project trained on it; loaded by conftest.py as a plugin."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, ProjectCopy, make_project_copy, shrink, stack_directory


@contextlib.contextmanager
def running_stack(name: str) -> Iterator[Any]:
    """A team stack in a new directory under /tmp, up for the block, then down and removed (also when the block
    fails); the times of its cold ``up`` and of its ``down`` printed."""
    from pipeline.team import control

    directory = stack_directory()
    try:
        began = time.monotonic()
        stack = control.up(directory)
        print(f"\n{name}: up (cold) {time.monotonic() - began:.1f} s")
        yield stack
    finally:
        began = time.monotonic()
        control.down(directory)
        print(f"\n{name}: down {time.monotonic() - began:.1f} s")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")  # one stack for the whole run, wherever the team tests fall in its order
def team_stack() -> Iterator[Any]:
    with running_stack("team") as stack:
        yield stack


@pytest.fixture(scope="session")  # one trained project on the stack for the whole run
def team_project(team_stack: Any, tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> ProjectCopy:
    """A project on shrunken params, `dvc repro` tracked on the stack (its output kept: logs are checked)."""
    from pipeline.team.stack import client_environment

    project = make_project_copy(tmp_path_factory.mktemp("team") / "project", mirror)
    project.edit_params(shrink)
    project.run("git", "commit", "-qam", "shrunken params")
    project.env.update(client_environment(team_stack))
    began = time.monotonic()
    result = project.dvc("repro")
    print(f"\ndvc repro against the stack: {time.monotonic() - began:.1f} s")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "trained")
    project.output = result.stdout + result.stderr
    return project


def team_command(directory: Path, *arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pipeline.team ARGUMENTS`` on the stack at ``directory``, as ``make team-…`` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.team", *arguments],
        cwd=ROOT,
        env={**os.environ, "PIPELINE_TEAM_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def on_team_server(stack: Any, user: str | None = None) -> Any:
    """This process's MLflow client on the stack as ``user`` (else the shared trainer), checking its certificate
    by the stack's CA (the test's environment is restored after it)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipeline.team.stack import client_environment

    os.environ.update(
        {key: value for key, value in client_environment(stack, user).items() if key.startswith("MLFLOW_")}
    )
    mlflow.set_tracking_uri(stack.mlflow_url)
    return MlflowClient(stack.mlflow_url)
