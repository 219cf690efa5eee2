"""The data stages through `dvc repro` in a copy of the project, on the offline mirror."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

DATA_STAGES = ("fetch_mnist", "fetch_fable", "prepare", "vocabulary")


def stage_ran(output: str, stage: str) -> bool:
    return f"Running stage '{stage}'" in output


@pytest.mark.slow  # full size: every MNIST file fetched and split, the real vocabulary
def test_data_stages_end_to_end(project):
    first = project.dvc("repro", *DATA_STAGES).stdout
    for stage in DATA_STAGES:
        assert stage_ran(first, stage), first

    root = project.root
    expected = project.params()["data"]["mnist"]["files"]
    for file in expected.values():  # content verified against params.yaml's sha256
        digest = hashlib.sha256((root / "data/raw/mnist" / file["name"]).read_bytes()).hexdigest()
        assert digest == file["sha256"]
    shapes = {
        name: np.load(root / f"data/prepared/mnist/x_{name}.npy").shape for name in ("train", "validation", "test")
    }
    assert shapes == {"train": (55000, 28, 28), "validation": (5000, 28, 28), "test": (10000, 28, 28)}
    vocabulary = json.loads((root / "data/vocabulary/fable.json").read_text())
    assert (len(vocabulary["dictionary"]), vocabulary["ceiling_correct"], vocabulary["windows"]) == (112, 199, 201)

    # Unchanged workspace: nothing runs.
    again = project.dvc("repro", *DATA_STAGES).stdout
    assert "Running stage" not in again, again
    assert "up to date" in again

    # A fable param reruns the fable stages only; an MNIST param the MNIST ones only.
    project.edit_params(lambda raw: raw["fable"].__setitem__("n_input", 4))
    fable_edit = project.dvc("repro", *DATA_STAGES).stdout
    assert stage_ran(fable_edit, "vocabulary") and not stage_ran(fable_edit, "prepare")
    assert not stage_ran(fable_edit, "fetch_mnist") and not stage_ran(fable_edit, "fetch_fable")
    assert json.loads((root / "data/vocabulary/fable.json").read_text())["windows"] == 200

    project.edit_params(lambda raw: raw["data"]["mnist"]["split"].__setitem__("validation_size", 4000))
    mnist_edit = project.dvc("repro", *DATA_STAGES).stdout
    assert stage_ran(mnist_edit, "prepare") and not stage_ran(mnist_edit, "vocabulary")
    assert not stage_ran(mnist_edit, "fetch_mnist")

    # Switching the mirror is not a change of data: everything stays up to date.
    project.env["PIPELINE_MIRROR"] = str(root / "no-such-mirror")
    assert "Running stage" not in project.dvc("repro", *DATA_STAGES).stdout
    assert project.dvc("status", *DATA_STAGES).stdout.strip() == "Data and pipelines are up to date."


def test_bad_params_stop_the_stage_before_any_work(project):
    project.edit_params(lambda raw: raw["data"]["mnist"]["split"].__setitem__("train_size", 0))
    result = project.dvc("repro", "fetch_fable", check=False)
    assert result.returncode != 0
    assert "params.yaml: data.mnist.split.train_size: input should be greater than 0, got 0 (int)" in result.stderr
    assert not (project.root / "data/raw/fable.txt").exists()
    assert not (project.root / "dvc.lock").exists()


def test_data_stages_do_not_import_tensorflow(project):
    stages = "pipeline.stages.fetch, pipeline.stages.prepare, pipeline.stages.vocabulary"
    code = f"import sys, {stages}; print('tensorflow' in sys.modules)"
    assert project.python("-c", code).stdout.strip() == "False"
