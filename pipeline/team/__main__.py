"""The team stack on one machine: PostgreSQL, an S3 server and ``mlflow server`` with basic-auth, on 127.0.0.1.

Run::

    python -m pipeline.team up       # start what is not running (idempotent), write .team/env
    python -m pipeline.team status   # each service and whether it answers
    python -m pipeline.team down     # stop everything it started; the data stays in .team/

(``make team-up`` / ``make team-down``.) Everything comes from the pinned requirements, no Docker:
PostgreSQL (:mod:`pipeline.team.postgres`), SeaweedFS's S3 server (:mod:`pipeline.team.s3`) and the MLflow
server (:mod:`pipeline.team.mlflow_server`) with its users (:mod:`pipeline.team.users`), run as processes of
their own (:mod:`pipeline.team.processes`) and together (:mod:`pipeline.team.control`).

Ports are picked free at the first ``up`` and kept; passwords and keys are generated then, kept in
``.team/secrets.json`` (mode 0600), and the client's share of them goes to ``.team/env`` (``source`` it;
:mod:`pipeline.team.stack`). The directory is ``$PIPELINE_TEAM_DIR`` when set, else ``.team``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from pipeline.cli import duration, run_stage
from pipeline.team.control import down, status, up
from pipeline.team.stack import ADMIN, BUCKETS, TRAINER, team_directory


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.team", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    directory = team_directory()
    with run_stage(f"team {args.command}"):
        began = time.monotonic()
        if args.command == "up":
            stack = up(directory)
            print(
                f"team stack up in {duration(time.monotonic() - began)}: MLflow {stack.mlflow_url} (users {ADMIN}, "
                f"{TRAINER}), S3 {stack.s3_url} (buckets {', '.join(BUCKETS.values())}), PostgreSQL port "
                f"{stack.ports['postgres']}; `source {stack.path('env')}` to use it"
            )
        elif args.command == "down":
            down(directory)
            print(f"team stack down in {duration(time.monotonic() - began)}; its data stays in {directory}")
        else:
            states = status(directory)
            for service, running in states.items():
                print(f"{service}: {'running' if running else 'stopped'}")
            if not all(states.values()):
                sys.exit(3)


if __name__ == "__main__":
    main()
