"""Every entry point fails like a tool: one line and exit status 1; the traceback only when debugging.
Durations as people read them."""

from __future__ import annotations

import os

import pytest

from pipeline.cli import DEBUG_ENV, duration, run_stage, stage_parser
from pipeline.errors import PipelineError


def fail(error: Exception) -> None:
    with run_stage("demo"):
        raise error


def test_a_pipeline_error_is_one_line_naming_the_stage(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        fail(PipelineError("params.yaml: mnist.units: must be positive"))
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "demo: error: params.yaml: mnist.units: must be positive\n"


def test_an_unexpected_error_is_one_line_saying_how_to_see_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit):
        fail(KeyError("units"))
    assert capsys.readouterr().err == (
        f"demo: unexpected KeyError: 'units' (--debug or {DEBUG_ENV}=1 shows the traceback)\n"
    )


@pytest.mark.parametrize("error", [PipelineError("bad"), ValueError("worse")])
def test_debugging_shows_the_traceback(monkeypatch, error):
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(type(error)):
        fail(error)


def test_the_debug_option_is_the_environment_variable(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    stage_parser("pipeline.demo", "Demo.").parse_args(["--debug"])
    assert os.environ[DEBUG_ENV] == "1"


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (42, "42 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_durations_read_at_a_glance(seconds, text):
    assert duration(seconds) == text
