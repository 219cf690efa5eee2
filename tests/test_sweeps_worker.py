"""A sweep worker on the real pipeline (pipeline/sweeps/worker.py, show.py): each trial a DVC experiment and an
MLflow run tagged with the sweep, the study in the project's local store when no team database is set."""

from __future__ import annotations

import pytest

SPEC = """name: small
model: fable
metric: test_accuracy
direction: maximize
trials: 2
sampler: grid
fixed:
  fable.epochs: 1
space:
  fable.units: [8, 12]
"""


@pytest.mark.slow
@pytest.mark.minutes(1.5)
def test_one_worker_runs_a_small_sweep_on_the_local_store(trained_copy):
    trained_copy.run("git", "add", "-A")
    trained_copy.run("git", "commit", "-qm", "trained")  # as a user would: the trials then train fable only
    (trained_copy.root / "small.yaml").write_text(SPEC)
    result = trained_copy.python("-m", "pipeline.sweeps", "run", "small.yaml")
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"sweep small: study in a local store (sqlite:///{trained_copy.root}/.sweeps/optuna.db)")
    assert "sweep small: done, 2 trials finished" in result.stdout, result.stdout

    runs = [run for run in trained_copy.runs("fable") if run.data.tags.get("sweep") == "small"]
    assert sorted((run.data.tags["sweep.trial"], run.info.status) for run in runs) == [
        ("0", "FINISHED"),
        ("1", "FINISHED"),
    ]
    for run in runs:
        assert run.info.run_name == f"small-{run.data.tags['sweep.trial']}"
        assert run.data.params["fable.epochs"] == "1" and "test_accuracy" in run.data.metrics
    assert sorted(run.data.params["fable.units"] for run in runs) == ["12", "8"]
    experiments = trained_copy.dvc("exp", "list", "--name-only").stdout.split()
    assert sorted(name for name in experiments if name.startswith("small-")) == ["small-0", "small-1"]

    shown = trained_copy.python("-m", "pipeline.sweeps", "show", "small.yaml").stdout
    best = max(
        sorted(runs, key=lambda run: run.data.tags["sweep.trial"]), key=lambda run: run.data.metrics["test_accuracy"]
    )
    assert "sweep small: 2 of 2 trials finished" in shown
    assert f"restore it with: dvc exp apply {best.info.run_name}" in shown, shown
    assert best.info.run_id in shown
    markdown = trained_copy.python("-m", "pipeline.sweeps", "show", "small.yaml", "--md").stdout
    assert "| trial | state | fable.units | test_accuracy | DVC experiment | MLflow run |" in markdown
    assert f"`dvc exp apply {best.info.run_name}`" in markdown

    # A worker joining a finished study has nothing to do.
    again = trained_copy.python("-m", "pipeline.sweeps", "run", "small.yaml")
    assert "sweep small: done, 2 trials finished" in again.stdout
    assert len([run for run in trained_copy.runs("fable") if run.data.tags.get("sweep") == "small"]) == 2


@pytest.mark.slow
def test_a_bad_spec_stops_the_worker_in_one_line(project):
    (project.root / "bad.yaml").write_text(SPEC.replace("fable.units", "fable.unit"))
    result = project.python("-m", "pipeline.sweeps", "run", "bad.yaml", check=False)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "sweep run: error: bad.yaml: space.fable.unit: not a key of params.yaml (keys are dotted, e.g. fable.units)"
    )
