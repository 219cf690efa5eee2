"""`make setup` picks a supported interpreter by itself, or says in one line why none fits."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def make_python(*variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "python", *variables],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_first_candidate_that_runs_as_3_11_to_3_13_is_used():
    result = make_python(f"PYTHON_CANDIDATES=no-such-python3.12 {sys.executable}")
    assert result.returncode == 0, result.stderr
    version = ".".join(map(str, sys.version_info[:3]))
    assert result.stdout.strip() == f"make: Python {version} at {sys.executable}"


def test_no_supported_interpreter_is_one_line_naming_what_was_tried():
    result = make_python("PYTHON_CANDIDATES=no-such-python3.12 no-such-python3")
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "make: no Python 3.11-3.13 found (tried no-such-python3.12 "
        "no-such-python3); install one, or make PYTHON=/path/to/python3.x"
    )


def test_a_given_python_outside_the_range_is_refused(tmp_path):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\nexit 1\n")  # what the version check sees from a Python older than 3.11
    old.chmod(0o755)
    result = make_python(f"PYTHON={old}")
    assert result.returncode != 0
    assert f"make: PYTHON={old} is not a Python 3.11-3.13" in result.stderr


def test_make_tests_workers_keep_each_xdist_group_on_one_worker(tmp_path):
    """make test's `--dist loadgroup`: the tests of one xdist_group (those sharing a server, the team stack) all
    run on one worker, which starts the server once. pytest 9.2 silently broke it (requirements.in)."""
    (tmp_path / "test_grouped.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_grouped(i):\n"
        "    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:randomly"]
        + ["-p", "no:hydra_pytest", "-p", "no:cacheprovider", "test_grouped.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    workers = re.findall(r"^\[(gw\d+)\] .*PASSED", result.stdout, flags=re.MULTILINE)
    assert len(workers) == 6 and len(set(workers)) == 1, result.stdout
