"""The benchmark's prerequisites, phases, workers and repro comparison, and one real run on tiny settings
(not timed tests: no target is checked)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml
from bench_figures import figures_of, implementation

import bench.benchmark as benchmark
from bench.modes import TORCH_MISSING
from bench.phases import Phase, failed, run_phases
from bench.prerequisites import missing_prerequisites, unreachable_data
from bench.repro import clone_environment, differing_outputs
from bench.workers import FreshProcess, run_once
from pipeline.config import parse_params
from pipeline.datasets.splits import save_splits

HAS_TORCH = importlib.util.find_spec("torch") is not None

# --- prerequisites, progress, and figures that survive a failure (no TensorFlow: fast) --------------------


@pytest.fixture
def prepared(tmp_path: Path, raw: dict) -> Path:
    """A params file whose data paths name tiny prepared MNIST splits, a fable and its vocabulary in tmp_path."""
    data = tmp_path / "data"
    images, labels = np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8)
    save_splits({split: (images, labels) for split in ("train", "validation", "test")}, data / "prepared")
    (data / "fable.txt").write_text("long ago , the mice had a general council\n")
    (data / "fable.json").write_text(json.dumps({"ceiling": 1.0}))
    raw["paths"]["mnist"]["prepared"] = str(data / "prepared")
    raw["paths"]["fable"].update(raw=str(data / "fable.txt"), vocabulary=str(data / "fable.json"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _params(path: Path):
    return parse_params(yaml.safe_load(path.read_text()), source=str(path))


def test_prepared_data_is_all_a_run_without_repro_needs(prepared):
    assert missing_prerequisites(_params(prepared), skip=["repro"], environ={}) == []


def test_missing_data_stops_the_benchmark_before_any_work(prepared, tmp_path):
    (tmp_path / "data" / "prepared" / "x_test.npy").unlink()
    (tmp_path / "data" / "fable.json").unlink()
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.benchmark",
            "--params",
            str(prepared),
            "--skip",
            "repro",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines == [
        f"bench: cannot start: {tmp_path}/data/prepared: the prepared MNIST split(s) test cannot be read "
        f"(No such file or directory: {tmp_path}/data/prepared/x_test.npy): run `dvc repro` first",
        f"bench: cannot start: {tmp_path}/data/fable.json: cannot read: No such file or directory: "
        "run `dvc repro` first, or --skip fable",
    ]
    assert not output.exists()  # nothing measured, nothing written


def test_the_fable_is_not_needed_when_its_phase_is_skipped(prepared, tmp_path):
    (tmp_path / "data" / "fable.json").unlink()
    assert missing_prerequisites(_params(prepared), skip=["fable", "repro"], environ={}) == []


def test_without_a_mirror_or_a_reachable_source_the_repro_phase_refuses_up_front(prepared, http_server, mirror):
    # params.yaml's sources on a loopback server that has none of the files (404): as offline without a mirror
    raw = yaml.safe_load(prepared.read_text())
    raw["data"]["mnist"]["mirrors"] = [f"{http_server.base_url}/mnist/"]
    raw["data"]["fable"]["url"] = f"{http_server.base_url}/fable/belling_the_cat.txt"
    params = parse_params(raw)
    root = Path(__file__).resolve().parents[1]
    (problem,) = missing_prerequisites(params, skip=[], environ={}, source=root)
    assert problem.startswith(
        "the full-repro phase's fresh clone fetches the data, and no source answers for "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        f"t10k-labels-idx1-ubyte, fable.txt ({http_server.base_url}/mnist/"
        "train-images-idx3-ubyte.gz: HTTP 404 Not Found): set PIPELINE_MIRROR to "
    )
    assert problem.endswith("or leave the phase out with --skip repro")
    assert http_server.hits == [
        "/mnist/train-images-idx3-ubyte.gz",
        "/mnist/train-labels-idx1-ubyte.gz",
        "/mnist/t10k-images-idx3-ubyte.gz",
        "/mnist/t10k-labels-idx1-ubyte.gz",
        "/fable/belling_the_cat.txt",
    ]
    assert missing_prerequisites(params, skip=["repro"], environ={}, source=root) == []
    assert missing_prerequisites(params, skip=[], environ={"PIPELINE_MIRROR": str(mirror)}, source=root) == []


def test_an_unreachable_host_is_asked_once(prepared):
    import socket

    with socket.socket() as closed:  # a port nothing listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{closed.getsockname()[1]}"
    raw = yaml.safe_load(prepared.read_text())
    raw["data"]["mnist"]["mirrors"] = [f"{base}/mnist/"]
    raw["data"]["fable"]["url"] = f"{base}/fable/belling_the_cat.txt"
    unreachable = unreachable_data(parse_params(raw), None, timeout=5.0)
    assert len(unreachable) == 5 and all("cannot connect: " in why for why in unreachable.values())


def test_the_last_commit_is_needed_for_the_repro_phase(prepared, tmp_path, mirror):
    empty = tmp_path / "repository"
    empty.mkdir()
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    (problem,) = missing_prerequisites(
        _params(prepared), skip=[], environ={"PIPELINE_MIRROR": str(mirror)}, source=empty
    )
    assert problem == (
        f"the full-repro phase clones the last commit of {empty}, which has none (not a git "
        "repository?): commit first, or leave the phase out with --skip repro"
    )


def test_a_relative_mirror_is_resolved_for_the_clone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environment = clone_environment({"PIPELINE_MIRROR": "../shared/mirror", "HOME": "/home/x"})
    assert environment == {"PIPELINE_MIRROR": str(tmp_path.parent / "shared" / "mirror"), "HOME": "/home/x"}
    assert (
        clone_environment({"PIPELINE_MIRROR": "https://example.invalid/m"})["PIPELINE_MIRROR"]
        == "https://example.invalid/m"
    )


def test_each_phase_is_written_before_the_next_runs_and_a_failure_keeps_them(tmp_path, capsys):
    output = tmp_path / "out" / "bench.json"
    on_disk_when_fable_ran: list[dict] = []
    dvc = {"pipeline_no_op_repro_s": 0.7, "dvc_floor_no_op_repro_s": 0.5, "ratio": 1.4, "pipeline_was_up_to_date": True}

    def fable() -> dict:
        on_disk_when_fable_ran.append(json.loads(output.read_text()))
        raise RuntimeError("worker fable failed (1):\nTraceback ...")

    repro = {
        "wall_s": 170.4,
        "library_build_s": 12.6,
        "peak_rss_mb": {"train mnist": 900.0},
        "mnist_test_accuracy": 0.99,
        "fable_accuracy": 0.99,
        "fable_ceiling": 0.99,
        "outputs_match_committed_dvc_lock": True,
    }
    results = run_phases(
        [
            Phase("dvc", "no-op", lambda: dvc, lambda d: f"{d['ratio']}×"),
            Phase("fable", "to its ceiling", fable, lambda f: "never"),
            Phase("repro", "from empty", lambda: repro, lambda r: "done"),
        ],
        output,
    )
    assert on_disk_when_fable_ran == [
        {
            "dvc": dvc,
            "table": "no-op dvc repro 0.70 s vs DVC floor 0.50 s (1.40×)\n"
            "target: no-op dvc repro / DVC's floor 1.40× (≤ 1.20×): missed by 17%\n",
        }
    ]
    written = json.loads(output.read_text())
    assert written["dvc"] == dvc and written["repro"] == repro  # the phase after the failure still ran
    assert written["fable"] == {"error": "RuntimeError: worker fable failed (1):\nTraceback ..."} == results["fable"]
    assert (
        "\nfable: failed: RuntimeError: worker fable failed (1):\nfull dvc repro from empty: 2 min 50 s "
        "(and 13 s to build the matrix product's library first);" in written["table"]
    )
    assert failed(results) == ["fable"]
    progress = capsys.readouterr().err.splitlines()
    assert progress[0:2] == ["bench: dvc (no-op) ...", "bench: dvc done in 0 s: 1.4×"]
    assert progress[2:4] == [
        "bench: fable (to its ceiling) ...",
        "bench: fable failed after 0 s: RuntimeError: worker fable failed (1):",
    ]
    assert progress[-1] == "bench: repro done in 0 s: done"


def test_a_failed_phase_ends_the_run_with_status_1_after_writing(prepared, tmp_path, monkeypatch, capsys):
    implementations = {
        "pipeline portable": implementation(6_000, 20_000),
        "pipeline native": implementation(9_000, 25_000),
    }
    measured = figures_of(implementations, [])["throughput"]
    monkeypatch.setattr(benchmark, "throughput", lambda *args: measured)

    def profile_that_runs_out_of_memory(params_path: str, batch: int, repeats: int) -> dict:
        # a real worker process whose measurement raises, as the profile's would
        return run_once("profile", exec, "raise MemoryError('out of memory')")

    monkeypatch.setattr(benchmark, "measure_profile", profile_that_runs_out_of_memory)
    output = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exit_status:
        benchmark.main(
            ["--params", str(prepared), "--skip", "dvc", "fable", "repro", "--repeats", "3", "--output", str(output)]
        )
    assert exit_status.value.code == 1
    written = json.loads(output.read_text())
    assert written["throughput"] == measured
    failure = "RuntimeError: benchmark worker profile failed: MemoryError: out of memory"
    error = written["profile"]["error"]  # the worker's error, then its traceback
    assert error.startswith(f"{failure}\nTraceback (most recent call last):\n")
    assert error.endswith("\nMemoryError: out of memory") and set(written["profile"]) == {"error"}
    assert written["table"].startswith("| implementation |") and f"\nprofile: failed: {failure}\n" in written["table"]
    captured = capsys.readouterr()
    assert captured.out == written["table"]
    progress = [line for line in captured.err.splitlines() if not line.startswith("bench: note: ")]
    measured_names = "portable, native" + (", PyTorch" if HAS_TORCH else "")
    assert progress[:3] == [
        f"bench: throughput ({measured_names}; 3 round(s) each, in turns) ...",
        "bench: throughput done in 0 s: portable 6,000, native 9,000 train samples/s",
        "bench: profile (one training step of batch 256 and one inference batch, portable) ...",
    ]
    assert progress[3].startswith("bench: profile failed after ") and progress[3].endswith(f" s: {failure}")
    assert progress[4:] == [
        *error.splitlines()[1:],
        f"bench: figures in {output}",
        f"bench: failed: profile (their errors are in {output})",
    ]


# --- each measurement in a fresh process: spawned, so nothing the benchmark's process loaded is inherited ---


def test_a_worker_is_a_fresh_process_that_answers_every_call(monkeypatch):
    # As if TensorFlow were loaded here: a forked worker would inherit it and could not pin its numerics.
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    with FreshProcess("pipeline portable") as worker:
        pid = worker.call(os.getpid)
        assert pid != os.getpid()
        assert worker.call(eval, "'tensorflow' in __import__('sys').modules") is False
        assert worker.call(eval, "'pipeline.datasets.splits' in __import__('sys').modules") is False  # loaded here
        assert worker.call(os.getpid) == pid  # one process per configuration, warmed once, asked again and again


def test_a_failed_worker_is_reported_with_its_error():
    with FreshProcess("pipeline native") as worker, pytest.raises(RuntimeError) as raised:
        worker.call(exec, "raise ValueError('no such layer')")
    message = str(raised.value)
    assert message.startswith("benchmark worker pipeline native failed: ValueError: no such layer\nTraceback ")
    assert message.endswith("\nValueError: no such layer")
    # A worker that dies without answering (killed, out of memory): its last output comes with the error.
    with pytest.raises(RuntimeError) as raised:
        run_once("fable", exec, "import os, sys; print('last words', file=sys.stderr, flush=True); os._exit(3)")
    assert str(raised.value).startswith("benchmark worker fable ended without answering (")
    assert str(raised.value).endswith("):\nlast words")


def test_the_repro_compares_each_output_with_the_committed_lock(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mnist.keras").write_bytes(b"weights")
    (tmp_path / "data").mkdir()  # a directory output: DVC's md5 of its listing, as the repro's lock records it

    def lock(model_md5: str, data_md5: str) -> dict:
        return {
            "schema": "2.0",
            "stages": {
                "prepare": {"outs": [{"path": "data", "hash": "md5", "md5": data_md5}]},
                "train_mnist": {"outs": [{"path": "models/mnist.keras", "hash": "md5", "md5": model_md5}]},
            },
        }

    model = hashlib.md5(b"weights").hexdigest()
    committed = lock(model, "0123.dir")
    assert differing_outputs(tmp_path, committed, lock(model, "0123.dir")) == []
    # the file is hashed from its bytes, not taken from the lock the repro wrote
    assert differing_outputs(tmp_path, lock(hashlib.md5(b"other").hexdigest(), "0123.dir"), committed) == [
        "train_mnist: models/mnist.keras"
    ]
    assert differing_outputs(tmp_path, committed, lock(model, "4567.dir")) == ["prepare: data"]
    fewer = {"stages": {"prepare": committed["stages"]["prepare"]}}
    assert differing_outputs(tmp_path, committed, fewer) == ["train_mnist: models/mnist.keras"]
    assert differing_outputs(tmp_path, fewer, committed) == ["train_mnist: models/mnist.keras"]


# torch is the benchmark's own install (make bench), not in requirements.txt: where it is missing (as in CI)
# the same run measures both modes and says PyTorch was not measured.
@pytest.mark.minutes(3)
def test_benchmark_runs_every_part_on_the_trained_project(trained_copy, tmp_path):
    """One real run of every phase but the full repro on the shrunken trained project, both modes, torch made
    unimportable. The repro phase (bench.repro.full_repro) is tests/test_committed_lock.py's, on this project."""
    hidden = tmp_path / "no_torch" / "torch"  # an import of torch fails, as where it is not installed
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    done = trained_copy.run(
        sys.executable,
        "-m",
        "bench.benchmark",
        "--repeats",
        "1",
        "--train-batches",
        "3",
        "--eval-samples",
        "200",
        "--peak-size",
        "512",
        "--output",
        "bench.json",
        "--skip",
        "repro",
        env_extra={"PYTHONPATH": str(hidden.parent)},
    )
    results = json.loads((trained_copy.root / "bench.json").read_text())
    progress = [line for line in done.stderr.splitlines() if line.startswith("bench: ")]  # each phase as it runs
    phases = [line.split(" (")[0].split(" done in ")[0] for line in progress if not line.startswith("bench: note")]
    assert phases == [f"bench: {phase}" for phase in ("throughput", "profile", "dvc", "fable") for _ in "12"] + [
        "bench: figures in bench.json"
    ]
    t = results["throughput"]
    # The shrunken project: 300 training images in batches of 64 -> 5 steps an epoch, all in one execution;
    # the first execution is not timed, then 3 batches asked for -> one whole execution of 5.
    assert t["steps_per_execution"] == 5 and t["timed_batches_per_round"] == 5
    names = ["pipeline portable", "pipeline native"]
    assert set(t["implementations"]) == set(names)  # the JSON's keys are sorted; the table keeps this order
    rows = [line.split(" |")[0].removeprefix("| ") for line in results["table"].splitlines()[2:4]]
    assert rows == names
    for name in names:  # each mode pinned in its own process, with params.yaml's slices and threads
        item = t["implementations"][name]
        assert item["train_samples_per_s"] > 0 and item["eval_samples_per_s"] > 0
        assert item["train_samples_per_round"] == 5 * 64 and item["eval_samples_per_round"] == 200
        assert item["setup"]["intra_op_threads"] == 1 and item["setup"]["inter_op_threads"] == 2  # one per slice
        assert 0 < item["train_share_of_peak"] < 1 and 0 < item["eval_share_of_peak"] < 1
    assert set(t["ratios"]) == {"portable / native"}
    assert set(t["gemm_gflops"]) == {"tensorflow portable", "tensorflow native", "numpy"}
    # one thread each at one step's products on a slice of 32 (64 in 2 slices); torch hidden: not measured
    assert set(t["one_core_gflops"]) == {"portable", "numpy"}
    for rates in t["one_core_gflops"].values():
        assert set(rates) == {"gates", "weights' gradient", "state's gradient", "step"}
        assert min(rates.values()) <= rates["step"] <= max(rates.values()) and rates["step"] > 0
    # the peak: a 512² product in each library, each in a process of its own; torch's import fails, noted
    peak = t["peak"]
    assert peak["size"] == 512 and set(peak["gflops"]) == {"tensorflow", "numpy"}
    assert peak["peak_gflops"] == max(peak["gflops"].values()) > 0 and "torch" in peak["notes"][0]
    assert t["flop_per_sample"]["train"] > t["flop_per_sample"]["inference"] > 0
    shown = [re.match(r"(target: .*?) [\d.]+(%|×| s) \(", line) for line in results["table"].splitlines()]
    assert [match.group(1) for match in shown if match] == [
        "target: portable train time / native's",
        "target: portable eval time / native's",
        "target: portable training, share of the peak",
        "target: portable kernel / NumPy's, one core at a step's products",
        "target: operations other than products, share of a training step",
        "target: no-op dvc repro / DVC's floor",
    ]
    assert "hidden for the test" in t["torch"] and "/ PyTorch" not in results["table"]
    assert TORCH_MISSING not in results["table"]  # torch is there; its import failed, and the note says so
    assert results["profile"]["mode"] == "portable"
    for part in ("train", "inference"):  # where the time goes: matrix products vs everything else
        profile = results["profile"][part]
        # portable: every product is one of pipeline.model.detgemm's ops, none TensorFlow's
        assert profile["step_ms"] > 0 and profile["matmuls"] > 0
        # the trace saw every kind of product run, and the rest too
        assert 0 < profile["products_ms"] < profile["ops_ms"] and 0 < profile["product_share"] < 1
        assert sum(profile["products"].values()) == profile["matmuls"] and "MatMul" not in profile["products"]
        assert set(profile["products"]) <= {"DetMatMul", "DetGates", "DetGatesGrad"}
    for line in (
        "| pipeline portable |",
        "| pipeline native |",
        "portable costs: train ",
        "one inference batch (100, portable)",
    ):
        assert line in results["table"]
    # The fable trained through the train stage's own loop, its history and checkpoint in a scratch directory
    assert "up to date" in trained_copy.dvc("status").stdout
    assert not (trained_copy.root / "checkpoints" / "fable.npz").exists()
    assert results["dvc"]["pipeline_was_up_to_date"] is True and results["dvc"]["ratio"] > 0
    # the floor runs with the project's own [core] settings: no analytics daemon on either side
    assert results["dvc"]["floor_core"] == results["dvc"]["core"] and results["dvc"]["core"]["analytics"] == "false"
    assert results["fable"]["epochs_allowed"] == 2 and results["fable"]["mode"] == "portable"
    assert "repro" not in results and "full dvc repro" not in results["table"]  # skipped: not measured
