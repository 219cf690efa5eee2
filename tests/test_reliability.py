"""Faults around the pipeline as a whole: damaged outputs, concurrent runs, bad params through `dvc repro`.

docs/reliability.md lists every fault with the test that proves what the pipeline does about it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT
from mlflow.tracking import MlflowClient
from test_config import BAD_VALUES

UP_TO_DATE = "Data and pipelines are up to date."


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def files_in(directory: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in directory.iterdir() if path.is_file()}


@pytest.mark.parametrize(
    ("output", "damage", "stage"),
    [
        ("models/fable.keras", flip_byte, "train_fable"),  # cached, restored from the run cache
        ("data/prepared/mnist/x_test.npy", Path.unlink, "prepare"),  # a deleted file of a directory output
        ("metrics/mnist.json", lambda p: p.write_text('{"test_accuracy": 1.0}\n'), "evaluate_mnist"),  # hand-edited
        ("data/raw/fable.txt", lambda p: p.write_text("a different story\n"), "fetch_fable"),
    ],
)
def test_damaged_outputs_are_reported_and_repro_restores_them(trained_copy, output, damage, stage):
    path = trained_copy.root / output
    original = files_in(path.parent)
    lock = (trained_copy.root / "dvc.lock").read_bytes()
    damage(path)
    status = trained_copy.dvc("status").stdout
    assert f"{stage}:" in status and ("modified:" in status or "deleted:" in status), status
    trained_copy.dvc("repro")
    assert files_in(path.parent) == original
    assert (trained_copy.root / "dvc.lock").read_bytes() == lock
    assert trained_copy.dvc("status").stdout.strip() == UP_TO_DATE


def test_a_second_dvc_repro_is_refused_while_the_first_runs(trained_copy):
    trained_copy.edit_params(lambda raw: raw["fable"].update(epochs=40))
    first = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=trained_copy.root,
        env=trained_copy.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        history = trained_copy.root / "metrics" / "fable_history.csv"
        while history.exists() and time.monotonic() < deadline:  # DVC removes the outputs, then trains
            time.sleep(0.05)
        second = trained_copy.dvc("repro", check=False)
        assert first.poll() is None, "the first repro had already finished: give it more epochs"
        assert second.returncode != 0
        # DVC's lock message: the stage's files are held by the first process (.dvc/tmp/rwlock)
        assert re.search(rf"is busy, it is being blocked by:\s+\(PID {first.pid}\)", second.stderr), second.stderr
    finally:
        output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output
    assert "epochs" not in second.stdout
    assert len(history.read_text().splitlines()) == 1 + 40  # the first run completed every epoch
    assert trained_copy.dvc("status").stdout.strip() == UP_TO_DATE


def test_two_trainers_share_one_fresh_mlflow_db(trained_project, tmp_path):
    """Two training processes at once on a new SQLite store: both runs complete, every metric recorded."""
    store = tmp_path / "shared" / "mlflow.db"
    store.parent.mkdir()
    copies = []
    for name in ("a", "b"):
        copy = trained_project.copy_to(tmp_path / name, MLFLOW_TRACKING_URI=f"sqlite:///{store}")
        copy.edit_params(lambda raw: raw["fable"].update(epochs=30))
        copies.append(copy)
    trainers = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.stages.train", "fable"],
            cwd=c.root,
            env=c.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in copies
    ]
    logs = [trainer.communicate(timeout=600)[0] for trainer in trainers]
    for trainer, log in zip(trainers, logs, strict=True):
        assert trainer.returncode == 0, log
        assert "database is locked" not in log
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(experiment_names=["fable"], output_format="list")
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    for run in runs:
        for metric in ("loss", "accuracy"):
            steps = [point.step for point in MlflowClient().get_metric_history(run.info.run_id, metric)]
            assert steps == list(range(1, 31)), (run.info.run_id, metric)


@pytest.mark.parametrize(("edit", "expected"), BAD_VALUES)
def test_bad_params_through_dvc_repro_fail_in_one_line_and_leave_dvc_lock(trained_copy, edit, expected):
    lock = (trained_copy.root / "dvc.lock").read_bytes()
    trained_copy.edit_params(edit)
    result = trained_copy.dvc("repro", check=False)
    assert result.returncode != 0
    if "paths\\.mnist\\.raw" in expected:  # dvc.yaml reads this path itself: DVC's own error names it
        expected = r"Could not find 'paths\.mnist\.raw'"
    errors = [line for line in result.stderr.splitlines() if re.search(expected, line)]
    assert len(errors) == 1, result.stderr
    assert (trained_copy.root / "dvc.lock").read_bytes() == lock


def test_nothing_loads_pickles():
    """np.load always with allow_pickle=False; safe_mode model loading is tested in test_model.py."""
    sources = [p for d in ("pipeline", "bench") for p in (ROOT / d).rglob("*.py")]
    for source in sources:
        text = source.read_text()
        assert "allow_pickle=True" not in text, source
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (source, call)
