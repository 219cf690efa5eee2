"""Whether a process still exists (the owner of an MLflow run, a team server), and stopping a server's group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts): the owner of an MLflow run, a team server."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group ``process`` leads (started with ``start_new_session``), SIGKILL to it after
    ``grace`` seconds (a server busy on a loaded machine may not finish shutting down in time); then reaped."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
            return
    process.wait()
