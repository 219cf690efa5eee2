"""The team stack for real (pipeline.team): PostgreSQL, SeaweedFS's S3 server and `mlflow server` with
basic-auth over TLS on free loopback ports, the pipeline run against it from several clones, and its faults.
Its people and roles: tests/test_team_people.py; backup and restore: tests/test_team_backup.py.

One stack for the whole session (tests/conftest.py's ``team_stack``), under /tmp, started once and stopped at the
end (also when a test fails); one project on shrunken params trained against it. Each test prints the figures it
measures (``-s``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import requests
from conftest import FAULTS, ProjectCopy, clone_project, stack_directory
from mlflow.tracking import MlflowClient
from team_fixtures import on_team_server

from pipeline.team import control, users
from pipeline.team.processes import http_status, listening, owns_port, recorded_process
from pipeline.team.s3 import s3_client
from pipeline.team.stack import Stack, ephemeral_range, load_or_create

# One team stack for the session: its tests stay on one of make test's workers.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("team")]

T = TypeVar("T")


@pytest.fixture
def stack(team_stack: Stack) -> Stack:
    return team_stack


def wait_for(what: str, ready: Callable[[], T], timeout: float, interval: float) -> T:
    """``ready()``'s first answer that is not empty or false, asked every ``interval`` seconds; the test fails
    after ``timeout`` seconds, saying what it waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = ready()
        if answer:
            return answer
        time.sleep(interval)
    pytest.fail(f"waited {timeout:.0f} s for {what}")


def authority(stack: Stack) -> Path:
    return stack.path("ca.pem")


def on_server(stack: Stack) -> MlflowClient:
    return on_team_server(stack)


def clone(project: ProjectCopy, remote: Path, root: Path) -> ProjectCopy:
    cloned = clone_project(remote, root, project.env)
    cloned.run("git", "config", "user.name", "test")
    cloned.run("git", "config", "user.email", "test@example.invalid")
    return cloned


def status(url: str, user: str | None = None, password: str = "", authority: Path | None = None) -> int | None:
    """The HTTP status of a GET of ``url``, anonymous or signed in as ``user`` (basic auth), the server checked
    against ``authority`` (the stack's CA)."""
    return http_status(url, timeout=10, auth=(user, password) if user else None, verify=str(authority))


def plain_http(port: int) -> str:
    """What a plain-HTTP GET on ``port`` gets: ``no answer`` (the connection closed unanswered), or the status
    line and body of an answer."""
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
    except requests.ConnectionError:
        return "no answer"
    return f"{answer.status_code} {answer.text.strip()}"


def test_up_is_idempotent_writes_the_client_env_and_refuses_anonymous_requests(stack):
    """And serves only TLS, verified by the stack's CA, with everything private and on loopback."""
    began = time.monotonic()
    again = control.up(stack.directory)
    seconds = time.monotonic() - began
    print(f"\nteam up (already running): {seconds:.2f} s")
    assert seconds < 10 and again.ports == stack.ports
    assert control.status(stack.directory) == {"postgres": True, "s3": True, "mlflow": True}
    env = (stack.directory / "env").read_text()
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert f"export {name}=" in env
    assert f"export MLFLOW_TRACKING_URI=https://127.0.0.1:{stack.ports['mlflow']}\n" in env
    assert f"export AWS_ENDPOINT_URL_S3=https://127.0.0.1:{stack.ports['s3']}\n" in env
    for name, file in (("MLFLOW_TRACKING_SERVER_CERT_PATH", "ca.pem"), ("AWS_CA_BUNDLE", "ca.pem")):
        assert f'export {name}="$PIPELINE_TEAM_CA_DIR/{file}"\n' in env
    assert f'PIPELINE_TEAM_CA_DIR="${{PIPELINE_TEAM_CA_DIR:-{stack.directory}}}"' in env
    assert "export MLFLOW_TRACKING_USERNAME=trainer\n" in env and stack.secrets["admin_password"] not in env
    # Private: the directory (others may only pass through, as root: PostgreSQL runs as nobody), secrets, logs, data.
    assert stack.directory.stat().st_mode & 0o077 == (0o010 if os.geteuid() == 0 else 0)
    for private in ("env", "secrets.json", "basic_auth.ini", "s3.json", "ca-key.pem", "server-key.pem", "logs/s3.log"):
        assert (stack.directory / private).stat().st_mode & 0o077 == 0, private
    for folder in ("logs", "s3", "seaweedfs", "postgres"):
        assert (stack.directory / folder).stat().st_mode & 0o777 == 0o700, folder
    # SeaweedFS's data (umask 077); it writes its volume-info files (.vif: no object data) 0644 itself, which the
    # 0700 folder keeps from everyone else
    readable = [path for path in stack.path("s3").rglob("*") if path.stat().st_mode & 0o077 and path.suffix != ".vif"]
    assert not readable, readable[:5]
    ca = authority(stack)
    search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(search, authority=ca) == 401  # anonymous
    assert status(search, "trainer", "wrong", ca) == 401
    assert status(search, "trainer", stack.secrets["trainer_password"], ca) == 200
    assert status(f"{stack.mlflow_url}/", authority=ca) == 401  # the UI too
    # TLS: verified against the stack's CA, refused against the public ones; plain HTTP gets no service.
    for url in (f"{stack.mlflow_url}/health", stack.s3_url):
        with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            requests.get(url, timeout=10)
    assert plain_http(stack.ports["mlflow"]) == "no answer"
    # Go's TLS server answers plain HTTP with this fixed refusal; nothing of S3 is served.
    assert plain_http(stack.ports["s3"]) == "400 Client sent an HTTP request to an HTTPS server."
    # SeaweedFS's own servers take only a client certificate of the stack's CA.
    context = ssl.create_default_context(cafile=str(ca))
    for name in ("master", "volume", "filer", "master_grpc", "volume_grpc", "filer_grpc", "s3_grpc"):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            raw = socket.create_connection(("127.0.0.1", stack.ports[name]), timeout=10)
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as connection:
                connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                connection.recv(100)
    with users.as_admin(stack) as (auth, tracking):
        assert auth.get_user("trainer").is_admin is False
        for name in ("mnist", "fable"):
            experiment = tracking.get_experiment_by_name(name).experiment_id
            for resource in (("experiment", experiment), ("registered_model", name)):
                assert auth.get_user_permission("trainer", *resource).permission == "EDIT", resource
    assert os.environ.get("MLFLOW_TRACKING_USERNAME") != "admin"  # the admin's login only inside the block
    # Only loopback, and no port from the range the kernel hands to outgoing connections.
    low, high = ephemeral_range()
    assert not [port for port in stack.ports.values() if low <= port <= high], (stack.ports, low, high)
    shown = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
    for port in stack.ports.values():
        assert f"0.0.0.0:{port} " not in shown and f"*:{port} " not in shown


def test_up_and_down_of_a_second_stack_leave_nothing_listening():
    """The second stack started by two `team up`s at once: one waits for the other, one stack runs."""
    directory = stack_directory()
    try:
        began = time.monotonic()
        both = [
            subprocess.Popen(
                [sys.executable, "-m", "pipeline.team", "up"],
                env={**os.environ, "PIPELINE_TEAM_DIR": str(directory)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=600) for process in both]
        print(f"\ntwo team ups at once on a new stack: {time.monotonic() - began:.1f} s")
        assert [process.returncode for process in both] == [0, 0], outputs
        assert sum("waiting for another team command" in err for _, err in outputs) == 1, outputs
        stack = load_or_create(directory, environ={})
        assert control.status(directory) == {"postgres": True, "s3": True, "mlflow": True}
        for service in ("mlflow", "s3"):  # one server each, the one its pid file names, on its port
            pid = recorded_process(directory / f"{service}.pid")
            assert pid is not None and owns_port(pid, stack.ports[service]), service
        weeds = subprocess.run(["pgrep", "-f", f"weed server .*{directory}/s3"], capture_output=True, text=True)
        assert len(weeds.stdout.split()) == 1, weeds
        began = time.monotonic()
        control.down(directory)
        print(f"second stack: down {time.monotonic() - began:.1f} s")
        assert not [name for name, port in stack.ports.items() if listening(port)]
        assert control.status(directory) == {"postgres": False, "s3": False, "mlflow": False}
        assert (directory / "postgres" / "data" / "PG_VERSION").exists()  # the data stays
        began = time.monotonic()
        control.up(directory)  # and comes back
        print(f"second stack: up again on its data {time.monotonic() - began:.1f} s")
        url = f"{stack.mlflow_url}/api/2.0/mlflow/users/current"
        assert status(url, "trainer", stack.secrets["trainer_password"], directory / "ca.pem") == 200
    finally:
        control.down(directory)
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
    s3 = s3_client(
        stack.s3_url, stack.secrets["mlflow_s3_access_key"], stack.secrets["mlflow_s3_secret_key"], authority(stack)
    )
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
    s3 = s3_client(
        stack.s3_url, stack.secrets["dvc_s3_access_key"], stack.secrets["dvc_s3_secret_key"], authority(stack)
    )
    assert s3.list_objects_v2(Bucket="dvc").get("KeyCount", 0) > 0


def test_an_unreachable_server_fails_the_stage_at_once_in_one_line(team_project):
    nowhere = "http://127.0.0.1:9"
    began = time.monotonic()
    result = team_project.run(
        sys.executable, "-m", "pipeline.stages.train", "fable", check=False, env_extra={"MLFLOW_TRACKING_URI": nowhere}
    )
    seconds = time.monotonic() - began
    print(f"\nunreachable tracking server: stage failed after {seconds:.1f} s")
    assert result.returncode == 1 and seconds < 30
    (line,) = result.stderr.strip().splitlines()  # one line: no traceback
    assert line.startswith(f"train fable: error: MLFLOW_TRACKING_URI={nowhere}: no MLflow server answers ("), line
    assert "Connection refused" in line
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
    project = team_project.copy_to(tmp_path / "project")
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
        wait_for("epoch 1 to end", lambda: paused.exists() or process.poll() is not None, 600, interval=0.2)
        assert paused.exists(), process.communicate(timeout=60)[0][-3000:]
        control.stop(stack, "mlflow")  # after epoch 1's metrics: epoch 2's find the server gone
        paused.unlink()
        time.sleep(10)
        began = time.monotonic()
        control.start(stack, "mlflow")
        print(f"\nMLflow server down 10 s mid-training, back after {time.monotonic() - began:.1f} s more")
        output, _ = process.communicate(timeout=600)
    finally:
        process.kill()
        control.start(stack, "mlflow")
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
    project = team_project.copy_to(tmp_path / "project")
    (project.root / "notes.txt").write_text(f"new data {time.time()}\n")
    project.dvc("add", "notes.txt")
    control.stop(stack, "s3")
    try:
        began = time.monotonic()
        failed = project.dvc("push", "-r", "team", check=False)
        seconds = time.monotonic() - began
    finally:
        control.start(stack, "s3")
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
