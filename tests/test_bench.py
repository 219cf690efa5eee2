"""The benchmark's table and ratios, and real runs on tiny settings (not timed tests: no target is checked)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from bench.benchmark import TORCH_MISSING, lstm_train_flops, mode_params, ratios, table, timed_span
from pipeline.config import ParamsError


def test_flops_of_the_seed_model():
    # 28 steps x 2 x (28 + 128) x 512 + 2 x 128 x 10 multiply-adds forward, x3 with the backward pass
    assert lstm_train_flops(28, 28, 128, 10) == 3.0 * (28 * 2 * 156 * 512 + 2560)


def test_samples_are_counted_from_batch_indices_not_reports():
    # steps_per_execution 43: Keras reports once per execution, with the index of its last batch
    seconds, samples = timed_span([(42, 10.0), (85, 11.0), (128, 12.5)], batch=256)
    assert seconds == 2.5 and samples == 86 * 256


def test_each_mode_is_checked_against_the_params(params_raw):
    assert mode_params(params_raw, "native").numerics.mode == "native"
    assert mode_params(params_raw, "portable", batch=128).mnist.batch_size == 128
    threads = {**params_raw, "numerics": {**params_raw["numerics"], "mode": "native", "threads_per_slice": 2}}
    assert mode_params(threads, "native").numerics.threads_per_slice == 2
    with pytest.raises(ParamsError, match="portable runs each slice on 1 thread"):
        mode_params(threads, "portable")


def _implementation(train: float, evaluation: float) -> dict:
    return {"train_samples_per_s": train, "eval_samples_per_s": evaluation, "train_fraction_of_gemm_limit": 0.5}


def _results(implementations: dict, notes: list[str]) -> dict:
    return {"throughput": {
        "batch_size": 256, "repeats": 3, "steps_per_execution": 43, "timed_batches_per_round": 43,
        "parallel_slices": 2, "threads_per_slice": 1, "implementations": implementations,
        "ratios": ratios(implementations), "notes": notes, "gemm_gflops": {"tensorflow portable": 60.0, "numpy": 190.0},
        "gemm_limit_train_samples_per_s": 14_000.0,
    }}


def test_table_sets_both_modes_beside_pytorch():
    implementations = {"pipeline portable": _implementation(6_000, 20_000), "pipeline native": _implementation(9_000, 25_000),
                       "PyTorch": {**_implementation(5_000, 40_000), "setup": {"threads": 2}}}
    results = _results(implementations, [])
    assert results["throughput"]["ratios"] == {
        "portable / PyTorch": {"train": 1.2, "eval": 0.5}, "native / PyTorch": {"train": 1.8, "eval": 0.625},
        "portable / native": {"train": 6_000 / 9_000, "eval": 0.8}}
    text = table(results)
    assert text.startswith("| implementation | train samples/s | eval samples/s | train, share of GEMM limit |\n|---|")
    assert "| pipeline portable | 6,000 | 20,000 | 50.0% |\n| pipeline native | 9,000 | 25,000 | 50.0% |\n" \
           "| PyTorch | 5,000 | 40,000 | 50.0% |\n" in text
    assert "\nportable / PyTorch: train 1.20×, eval 0.50×\nnative / PyTorch: train 1.80×, eval 0.62×\n" \
           "portable costs: train 1.50× native's time, eval 1.25×\n" in text
    assert "PyTorch 2 thread(s)" in text and "tensorflow portable 60, numpy 190 GFLOP/s" in text


def test_table_without_pytorch_has_a_note_and_no_ratios_to_it():
    implementations = {"pipeline portable": _implementation(6_000, 20_000), "pipeline native": _implementation(9_000, 25_000)}
    results = _results(implementations, [TORCH_MISSING])
    assert set(results["throughput"]["ratios"]) == {"portable / native"}
    text = table(results)
    assert "/ PyTorch" not in text and "| PyTorch |" not in text
    assert "portable costs: train 1.50× native's time, eval 1.25×\n" + TORCH_MISSING + "\n" in text


def test_table_of_one_mode():
    results = _results({"pipeline native": _implementation(9_000, 25_000), "PyTorch": _implementation(5_000, 40_000)}, [])
    text = table(results)
    assert "native / PyTorch: train 1.80×, eval 0.62×" in text
    assert "| pipeline portable |" not in text and "portable /" not in text and "portable costs" not in text


# torch is the benchmark's own install (make bench), not in requirements.txt: where it is missing (as in CI)
# the same run measures both modes and says PyTorch was not measured.
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.slow
def test_quick_benchmark_measures_both_modes_and_pytorch(trained_project, tmp_path):
    output = tmp_path / "bench.json"
    trained_project.python("-m", "bench.benchmark", "--skip", "dvc", "fable", "repro", "--repeats", "1",
                           "--train-batches", "3", "--eval-samples", "200", "--output", str(output))
    results = json.loads(output.read_text())
    t = results["throughput"]
    # The shrunken project: 300 training images in batches of 64 -> 5 steps an epoch, all in one execution;
    # the first execution is not timed, then 3 batches asked for -> one whole execution of 5.
    assert t["steps_per_execution"] == 5 and t["timed_batches_per_round"] == 5
    names = ["pipeline portable", "pipeline native"] + (["PyTorch"] if HAS_TORCH else [])
    assert set(t["implementations"]) == set(names)  # the JSON's keys are sorted; the table keeps this order
    rows = [line.split(" |")[0].removeprefix("| ") for line in results["table"].splitlines()[2:2 + len(names)]]
    assert rows == names
    for name in names:
        item = t["implementations"][name]
        assert item["train_samples_per_s"] > 0 and item["eval_samples_per_s"] > 0
        assert item["train_samples_per_round"] == 5 * 64 and item["eval_samples_per_round"] == 200
    for name in names[:2]:  # each mode pinned in its own process, with params.yaml's slices and threads
        setup = t["implementations"][name]["setup"]
        assert setup["intra_op_threads"] == 1 and setup["inter_op_threads"] == 2 + 1
    torch_ratios = {"portable / PyTorch", "native / PyTorch"} if HAS_TORCH else set()
    assert set(t["ratios"]) == {"portable / native"} | torch_ratios
    assert {"tensorflow portable", "tensorflow native", "numpy"} | ({"torch"} if HAS_TORCH else set()) == set(t["gemm_gflops"])
    assert results["profile"]["mode"] == "portable"
    for part in ("train", "inference"):  # where the time goes: matrix products vs everything else
        profile = results["profile"][part]
        assert profile["step_ms"] > 0 and profile["matmuls"] > 0 and profile["top_ops"]["MatMul"] == profile["matmuls"]
    assert not {"dvc", "fable", "repro"} & set(results)
    text = results["table"]
    for line in ("| pipeline portable |", "| pipeline native |", "portable costs: train ", "one inference batch (100, portable)"):
        assert line in text
    torch_lines = ("| PyTorch |", "portable / PyTorch: train ", "native / PyTorch: train ")
    assert all((line in text) == HAS_TORCH for line in torch_lines)
    assert (TORCH_MISSING in text) != HAS_TORCH


@pytest.mark.slow
def test_benchmark_without_torch_runs_every_part(trained_copy, tmp_path):
    hidden = tmp_path / "no_torch" / "torch"  # an import of torch fails, as where it is not installed
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    trained_copy.run(sys.executable, "-m", "bench.benchmark", "--modes", "portable", "--repeats", "1",
                     "--train-batches", "2", "--eval-samples", "256", "--output", "bench.json",
                     env_extra={"PYTHONPATH": str(hidden.parent)})
    results = json.loads((trained_copy.root / "bench.json").read_text())
    t = results["throughput"]
    assert set(t["implementations"]) == {"pipeline portable"} and t["ratios"] == {}
    assert "hidden for the test" in t["torch"] and "/ PyTorch" not in results["table"]
    assert 0 < t["implementations"]["pipeline portable"]["train_fraction_of_gemm_limit"]
    assert results["dvc"]["pipeline_was_up_to_date"] is True and results["dvc"]["ratio"] > 0
    assert results["fable"]["epochs_allowed"] == 2 and results["fable"]["mode"] == "portable"
    repro = results["repro"]  # a fresh clone of the shrunken project, run from empty
    assert repro["wall_s"] > 0 and {"train mnist", "train fable"} <= set(repro["peak_rss_mb"])
    assert repro["peak_rss_mb"]["train mnist"] > 200  # TensorFlow's process, not the launcher
    assert 0 <= repro["mnist_test_accuracy"] <= 1 and repro["fable_ceiling"] > 0
