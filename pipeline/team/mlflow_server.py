"""``mlflow server --app-name basic-auth`` on PostgreSQL with ``--artifacts-destination s3://mlflow``: clients
send artifacts through the server and need no S3 keys for MLflow. Users: ``admin`` and ``trainer`` (not an
admin; EDIT on the pipeline's experiments and registered models, provisioned by :mod:`pipeline.team.users`);
anonymous requests get 401."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.team.processes import http_status, pid_alive, server_environment, spawn, terminate, wait
from pipeline.team.stack import ADMIN, BUCKETS, DATABASE_USER, HOST, Stack, write_private
from pipeline.team.users import provision


def mlflow_running(stack: Stack) -> bool:
    return pid_alive(stack.path("mlflow.pid")) is not None and _healthy(stack)


def _healthy(stack: Stack) -> bool:
    return http_status(f"{stack.mlflow_url}/health") == 200


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
    write_private(path, text + "\n")
    return path


def start_mlflow(stack: Stack) -> None:
    """The server started and answering, then its users provisioned."""
    env = server_environment() | {
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
    spawn(command, log, stack.path("mlflow.pid"), env, stack.directory)
    wait("the MLflow server", lambda: _healthy(stack), log, stack.path("mlflow.pid"))
    provision(stack)


def stop_mlflow(stack: Stack) -> None:
    terminate(stack.path("mlflow.pid"), grace=15)
