"""Checkpoints and resuming: a training stage killed at any point and rerun gives the very same bytes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from conftest import ProjectCopy, kill_at
from mlflow.tracking import MlflowClient

from pipeline.training import checkpoint

# --- the file format -----------------------------------------------------------------------------------

DIGESTS = {"params": "p", "data": "d", "code": "c", "library versions": "v"}


def sample(epoch: int = 2) -> checkpoint.Checkpoint:
    return checkpoint.Checkpoint(
        epoch=epoch,
        fingerprint=DIGESTS,
        run_id="abc",
        model=[np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7, 9], dtype=np.int64)],
        optimizer=[np.array(12, dtype=np.int64)],
        history=[{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
    )


def test_round_trip_keeps_every_array_exactly(tmp_path):
    path = tmp_path / "checkpoints" / "mnist.npz"
    checkpoint.save(path, sample())
    loaded = checkpoint.load(path, DIGESTS)
    assert loaded is not None and loaded.epoch == 2 and loaded.run_id == "abc"
    assert loaded.history == sample().history
    for stored, original in zip(loaded.model + loaded.optimizer, sample().model + sample().optimizer, strict=True):
        assert stored.dtype == original.dtype and np.array_equal(stored, original)
    assert [p.name for p in path.parent.iterdir()] == ["mnist.npz"]  # no temporary file left


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert checkpoint.load(tmp_path / "none.npz", DIGESTS) is None


@pytest.mark.parametrize("part", sorted(DIGESTS))
def test_a_checkpoint_of_other_params_data_code_or_versions_is_discarded_saying_why(tmp_path, capsys, part):
    path = tmp_path / "mnist.npz"
    checkpoint.save(path, sample())
    assert checkpoint.load(path, {**DIGESTS, part: "changed"}) is None
    line = capsys.readouterr().out.strip()
    assert line == (
        f"{path}: discarding the checkpoint of epoch 2, it was written with different {part}; training starts over"
    )


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not a zip at all", lambda b: b""])
def test_an_unreadable_checkpoint_is_discarded_not_fatal(tmp_path, capsys, damage):
    path = tmp_path / "mnist.npz"
    checkpoint.save(path, sample())
    path.write_bytes(damage(path.read_bytes()))
    assert checkpoint.load(path, DIGESTS) is None
    assert "discarding the checkpoint, it cannot be read" in capsys.readouterr().out


def test_the_fingerprint_follows_content_not_location(tmp_path):
    for place in ("a", "b"):
        (tmp_path / place / "data").mkdir(parents=True)
        (tmp_path / place / "data" / "x.npy").write_bytes(b"same")
    first, second = (checkpoint.fingerprint({"units": 8}, [tmp_path / p / "data"], [], {"tf": "1"}) for p in "ab")
    assert first == second
    (tmp_path / "b" / "data" / "x.npy").write_bytes(b"other")
    changed = checkpoint.fingerprint({"units": 8}, [tmp_path / "b" / "data"], [], {"tf": "1"})
    assert changed["data"] != first["data"] and changed["params"] == first["params"]


# --- kill -9 during `dvc repro`, then `dvc repro` again -------------------------------------------------

EPOCHS = 2  # the shrunken trained project's (conftest.shrink): 300 images, batch 64 -> 5 batches per epoch


def killed_by_sigkill(output: str) -> bool:
    """DVC's report of a stage killed by SIGKILL. Where DVC's shell execs the command (bash), DVC sees the
    signal itself ("-9"); where the shell stays in between (dash, /bin/sh when $SHELL is unset, as in CI),
    the shell reports it as its own exit status 128 + 9."""
    return (
        re.search(r"failed to run: python -m pipeline\.stages\.train mnist, exited with (-9|137)$", output, re.M)
        is not None
    )


def outputs(project: ProjectCopy) -> dict[str, bytes]:
    return {
        name: (project.root / name).read_bytes()
        for name in ("models/mnist.keras", "metrics/mnist_history.csv", "metrics/mnist.json", "dvc.lock")
    }


@pytest.mark.parametrize(
    ("point", "resumed_after"),
    [
        ("1:2", None),  # early: mid-way through the first epoch, before any checkpoint
        ("2:3", 1),  # mid-epoch: batch 3 of 5 of epoch 2, after epoch 1's checkpoint
        (f"{EPOCHS}:checkpoint", EPOCHS),  # after the last epoch's checkpoint, before the model was saved
    ],
)
def test_kill_9_then_repro_resumes_to_identical_bytes(trained_project, tmp_path, point, resumed_after):
    """Killed at ``point``, then `dvc repro` again: the bytes of the trained project, never interrupted."""
    assert trained_project.params()["mnist"]["epochs"] == EPOCHS
    project = trained_project.copy_to(tmp_path / "project")
    expected = outputs(trained_project)
    runs_before = len(project.runs("mnist"))

    killed = project.run(
        sys.executable, "-m", "dvc", "repro", "-s", "-f", "train_mnist", check=False, env_extra=kill_at(point)
    )
    assert killed.returncode != 0 and killed_by_sigkill(killed.stderr), killed.stderr
    checkpoint_file = project.root / "checkpoints" / "mnist.npz"
    assert checkpoint_file.exists() == (resumed_after is not None)
    assert [r.info.status for r in project.runs("mnist")][runs_before:] == ["RUNNING"]  # what kill -9 leaves

    resumed = project.dvc("repro")
    if resumed_after is None:
        assert "resuming" not in resumed.stdout
    else:
        assert f"resuming mnist training after epoch {resumed_after} from checkpoints/mnist.npz" in resumed.stdout
    assert outputs(project) == expected
    assert not checkpoint_file.exists()
    assert project.dvc("status").stdout.strip() == "Data and pipelines are up to date."

    # MLflow: the killed attempt closed by the next one, the resumed run complete and pointing at it
    killed_run, resumed_run = project.runs("mnist")[runs_before:]
    assert killed_run.info.status == "KILLED"
    assert "closed by the next attempt" in killed_run.data.tags["pipeline.note"]
    assert resumed_run.info.status == "FINISHED"
    if resumed_after is None:
        assert "pipeline.resumes_run" not in resumed_run.data.tags
    else:
        assert resumed_run.data.tags["pipeline.resumes_run"] == killed_run.info.run_id
        assert resumed_run.data.tags["pipeline.resumed_after_epoch"] == str(resumed_after)
    history = MlflowClient().get_metric_history(resumed_run.info.run_id, "val_loss")
    assert [point.step for point in history] == list(range(1, EPOCHS + 1))
    # DVC skipped the evaluate stage (same model bytes): the test metrics come from the run that measured them.
    assert "Running stage 'evaluate_mnist'" not in resumed.stdout
    evaluated = project.runs("mnist")[runs_before - 1]
    assert resumed_run.data.tags["pipeline.test_metrics_from"] == evaluated.info.run_id
    assert resumed_run.data.metrics["test_accuracy"] == evaluated.data.metrics["test_accuracy"]


@pytest.mark.minutes(1.5)
def test_kill_9_from_outside_while_dvc_runs_the_stage(trained_project, tmp_path):
    """A real `kill -9` of the training process from another process, at whatever point it has reached: once
    epoch 1's checkpoint is there, with epochs enough left (a second or so each) for the kill to land mid-way."""
    epochs = 8
    reference = trained_project.copy_to(tmp_path / "reference" / "project")
    reference.edit_params(lambda raw: raw["mnist"].update(epochs=epochs))
    reference.dvc("repro", "train_mnist")
    project = trained_project.copy_to(tmp_path / "killed" / "project")
    project.edit_params(lambda raw: raw["mnist"].update(epochs=epochs))

    dvc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train_mnist"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checkpoint_file = project.root / "checkpoints" / "mnist.npz"
    deadline = time.monotonic() + 300
    while not checkpoint_file.exists() and time.monotonic() < deadline and dvc.poll() is None:
        time.sleep(0.05)
    # The python process itself, not a shell in between whose command line also names the module.
    trainers = [
        p
        for p in psutil.Process(dvc.pid).children(recursive=True)
        if p.cmdline()[1:3] == ["-m", "pipeline.stages.train"]
    ]
    assert trainers, "the training process had already finished: raise `epochs`"
    os.kill(trainers[0].pid, signal.SIGKILL)
    output = dvc.communicate(timeout=120)[0]
    assert dvc.returncode != 0 and killed_by_sigkill(output), output

    resumed = project.dvc("repro", "train_mnist")
    assert "resuming mnist training after epoch" in resumed.stdout
    for name in ("models/mnist.keras", "metrics/mnist_history.csv"):
        assert (project.root / name).read_bytes() == (reference.root / name).read_bytes(), name


def test_a_checkpoint_from_other_params_is_discarded_by_the_next_repro(trained_project, tmp_path):
    project = trained_project.copy_to(tmp_path / "project")
    project.run(
        sys.executable, "-m", "dvc", "repro", "-s", "-f", "train_mnist", check=False, env_extra=kill_at("2:checkpoint")
    )
    assert (project.root / "checkpoints" / "mnist.npz").exists()
    project.edit_params(lambda raw: raw["mnist"].update(learning_rate=raw["mnist"]["learning_rate"] / 2))
    rerun = project.dvc("repro", "train_mnist")
    assert (
        "checkpoints/mnist.npz: discarding the checkpoint of epoch 2, it was written with different params; "
        "training starts over"
    ) in rerun.stdout
    assert "resuming" not in rerun.stdout
    assert len((project.root / "metrics" / "mnist_history.csv").read_text().splitlines()) == 1 + EPOCHS
    assert not (project.root / "checkpoints" / "mnist.npz").exists()
