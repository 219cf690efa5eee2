"""A team stack's state: where it lives, its ports and secrets (picked and generated at the first ``up``,
kept in ``secrets.json``), and the client's environment file ``env`` written from them.

The directory is ``$PIPELINE_TEAM_DIR`` when set (tests put the stack under /tmp), else ``.team``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


def exists(directory: Path) -> bool:
    """Whether a stack was ever set up at ``directory`` (its ports and secrets written)."""
    return (directory / "secrets.json").exists()


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
    write_private(file, json.dumps({"ports": ports, "secrets": generated}, indent=2))
    return Stack(directory, ports, generated)


def write_private(path: Path, text: str) -> None:
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
    write_private(path, "\n".join(lines) + "\n")
    return path
