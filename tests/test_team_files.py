"""The team stack's files, certificates, processes and lock, without starting it (tests/test_team.py starts the
real one)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from cryptography import x509

from pipeline.errors import PipelineError
from pipeline.team import control
from pipeline.team.locking import stack_lock
from pipeline.team.private import private_directory, read_private, write_private
from pipeline.team.processes import owns_port, recorded_process, start_time, terminate
from pipeline.team.stack import (
    PORT_NAMES,
    ephemeral_range,
    load_or_create,
    save,
    with_user,
    write_client_environment,
)
from pipeline.team.tls import certificate_names, ensure_certificates
from pipeline.team.users import as_admin, check_new_user


def test_first_use_picks_distinct_ports_outside_the_ephemeral_range_and_keeps_secrets_private(tmp_path):
    stack = load_or_create(tmp_path / "team", environ={})
    assert len(set(stack.ports.values())) == len(PORT_NAMES)
    low, high = ephemeral_range()
    assert not [port for port in stack.ports.values() if low <= port <= high]
    assert (tmp_path / "team" / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "team").stat().st_mode & 0o777 == (0o710 if os.geteuid() == 0 else 0o700)
    assert load_or_create(tmp_path / "team", environ={}) == stack  # kept: the same ports and secrets next time
    other = load_or_create(tmp_path / "other", environ={})
    assert other.secrets["trainer_password"] != stack.secrets["trainer_password"]


def test_lost_secrets_over_existing_data_stop_with_one_line_instead_of_new_secrets(tmp_path):
    stack = load_or_create(tmp_path / "team", environ={})
    (stack.path("postgres", "data")).mkdir(parents=True)
    (stack.path("postgres", "data", "PG_VERSION")).write_text("18\n")
    stack.path("secrets.json").unlink()
    missing = r"secrets\.json is missing but the stack's data is there \(.*postgres/data"
    with pytest.raises(PipelineError, match=missing):
        load_or_create(tmp_path / "team", environ={})
    assert not stack.path("secrets.json").exists()


def test_where_it_listens_comes_from_the_environment_once_then_is_kept(tmp_path):
    first = save(load_or_create(tmp_path / "team", environ={"PIPELINE_TEAM_HOST": "team.example.org"}))
    assert (first.host, first.bind, first.mlflow_url) == (
        "team.example.org",
        "127.0.0.1",
        f"https://team.example.org:{first.ports['mlflow']}",
    )
    kept = load_or_create(tmp_path / "team", environ={})
    assert (kept.host, kept.bind) == ("team.example.org", "127.0.0.1")
    wide = load_or_create(tmp_path / "team", environ={"PIPELINE_TEAM_BIND": "0.0.0.0"})
    assert (wide.bind, wide.local_url("s3")) == ("0.0.0.0", f"https://127.0.0.1:{wide.ports['s3']}")


def test_the_client_environments_hold_tls_settings_and_only_their_own_login(tmp_path):
    stack = load_or_create(tmp_path / "team", environ={})
    record = {"role": "viewer", "password": "alice-password", "s3_access_key": "UALICE", "s3_secret_key": "alice-s3"}
    stack = with_user(stack, "alice", record)
    text = write_client_environment(stack).read_text()
    assert (tmp_path / "team" / "env").stat().st_mode & 0o777 == 0o600
    assert f"export MLFLOW_TRACKING_URI=https://127.0.0.1:{stack.ports['mlflow']}\n" in text
    assert "export MLFLOW_TRACKING_USERNAME=trainer\n" in text
    assert f"export AWS_ENDPOINT_URL_S3=https://127.0.0.1:{stack.ports['s3']}\n" in text
    assert 'export AWS_CA_BUNDLE="$PIPELINE_TEAM_CA_DIR/ca.pem"\n' in text
    assert 'export MLFLOW_TRACKING_SERVER_CERT_PATH="$PIPELINE_TEAM_CA_DIR/ca.pem"\n' in text
    assert 'export REQUESTS_CA_BUNDLE="$PIPELINE_TEAM_CA_DIR/ca-bundle.pem"\n' in text
    for server_only in ("admin_password", "database_password", "mlflow_s3_secret_key", "stack_s3_secret_key"):
        assert stack.secrets[server_only] not in text
    personal = write_client_environment(stack, "alice")
    assert personal == tmp_path / "team" / "users" / "alice.env" and personal.stat().st_mode & 0o777 == 0o600
    own = personal.read_text()
    assert "export MLFLOW_TRACKING_USERNAME=alice\n" in own and "export AWS_SECRET_ACCESS_KEY=alice-s3\n" in own
    assert stack.secrets["trainer_password"] not in own and stack.secrets["dvc_s3_secret_key"] not in own


def test_the_authority_is_made_once_and_the_certificate_names_the_shared_host(tmp_path):
    assert ensure_certificates(tmp_path, "team.example.org", "127.0.0.1")
    authority = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    certificate = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    certificate.verify_directly_issued_by(authority)
    assert {"team.example.org", "localhost", "127.0.0.1", "::1", socket.gethostname()} <= certificate_names(certificate)
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    assert not ensure_certificates(tmp_path, "team.example.org", "127.0.0.1")  # kept while it names them all
    kept = (tmp_path / "ca.pem").read_bytes()
    assert ensure_certificates(tmp_path, "other.example.org", "127.0.0.1")  # a new name: a new certificate
    assert (tmp_path / "ca.pem").read_bytes() == kept  # from the same authority
    renewed = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    assert "other.example.org" in certificate_names(renewed)


def test_files_are_written_whole_and_never_through_a_symbolic_link(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("not the stack's")
    planted = tmp_path / "stack" / "secrets.json"
    planted.parent.mkdir()
    planted.symlink_to(target)
    with pytest.raises(OSError):
        read_private(planted)
    write_private(planted, "secret")
    assert target.read_text() == "not the stack's"  # the link replaced, not followed
    assert not planted.is_symlink() and planted.read_text() == "secret"
    assert planted.stat().st_mode & 0o777 == 0o600
    assert [path.name for path in planted.parent.iterdir()] == ["secrets.json"]  # no temporary file left
    (tmp_path / "stack" / "logs").symlink_to(tmp_path)
    with pytest.raises(PipelineError, match="symbolic link"):
        private_directory(tmp_path / "stack" / "logs")


def test_a_pid_file_is_trusted_only_for_the_process_it_recorded(tmp_path):
    stale = tmp_path / "stale.pid"
    stale.write_text(f"{os.getpid()} {start_time(os.getpid()) + 1}\n")  # this pid, started at another time
    assert recorded_process(stale) is None
    terminate(stale, grace=1)  # no signal to this process
    assert not stale.exists()
    server = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        recorded = tmp_path / "server.pid"
        recorded.write_text(f"{server.pid} {start_time(server.pid)}\n")
        assert recorded_process(recorded) == server.pid
        terminate(recorded, grace=5)
        assert start_time(server.pid) is None and not recorded.exists()  # gone (and reaped)
    finally:
        server.kill()
    member = subprocess.Popen(["sleep", "60"])  # in this process's group, not leading one: signalled alone
    try:
        (tmp_path / "member.pid").write_text(f"{member.pid} {start_time(member.pid)}\n")
        terminate(tmp_path / "member.pid", grace=5)
        assert start_time(member.pid) is None
    finally:
        member.kill()


def test_a_port_is_owned_only_by_the_process_listening_on_it():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert owns_port(os.getpid(), port)
        other = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            assert not owns_port(other.pid, port)
        finally:
            other.kill()
            other.wait()
    assert not owns_port(os.getpid(), port)  # closed


@pytest.mark.slow  # loading mlflow.server's clients takes seconds
def test_the_admin_password_goes_to_no_process_but_the_one_the_stack_started(tmp_path):
    """Something else answering on MLflow's kept port gets no request, let alone the admin's login."""
    stack = load_or_create(tmp_path / "team", environ={})
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.ports["mlflow"]))
        squatter.listen()
        with pytest.raises(PipelineError, match="is not held by the stack's MLflow server"), as_admin(stack):
            pass
        squatter.settimeout(0.5)
        with pytest.raises(TimeoutError):
            squatter.accept()  # not even a connection
        stack.path("mlflow.pid").write_text(f"{os.getpid()} {start_time(os.getpid())}\n")  # its pid file: ours now
        with as_admin(stack):  # the port is the recorded process's: then the login may go
            pass


def test_one_team_command_at_a_time(tmp_path):
    held = pytest.raises(PipelineError, match="another team command has held .*lock")
    with stack_lock(tmp_path / "team"), held, stack_lock(tmp_path / "team", timeout=0.5):
        pass
    with stack_lock(tmp_path / "team", timeout=0.5):  # released
        pass


@pytest.mark.parametrize(
    ("name", "role", "problem"),
    [
        ("alice", "admin", "role 'admin' of user alice: not one of viewer, trainer"),
        ("Alice", "viewer", "user name 'Alice'"),
        ("a b", "viewer", "user name 'a b'"),
        ("x", "viewer", "user name 'x'"),
        ("admin", "viewer", "user admin: a name the stack keeps"),
        ("bob", "trainer", "user bob exists already"),
    ],
)
def test_a_new_user_is_checked_before_anything_is_done(tmp_path, name, role, problem):
    stack = with_user(load_or_create(tmp_path / "team", environ={}), "bob", {"role": "trainer"})
    with pytest.raises(PipelineError, match=problem.replace("(", r"\(")):
        check_new_user(stack, name, role)


def test_status_and_down_of_a_stack_never_started(tmp_path):
    assert control.status(tmp_path / "none") == {"postgres": False, "s3": False, "mlflow": False}
    control.down(tmp_path / "none")  # nothing to stop
