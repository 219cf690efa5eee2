"""Stage fetch: download MNIST and the fable, verified by the sha256 of their content.

Run::

    python -m pipeline.stages.fetch mnist      # the four IDX files into paths.mnist.raw (decompressed)
    python -m pipeline.stages.fetch fable      # the story into paths.fable.raw

Sources are tried in order: ``$PIPELINE_MIRROR`` first when set (a directory or base URL laid out as
``mnist/<name>.gz`` and ``fable/<file name>``), then the sources in params.yaml. A source is rejected,
with a one-line reason, when it cannot be reached, times out, serves an HTML page, a truncated or
corrupt gzip, more bytes than ``data.max_download_mib`` (downloaded, or once decompressed: a gzip
bomb), or content whose sha256 is not the one in params.yaml. Only verified content is renamed into
place. The mirror is an environment variable, not a param, because where the bytes come from does not
change what they are: switching mirrors leaves every DVC stage up to date.
``$PIPELINE_FETCH_TIMEOUT`` (seconds, default 60) bounds each download as a whole: a server that
trickles bytes, or stalls again and again just short of a socket timeout, is cut off at that deadline.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Params, load_params
from pipeline.errors import PipelineError
from pipeline.files import atomic_output

MIRROR_ENV = "PIPELINE_MIRROR"
TIMEOUT_ENV = "PIPELINE_FETCH_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 60.0
MIB = 1 << 20
_CHUNK = MIB
# The param that caps each file, named in the rejection so that the reader knows what to raise.
MAX_DOWNLOAD_KEY = "data.max_download_mib"
# A download prints how far it is at most this often (seconds), and once when it ends.
PROGRESS_INTERVAL_S = 2.0


class FetchError(PipelineError):
    """No source delivered the expected content."""


class SourceRejected(Exception):
    """One source failed; the message is the one-line reason."""


@dataclass(frozen=True)
class Target:
    """What to fetch: where it goes, what its content must hash to, and where it may come from."""

    destination: Path
    sha256: str
    sources: tuple[str, ...]


def mirror_source(mirror: str, relative: str) -> str:
    """``relative`` inside ``mirror``, a directory or a base URL."""
    if urllib.parse.urlsplit(mirror).scheme in ("http", "https", "file"):
        return mirror.rstrip("/") + "/" + relative
    return str(Path(mirror).resolve() / relative)


def mnist_targets(params: Params, mirror: str | None) -> list[Target]:
    data = params.data.mnist
    targets = []
    for file in (data.files.train_images, data.files.train_labels, data.files.test_images, data.files.test_labels):
        sources = [base.rstrip("/") + "/" + file.name + ".gz" for base in data.mirrors]
        if mirror:
            sources.insert(0, mirror_source(mirror, f"mnist/{file.name}.gz"))
        targets.append(_target(Path(params.paths.mnist.raw) / file.name, file.sha256, sources))
    return targets


def fable_target(params: Params, mirror: str | None) -> Target:
    fable = params.data.fable
    sources = [fable.url]
    if mirror:
        file_name = Path(urllib.parse.urlsplit(fable.url).path).name
        sources.insert(0, mirror_source(mirror, f"fable/{file_name}"))
    return _target(Path(params.paths.fable.raw), fable.sha256, sources)


def _target(destination: Path, sha256: str, sources: Sequence[str]) -> Target:
    # dict.fromkeys: a mirror that is also listed in params.yaml is tried once, not twice.
    return Target(destination=destination, sha256=sha256, sources=tuple(dict.fromkeys(sources)))


def fetch(target: Target, timeout: float, max_bytes: int) -> str:
    """Put the verified content of the first good source at ``target.destination``; return that source.

    Each source gets ``timeout`` seconds in all, and at most ``max_bytes`` bytes, downloaded and decompressed.
    """
    reasons = []
    for source in target.sources:
        try:
            with atomic_output(target.destination) as output:
                _copy_verified(source, output, target.sha256, timeout, max_bytes)
        except SourceRejected as rejection:
            reasons.append(f"{source}: {rejection}")
            print(f"fetch: rejected {source}: {rejection}", file=sys.stderr)
            continue
        size = target.destination.stat().st_size
        print(f"fetch: {target.destination} <- {source} ({download_progress(size, None)})", file=sys.stderr)
        return source
    listing = "\n".join(f"  - {reason}" for reason in reasons)
    raise FetchError(f"no source gave {target.destination} with sha256 {target.sha256}:\n{listing}")


def _copy_verified(source: str, output: IO[bytes], sha256: str, timeout: float, max_bytes: int) -> None:
    """Write the content of ``source`` (decompressed if it is a .gz) to ``output``; reject if it is wrong."""
    with _TempDownload(source, timeout, max_bytes) as raw:
        head = raw.read(512)
        raw.seek(0)
        if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
            raise SourceRejected("served an HTML page, not the file")
        stream: IO[bytes] = raw
        if source.endswith(".gz"):
            if not head.startswith(b"\x1f\x8b"):
                raise SourceRejected("not a gzip file (bad magic bytes)")
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        digest, size = hashlib.sha256(), 0
        try:
            for block in iter(lambda: stream.read(_CHUNK), b""):
                size += len(block)
                if size > max_bytes:  # a gzip bomb: a small download that decompresses without end
                    raise _over_cap("decompresses to more than", max_bytes)
                digest.update(block)
                output.write(block)
        except EOFError:
            raise SourceRejected("truncated gzip (ends before its end-of-stream marker)") from None
        except (gzip.BadGzipFile, zlib.error) as error:
            raise SourceRejected(f"corrupt gzip: {error}") from None
    if digest.hexdigest() != sha256:
        raise SourceRejected(f"content sha256 {digest.hexdigest()} ({size} bytes) is not the expected {sha256}")


class _TempDownload:
    """The bytes of a URL or local path in an anonymous temporary file: at most ``max_bytes`` of them,
    downloaded within ``timeout`` seconds in all."""

    def __init__(self, source: str, timeout: float, max_bytes: int):
        self.source, self.timeout, self.max_bytes = source, timeout, max_bytes

    def __enter__(self) -> IO[bytes]:
        self.file = tempfile.TemporaryFile()
        try:
            self._download()
        except BaseException:
            self.file.close()
            raise
        self.file.seek(0)
        return self.file

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()

    def _download(self) -> None:
        scheme = urllib.parse.urlsplit(self.source).scheme
        if scheme not in ("http", "https", "file"):
            try:
                with open(self.source, "rb") as local:
                    received = 0
                    while block := local.read(_CHUNK):
                        received += len(block)
                        self._keep(block, received)
            except OSError as error:
                raise SourceRejected(error.strerror or str(error)) from None
            return
        deadline = time.monotonic() + self.timeout
        try:
            with urllib.request.urlopen(self.source, timeout=self.timeout) as response:
                expected = response.headers.get("Content-Length")
                total = int(expected) if expected is not None and expected.isdigit() else None
                if total is not None and total > self.max_bytes:
                    raise _over_cap(f"announces {total} bytes, more than", self.max_bytes)
                received, shown = 0, time.monotonic()
                while block := _read_block(response, deadline):
                    received += len(block)
                    self._keep(block, received)
                    if time.monotonic() - shown >= PROGRESS_INTERVAL_S:
                        print(
                            f"fetch: {self.source}: {download_progress(received, total)}", file=sys.stderr, flush=True
                        )
                        shown = time.monotonic()
        except urllib.error.HTTPError as error:
            raise SourceRejected(f"HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, TimeoutError):
                raise SourceRejected(f"timed out after {self.timeout:g} s") from None
            raise SourceRejected(f"cannot connect: {getattr(reason, 'strerror', None) or reason}") from None
        except TimeoutError:
            raise SourceRejected(f"timed out after {self.timeout:g} s") from None
        except (ConnectionError, OSError) as error:
            raise SourceRejected(f"connection failed: {error}") from None
        if total is not None and received != total:
            raise SourceRejected(f"truncated download: {received} of {total} bytes")

    def _keep(self, block: bytes, received: int) -> None:
        """Append ``block`` to the file, ``received`` bytes in all so far, unless that is over the cap."""
        if received > self.max_bytes:  # an endless or huge response: stop before it fills the disk
            raise _over_cap("larger than", self.max_bytes)
        self.file.write(block)


def _read_block(response: Any, deadline: float) -> bytes:
    """The next ``_CHUNK`` bytes of urlopen's ``response`` (fewer only at its end); TimeoutError at ``deadline``.

    ``read1`` returns what one read of the socket gives, so a server trickling bytes cannot keep a read
    going; and each read's socket timeout is the time left, so neither can one that stalls just short of
    it again and again.
    """
    sock = _socket_of(response)
    parts, size = [], 0
    while size < _CHUNK:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if sock is not None:
            sock.settimeout(left)
        part = response.read1(_CHUNK - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _socket_of(response: Any) -> socket.socket | None:
    """The socket an http.client response reads from; None for a file:// URL's response.

    The standard library offers no public way to change a response's timeout once it has begun: the
    socket is only reachable through the buffered file that http.client reads it by.
    """
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _over_cap(what: str, max_bytes: int) -> SourceRejected:
    return SourceRejected(f"{what} the cap of {max_bytes / MIB:g} MiB ({MAX_DOWNLOAD_KEY})")


def download_progress(received: int, total: int | None) -> str:
    """``4.2 of 9.9 MB (42%)``, or ``4.2 MB`` when the server did not say the size."""
    if not total:
        return f"{received / 1e6:.1f} MB"
    return f"{received / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * received // total}%)"


def fetch_timeout(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    value = environ.get(TIMEOUT_ENV, "")
    if not value:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise FetchError(f"${TIMEOUT_ENV}: must be a positive number of seconds, got {value!r}")
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.stages.fetch", __doc__)
    parser.add_argument("dataset", choices=["mnist", "fable"])
    args = parser.parse_args(argv)
    with run_stage("fetch"):
        params = load_params(args.params)
        timeout, mirror = fetch_timeout(), os.environ.get(MIRROR_ENV) or None
        targets = mnist_targets(params, mirror) if args.dataset == "mnist" else [fable_target(params, mirror)]
        for target in targets:
            fetch(target, timeout, params.data.max_download_mib * MIB)


if __name__ == "__main__":
    main()
