"""The committed dvc.lock is what a fresh clone's full default pipeline produces, byte for byte."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import ROOT, clone_project, project_environment


def outs(lock: dict) -> dict[str, str]:
    """Every output's md5 in a dvc.lock, by path."""
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


@pytest.mark.slow
@pytest.mark.minutes(5)
def test_a_fresh_clone_reproduces_the_committed_lock(tmp_path, mirror):
    """`git clone` + `dvc repro --force` on the default params (numerics portable), from empty: every output hash
    equals the committed one and `git status` stays clean (dvc.lock and metrics/ unchanged)."""
    committed = yaml.safe_load(
        subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    )
    clone = clone_project(ROOT, tmp_path / "clone", project_environment(mirror))
    # --force: the evaluate stages too, whose committed metrics would otherwise be kept as up to date
    clone.dvc("repro", "--force", check=True)
    produced = yaml.safe_load((clone.root / "dvc.lock").read_text())
    assert outs(produced) == outs(committed)
    assert clone.run("git", "status", "--porcelain").stdout == ""
