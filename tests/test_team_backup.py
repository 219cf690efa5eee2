"""Backup and restore of the team stack (``python -m pipeline.team backup|restore``, ``make team-backup``,
``make team-restore``) on the real services: a backup, changes, then a restore brings back exactly the backed-up
runs, registry, artifacts, people and DVC remote; bad input is one line that changes nothing. And a model file
changed in the artifact store is refused when loaded (its sha256). The stack: the session's (tests/conftest.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from team_fixtures import on_team_server, team_command

from pipeline.team import control
from pipeline.team.backup import backup
from pipeline.team.locking import stack_lock
from pipeline.team.processes import http_status
from pipeline.team.s3 import stack_client
from pipeline.team.stack import load_or_create
from pipeline.team.users import add_user, as_admin

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("team")]


def snapshot(stack) -> dict:
    """What a restore must bring back, as the admin sees it: every run (deleted ones too) with its state and
    metrics, every registered version with its tags, the aliases, the people, and both buckets' objects."""
    with as_admin(stack) as (_, tracking):
        experiments = [tracking.get_experiment_by_name(name).experiment_id for name in ("mnist", "fable")]
        runs = {
            run.info.run_id: (run.info.lifecycle_stage, run.info.status, run.data.metrics, run.data.tags)
            for run in tracking.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1000)
        }
        versions = {
            (version.name, version.version): version.tags
            for name in ("mnist", "fable")
            for version in tracking.search_model_versions(f"name = '{name}'")
        }
        aliases = {name: tracking.get_registered_model(name).aliases for name in ("mnist", "fable")}
    client = stack_client(stack)

    def content(bucket: str, item: dict) -> tuple[int, str]:
        """Size and MD5 (the ETag of an object put whole; one sent in parts has another: then its sha256)."""
        if "-" not in item["ETag"]:
            return item["Size"], item["ETag"]
        body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return item["Size"], f'"{hashlib.md5(body).hexdigest()}"'

    objects = {
        bucket: {
            item["Key"]: content(bucket, item)
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])
        }
        for bucket in ("mlflow", "dvc")
    }
    people = sorted(json.loads(stack.path("secrets.json").read_text())["users"])
    return {"runs": runs, "versions": versions, "aliases": aliases, "objects": objects, "people": people}


def story(stack, run_id: str, directory: Path) -> str:
    with as_admin(stack) as (_, tracking):
        return Path(tracking.download_artifacts(run_id, "reports/fable_story.txt", str(directory))).read_text()


def test_a_backup_then_changes_then_a_restore_bring_back_exactly_the_backed_up_stack(
    team_stack, team_project, tmp_path
):
    stack = team_stack
    team_project.dvc("push", "-r", "team")  # the DVC remote has something to lose
    before = snapshot(stack)
    evaluated = next(run for run, (_, _, metrics, _) in before["runs"].items() if "accuracy" in metrics)
    told = story(stack, evaluated, tmp_path / "before")
    began = time.monotonic()
    made = team_command(stack.directory, "backup")
    print(f"\nteam backup: {time.monotonic() - began:.1f} s")
    assert made.returncode == 0, made.stderr
    path = Path(made.stdout.strip().splitlines()[-1])  # its path: the last line
    assert path.parent == stack.path("backups") and (path / "manifest.json").is_file()
    assert path.stat().st_mode & 0o777 == 0o700 and (path / "secrets.json").stat().st_mode & 0o777 == 0o600
    # Changes: a new run with an artifact, a run deleted, a version's tag, the DVC remote, a person.
    on_team_server(stack)
    mlflow.set_experiment("fable")
    with mlflow.start_run(run_name="after the backup"):
        mlflow.log_text("not in the backup", "notes.txt")
    with as_admin(stack) as (_, tracking):
        tracking.delete_run(evaluated)
        champion = tracking.get_model_version_by_alias("fable", "champion")
        tracking.set_model_version_tag("fable", champion.version, "test_accuracy", "1.0")
    client = stack_client(stack)
    client.put_object(Bucket="dvc", Key="after-the-backup", Body=b"x")
    client.delete_object(Bucket="dvc", Key=next(iter(before["objects"]["dvc"])))
    with stack_lock(stack.directory):
        add_user(load_or_create(stack.directory, environ={}), "late", "viewer")
    changed = snapshot(stack)
    assert all(changed[part] != before[part] for part in ("runs", "versions", "objects", "people"))
    control.down(stack.directory)
    try:
        began = time.monotonic()
        restored = team_command(stack.directory, "restore", str(path))
        print(f"team restore (stack down, then up): {time.monotonic() - began:.1f} s")
    finally:
        control.up(stack.directory)  # the other tests' stack, whatever happened
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.strip().splitlines()[-1].startswith(f"team stack restored from {path}")
    assert control.status(stack.directory) == {"postgres": True, "s3": True, "mlflow": True}
    after = snapshot(stack)
    for part in before:
        assert after[part] == before[part], part
    assert story(stack, evaluated, tmp_path / "after") == told  # its artifacts readable through the server
    assert "in sync" in team_project.dvc("status", "-c", "-r", "team").stdout  # the DVC remote, over TLS
    assert not stack.path("users", "late.env").exists()
    current = f"{stack.mlflow_url}/api/2.0/mlflow/users/current"
    late = load_or_create(stack.directory, environ={}).users.get("late", {}).get("password", "x")
    assert http_status(current, auth=("late", late), verify=str(stack.path("ca.pem"))) == 401


def test_bad_input_to_backup_and_restore_is_one_line_and_changes_nothing(team_stack, tmp_path):
    stack = team_stack
    good = backup(stack.directory)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(good, corrupt)
    dump = corrupt / "postgres" / "mlflow.dump"
    data = dump.read_bytes()
    dump.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit of the last byte
    no_manifest = tmp_path / "no-manifest"
    no_manifest.mkdir()
    nowhere = tmp_path / "nowhere"
    before = snapshot(stack)
    cases = {
        ("restore", str(nowhere)): f"backup {nowhere}: no such folder",
        ("restore", str(no_manifest)): f"backup {no_manifest}: manifest.json is missing or not a team backup's",
        ("restore", str(corrupt)): f"backup {corrupt}: postgres/mlflow.dump does not match its sha256",
        ("restore", str(good)): f"the stack at {stack.directory} is running (postgres, s3, mlflow)",
        ("restore",): "restore takes BACKUP, not 0",
        ("backup", "now"): "backup takes no arguments, not 1",
    }
    for arguments, problem in cases.items():
        result = team_command(stack.directory, *arguments)
        assert result.returncode == 1, (arguments, result.stdout, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"team {arguments[0]}: error: {problem}"), line
    assert snapshot(stack) == before
    empty = tmp_path / "no-stack"
    empty.mkdir()
    result = team_command(empty, "backup")
    assert result.returncode == 1
    assert result.stderr.strip() == f"team backup: error: no team stack at {empty}: nothing to back up"
    assert list(empty.iterdir()) == []
    shutil.rmtree(good)


def test_a_model_file_changed_in_the_artifact_store_is_refused_when_loaded(team_stack, team_project):
    stack = team_stack
    with as_admin(stack) as (_, tracking):
        champion = tracking.get_model_version_by_alias("fable", "champion")
    model_id = champion.model_id or champion.source.removeprefix("models:/")
    client = stack_client(stack)  # the stack's own keys: no client's reach this bucket
    (key,) = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="mlflow")
        for item in page.get("Contents", [])
        if model_id in item["Key"] and item["Key"].endswith(".keras")
    ]
    original = client.get_object(Bucket="mlflow", Key=key)["Body"].read()
    client.put_object(Bucket="mlflow", Key=key, Body=original[:-1] + bytes([original[-1] ^ 1]))
    try:
        on_team_server(stack)
        with pytest.raises(MlflowException, match="sha256 .* is not the .* recorded when it was"):
            mlflow.pyfunc.load_model("models:/fable@champion")
    finally:
        client.put_object(Bucket="mlflow", Key=key, Body=original)
