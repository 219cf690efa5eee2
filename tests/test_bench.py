"""The benchmark runs on tiny settings and writes its JSON (it is not a timed test: no target is checked)."""

from __future__ import annotations

import json

from bench.benchmark import lstm_train_flops


def test_flops_of_the_seed_model():
    # 28 steps x 2 x (28 + 128) x 512 + 2 x 128 x 10 multiply-adds forward, x3 with the backward pass
    assert lstm_train_flops(28, 28, 128, 10) == 3.0 * (28 * 2 * 156 * 512 + 2560)


def test_benchmark_writes_its_json(trained_copy):
    trained_copy.python("-m", "bench.benchmark", "--repeats", "1", "--train-batches", "2", "--eval-samples", "256",
                        "--output", "bench.json")
    results = json.loads((trained_copy.root / "bench.json").read_text())
    ours = results["throughput"]["pipeline (Keras)"]
    assert ours["train_samples_per_s"] > 0 and ours["eval_samples_per_s"] > 0
    assert 0 < ours["train_fraction_of_gemm_limit"] < 1  # GEMM at the step's shape outruns the whole step
    assert results["throughput"]["gemm_gflops"]["tensorflow"] > 0
    for part in ("train", "inference"):  # where the time goes: matrix products vs everything else
        profile = results["profile"][part]
        assert profile["step_ms"] > 0 and profile["matmuls"] > 0 and profile["top_ops"]["MatMul"] == profile["matmuls"]
    assert results["dvc"]["pipeline_was_up_to_date"] is True and results["dvc"]["ratio"] > 0
    assert results["fable"]["epochs_allowed"] == 2
    repro = results["repro"]  # a fresh clone of the shrunken project, run from empty
    assert repro["wall_s"] > 0 and {"train mnist", "train fable"} <= set(repro["peak_rss_mb"])
    assert repro["peak_rss_mb"]["train mnist"] > 200  # TensorFlow's process, not the launcher
    assert 0 <= repro["mnist_test_accuracy"] <= 1 and repro["fable_ceiling"] > 0
    assert "| pipeline (Keras) |" in results["table"] and "one inference batch" in results["table"]
