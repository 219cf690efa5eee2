"""The MLflow server's logins: the admin (created by the basic-auth app from its configuration) provisions the
non-admin ``trainer`` and its grants, through MLflow's own clients (``AuthServiceClient`` for users and
permissions, ``MlflowClient`` for the experiments and registered models it grants on)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from pipeline.tasks.base import TASK_NAMES
from pipeline.team.stack import ADMIN, TRAINER, Stack

if TYPE_CHECKING:
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

LOGIN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")  # where MLflow's clients read their login
T = TypeVar("T")


@contextlib.contextmanager
def signed_in(user: str, password: str) -> Iterator[None]:
    """MLflow's clients sign in as ``user`` inside the block: its login in this process's environment, where they
    read it at each request; the environment as it was (a client's login or none) again after the block."""
    saved = {name: os.environ.get(name) for name in LOGIN}
    os.environ.update(zip(LOGIN, (user, password), strict=True))
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
    admin for the block."""
    with warnings.catch_warnings():
        # mlflow.server imports starlette's WSGI middleware, which warns that it is deprecated: not ours to fix
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow.server")
        from mlflow.server.auth.client import AuthServiceClient  # noqa: PLC0415 - mlflow.server takes seconds to load
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - loaded with mlflow.server above

    with signed_in(ADMIN, stack.secrets["admin_password"]):
        yield AuthServiceClient(stack.mlflow_url), MlflowClient(stack.mlflow_url, registry_uri=stack.mlflow_url)


def _unless_exists(call: Callable[[], T]) -> T | None:
    """``call()``, or None where what it creates exists already (a second ``up``)."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - loaded with mlflow.server by as_admin

    try:
        return call()
    except MlflowException as error:
        if error.error_code == "RESOURCE_ALREADY_EXISTS":
            return None
        raise


def provision(stack: Stack) -> None:
    """The non-admin user and its grants: EDIT on the pipeline's experiments and registered models, which
    the admin creates (anything else the trainer creates, it manages; everyone signed in reads all)."""
    with as_admin(stack) as (auth, tracking):
        _unless_exists(lambda: auth.create_user(TRAINER, stack.secrets["trainer_password"]))
        for name in TASK_NAMES:
            _unless_exists(lambda name=name: tracking.create_experiment(name))
            experiment = tracking.get_experiment_by_name(name)
            _unless_exists(lambda name=name: tracking.create_registered_model(name))
            for resource_type, resource_id in (("experiment", experiment.experiment_id), ("registered_model", name)):
                _unless_exists(
                    lambda resource_type=resource_type, resource_id=resource_id: auth.grant_user_permission(
                        TRAINER, resource_type, resource_id, "EDIT"
                    )
                )
