"""One team command at a time on a stack: ``up``, ``down``, ``user``, ``backup`` and ``restore`` hold an exclusive
lock on ``lock`` in the stack's directory (``flock``: released when the process ends, however it ends), so that
two ``make team-up`` at once leave one stack, the second finding the first's servers running."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.team.stack import prepare_directory

LOCK_TIMEOUT = 600.0  # seconds to wait for another command: a cold `up` takes well under a minute


@contextlib.contextmanager
def stack_lock(directory: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """The stack's lock for the block; waits (saying so once) while another command holds it."""
    prepare_directory(directory)
    # close-on-exec: the servers started under the lock must not keep holding it
    descriptor = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        said = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"another team command has held {directory / 'lock'} for over {timeout:.0f} s"
                    ) from None
                if not said:
                    print(f"waiting for another team command on {directory} to finish", file=sys.stderr)
                    said = True
                time.sleep(0.2)
        yield
    finally:
        os.close(descriptor)
