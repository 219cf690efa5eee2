"""The stack's server processes: started in their own session with a pid file and a log, waited for until
they answer, probed (a port that listens, an HTTP status), and terminated with their process group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import requests

from pipeline.errors import PipelineError
from pipeline.processes import process_alive
from pipeline.team.stack import DIRECTORY_ENV, HOST, START_TIMEOUT


def as_service_user() -> list[str]:
    """PostgreSQL refuses to run as root: then its binaries run as ``nobody``."""
    if os.geteuid() != 0:
        return []
    # runuser lives in /usr/sbin (util-linux), which a non-login PATH may leave out
    runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if not runuser:
        raise PipelineError("PostgreSQL cannot run as root and runuser (util-linux) is not installed")
    return [runuser, "-u", "nobody", "--"]


def give_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "nobody", "nogroup" if _group_exists("nogroup") else None)


def _group_exists(name: str) -> bool:
    import grp  # noqa: PLC0415 - POSIX only

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def pid_alive(file: Path) -> int | None:
    """The pid in ``file`` (its first line: also PostgreSQL's postmaster.pid) if that process is alive."""
    try:
        pid = int(file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid) else None


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


def http_status(url: str, timeout: float = 3.0, auth: tuple[str, str] | None = None) -> int | None:
    """The HTTP status ``url`` answers a GET with (signed in with basic auth as ``auth``'s user and password if
    given), None if nothing answers."""
    try:
        return requests.get(url, timeout=timeout, auth=auth).status_code
    except requests.RequestException:
        return None


def wait(
    what: str, check: Callable[[], bool], log: Path, pid_file: Path | None = None, timeout: float = START_TIMEOUT
) -> None:
    """Until ``check()`` holds; an error quoting the end of ``log`` after ``timeout`` seconds, or as soon as the
    process of ``pid_file`` has exited (checked from two seconds after the start on)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if check():
            return
        if pid_file is not None and pid_alive(pid_file) is None and time.monotonic() - began > 2:
            break  # the server exited
        time.sleep(0.25)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    raise PipelineError(f"{what} did not start within {timeout:.0f} s; see {log}: {' | '.join(tail)}")


def spawn(command: Sequence[str], log: Path, pid_file: Path, env: Mapping[str, str], cwd: Path) -> None:
    """Start a server in its own session (it outlives this process) with its output in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        process = subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")


def terminate(pid_file: Path, grace: float) -> None:
    """SIGTERM to the process group of the pid in ``pid_file``, SIGKILL after ``grace`` seconds."""
    pid = pid_alive(pid_file)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while process_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect a child that exited (when the caller started it: tests), so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def server_environment() -> dict[str, str]:
    """This process's environment without a client's MLflow or AWS settings."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "AWS_")) and key not in ("PGPASSWORD", DIRECTORY_ENV)
    }


def check_run(command: Sequence[str], what: str) -> None:
    """Run a set-up command to its end; its last line of output in an error if it fails."""
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=START_TIMEOUT)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"{what} failed ({result.returncode}): {lines[-1] if lines else 'no output'}")
