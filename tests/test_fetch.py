"""Fetch against real HTTP servers on 127.0.0.1: bad sources are rejected and the next one is used."""

from __future__ import annotations

import gzip
import hashlib
import socket
from pathlib import Path

import pytest
from conftest import Route

from pipeline.config import parse_params
from pipeline.stages.fetch import (
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
    used = fetch(target(tmp_path, first, second), timeout=5)
    assert used == second
    assert (tmp_path / "data" / "labels").read_bytes() == CONTENT  # decompressed, verified content
    assert leftovers(tmp_path) == ["labels"]  # no temporary file left beside it
    log = capsys.readouterr().err
    assert f"rejected {first}: " in log
    assert __import__("re").search(reason, log), log


def test_hanging_server_times_out(http_server, tmp_path):
    http_server.routes = {"/slow.gz": Route(GOOD_GZ, delay=30)}
    with pytest.raises(FetchError, match=r"slow\.gz: timed out after 0\.5 s"):
        fetch(target(tmp_path, f"{http_server.base_url}/slow.gz"), timeout=0.5)


def test_all_bad_lists_every_source_and_writes_nothing(http_server, tmp_path):
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}/labels.gz"
    http_server.routes = {"/bad.gz": Route(gzip.compress(b"wrong", mtime=0))}
    missing_file = str(tmp_path / "nowhere" / "labels.gz")
    sources = (f"{http_server.base_url}/missing.gz", f"{http_server.base_url}/bad.gz", refused, missing_file)
    with pytest.raises(FetchError) as error:
        fetch(target(tmp_path, *sources), timeout=5)
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
        fetch(target(tmp_path, f"{http_server.base_url}/bad.gz"), timeout=5)
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
    fetch(Target(tmp_path / "out.txt", sha, (story.as_uri(),)), timeout=5)
    assert (tmp_path / "out.txt").read_bytes() == story.read_bytes()


def test_the_offline_mirror_verifies(mirror, raw, tmp_path):
    raw["paths"]["fable"]["raw"] = str(tmp_path / "fable.txt")
    fetch(fable_target(parse_params(raw), str(mirror)), timeout=5)
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
    fetch(Target(tmp_path / "big", hashlib.sha256(content).hexdigest(), (source,)), timeout=5)
    log = capsys.readouterr().err.splitlines()
    assert log[:4] == [
        f"fetch: {source}: {done} of 3.1 MB ({percent}%)" for done, percent in (("1.0", 34), ("2.1", 68), ("3.1", 100))
    ] + [f"fetch: {tmp_path / 'big'} <- {source} (3.1 MB)"]
