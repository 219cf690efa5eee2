"""A team stack's state: where it lives, its ports, its secrets and its people (picked and generated at the first
``up``, kept in ``secrets.json``, never generated again over existing data), where it listens, and the clients'
environment files written from them (``env``: the shared ``trainer``; ``users/<name>.env``: one person).

The directory is ``$PIPELINE_TEAM_DIR`` when set (tests put the stack under /tmp), else ``.team``. It is 0700
(as root 0710, its group the one PostgreSQL runs as, which must pass through it): nobody else lists or reads it.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import PipelineError
from pipeline.team.private import private_directory, read_private, write_private

DIRECTORY_ENV = "PIPELINE_TEAM_DIR"
HOST_ENV = "PIPELINE_TEAM_HOST"  # the name clients use for a shared host (in the certificate and the URLs)
BIND_ENV = "PIPELINE_TEAM_BIND"  # the address MLflow and S3 listen on; 127.0.0.1 unless set, e.g. 0.0.0.0
DEFAULT_DIRECTORY = ".team"
LOOPBACK = "127.0.0.1"
BUCKETS = {"artifacts": "mlflow", "dvc": "dvc"}
ADMIN, TRAINER = "admin", "trainer"
SWEEPS_DATABASE = "sweeps"  # the sweeps' Optuna studies (pipeline/team/sweep_database.py)
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
# Secrets made at the first ``up``; one missing from an older stack's file is added, none is ever replaced.
_SECRETS = {
    "database_password": lambda: secrets.token_urlsafe(24),
    "admin_password": lambda: secrets.token_urlsafe(24),
    "trainer_password": lambda: secrets.token_urlsafe(24),
    "flask_secret_key": lambda: secrets.token_urlsafe(24),
    # S3 identities: the MLflow server's (its bucket only), the shared trainer's (the DVC bucket), the stack's own
    # (buckets, backups; never given to a client).
    "mlflow_s3_access_key": lambda: f"MLFLOW{secrets.token_hex(7).upper()}",
    "mlflow_s3_secret_key": lambda: secrets.token_urlsafe(24),
    "dvc_s3_access_key": lambda: f"DVC{secrets.token_hex(8).upper()}",
    "dvc_s3_secret_key": lambda: secrets.token_urlsafe(24),
    "stack_s3_access_key": lambda: f"STACK{secrets.token_hex(7).upper()}",
    "stack_s3_secret_key": lambda: secrets.token_urlsafe(24),
    # SeaweedFS's JWT signing keys: its volume and filer servers take no read or write without a token signed
    # with them (security.toml).
    **{f"seaweedfs_{name}_key": lambda: secrets.token_urlsafe(32) for name in ("write", "read", "filer", "filer_read")},
}


def team_directory(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(DIRECTORY_ENV) or DEFAULT_DIRECTORY).resolve()


@dataclass(frozen=True)
class Stack:
    """Where a stack lives, its ports, secrets and people, and where it listens: ``bind`` the address its servers
    listen on (MLflow's and S3's; the others stay on loopback), ``host`` the name clients reach it by."""

    directory: Path
    ports: dict[str, int]
    secrets: dict[str, str]
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    host: str = LOOPBACK
    bind: str = LOOPBACK

    def _url(self, name: str, port: str) -> str:
        return f"https://{f'[{name}]' if ':' in name else name}:{self.ports[port]}"

    @property
    def mlflow_url(self) -> str:
        return self._url(self.host, "mlflow")

    @property
    def s3_url(self) -> str:
        return self._url(self.host, "s3")

    @property
    def local_address(self) -> str:
        """Where this host reaches MLflow and S3: loopback, or the one address they are bound to."""
        return {"0.0.0.0": LOOPBACK, "::": "::1"}.get(self.bind, self.bind)

    def local_url(self, service: str) -> str:
        """The service's URL from this host (the start-up checks, the stack's own clients)."""
        return self._url(self.local_address, service)

    def path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The ports the kernel hands out to outgoing connections (a kept port in it may be taken by one)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _pick_ports() -> dict[str, int]:
    """Distinct ports outside the ephemeral range (and below it the first 10000), free now on every address."""
    import socket  # noqa: PLC0415

    low, high = ephemeral_range()
    candidates = [*range(10000, low), *range(high + 1, 65536)]
    if len(candidates) < 100:
        raise PipelineError(
            f"no room for the stack's ports outside the ephemeral range {low}-{high} "
            "(/proc/sys/net/ipv4/ip_local_port_range)"
        )
    chosen: dict[str, int] = {}
    for name in PORT_NAMES:
        for _ in range(1000):
            port = random.choice(candidates)
            if port in chosen.values():
                continue
            try:
                with socket.socket() as probe:
                    probe.bind(("0.0.0.0", port))  # free on every address, loopback included
            except OSError:
                continue
            chosen[name] = port
            break
        else:
            raise PipelineError(f"found no free port for {name} outside the ephemeral range {low}-{high}")
    return chosen


def exists(directory: Path) -> bool:
    """Whether a stack was ever set up at ``directory`` (its ports and secrets written)."""
    return (directory / "secrets.json").exists()


def stack_directory_mode() -> tuple[int, int | None]:
    """0700; as root 0710 with the group PostgreSQL runs as (``nobody``'s), which must pass through."""
    if os.geteuid() != 0:
        return 0o700, None
    import pwd  # noqa: PLC0415 - POSIX only

    return 0o710, pwd.getpwnam("nobody").pw_gid


def prepare_directory(directory: Path) -> Path:
    mode, group = stack_directory_mode()
    private_directory(directory, mode)
    if group is not None and directory.stat().st_gid != group:
        os.chown(directory, -1, group)
    return directory


def _data_left(directory: Path) -> list[str]:
    """What of a stack's data is there: a stack whose secrets are lost must not get new ones over it."""
    found = [str(directory / "postgres" / "data")] if (directory / "postgres" / "data" / "PG_VERSION").exists() else []
    s3 = directory / "s3"
    if s3.is_dir() and any(s3.iterdir()):
        found.append(str(s3))
    return found


def _read(file: Path) -> dict:
    try:
        stored = json.loads(read_private(file))
        ports, stored_secrets = stored["ports"], stored["secrets"]
        if set(ports) != set(PORT_NAMES) or not all(isinstance(port, int) for port in ports.values()):
            raise ValueError("its ports are not the stack's")
        if not isinstance(stored_secrets, dict) or not isinstance(stored.get("users", {}), dict):
            raise ValueError("its secrets or users are not objects")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PipelineError(f"{file} cannot be read as the stack's state: {error}") from None
    return stored


def load_or_create(directory: Path, environ: Mapping[str, str] = os.environ) -> Stack:
    """The stack at ``directory``: read from its ``secrets.json``, or new ports and secrets written there; where it
    listens from ``$PIPELINE_TEAM_BIND`` and ``$PIPELINE_TEAM_HOST`` if set, else as before, else loopback."""
    prepare_directory(directory)
    file = directory / "secrets.json"
    if not file.exists():
        left = _data_left(directory)
        if left:
            raise PipelineError(
                f"{file} is missing but the stack's data is there ({', '.join(left)}): new secrets would not open "
                "it; put secrets.json back (a backup has it: make team-restore) or move the data away"
            )
        created = {"ports": _pick_ports(), "secrets": {}, "users": {}, "listen": {}}
        _complete(created)
        text = json.dumps(created, indent=2)
        temporary = directory / f".secrets.json.{secrets.token_hex(6)}.tmp"
        write_private(temporary, text)
        try:
            os.link(temporary, file)  # never over a file another process wrote meanwhile: then that one counts
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    stored = _read(file)
    if _complete(stored):
        write_private(file, json.dumps(stored, indent=2))
    listen = stored.get("listen", {})
    host = environ.get(HOST_ENV) or listen.get("host")
    bind = environ.get(BIND_ENV) or listen.get("bind") or LOOPBACK
    return Stack(directory, stored["ports"], stored["secrets"], stored.get("users", {}), host or bind_host(bind), bind)


def bind_host(bind: str) -> str:
    """The name in the URLs when no $PIPELINE_TEAM_HOST is given: the bound address, or loopback for any."""
    return {"0.0.0.0": LOOPBACK, "::": "::1"}.get(bind, bind)


def _complete(stored: dict) -> bool:
    """Add the secrets an older stack's file lacks; whether any was added. None is replaced."""
    missing = [name for name in _SECRETS if name not in stored["secrets"]]
    for name in missing:
        stored["secrets"][name] = _SECRETS[name]()
    return bool(missing)


def save(stack: Stack) -> Stack:
    """``stack``'s users and where it listens written to its ``secrets.json`` (atomically); its ports and secrets
    as they were."""
    file = stack.path("secrets.json")
    stored = _read(file)
    stored["users"] = stack.users
    stored["listen"] = {"host": stack.host, "bind": stack.bind}
    write_private(file, json.dumps(stored, indent=2))
    return stack


def with_user(stack: Stack, name: str, record: dict[str, str] | None) -> Stack:
    """``stack`` with person ``name`` added (or removed, when ``record`` is None)."""
    users = {key: value for key, value in stack.users.items() if key != name}
    if record is not None:
        users[name] = record
    return replace(stack, users=users)


NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{1,31}")


def client_environment(stack: Stack, user: str | None = None) -> dict[str, str]:
    """What a client needs: MLflow as ``user`` (else the shared ``trainer``), the DVC remote's endpoint and keys,
    and the stack's CA to check both servers by (``ca-bundle.pem``: the usual public CAs and the stack's, for
    Python's ``requests``, which does not read MLflow's variable)."""
    if user is None:
        login, password = TRAINER, stack.secrets["trainer_password"]
        access_key, secret_key = stack.secrets["dvc_s3_access_key"], stack.secrets["dvc_s3_secret_key"]
    else:
        record = stack.users[user]
        login, password = user, record["password"]
        access_key, secret_key = record["s3_access_key"], record["s3_secret_key"]
    authority = str(stack.path("ca.pem"))
    return {
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": login,
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_TRACKING_SERVER_CERT_PATH": authority,
        # Artifacts downloaded through the server, as they are uploaded: not from S3 by presigned URLs, which name
        # the S3 endpoint as the server sees it.
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        # botocore (so DVC's S3 remote) reads the endpoint of S3 and its CA from here: nothing of it in .dvc/config.
        "AWS_ENDPOINT_URL_S3": stack.s3_url,
        "AWS_CA_BUNDLE": authority,
        "REQUESTS_CA_BUNDLE": str(stack.path("ca-bundle.pem")),
        # The sweeps' Optuna studies (make sweep), as the same person.
        "PIPELINE_SWEEP_STORAGE": sweep_storage_uri(stack, login, password),
    }


def sweep_storage_uri(stack: Stack, login: str, password: str) -> str:
    """The sweeps' database as ``login`` (SQLAlchemy's URI, for Optuna): PostgreSQL on this host's loopback."""
    where = f"{LOOPBACK}:{stack.ports['postgres']}/{SWEEPS_DATABASE}?sslmode=disable"
    return f"postgresql+psycopg://{quote(login)}:{quote(password, safe='')}@{where}"


def environment_file(stack: Stack, user: str | None = None) -> Path:
    return stack.path("env") if user is None else stack.path("users", f"{user}.env")


def write_client_environment(stack: Stack, user: str | None = None) -> Path:
    """``env`` (the shared trainer) or ``users/<user>.env``, 0600. The CA files are named through
    ``$PIPELINE_TEAM_CA_DIR`` (the stack's directory unless set): on another machine, set it to where
    ``ca.pem`` and ``ca-bundle.pem`` were copied."""
    environment = client_environment(stack, user)
    directory = str(stack.directory)
    login = environment["MLFLOW_TRACKING_USERNAME"]
    lines = [
        f"# Written by `python -m pipeline.team`: `source` it to use the team stack as {login} (secrets: keep it"
        " private).",
        f'export PIPELINE_TEAM_CA_DIR="${{PIPELINE_TEAM_CA_DIR:-{directory}}}"',
    ]
    for name, value in environment.items():
        if value.startswith(directory + os.sep) and value.endswith(".pem"):
            lines.append(f'export {name}="$PIPELINE_TEAM_CA_DIR/{Path(value).name}"')
        else:
            lines.append(f"export {name}={shlex.quote(value)}")
    path = environment_file(stack, user)
    if user is not None:
        private_directory(path.parent)
    write_private(path, "\n".join(lines) + "\n")
    return path
