"""`dvc repro` timed: a no-op one here against DVC's floor, and a full one in a fresh clone of the last commit.

The full one also checks byte-reproducibility on every benchmark run: each output the clone produces is
compared with the md5 the committed dvc.lock records for it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import yaml

from bench.timing import timed
from pipeline.files import file_digest
from pipeline.stages.fetch import MIRROR_ENV


def clone_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``environ`` for the fresh clone's `dvc repro`: a relative ``$PIPELINE_MIRROR`` made absolute.

    The clone runs in a temporary directory, where ``../shared/mirror`` would name another place.
    """
    environment = dict(environ)
    mirror = environment.get(MIRROR_ENV)
    if mirror and urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        environment[MIRROR_ENV] = str(Path(mirror).resolve())
    return environment


def dvc_no_op(repeats: int) -> dict:
    """Wall time of a no-op `dvc repro` here, next to the same in a one-stage DVC project with this project's
    ``core`` settings (without ``analytics = false`` DVC spawns its analytics daemon on every command: on a
    2-core EPYC 0.65 s instead of 0.57, a floor this project does not stand on)."""

    def dvc(*arguments: str, cwd: Path) -> str:
        command = [sys.executable, "-m", "dvc", *arguments]
        return subprocess.run(command, cwd=cwd, capture_output=True, check=True, text=True).stdout

    def no_op_seconds(cwd: Path) -> list[float]:
        dvc("repro", cwd=cwd)
        return [timed(lambda: dvc("repro", cwd=cwd)) for _ in range(repeats)]

    def core_settings(cwd: Path) -> dict[str, str]:
        listed = dvc("config", "--list", "--project", cwd=cwd).splitlines()
        return dict(line.removeprefix("core.").split("=", 1) for line in listed if line.startswith("core."))

    core = core_settings(Path.cwd())
    with tempfile.TemporaryDirectory() as scratch:
        floor = Path(scratch)
        subprocess.run(["git", "init", "-q"], cwd=floor, check=True)
        dvc("init", "-q", cwd=floor)
        for key, value in core.items():
            dvc("config", f"core.{key}", value, cwd=floor)
        dvc("stage", "add", "-q", "-n", "one", "-o", "out.txt", "echo one > out.txt", cwd=floor)
        floor_core = core_settings(floor)
        floor_seconds = no_op_seconds(floor)
    up_to_date = dvc("status", cwd=Path.cwd())
    ours_seconds = no_op_seconds(Path.cwd())
    return {
        "pipeline_no_op_repro_s": statistics.median(ours_seconds),
        "dvc_floor_no_op_repro_s": statistics.median(floor_seconds),
        "ratio": statistics.median(ours_seconds) / statistics.median(floor_seconds),
        "pipeline_was_up_to_date": "up to date" in up_to_date,
        "core": core,  # this project's [core] settings, the floor's too
        "floor_core": floor_core,
    }


def full_repro(source: Path, environ: Mapping[str, str] = os.environ) -> dict:
    """`dvc repro` in a fresh clone of ``source``'s last commit, its commands run with ``environ``: wall time, peak
    RSS per stage, results.

    The clone first builds its matrix-product library as its ``make setup`` would (the Makefile's rule,
    with this interpreter's virtual environment for TensorFlow's headers): timed apart, not in the wall time.

    The peak RSS of each stage is its process's VmHWM, sampled every 50 ms while it runs (the kernel keeps
    the maximum, so sampling misses at most the growth of a stage's last 50 ms). The outputs are compared
    with the committed dvc.lock (:func:`differing_outputs`): byte-reproducibility checked on every benchmark
    run; None for both figures where the commit has no dvc.lock. ``changed_in_git``: the clone's `git status
    --porcelain` after the repro, empty when the dvc.lock it wrote (deps and params included) and metrics/
    are the committed bytes.
    """
    import psutil

    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
        committed = yaml.safe_load((clone / "dvc.lock").read_text()) if (clone / "dvc.lock").exists() else None
        build_seconds = _build_library(clone)
        peaks: dict[str, float] = {}
        start = time.perf_counter()
        dvc = subprocess.Popen(
            # From empty: a fresh clone has no data, models or cache, and --force runs the stages whose outputs
            # git holds too (metrics/, which would otherwise be up to date once the models match the lock).
            [sys.executable, "-m", "dvc", "repro", "--force"],
            cwd=clone,
            env=clone_environment(environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        watcher = psutil.Process(dvc.pid)
        while dvc.poll() is None:
            for child in _children(watcher):
                stage = _stage_name(child)
                peak = _vm_hwm_mb(child.pid) if stage else 0.0
                if peak:  # 0: the process ended between the two reads
                    peaks[stage] = max(peaks.get(stage, 0.0), peak)
            time.sleep(0.05)
        output = dvc.communicate()[0]
        seconds = time.perf_counter() - start
        if dvc.returncode != 0:
            raise RuntimeError(f"dvc repro in a fresh clone failed:\n{output}")
        produced = yaml.safe_load((clone / "dvc.lock").read_text())
        differing = None if committed is None else differing_outputs(clone, committed, produced)
        metrics = {name: json.loads((clone / "metrics" / f"{name}.json").read_text()) for name in ("mnist", "fable")}
        status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
        changed = status.stdout.splitlines()
    return {
        "wall_s": seconds,
        "library_build_s": build_seconds,
        "peak_rss_mb": peaks,
        "mnist_test_accuracy": metrics["mnist"]["test_accuracy"],
        "fable_accuracy": metrics["fable"]["accuracy"],
        "fable_ceiling": metrics["fable"]["ceiling"],
        "outputs_match_committed_dvc_lock": None if differing is None else not differing,
        "outputs_differing_from_committed_dvc_lock": differing,
        "changed_in_git": changed,
    }


def _build_library(clone: Path) -> float:
    """Seconds to build ``clone``'s pipeline.model.detgemm library with the Makefile's rule, this venv's TensorFlow."""
    import pipeline
    from pipeline.model.detgemm import LIBRARY, PACKAGE

    # The Makefile's target: the library's path from the project root (LIBRARY is relative to its package).
    target = (PACKAGE / LIBRARY).relative_to(Path(pipeline.__file__).resolve().parent.parent)
    venv = Path(sys.prefix)
    start = time.perf_counter()
    build = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(clone),
            f"VENV={venv}",
            "-o",
            f"{venv}/.installed",
            str(target),
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        raise RuntimeError(
            f"building the matrix product's library in the fresh clone failed:\n{build.stdout}{build.stderr}"
        )
    return time.perf_counter() - start


def _children(process) -> list:
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _stage_name(process) -> str | None:
    """``train mnist`` for ``python -m pipeline.stages.train mnist``."""
    import psutil

    try:
        command = process.cmdline()
    except psutil.Error:
        return None
    if "-m" in command and command.index("-m") + 1 < len(command):
        module = command[command.index("-m") + 1]
        if module.startswith("pipeline."):
            stage = module.removeprefix("pipeline.").removeprefix("stages.")
            return " ".join([stage, *command[command.index("-m") + 2 :]]).strip()
    return None


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def differing_outputs(clone: Path, committed: dict, produced: dict) -> list[str]:
    """``stage: path`` of each output of ``clone``'s repro that is not what the ``committed`` dvc.lock records.

    A file's bytes are hashed here (md5, what DVC records for a file); a directory's md5 is DVC's hash of
    its listing, read from the ``produced`` dvc.lock (the one the repro wrote). An output only one of the
    two locks names differs too. [] when every output matches.
    """
    expected, recorded = _outs(committed), _outs(produced)
    differing = []
    for key in sorted(expected.keys() | recorded.keys()):
        path = clone / key[1]
        actual = file_digest(path, "md5") if key in recorded and path.is_file() else recorded.get(key)
        if key not in expected or actual != expected[key]:
            differing.append(": ".join(key))
    return differing


def _outs(lock: dict) -> dict[tuple[str, str], str | None]:
    """``{(stage, path): md5}`` of every output a dvc.lock records."""
    return {
        (name, out["path"]): out.get("md5")
        for name, stage in lock.get("stages", {}).items()
        for out in stage.get("outs", [])
    }
