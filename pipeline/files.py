"""Writing outputs so that a crash, a full disk or a kill never leaves a partial file in place."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pipeline.errors import PipelineError

# Errors of the storage itself, as opposed to errors of whatever the caller writes (a dropped download).
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO}


class OutputError(PipelineError):
    """An output could not be written (disk full, read-only...); the previous version is kept."""


class InputError(PipelineError):
    """An input file cannot be read, or is not what it should be."""


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[IO[bytes]]:
    """Yield a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds.

    On any error the temporary file is removed and whatever stood at ``path`` before is untouched; a
    full disk (or quota, or read-only file system) becomes an :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    with naming_storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # closed by the with below, then renamed onto path or removed
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        )
        try:
            with handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(handle.name)
            raise


@contextlib.contextmanager
def naming_storage_errors(path: Path) -> Iterator[None]:
    """Turn a storage error (disk full, quota, read-only...) while writing ``path`` into an OutputError."""
    try:
        yield
    except OSError as error:
        if error.errno not in _STORAGE_ERRORS:
            raise
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise OutputError(f"{path}: cannot write it: {error.strerror or error}; {kept}") from error


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path) as handle:
        handle.write(data)


def write_json(path: str | Path, value: Any) -> None:
    """JSON with sorted keys and a final newline, so equal values always give equal bytes."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_bytes(path, text.encode("utf-8"))


def read_input(path: str | Path, error: type[PipelineError] = InputError) -> bytes:
    """The bytes of ``path``; ``error`` (one line naming the file) if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as failure:
        raise error(f"{path}: cannot read: {failure.strerror or failure}") from None


def read_text(path: str | Path, error: type[PipelineError] = InputError) -> str:
    """The UTF-8 text of ``path``; ``error`` if it cannot be read or is not UTF-8."""
    data = read_input(path, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as failure:
        raise error(f"{path}: not UTF-8 text: {failure.reason} at byte {failure.start}") from None


def read_json(path: str | Path, error: type[PipelineError] = InputError) -> Any:
    """The JSON value in ``path``; ``error`` if it cannot be read or parsed."""
    try:
        return json.loads(read_text(path, error))
    except json.JSONDecodeError as failure:
        raise error(f"{path}: not JSON: {failure.msg} (line {failure.lineno})") from None


def json_digest(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys; anything else as its str): equal values, equal digests."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (sha256: what ``sha256sum`` prints; ``md5``: what DVC 3 records for a
    file in dvc.lock), or of a directory's relative names and file digests."""
    path, secure = Path(path), algorithm == "sha256"
    if path.is_dir():
        listing = "".join(
            f"{file.relative_to(path)}\0{file_digest(file, algorithm)}\n"
            for file in sorted(p for p in path.rglob("*") if p.is_file())
        )
        return hashlib.new(algorithm, listing.encode(), usedforsecurity=secure).hexdigest()
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.new(algorithm, usedforsecurity=secure)).hexdigest()
