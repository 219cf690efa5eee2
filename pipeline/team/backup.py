"""Backup and restore of a whole stack (``python -m pipeline.team backup|restore``, ``make team-backup``,
``make team-restore BACKUP=<path>``).

A backup is a folder ``backups/<UTC time>`` in the stack's directory (0700, its files 0600: it holds the stack's
secrets): ``postgres/<database>.dump`` (``pg_dump -Fc`` of ``mlflow`` and ``mlflow_auth``: runs, registry, users
and grants), ``objects/<sha256>`` (every object of both buckets, each content once), ``secrets.json`` (the
stack's secrets and people) and ``manifest.json`` (each bucket's keys and their sha256, each file's sha256). It
is consistent without stopping anything: the databases are dumped first, in one snapshot, then the objects are
copied, so every artifact a dumped run or version names is in it (an object written meanwhile is one more, named
by nothing). It is written under a temporary name and renamed at the end: a folder with the final name is whole.

A restore checks the whole backup first (every file against its sha256), refuses while any service runs, then
brings back exactly the backed-up databases, buckets, secrets and people, keeps this host's ports, certificates
and addresses, and starts the stack."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team import control
from pipeline.team.locking import stack_lock
from pipeline.team.postgres import DATABASES, connect, connection_settings, postgres_running, program
from pipeline.team.private import private_directory, read_private, write_private
from pipeline.team.processes import check_run
from pipeline.team.s3 import s3_running, stack_client
from pipeline.team.stack import BUCKETS, DATABASE_USER, exists, load_or_create, save
from pipeline.team.sweep_database import grant_sweeps

FORMAT = 1
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def backup(directory: Path) -> Path:
    """A snapshot of the running stack at ``directory``; its folder returned."""
    if not exists(directory):
        raise PipelineError(f"no team stack at {directory}: nothing to back up")
    with stack_lock(directory):
        stack = load_or_create(directory, environ={})
        if not (postgres_running(stack) and s3_running(stack)):
            raise PipelineError(f"the stack at {directory} is not running: `make team-up` first, then back it up")
        root = private_directory(directory / "backups")
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
        partial = private_directory(root / f".{stamp}.partial")
        try:
            manifest = _write(stack, partial)
            write_private(partial / MANIFEST, json.dumps(manifest, indent=2))
            target = root / stamp
            os.rename(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target


def _write(stack, folder: Path) -> dict:
    dumps = private_directory(folder / "postgres")
    files = {}
    for database in DATABASES:
        connect(stack).close()  # the port is the stack's server and its certificate the stack's: then the password
        target = dumps / f"{database}.dump"
        check_run(
            [program(stack, "pg_dump"), "--format=custom", f"--file={target}", database],
            f"pg_dump {database}",
            env=os.environ | connection_settings(stack),
        )
        os.chmod(target, 0o600)
        files[f"postgres/{database}.dump"] = _sha256(target)
    objects = private_directory(folder / "objects")
    client = stack_client(stack)
    buckets: dict[str, dict[str, str]] = {}
    for bucket in BUCKETS.values():
        keys = buckets[bucket] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                digest = hashlib.sha256(body).hexdigest()
                if not (objects / digest).exists():
                    write_private(objects / digest, body)
                keys[item["Key"]] = digest
    write_private(folder / "secrets.json", read_private(stack.path("secrets.json")))
    files["secrets.json"] = _sha256(folder / "secrets.json")
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"format": FORMAT, "created": created, "files": files, "buckets": buckets}


def read_backup(path: Path) -> dict:
    """The manifest of the backup at ``path``, once every file it names is there with its sha256; one line naming
    the problem otherwise."""
    if not path.is_dir():
        raise PipelineError(f"backup {path}: no such folder")
    try:
        manifest = json.loads(read_private(path / MANIFEST))
        files, buckets = manifest["files"], manifest["buckets"]
        if manifest.get("format") != FORMAT or set(buckets) != set(BUCKETS.values()):
            raise ValueError(f"format {manifest.get('format')!r}, buckets {sorted(buckets)}")
        expected = dict(files) | {f"objects/{digest}": digest for keys in buckets.values() for digest in keys.values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise PipelineError(f"backup {path}: {MANIFEST} is missing or not a team backup's ({error})") from None
    if set(files) != {"secrets.json", *(f"postgres/{database}.dump" for database in DATABASES)}:
        raise PipelineError(f"backup {path}: its manifest does not name the databases and secrets.json")
    for name, digest in expected.items():
        file = path / name
        if ".." in Path(name).parts or not file.is_file():
            raise PipelineError(f"backup {path}: {name} is missing")
        if _sha256(file) != digest:
            raise PipelineError(f"backup {path}: {name} does not match its sha256 in {MANIFEST} (corrupt)")
    return manifest


def restore(directory: Path, path: Path) -> None:
    """The stack at ``directory`` brought back to the backup at ``path`` and started (see the module docstring)."""
    manifest = read_backup(path)
    backed_up = json.loads(read_private(path / "secrets.json"))
    with stack_lock(directory):
        if exists(directory):
            on = control.running(load_or_create(directory, environ={}))
            if on:
                raise PipelineError(
                    f"the stack at {directory} is running ({', '.join(on)}): `make team-down` first, then restore"
                )
        stack = load_or_create(directory, environ={})  # a new stack on a new host: its ports, its certificates
        try:
            control.start(stack, "postgres")
            control.start(stack, "s3")
            _restore_buckets(stack, path, manifest["buckets"])
            _restore_databases(stack, path, backed_up["secrets"]["database_password"])
            stored = json.loads(read_private(stack.path("secrets.json")))
            stored["secrets"], stored["users"] = backed_up["secrets"], backed_up.get("users", {})
            write_private(stack.path("secrets.json"), json.dumps(stored, indent=2))
        except BaseException:
            control.stop(stack, "s3")
            control.stop(stack, "postgres")
            raise
        control.stop(stack, "s3")  # started again below with the backup's identities and keys
        for stale in stack.path("users").glob("*.env") if stack.path("users").is_dir() else []:
            if stale.stem not in backed_up.get("users", {}):
                stale.unlink()
        restored = save(load_or_create(directory, environ={}))
        for service in control.SERVICES:
            control.start(restored, service)
        grant_sweeps(restored)  # the dumps carry no grants
        control.write_environment_files(restored)


def _restore_databases(stack, path: Path, password: str) -> None:
    from psycopg import sql  # noqa: PLC0415 - only the stack's set-up talks to PostgreSQL directly

    with connect(stack) as connection:
        for database in DATABASES:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    for database in DATABASES:
        check_run(
            [
                program(stack, "pg_restore"),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                f"--dbname={database}",
                str(path / "postgres" / f"{database}.dump"),
            ],
            f"pg_restore {database}",
            env=os.environ | connection_settings(stack),
        )
    with connect(stack) as connection:  # the backup's database password, which its secrets.json holds
        connection.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(DATABASE_USER), sql.Literal(password))
        )


def _restore_buckets(stack, path: Path, buckets: dict[str, dict[str, str]]) -> None:
    client = stack_client(stack)
    for bucket, keys in buckets.items():
        present = [
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])
        ]
        for start in range(0, len(present), 1000):
            client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in present[start : start + 1000]]}
            )
        for key, digest in keys.items():
            client.put_object(Bucket=bucket, Key=key, Body=(path / "objects" / digest).read_bytes())
