"""The stack's services as one: ``up`` (start what does not answer, in dependency order), ``down`` (stop all,
MLflow first, and check that nothing still listens), ``status``, and one service's ``start`` and ``stop``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team.mlflow_server import mlflow_running, start_mlflow, stop_mlflow
from pipeline.team.postgres import postgres_running, start_postgres, stop_postgres
from pipeline.team.processes import listening
from pipeline.team.s3 import s3_running, start_s3, stop_s3
from pipeline.team.stack import PORT_NAMES, SERVICES, Stack, exists, load_or_create, write_client_environment

_RUNNING: dict[str, Callable[[Stack], bool]] = {
    "postgres": postgres_running,
    "s3": s3_running,
    "mlflow": mlflow_running,
}
_START: dict[str, Callable[[Stack], None]] = {"postgres": start_postgres, "s3": start_s3, "mlflow": start_mlflow}
_STOP: dict[str, Callable[[Stack], None]] = {"postgres": stop_postgres, "s3": stop_s3, "mlflow": stop_mlflow}


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
    if not exists(directory):
        return
    stack = load_or_create(directory)
    for service in reversed(SERVICES):
        stop(stack, service)
    still = [name for name in PORT_NAMES if listening(stack.ports[name])]
    if still:
        raise PipelineError(f"after stopping, something still listens on the ports of {', '.join(still)}")


def status(directory: Path) -> dict[str, bool]:
    if not exists(directory):
        return dict.fromkeys(SERVICES, False)
    stack = load_or_create(directory)
    return {service: _RUNNING[service](stack) for service in SERVICES}
