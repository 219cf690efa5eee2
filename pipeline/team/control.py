"""The stack's services as one: ``up`` (start what does not answer, in dependency order), ``down`` (stop all,
MLflow first, and check that nothing still listens), ``status``, and one service's ``start`` and ``stop``. ``up``
and ``down`` hold the stack's lock (:mod:`pipeline.team.locking`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team.locking import stack_lock
from pipeline.team.mlflow_server import mlflow_running, start_mlflow, stop_mlflow
from pipeline.team.postgres import postgres_running, start_postgres, stop_postgres
from pipeline.team.processes import listening
from pipeline.team.s3 import s3_running, start_s3, stop_s3
from pipeline.team.stack import (
    LOOPBACK,
    PORT_NAMES,
    SERVICES,
    Stack,
    exists,
    load_or_create,
    save,
    write_client_environment,
)
from pipeline.team.sweep_database import grant_sweeps
from pipeline.team.tls import ensure_certificates, write_bundle

_RUNNING: dict[str, Callable[[Stack], bool]] = {
    "postgres": postgres_running,
    "s3": s3_running,
    "mlflow": mlflow_running,
}
_START: dict[str, Callable[[Stack], None]] = {"postgres": start_postgres, "s3": start_s3, "mlflow": start_mlflow}
_STOP: dict[str, Callable[[Stack], None]] = {"postgres": stop_postgres, "s3": stop_s3, "mlflow": stop_mlflow}
LISTENING = ("s3", "mlflow")  # the services that listen where PIPELINE_TEAM_BIND says (PostgreSQL: loopback)


def start(stack: Stack, service: str) -> None:
    ensure_certificates(stack.directory, stack.host, stack.bind)
    if not _RUNNING[service](stack):
        _STOP[service](stack)  # a process left half-up (its pid alive, its port silent)
        _START[service](stack)


def stop(stack: Stack, service: str) -> None:
    _STOP[service](stack)


def running(stack: Stack) -> list[str]:
    return [service for service in SERVICES if _RUNNING[service](stack)]


def up(directory: Path) -> Stack:
    """Start each service not running yet, in dependency order; write the clients' environment files. A service
    that must present a new certificate, or listen elsewhere, is started again."""
    with stack_lock(directory):
        before = load_or_create(directory, environ={})  # where it listened
        stack = save(load_or_create(directory))
        renewed = ensure_certificates(directory, stack.host, stack.bind)
        moved = (before.host, before.bind) != (stack.host, stack.bind)
        for service in SERVICES:
            if renewed or (moved and service in LISTENING):
                stop(before, service)
            start(stack, service)
        grant_sweeps(stack)
        write_environment_files(stack)
        return stack


def write_environment_files(stack: Stack) -> None:
    """The clients' files: the CA bundle, ``env`` (the shared trainer) and each person's ``users/<name>.env``."""
    write_bundle(stack.directory)
    write_client_environment(stack)
    for user in stack.users:
        write_client_environment(stack, user)


def still_listening(stack: Stack) -> list[str]:
    addresses = {LOOPBACK, stack.local_address}
    return [name for name in PORT_NAMES if any(listening(stack.ports[name], address) for address in addresses)]


def down(directory: Path) -> None:
    """Stop every service (MLflow first); the data stays."""
    if not exists(directory):
        return
    with stack_lock(directory):
        stack = load_or_create(directory, environ={})
        for service in reversed(SERVICES):
            stop(stack, service)
        still = still_listening(stack)
        if still:
            raise PipelineError(f"after stopping, something still listens on the ports of {', '.join(still)}")


def status(directory: Path) -> dict[str, bool]:
    if not exists(directory):
        return dict.fromkeys(SERVICES, False)
    stack = load_or_create(directory, environ={})
    return {service: _RUNNING[service](stack) for service in SERVICES}
