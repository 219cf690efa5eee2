"""The MLflow server's logins and the people of the stack: the admin (created by the basic-auth app from its
configuration) provisions the shared ``trainer`` and each person (``python -m pipeline.team user NAME ROLE``,
``make team-user``) through MLflow's own clients (``AuthServiceClient`` for users and permissions, ``MlflowClient``
for the experiments and registered models it grants on); a person also gets an S3 identity
(:mod:`pipeline.team.s3`) and an environment file ``users/<name>.env``. Roles: :mod:`pipeline.team.roles`."""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from pipeline.errors import PipelineError
from pipeline.tasks.base import TASK_NAMES
from pipeline.team.processes import owns_port, recorded_process
from pipeline.team.roles import ROLES, write_role_file
from pipeline.team.s3 import reload_identities
from pipeline.team.stack import (
    ADMIN,
    NAME_PATTERN,
    TRAINER,
    Stack,
    environment_file,
    save,
    with_user,
    write_client_environment,
)
from pipeline.team.sweep_database import grant_sweeps
from pipeline.team.tls import AUTHORITY

if TYPE_CHECKING:
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

# Where MLflow's clients read their login, the CA they check the server by and how they download artifacts.
LOGIN = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
)
RESERVED = (ADMIN, TRAINER, "stack", "mlflow")  # the stack's own logins and S3 identities
T = TypeVar("T")


@contextlib.contextmanager
def signed_in(user: str, password: str, authority: str) -> Iterator[None]:
    """MLflow's clients sign in as ``user`` inside the block, checking the server against ``authority``: its
    login in this process's environment, where they read it at each request; the environment as it was (a
    client's login or none) again after the block."""
    saved = {name: os.environ.get(name) for name in LOGIN}
    os.environ.update(zip(LOGIN, (user, password, authority, "false"), strict=True))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def as_admin(stack: Stack) -> Iterator[tuple[AuthServiceClient, MlflowClient]]:
    """MLflow's clients of the stack's server (users and permissions; experiments and models), signed in as the
    admin for the block, once the server's port is seen to be held by the process the stack started."""
    pid = recorded_process(stack.path("mlflow.pid"))
    if pid is None or not owns_port(pid, stack.ports["mlflow"]):
        raise PipelineError(
            f"port {stack.ports['mlflow']} is not held by the stack's MLflow server: the admin's password is not sent"
        )
    with warnings.catch_warnings():
        # mlflow.server imports starlette's WSGI middleware, which warns that it is deprecated: not ours to fix
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow.server")
        from mlflow.server.auth.client import AuthServiceClient  # noqa: PLC0415 - mlflow.server takes seconds to load
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - loaded with mlflow.server above

    url = stack.local_url("mlflow")
    with signed_in(ADMIN, stack.secrets["admin_password"], str(stack.path(AUTHORITY))):
        yield AuthServiceClient(url), MlflowClient(url, registry_uri=url)


def _unless_exists(call: Callable[[], T]) -> T | None:
    """``call()``, or None where what it creates exists already (a second ``up``)."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - loaded with mlflow.server by as_admin

    try:
        return call()
    except MlflowException as error:
        if error.error_code == "RESOURCE_ALREADY_EXISTS":
            return None
        raise


def _grant_trainer(auth: AuthServiceClient, tracking: MlflowClient, user: str) -> None:
    """EDIT on the pipeline's experiments and registered models, which the admin creates if missing."""
    for name in TASK_NAMES:
        _unless_exists(lambda name=name: tracking.create_experiment(name))
        experiment = tracking.get_experiment_by_name(name)
        _unless_exists(lambda name=name: tracking.create_registered_model(name))
        for resource_type, resource_id in (("experiment", experiment.experiment_id), ("registered_model", name)):
            _unless_exists(
                lambda resource_type=resource_type, resource_id=resource_id: auth.grant_user_permission(
                    user, resource_type, resource_id, "EDIT"
                )
            )


def provision(stack: Stack) -> None:
    """The shared trainer and every person with their grants (anything a trainer creates, it manages; everyone
    signed in reads all)."""
    with as_admin(stack) as (auth, tracking):
        _unless_exists(lambda: auth.create_user(TRAINER, stack.secrets["trainer_password"]))
        _grant_trainer(auth, tracking, TRAINER)
        for name, record in stack.users.items():
            _unless_exists(lambda name=name, record=record: auth.create_user(name, record["password"]))
            if record["role"] == "trainer":
                _grant_trainer(auth, tracking, name)


def check_new_user(stack: Stack, name: str, role: str) -> None:
    """One line naming what is wrong with adding ``name`` as ``role``, before anything is done."""
    if not NAME_PATTERN.fullmatch(name):
        raise PipelineError(
            f"user name {name!r}: use 2-32 characters, lower-case letters, digits, '-' or '_', a letter first"
        )
    if role not in ROLES:
        raise PipelineError(f"role {role!r} of user {name}: not one of {', '.join(ROLES)}")
    if name in RESERVED:
        raise PipelineError(f"user {name}: a name the stack keeps for itself ({', '.join(RESERVED)})")
    if name in stack.users or environment_file(stack, name).exists():
        raise PipelineError(f"user {name} exists already ({environment_file(stack, name)})")


def add_user(stack: Stack, name: str, role: str) -> Stack:
    """``name`` as an MLflow user with ``role``'s grants, an S3 identity and ``users/<name>.env`` (0600); on a
    failure half-way, what was done is undone. The stack must be running (the caller holds its lock)."""

    check_new_user(stack, name, role)
    record = {
        "role": role,
        "password": secrets.token_urlsafe(24),
        "s3_access_key": f"U{secrets.token_hex(9).upper()}",
        "s3_secret_key": secrets.token_urlsafe(24),
    }
    before, after = stack, save(with_user(stack, name, record))
    created = False
    try:
        with as_admin(after) as (auth, tracking):
            if _unless_exists(lambda: auth.create_user(name, record["password"])) is None:
                raise PipelineError(f"user {name} exists already on the MLflow server")
            created = True
            if role == "trainer":
                _grant_trainer(auth, tracking, name)
        write_role_file(after)
        grant_sweeps(after)
        reload_identities(after, record["s3_access_key"], record["s3_secret_key"])
        write_client_environment(after, name)
    except BaseException:
        save(before)
        write_role_file(before)
        if created:
            with contextlib.suppress(Exception), as_admin(before) as (auth, _):
                auth.delete_user(name)
        with contextlib.suppress(Exception):
            reload_identities(before, record["s3_access_key"], record["s3_secret_key"], present=False)
        environment_file(before, name).unlink(missing_ok=True)
        raise
    return after
