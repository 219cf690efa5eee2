"""The benchmark's report: FLOPs and shares of the peak, the table, the ratios and the targets (no TensorFlow)."""

from __future__ import annotations

import pytest
from bench_figures import figures_of, implementation

from bench.modes import TORCH_MISSING, mode_params
from bench.peak import lstm_flops, shares_of_peak
from bench.report import table, target_lines
from bench.timing import timed_span
from pipeline.config import ParamsError, parse_params


def test_flops_of_the_seed_model():
    flops = lstm_flops(28, 28, 128, 10)
    # forward: per row, the gates' product of (28 pixels + 128 state) x 512 gates; then the dense layer
    assert flops["inference"] == 28 * 2 * 156 * 512 + 2 * 128 * 10 == 4_475_392
    # backward: per row the weights' gradient (156 x 512) and the state's (128 x 512; the pixels need none),
    # the dense layer's two: about 12.6 MFLOP a training sample
    assert flops["train"] == flops["inference"] + 28 * 2 * (156 + 128) * 512 + 2 * 2 * 128 * 10 == 12_623_360


def test_a_share_of_the_peak_counts_each_part_at_its_own_flop():
    flops = {"train": 12e6, "inference": 4e6}
    shares = shares_of_peak({"train": 10_000, "eval": 50_000}, flops, peak_gflops=400)
    assert shares == {"train": 0.3, "eval": 0.5}


def test_samples_are_counted_from_batch_indices_not_reports():
    # steps_per_execution 43: Keras reports once per execution, with the index of its last batch
    seconds, samples = timed_span([(42, 10.0), (85, 11.0), (128, 12.5)], batch=256)
    assert seconds == 2.5 and samples == 86 * 256


def test_each_mode_is_checked_against_the_params(params_raw):
    params = parse_params(params_raw)
    assert mode_params(params, "native").numerics.mode == "native"
    assert mode_params(params, "portable", batch=128).mnist.batch_size == 128
    assert params.numerics.mode == "portable" and params.mnist.batch_size == 256  # a changed copy, not a change
    threads = parse_params(
        {**params_raw, "numerics": {**params_raw["numerics"], "mode": "native", "threads_per_slice": 2}}
    )
    assert mode_params(threads, "native").numerics.threads_per_slice == 2
    # pipeline.config's own validator, naming the source and the key
    with pytest.raises(
        ParamsError,
        match=r"^bench\.yaml with numerics\.mode portable: numerics: portable runs each "
        r"slice on 1 thread",
    ):
        mode_params(threads, "portable", source="bench.yaml")


def test_table_sets_both_modes_beside_pytorch():
    implementations = {
        "pipeline portable": implementation(6_000, 20_000),
        "pipeline native": implementation(9_000, 25_000),
        "PyTorch": {**implementation(5_000, 40_000), "setup": {"threads": 2}},
    }
    results = figures_of(implementations, [])
    assert results["throughput"]["ratios"] == {
        "portable / PyTorch": {"train": 1.2, "eval": 0.5},
        "native / PyTorch": {"train": 1.8, "eval": 0.625},
        "portable / native": {"train": 6_000 / 9_000, "eval": 0.8},
    }
    text = table(results)
    assert text.startswith(
        "| implementation | train samples/s | eval samples/s | train, share of peak | eval, share of peak |\n|---|"
    )
    assert (
        "| pipeline portable | 6,000 | 20,000 | 50.0% | 25.0% |\n| pipeline native | 9,000 | 25,000 | 50.0% | 25.0% |\n"
        "| PyTorch | 5,000 | 40,000 | 50.0% | 25.0% |\n" in text
    )
    assert (
        "float32 peak 483 GFLOP/s (tensorflow), the best 4096² product on all cores: tensorflow 483, numpy 258; "
        "FLOP per sample: train 12.62 M, inference 4.48 M\n" in text
    )
    assert (
        "\nportable / PyTorch: train 1.20×, eval 0.50×\nnative / PyTorch: train 1.80×, eval 0.62×\n"
        "portable costs: train 1.50× native's time, eval 1.25×\n" in text
    )
    assert "PyTorch 2 thread(s)" in text and "all cores: tensorflow portable 60, numpy 190 GFLOP/s" in text
    assert (
        "\none core, one step's products on a batch slice (gates, weights' gradient, state's gradient; all three): "
        "portable 110 / 100 / 95 (104); numpy 140 / 125 / 120 (130) GFLOP/s\n" in text
    )


def test_table_without_pytorch_has_a_note_and_no_ratios_to_it():
    implementations = {
        "pipeline portable": implementation(6_000, 20_000),
        "pipeline native": implementation(9_000, 25_000),
    }
    results = figures_of(implementations, [TORCH_MISSING])
    assert set(results["throughput"]["ratios"]) == {"portable / native"}
    text = table(results)
    assert "/ PyTorch" not in text and "| PyTorch |" not in text
    assert "portable costs: train 1.50× native's time, eval 1.25×\n" + TORCH_MISSING + "\n" in text


def test_table_of_one_mode():
    results = figures_of(
        {"pipeline native": implementation(9_000, 25_000), "PyTorch": implementation(5_000, 40_000)}, []
    )
    text = table(results)
    assert "native / PyTorch: train 1.80×, eval 0.62×" in text
    assert "| pipeline portable |" not in text and "portable /" not in text and "portable costs" not in text


def test_each_target_measured_is_reported_met_or_missed_by_how_much():
    implementations = {
        "pipeline portable": {**implementation(10_000, 40_000), "train_share_of_peak": 0.72},
        "pipeline native": implementation(10_200, 38_000),
        "PyTorch": implementation(4_000, 25_000),
    }
    results = figures_of(implementations, [])
    step = {"step_ms": 20.0, "matmuls": 174, "other_ops": 3000, "other_ms_per_op": 1.3}
    step |= {"products_ms": 32.0, "ops_ms": 40.0, "product_share": 0.8}
    results["profile"] = {"mode": "portable", "train_batch": 256, "inference_batch": 100, "train": step}
    results["profile"]["inference"] = step
    results["dvc"] = {"pipeline_no_op_repro_s": 0.9, "dvc_floor_no_op_repro_s": 0.5, "ratio": 1.8}
    assert target_lines(results) == [
        "target: portable train speed / PyTorch's 2.50× (≥ 2.00×): met",
        "target: portable eval speed / PyTorch's 1.60× (≥ 2.00×): missed by 20%",
        "target: portable train time / native's 1.02× (≤ 1.05×): met",
        "target: portable eval time / native's 0.95× (≤ 1.05×): met",
        "target: portable training, share of the peak 72.0% (≥ 70.0%): met",
        "target: portable kernel / NumPy's, one core at a step's products 80.0% (≥ 90.0%): missed by 11%",
        "target: operations other than products, share of a training step 20.0% (≤ 15.0%): missed by 33%",
        "target: no-op dvc repro / DVC's floor 1.80× (≤ 1.20×): missed by 50%",
    ]
    assert table(results).endswith("\n".join(target_lines(results)) + "\n")
    results["repro"] = {"wall_s": 80.0, "library_build_s": 14.0}
    assert (
        target_lines(results)[-1] == "target: dvc repro from empty with the library build 94 s (≤ 90 s): missed by 4%"
    )
    # a failed or skipped phase has no target line
    results["dvc"] = {"error": "boom"}
    del results["repro"]
    assert not [line for line in target_lines(results) if "dvc repro" in line]
