"""The team stack's files, without starting it (tests/test_team.py starts the real one)."""

from __future__ import annotations

from pipeline.team import control
from pipeline.team.stack import PORT_NAMES, load_or_create, write_client_environment


def test_first_use_picks_distinct_ports_and_keeps_secrets_private(tmp_path):
    stack = load_or_create(tmp_path / "team")
    assert len(set(stack.ports.values())) == len(PORT_NAMES)
    assert (tmp_path / "team" / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert load_or_create(tmp_path / "team") == stack  # kept: the same ports and secrets next time
    assert load_or_create(tmp_path / "other").secrets["trainer_password"] != stack.secrets["trainer_password"]


def test_the_client_environment_is_the_trainer_and_the_dvc_keys_only(tmp_path):
    stack = load_or_create(tmp_path / "team")
    path = write_client_environment(stack)
    text = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{stack.ports['mlflow']}\n" in text
    assert "export MLFLOW_TRACKING_USERNAME=trainer\n" in text
    assert f"export AWS_ENDPOINT_URL_S3=http://127.0.0.1:{stack.ports['s3']}\n" in text
    for server_only in ("admin_password", "database_password", "mlflow_s3_secret_key", "flask_secret_key"):
        assert stack.secrets[server_only] not in text


def test_status_and_down_of_a_stack_never_started(tmp_path):
    assert control.status(tmp_path / "none") == {"postgres": False, "s3": False, "mlflow": False}
    control.down(tmp_path / "none")  # nothing to stop
