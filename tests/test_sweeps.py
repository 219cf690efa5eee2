"""Sweep specs and the study's hand-out of trials (pipeline/sweeps/spec.py, study.py): bad specs in one line; a grid
handed to several workers point by point, a dead worker's trial retried, never a point twice."""

from __future__ import annotations

import time

import pytest
import yaml
from conftest import ROOT
from optuna.trial import TrialState

from pipeline.sweeps import study as studies
from pipeline.sweeps.show import render
from pipeline.sweeps.spec import SpecError, check_against_params, load_spec
from pipeline.sweeps.worker import yaml_value

GOOD = {
    "name": "fable-units",
    "model": "fable",
    "metric": "test_accuracy",
    "direction": "maximize",
    "trials": 4,
    "sampler": "grid",
    "fixed": {"fable.epochs": 2},
    "space": {"fable.units": [8, 12, 16, 20]},
}


def spec_file(tmp_path, **changes):
    raw = {**GOOD, **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({key: value for key, value in raw.items() if value is not None}))
    return path


def checked(path, params_raw):
    spec = load_spec(path)
    check_against_params(spec, path, params_raw)
    return spec


def test_a_good_spec_loads(tmp_path, params_raw):
    spec = checked(spec_file(tmp_path), params_raw)
    assert spec.grid() == {"fable.units": [8, 12, 16, 20]}
    assert spec.overrides({"fable.units": 8}) == {"fable.epochs": 2, "fable.units": 8}


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"workers": 2}, "workers: unknown key"),
        ({"trials": None}, "trials: missing"),
        ({"sampler": "bayes"}, "sampler: input should be 'grid', 'tpe' or 'random'"),
        ({"model": "cifar"}, "model: input should be 'mnist' or 'fable'"),
        ({"name": "Fable Units"}, "name: string should match pattern"),
        ({"space": {"fable.unit": [8, 12]}, "trials": 2}, "space.fable.unit: not a key of params.yaml"),
        ({"fixed": {"fable": 3}}, "fixed.fable: not a key of params.yaml"),
        ({"space": {"fable.units": [8, 8]}, "trials": 1}, "space.fable.units: a choice listed twice"),
        (
            {"space": {"fable.units": [8, -4]}, "trials": 2},
            "space.fable.units = -4: fable.units: input should be greater than 0",
        ),
        ({"fixed": {"fable.epochs": "2"}}, "fixed: fable.epochs: input should be a valid integer, got '2'"),
        ({"trials": 5}, "trials: 5 is more than the grid's 4 points"),
        (
            {"space": {"fable.learning_rate": {"low": 0.01, "high": 0.001}}, "sampler": "tpe"},
            "space.fable.learning_rate: low 0.01 is not below high 0.001",
        ),
        (
            {"space": {"fable.learning_rate": {"low": 0.0, "high": 0.01, "log": True}}, "sampler": "tpe"},
            "space.fable.learning_rate: a log range needs low > 0",
        ),
        (
            {"space": {"fable.learning_rate": {"low": 0.001, "high": 0.01}}},
            "space.fable.learning_rate: the grid sampler takes a list of choices, not a range",
        ),
    ],
)
def test_a_bad_spec_fails_in_one_line_naming_the_key(tmp_path, params_raw, changes, problem):
    path = spec_file(tmp_path, **changes)
    with pytest.raises(SpecError) as error:
        checked(path, params_raw)
    (line,) = str(error.value).splitlines()
    assert line.startswith(f"{path}: ") and problem in line, line


def test_values_keep_their_type_through_dvc_and_the_stages():
    # DVC writes -S values into params.yaml as YAML 1.2; the stages read it with PyYAML (YAML 1.1), which takes
    # 1e-05 for a string: every float goes with a dot and a signed exponent.
    for value in (0.001, 1e-05, 3.0e-3, 2.5, 1e20, 8, True, None, "adam"):
        text = yaml_value(value)
        assert yaml.safe_load(text) == value and type(yaml.safe_load(text)) is type(value), text


@pytest.mark.slow  # waits out a heartbeat's grace period
def test_a_grid_goes_to_two_workers_point_by_point_and_a_dead_workers_trial_is_retried(
    tmp_path, params_raw, monkeypatch
):
    monkeypatch.setattr(studies, "HEARTBEAT_S", 1)
    monkeypatch.setattr(studies, "GRACE_S", 2)
    path = spec_file(tmp_path)
    spec = checked(path, params_raw)
    url = studies.storage_url(tmp_path, {})
    first, second = (studies.open_study(spec, url, path) for _ in range(2))  # two workers, one study
    began = time.monotonic()
    given = [studies.next_trial(first, spec), studies.next_trial(second, spec)]
    given += [studies.next_trial(first, spec), studies.next_trial(second, spec)]
    assert sorted(trial.params["fable.units"] for trial in given) == [8, 12, 16, 20]
    assert studies.next_trial(second, spec) == studies.WAIT  # four running: none beyond trials
    for trial in given[:3]:
        first.tell(trial.number, trial.params["fable.units"] / 100)
    # given[3]'s worker died: no heartbeat since it asked. After the grace period its params come back.
    assert studies.next_trial(first, spec) == studies.WAIT
    deadline = time.monotonic() + 15  # the database stores heartbeats to the second
    while (retried := studies.next_trial(first, spec)) == studies.WAIT and time.monotonic() < deadline:
        time.sleep(0.5)
    assert time.monotonic() - began >= 2  # not before the grace period
    assert retried.params == given[3].params and retried.number == 4
    assert studies.retried_from(first._storage.get_trial(retried._trial_id)) == [given[3].number]
    first.tell(retried.number, 0.5)
    assert studies.next_trial(second, spec) == studies.DONE
    states = [(trial.number, trial.state) for trial in second.get_trials()]
    assert states == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE), (2, TrialState.COMPLETE)] + [
        (3, TrialState.FAIL),
        (4, TrialState.COMPLETE),
    ]
    shown = render(spec, second)
    assert "4 of 4 trials finished" in shown and "COMPLETE (retry of 3)" in shown
    assert f"best: trial 4 (fable.units={retried.params['fable.units']}), test_accuracy = 0.5" in shown


@pytest.mark.slow  # Optuna makes its SQLite schema
def test_a_study_made_from_another_spec_is_refused(tmp_path, params_raw):
    path = spec_file(tmp_path)
    spec = checked(path, params_raw)
    url = studies.storage_url(tmp_path, {})
    studies.open_study(spec, url, path)
    other = spec_file(tmp_path, space={"fable.units": [8, 12, 16, 24]})
    with pytest.raises(SpecError, match="study 'fable-units' exists in the storage with another spec"):
        studies.open_study(checked(other, params_raw), url, other)


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda path: path.name)
def test_the_example_specs_are_valid(path, params_raw):
    spec = checked(path, params_raw)
    assert spec.name == path.stem
