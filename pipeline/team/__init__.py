"""The team stack beside the ML core: PostgreSQL, an S3 server and ``mlflow server`` with logins, run on one
host (``python -m pipeline.team up|down|status``, ``make team-up``).

One job per module: ``stack`` (directory, ports, secrets, the client's environment file), ``processes``
(spawn, pid files, wait, probe, terminate), ``postgres``, ``s3``, ``mlflow_server``, ``users`` (the server's
logins and grants), ``control`` (up, down, status; one service's start and stop), ``__main__`` (the command).
The core (``pipeline/`` outside ``team/``) never imports this package."""
