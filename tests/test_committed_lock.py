"""The committed dvc.lock is what a fresh clone's full default pipeline produces, byte for byte: the benchmark's
repro phase (bench/repro.py) run on this project, as `make bench` runs it."""

from __future__ import annotations

import pytest
from conftest import ROOT, project_environment

from bench.repro import full_repro


@pytest.mark.slow
@pytest.mark.minutes(5)
def test_a_fresh_clone_reproduces_the_committed_lock(mirror):
    """`git clone` of the last commit, its matrix-product library built from the clone's sources by the Makefile's
    rule, `dvc repro --force` from empty on the default params (numerics portable): every output hash
    equals the committed one, `git status` stays clean (the dvc.lock written and metrics/ are the committed
    bytes), at the accuracies params.yaml's comments promise."""
    repro = full_repro(ROOT, project_environment(mirror))
    assert repro["outputs_differing_from_committed_dvc_lock"] == []
    assert repro["outputs_match_committed_dvc_lock"] is True and repro["changed_in_git"] == []
    assert repro["mnist_test_accuracy"] >= 0.991  # on all 10,000 test images
    assert repro["fable_accuracy"] == repro["fable_ceiling"] > 0.9
    # What make bench reports of it: the build timed apart, each stage's own peak memory.
    assert repro["library_build_s"] > 0 and repro["wall_s"] > 0
    assert repro["peak_rss_mb"]["train mnist"] > 200  # TensorFlow's process, not the launcher
    assert {"fetch mnist", "prepare", "train fable", "evaluate mnist", "evaluate fable"} <= set(repro["peak_rss_mb"])
