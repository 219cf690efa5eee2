"""The team stack beside the ML core: PostgreSQL, an S3 server and ``mlflow server`` with logins, over TLS, run on
one host (``python -m pipeline.team up|down|status|user|backup|restore``, ``make team-up``).

One job per module: ``stack`` (directory, ports, secrets, people, the clients' environment files), ``private``
(the directory's files: 0600, whole, never through a link), ``tls`` (the CA and server certificate),
``processes`` (spawn, pid files, ownership of a port, wait, probe, terminate), ``postgres``, ``s3``,
``mlflow_server``, ``roles`` (what a viewer and a trainer may do, enforced inside the MLflow server), ``users``
(the server's logins and grants, adding a person), ``locking`` (one command at a time), ``control`` (up, down,
status; one service's start and stop), ``backup`` (backup, restore), ``__main__`` (the command).
The core (``pipeline/`` outside ``team/``) never imports this package."""
