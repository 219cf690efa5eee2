"""Whether a process still exists: the owner of an MLflow run, a team server."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts): the owner of an MLflow run, a team server."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
