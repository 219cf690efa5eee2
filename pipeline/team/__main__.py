"""The team stack on one host: PostgreSQL, an S3 server and ``mlflow server`` with basic-auth, over TLS, on
127.0.0.1 unless ``PIPELINE_TEAM_BIND`` says otherwise.

Run::

    python -m pipeline.team up                  # start what is not running (idempotent), write .team/env
    python -m pipeline.team status              # each service and whether it answers
    python -m pipeline.team user NAME ROLE      # a person: viewer or trainer; writes .team/users/NAME.env
    python -m pipeline.team backup              # a snapshot under .team/backups/; its path on the last line
    python -m pipeline.team restore BACKUP      # the stopped stack brought back to BACKUP, then started
    python -m pipeline.team down                # stop everything it started; the data stays in .team/

(``make team-up``, ``team-status``, ``team-user NAME= ROLE=``, ``team-backup``, ``team-restore BACKUP=``,
``team-down``.) Everything comes from the pinned requirements, no Docker: PostgreSQL
(:mod:`pipeline.team.postgres`), SeaweedFS's S3 server (:mod:`pipeline.team.s3`) and the MLflow server
(:mod:`pipeline.team.mlflow_server`) with its users and roles (:mod:`pipeline.team.users`,
:mod:`pipeline.team.roles`), run as processes of their own (:mod:`pipeline.team.processes`), together and under
one lock (:mod:`pipeline.team.control`, :mod:`pipeline.team.locking`), with a CA of their own
(:mod:`pipeline.team.tls`), backed up and restored by :mod:`pipeline.team.backup`.

Ports are picked free (outside the ephemeral range) at the first ``up`` and kept; passwords and keys are
generated then, kept in ``.team/secrets.json`` (mode 0600), and the clients' share of them goes to ``.team/env``
and ``.team/users/<name>.env`` (``source`` one; :mod:`pipeline.team.stack`). The directory is
``$PIPELINE_TEAM_DIR`` when set, else ``.team``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import duration, run_stage
from pipeline.errors import PipelineError
from pipeline.team import control
from pipeline.team.stack import ADMIN, BUCKETS, SERVICES, TRAINER, exists, load_or_create, team_directory


def _up(directory: Path) -> None:
    began = time.monotonic()
    stack = control.up(directory)
    print(
        f"team stack up in {duration(time.monotonic() - began)}: MLflow {stack.mlflow_url} (users {ADMIN}, "
        f"{TRAINER}{''.join(f', {name}' for name in stack.users)}), S3 {stack.s3_url} (buckets "
        f"{', '.join(BUCKETS.values())}), PostgreSQL port {stack.ports['postgres']}, listening on {stack.bind}; "
        f"`source {stack.path('env')}` to use it"
    )


def _user(directory: Path, name: str, role: str) -> None:
    from pipeline.team.locking import stack_lock  # noqa: PLC0415 - what only this command needs
    from pipeline.team.users import add_user, check_new_user  # noqa: PLC0415

    if not exists(directory):
        raise PipelineError(f"no team stack at {directory}: `make team-up` first")
    check_new_user(load_or_create(directory, environ={}), name, role)  # bad input: before the lock, at once
    with stack_lock(directory):
        stack = load_or_create(directory, environ={})
        stopped = [service for service in SERVICES if service not in control.running(stack)]
        if stopped:
            raise PipelineError(f"the stack at {directory} is not running ({', '.join(stopped)}): `make team-up` first")
        stack = add_user(stack, name, role)
    files = ", ".join(str(path) for path in (stack.path("users", f"{name}.env"), stack.path("ca.pem")))
    print(f"user {name} ({role}) created; give them {files} and {stack.path('ca-bundle.pem')}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.team", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status", "user", "backup", "restore"))
    parser.add_argument("arguments", nargs="*", help="user: NAME ROLE; restore: BACKUP")
    args = parser.parse_args(argv)
    directory = team_directory()
    with run_stage(f"team {args.command}"):
        names = {"user": ("NAME", "ROLE"), "restore": ("BACKUP",)}.get(args.command, ())
        usage = {"user": "make team-user NAME=… ROLE=viewer|trainer", "restore": "make team-restore BACKUP=<path>"}
        if len(args.arguments) != len(names):
            raise PipelineError(
                f"{args.command} takes {' '.join(names) or 'no arguments'}, not {len(args.arguments)} "
                f"({' '.join(map(repr, args.arguments)) or 'none'})" + (f" ({usage[args.command]})" if names else "")
            )
        empty = [name for name, argument in zip(names, args.arguments, strict=True) if not argument.strip()]
        if empty:
            raise PipelineError(f"{args.command}: {' and '.join(empty)} is empty ({usage[args.command]})")
        began = time.monotonic()
        if args.command == "up":
            _up(directory)
        elif args.command == "down":
            control.down(directory)
            print(f"team stack down in {duration(time.monotonic() - began)}; its data stays in {directory}")
        elif args.command == "user":
            _user(directory, *args.arguments)
        elif args.command == "backup":
            from pipeline.team.backup import backup  # noqa: PLC0415

            path = backup(directory)
            print(f"backed up in {duration(time.monotonic() - began)}; keep a copy off this disk (docs/team.md):")
            print(path)
        elif args.command == "restore":
            from pipeline.team.backup import restore  # noqa: PLC0415

            source = Path(args.arguments[0]).resolve()
            restore(directory, source)
            print(f"team stack restored from {source} and up in {duration(time.monotonic() - began)}")
        else:
            states = control.status(directory)
            for service, running in states.items():
                print(f"{service}: {'running' if running else 'stopped'}")
            if not all(states.values()):
                sys.exit(3)


if __name__ == "__main__":
    main()
