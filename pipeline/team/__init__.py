"""The team stack beside the ML core: PostgreSQL, an S3 server and ``mlflow server`` with logins, run on one
host (``python -m pipeline.team up|down|status``, ``make team-up``)."""
