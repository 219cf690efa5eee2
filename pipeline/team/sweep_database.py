"""The sweeps' database (``sweeps`` on the stack's PostgreSQL, pipeline/sweeps/): Optuna's tables, made by the
stack's own database user, and a PostgreSQL login for the shared trainer and each person, with the same password
as their MLflow login. Trainers read and write the studies; viewers read them. Granted again at every ``up``, after
``team-user`` and after a restore (whose dumps carry no grants), so it always matches ``secrets.json``."""

from __future__ import annotations

from pipeline.team.postgres import connect, create_database
from pipeline.team.stack import DATABASE_USER, SWEEPS_DATABASE, TRAINER, Stack, sweep_storage_uri


def logins(stack: Stack) -> list[tuple[str, str, str]]:
    """(login, password, role) of everyone who may reach the sweeps."""
    people = [(name, record["password"], record["role"]) for name, record in sorted(stack.users.items())]
    return [(TRAINER, stack.secrets["trainer_password"], "trainer"), *people]


def grant_sweeps(stack: Stack) -> None:
    """The database, Optuna's tables in it, and each login's rights; PostgreSQL must be running."""
    import optuna  # noqa: PLC0415 - only the set-up of the sweeps' database needs it
    from psycopg import sql  # noqa: PLC0415 - only the stack's set-up talks to PostgreSQL directly

    create_database(stack, SWEEPS_DATABASE)
    optuna.storages.RDBStorage(sweep_storage_uri(stack, DATABASE_USER, stack.secrets["database_password"]))
    with connect(stack, SWEEPS_DATABASE) as connection:
        for login, password, role in logins(stack):
            name = sql.Identifier(login)
            exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            connection.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(password)))
            connection.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(SWEEPS_DATABASE), name)
            )
            connection.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name))
            if role == "trainer":
                connection.execute(
                    sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(name)
                )
                connection.execute(
                    sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}").format(name)
                )
            else:
                connection.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(name))
