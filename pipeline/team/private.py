"""Files of the stack's directory, which holds secrets: folders only their owner enters, files written whole
(a temporary file renamed onto the name: a crash leaves the old one or the new one, never half of either) with
mode 0600 from their first byte, and never through a symbolic link (``O_NOFOLLOW``; a link planted where a
file or folder of the stack belongs is refused, not followed)."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from pipeline.errors import PipelineError


def private_directory(path: Path, mode: int = 0o700) -> Path:
    """``path`` as a folder (made if missing, its parents too) with ``mode``; an error if it is a symbolic link
    or not a folder."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(parents=True, mode=mode)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PipelineError(f"{path} is a symbolic link or not a folder: the team stack does not follow it")
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
    return path


def write_private(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """``text`` as the whole of ``path``, atomically, mode ``mode`` from the start (0600: only its owner reads
    it); a symbolic link at ``path`` is replaced, never followed."""
    data = text.encode() if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)  # the umask may have taken bits off
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def read_private(path: Path) -> str:
    """The text of ``path``; an OSError (ELOOP) if it is a symbolic link."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read().decode()


def open_log(path: Path) -> int:
    """A descriptor appending to ``path`` (made 0600), never through a symbolic link: a server's log."""
    private_directory(path.parent)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
