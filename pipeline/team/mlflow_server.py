"""``mlflow server --app-name basic-auth`` on PostgreSQL with ``--artifacts-destination s3://mlflow``: clients
send artifacts through the server and need no S3 keys for MLflow (the server alone holds the keys to that
bucket). HTTPS only (uvicorn with the stack's certificate), on ``PIPELINE_TEAM_BIND``'s address, answering to the
certificate's names only (MLflow's host check). Users: ``admin``, the shared ``trainer`` and each person, by role
(:mod:`pipeline.team.roles`, :mod:`pipeline.team.users`); anonymous requests get 401."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team.postgres import database_uri
from pipeline.team.private import write_private
from pipeline.team.processes import http_status, owns_port, recorded_process, server_environment, spawn, terminate, wait
from pipeline.team.roles import ROLES_ENV, write_role_file
from pipeline.team.stack import ADMIN, BUCKETS, Stack
from pipeline.team.tls import AUTHORITY, CERTIFICATE, CERTIFICATE_KEY, host_names
from pipeline.team.users import provision

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the server imports pipeline.team.roles from here


def mlflow_running(stack: Stack) -> bool:
    pid = recorded_process(stack.path("mlflow.pid"))
    return pid is not None and owns_port(pid, stack.ports["mlflow"]) and _healthy(stack)


def _healthy(stack: Stack) -> bool:
    return http_status(f"{stack.local_url('mlflow')}/health", verify=str(stack.path(AUTHORITY))) == 200


def _auth_config(stack: Stack) -> Path:
    text = "\n".join(
        [
            "[mlflow]",
            # Authenticated users may read every experiment; writing takes a grant. Anonymous requests: 401.
            "default_permission = READ",
            f"database_uri = {database_uri(stack, 'mlflow_auth')}",
            f"admin_username = {ADMIN}",
            f"admin_password = {stack.secrets['admin_password']}",
            # MLflow's basic auth, then no create request from anyone but a trainer (pipeline/team/roles.py)
            "authorization_function = pipeline.team.roles:authenticate",
            "grant_default_workspace_access = false",
            # A signed-in user's password is hashed again (PBKDF2, slow by design) only once a minute per worker,
            # not at every request; a changed password reaches the other worker within that minute.
            "auth_cache_ttl_seconds = 60",
        ]
    )
    path = stack.path("basic_auth.ini")
    write_private(path, text.replace("%", "%%") + "\n")  # configparser's interpolation
    return path


def _allowed_hosts(stack: Stack) -> str:
    """The Host headers MLflow answers: each name of the certificate, with and without the port."""
    hosts = []
    for name in sorted(host_names(stack.host, stack.bind)):
        shown = f"[{name}]" if ":" in name else name
        hosts += [shown, f"{shown}:{stack.ports['mlflow']}"]
    return ",".join(hosts)


def start_mlflow(stack: Stack) -> None:
    """The server started and answering, then its users provisioned (only once it is seen to be the process
    started here: the admin's password goes to no other)."""
    env = server_environment() | {
        "MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(stack)),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": stack.secrets["flask_secret_key"],
        "MLFLOW_SERVER_ALLOWED_HOSTS": _allowed_hosts(stack),
        ROLES_ENV: str(write_role_file(stack)),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PGPASSWORD": stack.secrets["database_password"],  # libpq's: no password in a URI or a command line
        "MLFLOW_S3_ENDPOINT_URL": stack.local_url("s3"),
        "AWS_CA_BUNDLE": str(stack.path(AUTHORITY)),
        "AWS_ACCESS_KEY_ID": stack.secrets["mlflow_s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": stack.secrets["mlflow_s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        # MLflow's job runner (GenAI evaluation and scorers: a dozen worker processes) has nothing to do here.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    certificate, key = str(stack.path(CERTIFICATE)), str(stack.path(CERTIFICATE_KEY))
    # TLS; and a stop that does not wait for clients' idle keep-alive connections to close
    tls = shlex.join(["--ssl-certfile", certificate, "--ssl-keyfile", key, "--timeout-graceful-shutdown", "3"])
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        database_uri(stack, "mlflow"),
        "--artifacts-destination",
        f"s3://{BUCKETS['artifacts']}",
        "--host",
        stack.bind,
        "--port",
        str(stack.ports["mlflow"]),
        "--workers",
        "2",
        "--uvicorn-opts",
        tls,
    ]
    log = stack.path("logs", "mlflow.log")
    pid_file = stack.path("mlflow.pid")
    pid = spawn(command, log, pid_file, env, stack.directory)
    wait("the MLflow server", lambda: owns_port(pid, stack.ports["mlflow"]) and _healthy(stack), log, pid_file)
    if not owns_port(pid, stack.ports["mlflow"]):
        raise PipelineError(f"port {stack.ports['mlflow']} is not held by the MLflow server started here")
    provision(stack)


def stop_mlflow(stack: Stack) -> None:
    terminate(stack.path("mlflow.pid"), grace=15)
