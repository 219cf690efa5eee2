"""Made-up benchmark figures for the report's tests: one implementation's, and a throughput phase's."""

from __future__ import annotations

from bench.report import ratios


def implementation(train: float, evaluation: float) -> dict:
    return {
        "train_samples_per_s": train,
        "eval_samples_per_s": evaluation,
        "train_share_of_peak": 0.5,
        "eval_share_of_peak": 0.25,
    }


def figures_of(implementations: dict, notes: list[str]) -> dict:
    return {
        "throughput": {
            "batch_size": 256,
            "repeats": 3,
            "steps_per_execution": 43,
            "timed_batches_per_round": 43,
            "parallel_slices": 2,
            "threads_per_slice": 1,
            "implementations": implementations,
            "ratios": ratios(implementations),
            "notes": notes,
            "gemm_gflops": {"tensorflow portable": 60.0, "numpy": 190.0},
            "one_core_gflops": {
                "portable": {"gates": 110.0, "weights' gradient": 100.0, "state's gradient": 95.0, "step": 104.0},
                "numpy": {"gates": 140.0, "weights' gradient": 125.0, "state's gradient": 120.0, "step": 130.0},
            },
            "flop_per_sample": {"train": 12.62e6, "inference": 4.48e6},
            "peak": {
                "size": 4096,
                "gflops": {"tensorflow": 483.0, "numpy": 258.0},
                "peak_gflops": 483.0,
                "peak_library": "tensorflow",
                "notes": [],
            },
        }
    }
