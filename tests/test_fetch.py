"""Fetch against real HTTP servers on 127.0.0.1: bad sources are rejected and the next one is used."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Route

from pipeline.config import parse_params
from pipeline.stages.fetch import (
    MIB,
    FetchError,
    Target,
    fable_target,
    fetch,
    fetch_timeout,
    mirror_source,
    mnist_targets,
)

CONTENT = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"  # a tiny IDX labels file
SHA = hashlib.sha256(CONTENT).hexdigest()
GOOD_GZ = gzip.compress(CONTENT, mtime=0)
ROOMY = 64 * MIB  # a cap no test file reaches but those about the cap


def target(tmp_path: Path, *sources: str) -> Target:
    return Target(destination=tmp_path / "data" / "labels", sha256=SHA, sources=sources)


def leftovers(tmp_path: Path) -> list[str]:
    directory = tmp_path / "data"
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize(
    "bad, reason",
    [
        (Route(b"gone", status=404), "HTTP 404"),
        (Route(gzip.compress(b"other content", mtime=0)), "content sha256 .* is not the expected"),
        (Route(b"<!DOCTYPE html><html><body>Access denied</body></html>"), "served an HTML page"),
        (Route(GOOD_GZ[:-12]), "truncated gzip"),
        (Route(b"plain bytes, not gzip"), "not a gzip file"),
        (Route(GOOD_GZ[:10] + bytes([GOOD_GZ[10] ^ 0xFF]) + GOOD_GZ[11:]), "corrupt gzip|content sha256|CRC"),
        (Route(GOOD_GZ, content_length=len(GOOD_GZ) + 100), "truncated download|connection failed"),
    ],
)
def test_bad_first_source_falls_back_to_the_second(http_server, tmp_path, capsys, bad, reason):
    http_server.routes = {"/a/labels.gz": bad, "/b/labels.gz": Route(GOOD_GZ)}
    first, second = f"{http_server.base_url}/a/labels.gz", f"{http_server.base_url}/b/labels.gz"
    used = fetch(target(tmp_path, first, second), timeout=5, max_bytes=ROOMY)
    assert used == second
    assert (tmp_path / "data" / "labels").read_bytes() == CONTENT  # decompressed, verified content
    assert leftovers(tmp_path) == ["labels"]  # no temporary file left beside it
    log = capsys.readouterr().err
    assert f"rejected {first}: " in log
    assert re.search(reason, log), log


def test_hanging_server_times_out(http_server, tmp_path):
    http_server.routes = {"/slow.gz": Route(GOOD_GZ, delay=30)}
    with pytest.raises(FetchError, match=r"slow\.gz: timed out after 0\.5 s"):
        fetch(target(tmp_path, f"{http_server.base_url}/slow.gz"), timeout=0.5, max_bytes=ROOMY)


def test_all_bad_lists_every_source_and_writes_nothing(http_server, tmp_path):
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}/labels.gz"
    http_server.routes = {"/bad.gz": Route(gzip.compress(b"wrong", mtime=0))}
    missing_file = str(tmp_path / "nowhere" / "labels.gz")
    sources = (f"{http_server.base_url}/missing.gz", f"{http_server.base_url}/bad.gz", refused, missing_file)
    with pytest.raises(FetchError) as error:
        fetch(target(tmp_path, *sources), timeout=5, max_bytes=ROOMY)
    lines = str(error.value).splitlines()
    assert lines[0].startswith(f"no source gave {tmp_path / 'data' / 'labels'} with sha256 {SHA}")
    assert lines[1] == f"  - {sources[0]}: HTTP 404 Not Found"
    assert lines[2].startswith(f"  - {sources[1]}: content sha256")
    assert lines[3].startswith(f"  - {refused}: cannot connect: ") and "refused" in lines[3].lower()
    assert lines[4] == f"  - {missing_file}: No such file or directory"
    assert leftovers(tmp_path) == []


def test_failed_fetch_keeps_the_previous_file(http_server, tmp_path):
    destination = tmp_path / "data" / "labels"
    destination.parent.mkdir()
    destination.write_bytes(b"previous")
    http_server.routes = {"/bad.gz": Route(b"<html>oops</html>")}
    with pytest.raises(FetchError):
        fetch(target(tmp_path, f"{http_server.base_url}/bad.gz"), timeout=5, max_bytes=ROOMY)
    assert destination.read_bytes() == b"previous"
    assert leftovers(tmp_path) == ["labels"]


def test_local_directory_mirror_comes_first(raw, tmp_path):
    params = parse_params(raw)
    targets = mnist_targets(params, str(tmp_path))
    assert [t.destination.name for t in targets] == [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    assert targets[0].sources == (
        str(tmp_path / "mnist/train-images-idx3-ubyte.gz"),
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz",
    )
    assert mnist_targets(params, None)[0].sources == targets[0].sources[1:]


def test_url_mirror_and_fable_source(raw):
    fable = fable_target(parse_params(raw), "http://127.0.0.1:1/m/")
    assert fable.sources == ("http://127.0.0.1:1/m/fable/belling_the_cat.txt", raw["data"]["fable"]["url"])
    assert mirror_source("file:///srv/m", "mnist/x.gz") == "file:///srv/m/mnist/x.gz"


def test_another_story_from_a_file_url(tmp_path):
    story = tmp_path / "story.txt"
    story.write_text("the fox and the grapes .\n")
    sha = hashlib.sha256(story.read_bytes()).hexdigest()
    fetch(Target(tmp_path / "out.txt", sha, (story.as_uri(),)), timeout=5, max_bytes=ROOMY)
    assert (tmp_path / "out.txt").read_bytes() == story.read_bytes()


def test_the_offline_mirror_verifies(mirror, raw, tmp_path):
    raw["paths"]["fable"]["raw"] = str(tmp_path / "fable.txt")
    fetch(fable_target(parse_params(raw), str(mirror)), timeout=5, max_bytes=ROOMY)
    assert (tmp_path / "fable.txt").read_text().startswith("long ago , the mice had a general council")


def test_timeout_from_environment():
    assert fetch_timeout({}) == 60
    assert fetch_timeout({"PIPELINE_FETCH_TIMEOUT": "2.5"}) == 2.5
    with pytest.raises(FetchError, match=r"\$PIPELINE_FETCH_TIMEOUT: must be a positive number of seconds, got 'x'"):
        fetch_timeout({"PIPELINE_FETCH_TIMEOUT": "x"})


def test_a_long_download_shows_how_far_it_is(http_server, tmp_path, capsys, monkeypatch):
    content = bytes(range(256)) * 12_000  # 3.1 MB: read in blocks of 1 MiB
    http_server.routes = {"/big": Route(content)}
    monkeypatch.setattr("pipeline.stages.fetch.PROGRESS_INTERVAL_S", 0.0)  # a line after every block
    source = f"{http_server.base_url}/big"
    fetch(Target(tmp_path / "big", hashlib.sha256(content).hexdigest(), (source,)), timeout=5, max_bytes=ROOMY)
    log = capsys.readouterr().err.splitlines()
    assert log[:4] == [
        f"fetch: {source}: {done} of 3.1 MB ({percent}%)" for done, percent in (("1.0", 34), ("2.1", 68), ("3.1", 100))
    ] + [f"fetch: {tmp_path / 'big'} <- {source} (3.1 MB)"]


# --- bounded downloads: a cap on the bytes, a deadline on the whole download --------------------------------

StreamServer = Callable[[bytes, "int | None", float], str]


@pytest.fixture
def stream_server() -> Iterator[StreamServer]:
    """``serve(chunk, count, interval)``: the URL of a server on 127.0.0.1 that answers every GET with ``chunk``
    ``count`` times (None: without end), ``interval`` s apart, and no Content-Length. It stops sending when the
    client hangs up, when the count is reached, or when the test ends."""
    stop = threading.Event()
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(chunk: bytes, count: int | None, interval: float = 0.0) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()
                sent = 0
                try:
                    while count is None or sent < count:
                        self.wfile.write(chunk)
                        sent += 1
                        if stop.wait(interval):
                            return
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()


CAP = r"the cap of 1 MiB \(data\.max_download_mib\)$"


def fetch_after_rejection(tmp_path: Path, capsys, bad: str, good: str) -> str:
    """Fetch ``bad`` then ``good`` under a 1 MiB cap; return the line rejecting ``bad``."""
    assert fetch(target(tmp_path, bad, good), timeout=5, max_bytes=MIB) == good
    assert (tmp_path / "data" / "labels").read_bytes() == CONTENT
    assert leftovers(tmp_path) == ["labels"]
    rejections = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fetch: rejected")]
    assert len(rejections) == 1, rejections
    assert rejections[0].startswith(f"fetch: rejected {bad}: "), rejections
    return rejections[0]


def test_a_file_announced_over_the_cap_is_refused(http_server, tmp_path, capsys):
    http_server.routes = {"/a/labels.gz": Route(b"\x1f\x8b" + bytes(MIB)), "/b/labels.gz": Route(GOOD_GZ)}
    bad, good = f"{http_server.base_url}/a/labels.gz", f"{http_server.base_url}/b/labels.gz"
    line = fetch_after_rejection(tmp_path, capsys, bad, good)
    assert re.search(rf": announces {MIB + 2} bytes, more than {CAP}", line), line


def test_an_endless_response_is_cut_off_at_the_cap(stream_server, http_server, tmp_path, capsys):
    bad = stream_server(b"\x1f\x8b" + bytes(65_534), None, 0.0) + "/labels.gz"  # no Content-Length, no end
    http_server.routes = {"/labels.gz": Route(GOOD_GZ)}
    line = fetch_after_rejection(tmp_path, capsys, bad, f"{http_server.base_url}/labels.gz")
    assert re.search(rf": larger than {CAP}", line), line


def test_a_local_file_over_the_cap_is_refused(http_server, tmp_path, capsys):
    big = tmp_path / "big.gz"
    big.write_bytes(b"\x1f\x8b" + bytes(MIB))
    http_server.routes = {"/labels.gz": Route(GOOD_GZ)}
    line = fetch_after_rejection(tmp_path, capsys, str(big), f"{http_server.base_url}/labels.gz")
    assert re.search(rf": larger than {CAP}", line), line


def test_a_gzip_bomb_is_refused(http_server, tmp_path, capsys):
    bomb = gzip.compress(bytes(4 * MIB), mtime=0)  # 4 KiB that decompress to 4 MiB
    assert len(bomb) < 10_000
    http_server.routes = {"/a/labels.gz": Route(bomb), "/b/labels.gz": Route(GOOD_GZ)}
    bad, good = f"{http_server.base_url}/a/labels.gz", f"{http_server.base_url}/b/labels.gz"
    line = fetch_after_rejection(tmp_path, capsys, bad, good)
    assert re.search(rf": decompresses to more than {CAP}", line), line


def test_content_of_exactly_the_cap_passes_and_one_byte_more_does_not(http_server, tmp_path):
    content = bytes(range(256)) * 4096  # 1 MiB decompressed, a few KiB downloaded
    http_server.routes = {"/exact.gz": Route(gzip.compress(content, mtime=0))}
    exact = Target(tmp_path / "exact", hashlib.sha256(content).hexdigest(), (f"{http_server.base_url}/exact.gz",))
    fetch(exact, timeout=5, max_bytes=MIB)
    assert (tmp_path / "exact").read_bytes() == content
    with pytest.raises(FetchError, match=r"exact\.gz: decompresses to more than the cap"):
        fetch(exact, timeout=5, max_bytes=MIB - 1)
    assert (tmp_path / "exact").read_bytes() == content  # the refused fetch left the previous file


@pytest.mark.parametrize(
    "interval, timeout",
    [
        (0.2, 1.0),  # a byte every 0.2 s: no read ever waits long, the whole never ends
        # A byte, then a stall shorter than the timeout, again and again: a socket timeout that stayed at
        # 2 s would let the read after 1.5 s run to 3 s.
        (1.5, 2.0),
    ],
)
def test_a_trickling_server_is_cut_off_at_the_overall_timeout(stream_server, tmp_path, interval, timeout):
    # The server would send its last byte after 8+ s: a fetch that outlived the deadline would take that long.
    source = stream_server(b"\x1f", int(8 / interval) + 1, interval) + "/labels.gz"
    started = time.monotonic()
    with pytest.raises(FetchError, match=rf"labels\.gz: timed out after {timeout:g} s$"):
        fetch(target(tmp_path, source), timeout=timeout, max_bytes=MIB)
    elapsed = time.monotonic() - started
    assert timeout - 0.05 <= elapsed < timeout + 0.6, elapsed
    assert leftovers(tmp_path) == []
