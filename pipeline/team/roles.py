"""The people's roles and how the MLflow server enforces them.

- ``viewer``: reads everything (the basic-auth app's ``default_permission = READ``), creates nothing: no
  experiment, run, registered model, version or anything else (403); reads the DVC bucket only.
- ``trainer``: EDIT on the experiments and registered models ``mnist`` and ``fable`` (runs, versions, tags,
  aliases); no delete and no permission management (EDIT has neither); reads and writes the DVC bucket.

MLflow's basic-auth app lets any signed-in user create experiments and registered models. The server therefore
signs requests in through :func:`authenticate` (``authorization_function`` in its configuration): MLflow's own
basic-auth check, then a 403 for a create request by anyone who is not a trainer. The roles are read from
``roles.json`` in the stack's directory (``$PIPELINE_TEAM_ROLES``), again whenever it changes; someone missing
from it is treated as a viewer."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.team.private import read_private, write_private
from pipeline.team.stack import TRAINER, Stack

ROLES = ("viewer", "trainer")
ROLES_ENV = "PIPELINE_TEAM_ROLES"
_cache: dict[str, tuple[float, dict[str, str]]] = {}


def write_role_file(stack: Stack) -> Path:
    """``roles.json``: the shared trainer and each person, by role (no secret in it)."""
    roles = {TRAINER: "trainer"} | {name: record["role"] for name, record in stack.users.items()}
    path = stack.path("roles.json")
    write_private(path, json.dumps(roles, indent=2, sort_keys=True))
    return path


def _roles() -> dict[str, str]:
    path = os.environ.get(ROLES_ENV, "")
    try:
        changed = os.stat(path).st_mtime
        cached = _cache.get(path)
        if cached is None or cached[0] != changed:
            _cache[path] = (changed, json.loads(read_private(Path(path))))
        return _cache[path][1]
    except (OSError, ValueError):
        return {}  # unreadable: nobody is a trainer (creates refused), reads unaffected


def authenticate():
    """The MLflow server's ``authorization_function``: basic auth as MLflow does it, then no create request
    (MLflow's validators ``validate_can_create_*``) from anyone but a trainer or an admin."""
    from flask import Response, request  # noqa: PLC0415 - only inside the MLflow server
    from mlflow.server.auth import _find_validator, authenticate_request_basic_auth, store  # noqa: PLC0415

    signed_in = authenticate_request_basic_auth()
    if isinstance(signed_in, Response) or _roles().get(signed_in.username) == "trainer":
        return signed_in
    validator = _find_validator(request)
    if validator is None or not validator.__name__.startswith("validate_can_create"):
        return signed_in
    if store.get_user(signed_in.username).is_admin:
        return signed_in
    return Response(f"Permission denied: {signed_in.username} is a viewer and creates nothing", status=403)
