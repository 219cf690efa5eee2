"""Writing outputs: a full disk mid-write leaves no partial file and the previous output intact."""

from __future__ import annotations

import errno
import os

import pytest

from pipeline import files
from pipeline.files import OutputError, write_bytes
from pipeline.stages import prepare


def disk_full(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("stage", ["write", "fsync"])
def test_disk_full_keeps_the_previous_file_and_names_it(tmp_path, monkeypatch, stage):
    path = tmp_path / "out" / "metrics.json"
    write_bytes(path, b"previous")
    if stage == "fsync":
        monkeypatch.setattr(files.os, "fsync", disk_full)
    else:  # the disk fills up half-way through the content

        def half_then_full(self, data):
            self.file.write(data[: len(data) // 2])
            disk_full()

        monkeypatch.setattr(files.tempfile._TemporaryFileWrapper, "write", half_then_full, raising=False)
    with pytest.raises(OutputError) as error:
        write_bytes(path, b"new content that does not fit")
    assert str(error.value) == f"{path}: cannot write it: No space left on device; the previous file is unchanged"
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temporary file left


def test_disk_full_for_a_new_output_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OutputError, match="nothing was written"):
        write_bytes(tmp_path / "new.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_inside_the_block_pass_through_unchanged(tmp_path):
    # a dropped download is the caller's to handle (fetch tries the next source)
    with pytest.raises(TimeoutError), files.atomic_output(tmp_path / "x") as handle:
        handle.write(b"part")
        raise TimeoutError("source timed out")
    assert list(tmp_path.iterdir()) == []


def test_a_stage_reports_a_full_disk_in_one_line_and_keeps_its_outputs(trained_copy, monkeypatch, capsys):
    """`python -m pipeline.stages.prepare` with the disk full: exit 1, one line naming the file, old outputs intact."""
    monkeypatch.chdir(trained_copy.root)
    prepared = trained_copy.root / "data" / "prepared" / "mnist"
    before = {path.name: path.read_bytes() for path in prepared.iterdir()}
    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(SystemExit) as exit_:
        prepare.main([])
    assert exit_.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("prepare: error: data/prepared/mnist/")
    assert error.endswith(": cannot write it: No space left on device; the previous file is unchanged")
    assert {path.name: path.read_bytes() for path in prepared.iterdir()} == before
