"""The team stack for real (pipeline.team.stack): PostgreSQL, SeaweedFS's S3 server and `mlflow server` with
basic-auth on free loopback ports, the pipeline run against it from several clones, and its faults.

One stack for the whole module, under /tmp, started once and stopped at the end (also when a test fails);
one project on shrunken params trained against it. Each test prints the figures it measures (``-s``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    FAULTS,
    ProjectCopy,
    chromium_page,
    chromium_page_signed_in,
    clone_project,
    make_project_copy,
    shrink,
    stack_directory,
)
from mlflow.tracking import MlflowClient

from pipeline.team import stack as team

pytestmark = pytest.mark.slow

SWEEP = {"worker-a": (20, 24), "worker-b": (28, 36)}  # fable.units each queue worker runs (shrink: 32)


@pytest.fixture(scope="module")
def stack() -> Iterator[team.Stack]:
    directory = stack_directory()
    try:
        began = time.monotonic()
        stack = team.up(directory)
        print(f"\nteam up (cold): {time.monotonic() - began:.1f} s")
        yield stack
    finally:
        began = time.monotonic()
        team.down(directory)
        print(f"\nteam down: {time.monotonic() - began:.1f} s")
        shutil.rmtree(directory, ignore_errors=True)


def on_server(stack: team.Stack) -> MlflowClient:
    """This process's MLflow client as the trainer on the stack (the test's environment is restored after it)."""
    os.environ.update(
        {key: value for key, value in team.client_environment(stack).items() if key.startswith("MLFLOW_")}
    )
    import mlflow

    mlflow.set_tracking_uri(stack.mlflow_url)
    return MlflowClient(stack.mlflow_url)


@pytest.fixture(scope="module")
def team_project(stack: team.Stack, tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> ProjectCopy:
    """A project on shrunken params, `dvc repro` tracked on the stack (its output kept: logs are checked)."""
    project = make_project_copy(tmp_path_factory.mktemp("team") / "project", mirror)
    project.edit_params(shrink)
    project.run("git", "commit", "-qam", "shrunken params")
    project.env.update(team.client_environment(stack))
    began = time.monotonic()
    result = project.dvc("repro")
    print(f"\ndvc repro against the stack: {time.monotonic() - began:.1f} s")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "trained")
    project.output = result.stdout + result.stderr
    return project


def copy_of(project: ProjectCopy, root: Path) -> ProjectCopy:
    shutil.copytree(project.root, root, symlinks=True)
    return ProjectCopy(root=root, env=dict(project.env))


def clone(project: ProjectCopy, remote: Path, root: Path) -> ProjectCopy:
    cloned = clone_project(remote, root, project.env)
    cloned.run("git", "config", "user.name", "test")
    cloned.run("git", "config", "user.email", "test@example.invalid")
    return cloned


def status(url: str, user: str | None = None, password: str = "") -> int | None:
    return team.http_status(
        url, timeout=10, headers={"Authorization": team.authorization(user, password)} if user else None
    )


def test_up_is_idempotent_writes_the_client_env_and_refuses_anonymous_requests(stack):
    began = time.monotonic()
    again = team.up(stack.directory)
    seconds = time.monotonic() - began
    print(f"\nteam up (already running): {seconds:.2f} s")
    assert seconds < 10 and again.ports == stack.ports
    assert team.status(stack.directory) == {"postgres": True, "s3": True, "mlflow": True}
    env = (stack.directory / "env").read_text()
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL_S3",
    ):
        assert f"export {name}=" in env
    assert "export MLFLOW_TRACKING_USERNAME=trainer\n" in env and stack.secrets["admin_password"] not in env
    for private in ("env", "secrets.json", "basic_auth.ini", "s3.json"):
        assert (stack.directory / private).stat().st_mode & 0o077 == 0, private
    search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(search) == 401  # anonymous
    assert status(search, "trainer", "wrong") == 401
    assert status(search, "trainer", stack.secrets["trainer_password"]) == 200
    assert status(f"{stack.mlflow_url}/", None) == 401  # the UI too
    trainer = team.api(stack, "GET", "/api/2.0/mlflow/users/get?username=trainer")["user"]
    assert trainer["is_admin"] is False
    # Only loopback: every port of the stack answers on 127.0.0.1 and is bound nowhere else.
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
    for port in stack.ports.values():
        assert f"0.0.0.0:{port} " not in listening and f"*:{port} " not in listening


def test_up_and_down_of_a_second_stack_leave_nothing_listening():
    directory = stack_directory()
    try:
        began = time.monotonic()
        stack = team.up(directory)
        cold = time.monotonic() - began
        began = time.monotonic()
        team.down(directory)
        print(f"\nsecond stack: up {cold:.1f} s, down {time.monotonic() - began:.1f} s")
        assert not [name for name, port in stack.ports.items() if team.listening(port)]
        assert team.status(directory) == {"postgres": False, "s3": False, "mlflow": False}
        assert (directory / "postgres" / "data" / "PG_VERSION").exists()  # the data stays
        began = time.monotonic()
        team.up(directory)  # and comes back
        print(f"second stack: up again on its data {time.monotonic() - began:.1f} s")
        assert (
            status(f"{stack.mlflow_url}/api/2.0/mlflow/users/current", "trainer", stack.secrets["trainer_password"])
            == 200
        )
    finally:
        team.down(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_dvc_repro_tracks_registers_and_stores_artifacts_on_the_stack(stack, team_project):
    client = on_server(stack)
    for name in ("mnist", "fable"):
        runs = team_project.runs(name, store=stack.mlflow_url)
        finished = [run for run in runs if run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics]
        assert finished, runs
        run = finished[0]
        assert run.data.params[f"{name}.epochs"] == "2"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
        assert {item.path for item in client.list_artifacts(run.info.run_id)} >= {"reports", "plots"}
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.tags["test_accuracy"] and client.get_model_version_by_alias(name, "latest")
    # The artifacts are in the S3 bucket, written by the server (with its own keys): proxied.
    s3 = team.s3_client(stack.s3_url, stack.secrets["mlflow_s3_access_key"], stack.secrets["mlflow_s3_secret_key"])
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(key.endswith("reports/fable_story.txt") for key in keys), keys[:20]
    assert any(key.endswith("MLmodel") for key in keys)
    assert not (team_project.root / "mlflow.db").exists() and not (team_project.root / "mlruns").exists()


def test_dvc_push_then_a_fresh_clone_pulls_everything_without_retraining(stack, team_project, tmp_path):
    team_project.dvc("push", "-r", "team")
    remote = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(team_project.root), str(remote)], check=True)
    fresh = clone(team_project, remote, tmp_path / "fresh")
    began = time.monotonic()
    fresh.dvc("pull", "-r", "team")
    print(f"\ndvc pull -r team into a fresh clone: {time.monotonic() - began:.1f} s")
    assert fresh.dvc("status").stdout.strip() == "Data and pipelines are up to date."
    for output in ("models/mnist.keras", "models/fable.keras", "metrics/mnist.json"):
        assert (fresh.root / output).read_bytes() == (team_project.root / output).read_bytes()
    s3 = team.s3_client(stack.s3_url, stack.secrets["dvc_s3_access_key"], stack.secrets["dvc_s3_secret_key"])
    assert s3.list_objects_v2(Bucket="dvc").get("KeyCount", 0) > 0


def wait_for_queue(project: ProjectCopy, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = project.dvc("queue", "status").stdout
        if "Queued" not in shown and "Running" not in shown:
            return shown
        time.sleep(3)
    pytest.fail(f"queue of {project.root} still busy:\n{shown}")


def test_two_queue_workers_share_a_sweep_and_a_third_clone_sees_all_of_it(stack, team_project, tmp_path):
    team_project.dvc("push", "-r", "team")
    remote = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(team_project.root), str(remote)], check=True)
    baseline = team_project.run("git", "rev-parse", "HEAD").stdout.strip()
    workers = {name: clone(team_project, remote, tmp_path / name) for name in SWEEP}
    began = time.monotonic()
    for name, worker in workers.items():
        worker.dvc("pull", "-r", "team")  # the inputs, so that the queued experiments only train and evaluate
        for units in SWEEP[name]:
            worker.dvc("exp", "run", "--queue", "-S", f"fable.units={units}", "--name", f"{name}-{units}")
    for worker in workers.values():
        worker.dvc("queue", "start", "-j", "1")
    for name, worker in workers.items():
        shown = wait_for_queue(worker)
        assert shown.count("Success") == 2, (
            shown,
            [worker.dvc("queue", "logs", f"{name}-{units}", check=False).stdout[-2000:] for units in SWEEP[name]],
        )
        worker.dvc("exp", "push", "-r", "team", "origin")
        worker.dvc("queue", "stop")
    print(f"\nsweep of 4 on two workers (pull, queue, run, push): {time.monotonic() - began:.1f} s")
    viewer = clone(team_project, remote, tmp_path / "viewer")
    viewer.dvc("exp", "pull", "-r", "team", "origin")
    shown = viewer.dvc("exp", "show", "--json").stdout
    names = {f"{name}-{units}" for name, sweep in SWEEP.items() for units in sweep}
    assert all(name in shown for name in names), shown[-3000:]
    viewer.dvc("exp", "apply", "worker-b-28")
    assert viewer.params()["fable"]["units"] == 28 and (viewer.root / "models/fable.keras").exists()
    # The server has each run with its experiment name, the baseline commit and its artifacts.
    client = on_server(stack)
    runs = {run.data.tags.get("dvc.exp_name"): run for run in team_project.runs("fable", store=stack.mlflow_url)}
    assert set(runs) >= names, {
        name: (run.info.status, run.info.run_name, run.data.params.get("fable.units")) for name, run in runs.items()
    }
    for name in names:
        run = runs[name]
        assert run.info.status == "FINISHED" and run.info.run_name == name
        assert run.data.tags["dvc.baseline_rev"] == baseline
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40
        assert run.data.params["fable.units"] == name.rsplit("-", 1)[1] and "test_accuracy" in run.data.metrics
        assert {item.path for item in client.list_artifacts(run.info.run_id, "reports")} >= {"reports/fable_story.txt"}
    registered = {version.tags.get("dvc_experiment") for version in client.search_model_versions("name = 'fable'")}
    assert registered >= names


def test_an_unreachable_server_fails_the_stage_at_once_in_one_line(team_project):
    nowhere = "http://127.0.0.1:9"
    began = time.monotonic()
    result = team_project.run(
        sys.executable, "-m", "pipeline.stages.train", "fable", check=False, env_extra={"MLFLOW_TRACKING_URI": nowhere}
    )
    seconds = time.monotonic() - began
    print(f"\nunreachable tracking server: stage failed after {seconds:.1f} s")
    assert result.returncode == 1 and seconds < 30
    assert (
        result.stderr.strip() == f"train fable: error: MLFLOW_TRACKING_URI={nowhere}: no MLflow server answers "
        "([Errno 111] Connection refused)"
    )
    assert "epoch" not in result.stdout


def test_a_wrong_password_fails_the_stage_in_one_line_naming_the_user(stack, team_project):
    began = time.monotonic()
    result = team_project.run(
        sys.executable,
        "-m",
        "pipeline.stages.evaluate",
        "fable",
        check=False,
        env_extra={"MLFLOW_TRACKING_PASSWORD": "not-the-password"},
    )
    print(f"\nwrong password: stage failed after {time.monotonic() - began:.1f} s")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"evaluate fable: error: authentication failed for user trainer at {stack.mlflow_url} "
        "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)"
    )


def test_the_server_stopped_mid_training_and_started_again_loses_nothing(stack, team_project, tmp_path):
    project = copy_of(team_project, tmp_path / "project")
    project.edit_params(lambda raw: raw["fable"].update(epochs=3))
    paused = tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train_fable", "evaluate_fable"],
        cwd=project.root,
        env={**project.env, "PIPELINE_PAUSE_AT": f"1:{paused}", "PYTHONPATH": str(FAULTS)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not paused.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert paused.exists(), process.communicate(timeout=60)[0][-3000:]
        team.stop(stack, "mlflow")  # after epoch 1's metrics: epoch 2's find the server gone
        paused.unlink()
        time.sleep(10)
        began = time.monotonic()
        team.start(stack, "mlflow")
        print(f"\nMLflow server down 10 s mid-training, back after {time.monotonic() - began:.1f} s more")
        output, _ = process.communicate(timeout=600)
    finally:
        process.kill()
        team.start(stack, "mlflow")
    assert process.returncode == 0, output[-3000:]
    on_server(stack)
    (run,) = [
        run for run in project.runs("fable", store=stack.mlflow_url) if run.data.params.get("fable.epochs") == "3"
    ]
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    client = MlflowClient(stack.mlflow_url)
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    assert run.outputs.model_outputs  # the model


def test_the_object_store_down_during_dvc_push_then_a_second_push_completes(stack, team_project, tmp_path):
    project = copy_of(team_project, tmp_path / "project")
    (project.root / "notes.txt").write_text(f"new data {time.time()}\n")
    project.dvc("add", "notes.txt")
    team.stop(stack, "s3")
    try:
        began = time.monotonic()
        failed = project.dvc("push", "-r", "team", check=False)
        seconds = time.monotonic() - began
    finally:
        team.start(stack, "s3")
    errors = [line for line in failed.stderr.splitlines() if line.startswith("ERROR")]
    print(f"\nS3 down: dvc push failed after {seconds:.1f} s: {errors}")
    assert failed.returncode != 0 and errors
    assert "Traceback" not in failed.stderr
    began = time.monotonic()
    pushed = project.dvc("push", "-r", "team")
    print(f"S3 back: dvc push {time.monotonic() - began:.1f} s: {pushed.stdout.strip().splitlines()[-1:]}")
    assert "pushed" in pushed.stdout


def test_credentials_reach_no_git_params_tags_dvc_files_or_logs(stack, team_project):
    secrets = [value for value in stack.secrets.values()]
    client = on_server(stack)
    for name in ("mnist", "fable"):
        for run in team_project.runs(name, store=stack.mlflow_url):
            recorded = json.dumps([run.data.params, run.data.tags, run.info.run_name])
            assert not [secret for secret in secrets if secret in recorded], run.info.run_id
        for version in client.search_model_versions(f"name = '{name}'"):
            assert not [secret for secret in secrets if secret in json.dumps(version.tags)]
    tracked = team_project.run("git", "ls-files").stdout.split()
    texts = {path: (team_project.root / path).read_text(errors="replace") for path in tracked}
    texts["git log"] = team_project.run("git", "log", "-p", "--all").stdout
    texts["dvc repro's output"] = team_project.output
    for path in [*team_project.root.glob("*.dvc"), *(team_project.root / ".dvc").glob("config*")]:
        if not path.is_file():
            continue
        texts[str(path)] = path.read_text()
    for log in (stack.directory / "logs").glob("*.log"):
        texts[str(log)] = log.read_text(errors="replace")
    leaks = {where: secret for where, text in texts.items() for secret in secrets if secret in text}
    assert not leaks, sorted(leaks)


def test_the_server_ui_shows_the_experiments_after_a_login(stack, team_project, tmp_path):
    login = team.authorization("trainer", stack.secrets["trainer_password"])
    page = chromium_page_signed_in(
        f"{stack.mlflow_url}/#/experiments", tmp_path / "experiments.png", login, until="mnist"
    )
    assert "fable" in page and "mnist" in page, page[-2000:]
    assert "trainer" in page  # who is signed in
    assert (tmp_path / "experiments.png").stat().st_size > 10_000
    anonymous = chromium_page(f"{stack.mlflow_url}/#/experiments", tmp_path / "anonymous.png")
    assert "mnist" not in anonymous
    keep = os.environ.get("PIPELINE_UI_SCREENSHOT")
    if keep:
        shutil.copy(tmp_path / "experiments.png", keep)
