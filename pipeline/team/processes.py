"""The stack's server processes: started in their own session (umask 077) with a pid file and a log, waited for
until they answer, probed, and terminated with their process group.

A pid file holds the pid and the process's start time (``/proc/<pid>/stat``, in clock ticks since boot): a pid
that the kernel has since given to another process is recognised as stale and never signalled. A service is
sent a secret only once the socket on its port is seen to belong to the process the stack started (or one of
its process group): :func:`owns_port`, from ``/proc/net/tcp*`` and ``/proc/<pid>/fd``. Linux only."""

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
from pipeline.team.private import open_log, read_private, write_private
from pipeline.team.stack import BIND_ENV, DIRECTORY_ENV, HOST_ENV, LOOPBACK, START_TIMEOUT


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


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name before it may hold spaces


def recorded_process(file: Path) -> int | None:
    """The pid in ``file`` if that very process still runs: alive, and started when the file says."""
    try:
        pid, started = (int(part) for part in read_private(file).split())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) and start_time(pid) == started else None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    return inodes


def _group_members(leader: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == leader:  # field 5: pgrp
                    members.append(int(entry.name))
    return members


def owns_port(pid: int, port: int) -> bool:
    """Whether what listens on ``port`` is process ``pid`` or one of its process group (its workers)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    for member in {pid, *_group_members(pid)}:
        with contextlib.suppress(OSError):
            for descriptor in Path(f"/proc/{member}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(descriptor)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return True
    return False


def listening(port: int, address: str = LOOPBACK) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        probe.settimeout(1)
        return probe.connect_ex((address, port)) == 0


def http_status(
    url: str, timeout: float = 3.0, auth: tuple[str, str] | None = None, verify: str | bool = True
) -> int | None:
    """The HTTP status ``url`` answers a GET with (signed in with basic auth as ``auth``'s user and password if
    given; its certificate checked against the CA file ``verify``), None if nothing answers."""
    try:
        return requests.get(url, timeout=timeout, auth=auth, verify=verify).status_code
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
        if pid_file is not None and recorded_process(pid_file) is None and time.monotonic() - began > 2:
            break  # the server exited
        time.sleep(0.25)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    raise PipelineError(f"{what} did not start within {timeout:.0f} s; see {log}: {' | '.join(tail)}")


def spawn(command: Sequence[str], log: Path, pid_file: Path, env: Mapping[str, str], cwd: Path) -> int:
    """Start a server in its own session (it outlives this process), its files private (umask 077), its output
    appended to ``log``; its pid and start time in ``pid_file``."""
    output = open_log(log)
    try:
        process = subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            umask=0o077,
        )
    finally:
        os.close(output)
    write_private(pid_file, f"{process.pid} {start_time(process.pid)}\n")
    return process.pid


def terminate(pid_file: Path, grace: float) -> None:
    """SIGTERM to the process group of the process ``pid_file`` records, SIGKILL after ``grace`` seconds; a stale
    file (its pid gone, or now another process's) is removed without a signal."""
    pid = recorded_process(pid_file)
    if pid is not None:
        kill = os.killpg if _group_leader(pid) else os.kill  # the group only where it is that process's own
        with contextlib.suppress(ProcessLookupError):
            kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            kill(pid, signal.SIGKILL)
        while process_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


def _group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _reap(pid: int) -> None:
    """Collect a child that exited (when the caller started it: tests), so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def server_environment() -> dict[str, str]:
    """This process's environment without a client's MLflow, AWS or CA settings, nor the stack's own."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "AWS_", "PIPELINE_TEAM_", "PIPELINE_SWEEP_"))
        and key not in ("PGPASSWORD", "REQUESTS_CA_BUNDLE", DIRECTORY_ENV, HOST_ENV, BIND_ENV)
    }


def check_run(command: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
    """Run a set-up command to its end; its last line of output in an error if it fails."""
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=START_TIMEOUT, env=None if env is None else dict(env)
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"{what} failed ({result.returncode}): {lines[-1] if lines else 'no output'}")
