"""The team stack's people (``python -m pipeline.team user NAME ROLE``, ``make team-user``) against the real
services: a viewer reads everything and writes nothing, a trainer trains but cannot delete another's run or
grant permissions, each person's S3 keys reach only what the role allows, and bad input is one line that changes
nothing. The stack: the session's (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError
from team_fixtures import team_command

from pipeline.team.locking import stack_lock
from pipeline.team.s3 import s3_client, stack_client
from pipeline.team.stack import load_or_create
from pipeline.team.users import add_user, as_admin

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("team")]

PEOPLE = {"alice": "viewer", "bob": "trainer", "carol": "trainer"}


def sourced(path: Path) -> dict[str, str]:
    """The MLflow, AWS and CA settings a shell has after ``source path``."""
    shown = subprocess.run(
        ["bash", "-c", f'source "{path}" && env -0'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    pairs = (entry.split("=", 1) for entry in shown.split("\0") if "=" in entry)
    return {name: value for name, value in pairs if name.startswith(("MLFLOW_", "AWS_", "REQUESTS_"))}


@pytest.fixture(scope="session")  # session: make test's schedule interleaves modules
def people(team_stack) -> dict[str, dict[str, str]]:
    """alice (viewer, through the command, as `make team-user` runs it), bob and carol (trainers); each one's
    settings as their ``users/<name>.env`` gives them."""
    began = time.monotonic()
    made = team_command(team_stack.directory, "user", "alice", "viewer")
    assert made.returncode == 0, made.stderr
    print(f"\nteam user alice viewer: {time.monotonic() - began:.1f} s")
    with stack_lock(team_stack.directory):
        stack = load_or_create(team_stack.directory, environ={})
        for name in ("bob", "carol"):
            stack = add_user(stack, name, PEOPLE[name])
    return {name: sourced(team_stack.path("users", f"{name}.env")) for name in PEOPLE}


def call(settings: dict[str, str], method: str, path: str, **arguments) -> requests.Response:
    """A request to the MLflow server as the person of ``settings``, checking it by the stack's CA."""
    return requests.request(
        method,
        settings["MLFLOW_TRACKING_URI"] + path,
        auth=(settings["MLFLOW_TRACKING_USERNAME"], settings["MLFLOW_TRACKING_PASSWORD"]),
        verify=settings["MLFLOW_TRACKING_SERVER_CERT_PATH"],
        timeout=30,
        **arguments,
    )


def s3_of(settings: dict[str, str]):
    return s3_client(
        settings["AWS_ENDPOINT_URL_S3"],
        settings["AWS_ACCESS_KEY_ID"],
        settings["AWS_SECRET_ACCESS_KEY"],
        settings["AWS_CA_BUNDLE"],
    )


def refused(action) -> str:
    """The S3 error code ``action()`` fails with ("" when it succeeds)."""
    try:
        action()
    except ClientError as error:
        return error.response["Error"]["Code"]
    return ""


def experiment(settings: dict[str, str], name: str) -> str:
    answer = call(settings, "GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
    return answer.json()["experiment"]["experiment_id"]


def test_each_person_gets_every_setting_of_env_with_their_own_login_and_keys(team_stack, people):
    shared = sourced(team_stack.path("env"))
    for name, settings in people.items():
        file = team_stack.path("users", f"{name}.env")
        assert file.stat().st_mode & 0o777 == 0o600
        assert set(settings) == set(shared), name
        assert settings["MLFLOW_TRACKING_USERNAME"] == name
        for same in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "MLFLOW_TRACKING_SERVER_CERT_PATH"):
            assert settings[same] == shared[same]
        for own in ("MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert settings[own] != shared[own]
        assert call(settings, "GET", "/api/2.0/mlflow/users/current").json()["user"]["username"] == name
    roles = json.loads(team_stack.path("roles.json").read_text())  # other tests on the stack may add people
    assert {name: roles.get(name) for name in ("trainer", *PEOPLE)} == {"trainer": "trainer", **PEOPLE}


def test_a_viewer_reads_everything_and_writes_nothing(team_stack, people, team_project):
    alice = people["alice"]
    mnist = experiment(alice, "mnist")
    writes = {
        "experiments/create": {"name": "alice-experiment"},
        "runs/create": {"experiment_id": mnist},
        "registered-models/create": {"name": "alice-model"},
    }
    for path, body in writes.items():
        answer = call(alice, "POST", f"/api/2.0/mlflow/{path}", json=body)
        assert answer.status_code == 403, (path, answer.text)
    found = call(alice, "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": [mnist]}).json()["runs"]
    run = next(run for run in found if any(metric["key"] == "test_accuracy" for metric in run["data"]["metrics"]))
    listed = call(alice, "GET", "/api/2.0/mlflow/artifacts/list", params={"run_id": run["info"]["run_id"]})
    assert {"reports", "plots"} <= {item["path"] for item in listed.json()["files"]}
    s3 = s3_of(alice)
    stack_client(team_stack).put_object(Bucket="dvc", Key="shared.txt", Body=b"pushed by the team")
    try:
        assert s3.get_object(Bucket="dvc", Key="shared.txt")["Body"].read() == b"pushed by the team"  # the DVC remote
        assert "shared.txt" in [item["Key"] for item in s3.list_objects_v2(Bucket="dvc")["Contents"]]
        assert refused(lambda: s3.put_object(Bucket="dvc", Key="alice.txt", Body=b"x")) == "AccessDenied"
        assert refused(lambda: s3.delete_object(Bucket="dvc", Key="shared.txt")) == "AccessDenied"
        assert refused(lambda: s3.list_objects_v2(Bucket="mlflow")) == "AccessDenied"
    finally:
        stack_client(team_stack).delete_object(Bucket="dvc", Key="shared.txt")


def test_a_trainer_trains_but_cannot_delete_anothers_run_nor_grant(team_stack, people):
    bob, carol = people["bob"], people["carol"]
    mnist = experiment(bob, "mnist")
    created = call(bob, "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": mnist, "run_name": "bob's"})
    assert created.status_code == 200, created.text
    run_id = created.json()["run"]["info"]["run_id"]
    try:
        assert call(carol, "POST", "/api/2.0/mlflow/runs/delete", json={"run_id": run_id}).status_code == 403
        kept = call(carol, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]["info"]
        assert kept["lifecycle_stage"] == "active" and kept["run_name"] == "bob's"
        grant = {"username": "alice", "resource_type": "experiment", "resource_id": mnist, "permission": "EDIT"}
        assert call(carol, "POST", "/api/2.0/mlflow/users/permissions/grant", json=grant).status_code == 403
        new_user = {"username": "mallory", "password": "a-long-enough-password"}
        assert call(carol, "POST", "/api/2.0/mlflow/users/create", json=new_user).status_code == 403
    finally:
        with as_admin(team_stack) as (_, tracking):
            tracking.delete_run(run_id)
    s3 = s3_of(bob)
    s3.put_object(Bucket="dvc", Key="bob.txt", Body=b"pushed by bob")  # the DVC remote: write
    try:
        # The MLflow server alone holds keys to the artifacts' bucket.
        assert refused(lambda: s3.list_objects_v2(Bucket="mlflow")) == "AccessDenied"
        assert refused(lambda: s3.put_object(Bucket="mlflow", Key="bob.txt", Body=b"x")) == "AccessDenied"
    finally:
        s3.delete_object(Bucket="dvc", Key="bob.txt")


def test_bad_input_to_team_user_is_one_line_and_changes_nothing(team_stack, people):
    before = json.loads(team_stack.path("secrets.json").read_text())["users"]
    files = sorted(path.name for path in team_stack.path("users").iterdir())  # other tests may add people too
    cases = {
        ("zed", "admin"): "role 'admin' of user zed: not one of viewer, trainer",
        ("alice", "viewer"): "user alice exists already",
        ("Eve!", "viewer"): "user name 'Eve!': use 2-32 characters",
        ("../x", "trainer"): "user name '../x'",
        ("trainer", "viewer"): "user trainer: a name the stack keeps for itself",
        ("zed",): "user takes NAME ROLE",
    }
    for arguments, problem in cases.items():
        result = team_command(team_stack.directory, "user", *arguments)
        assert result.returncode == 1, (arguments, result.stdout, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"team user: error: {problem}"), line
    assert json.loads(team_stack.path("secrets.json").read_text())["users"] == before
    assert sorted(path.name for path in team_stack.path("users").iterdir()) == files
    assert {f"{name}.env" for name in PEOPLE} <= set(files)
    with as_admin(team_stack) as (auth, _), pytest.raises(Exception, match="zed"):
        auth.get_user("zed")
