"""Throughput of the pipeline's MNIST model in each numerics mode and of PyTorch's, each in a worker of its own.

Every implementation (bench.implementations) runs in a fresh spawned process (bench.workers) that pins its
numerics before TensorFlow loads: the workers are started one after the other, each warmed up (graphs
traced, caches filled), then asked for one timed round each in turn, ``repeats`` times, so that drift of a
noisy machine hits all of them; medians are reported, with the share of the machine's float32 peak each
reaches (bench.peak: FLOP per sample counted from the model's shapes, the peak measured in the same run)
and, for reference, the GEMM rate each library reaches at the LSTM step's shape (bench.gemm_limit).
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Sequence

from bench.gemm_limit import gemm_gflops, one_core_gflops
from bench.implementations import Ours, Torch
from bench.modes import TORCH, TORCH_MISSING, implementation_name, mode_params
from bench.peak import PEAK_SIZE, lstm_flops, machine_peak, shares_of_peak
from bench.report import ratios
from bench.timing import median_rate, timed
from bench.workers import FreshProcess, run_once
from pipeline.config import Params, ParamsError, load_params

# Seconds of quiet before each timed turn: the worker that just finished may still have threads spinning.
_SETTLE_S = 0.25

# --- in a worker process: one implementation, set up once, then asked for rounds -----------------------

_measured: Ours | Torch | None = None
_libraries: tuple[str, ...] = ()


def start(
    kind: str, params_path: str, batch: int, train_batches: int, eval_samples: int, layout: dict | None = None
) -> dict:
    """Set up ``kind`` (a numerics mode, or ``torch``) in this worker, warm it up, and describe it.

    ``{"ready": description}``; for torch, ``{"unavailable": why}`` if it cannot be imported. A mode is
    pinned (pipeline.model.numerics.pin_for) before anything imports TensorFlow. PyTorch trains on the
    batches and evaluates in the inference batches of ``layout``, the pipeline worker's description.
    """
    global _measured, _libraries
    params = load_params(params_path)
    if kind == "torch":
        try:
            import torch  # noqa: F401
        except ImportError as error:
            return {"unavailable": f"torch cannot be imported ({error}): PyTorch not measured, no ratios to it"}
        params = mode_params(params, "native", batch, params_path)  # native: no constraint on slices to meet
        assert layout is not None
        _measured = Torch(
            params, layout["total_batches"], layout["skip_batches"], eval_samples, layout["inference_batch"]
        )
        _libraries = ("torch",)
    else:
        from pipeline.model.numerics import pin_for

        params = mode_params(params, kind, batch, params_path)
        pin_for(params, "mnist", f"bench {kind}")  # before anything imports TensorFlow
        _measured = Ours(params, train_batches, eval_samples)
        _libraries = ("tensorflow",)
    measure_round()  # builds graphs, warms caches: not timed
    return {"ready": _measured.describe()}


def measure_round() -> dict:
    """One timed training round and one timed evaluation of this worker's implementation."""
    assert _measured is not None, "start() first"
    train_seconds, train_samples = _measured.train()
    return {
        "train_seconds": train_seconds,
        "train_samples": train_samples,
        "eval_seconds": timed(_measured.evaluate),
        "eval_samples": len(_measured.x_eval),
    }


def measure_gemm(batch: int, units: int, slices: int) -> dict[str, float]:
    """GFLOP/s of this worker's library at the LSTM step's shape, in this worker's numerics (TensorFlow's in
    ``slices`` side by side, as the model's batch)."""
    assert _measured is not None, "start() first"
    inner, outer = _measured.x.shape[2] + units, 4 * units
    return {library: gemm_gflops(library, batch, inner, outer, slices=slices) for library in _libraries}


# --- in the benchmark's process: the workers, their rounds in turns, the figures ------------------------


def throughput(
    params_path: str,
    params: Params,
    modes: Sequence[str],
    batch: int,
    train_batches: int,
    evaluation_samples: int,
    repeats: int,
    peak_size: int = PEAK_SIZE,
) -> dict:
    """samples/s of each implementation, each in its own warmed-up worker, timed in turns ``repeats`` times;
    then the machine's peak (a ``peak_size`` square product) and each implementation's share of it."""
    notes: list[str] = []
    runnable = []
    for mode in modes:
        try:
            mode_params(params, mode, batch, params_path)
        except ParamsError as error:  # this mode cannot run these params
            notes.append(f"{implementation_name(mode)} not measured: {error}")
        else:
            runnable.append(mode)
    if not runnable:
        raise RuntimeError("no numerics mode can run these params:\n" + "\n".join(notes))
    workers: dict[str, FreshProcess] = {}
    setups: dict[str, dict] = {}
    torch_note = None
    with contextlib.ExitStack() as stack:
        for mode in runnable:  # one after the other: no set-up runs beside another's
            name = implementation_name(mode)
            workers[name] = stack.enter_context(FreshProcess(name))
            setups[name] = workers[name].call(start, mode, params_path, batch, train_batches, evaluation_samples)[
                "ready"
            ]
        layout = setups[implementation_name(runnable[0])]
        if importlib.util.find_spec("torch") is None:
            torch_note = TORCH_MISSING
        else:
            worker = stack.enter_context(FreshProcess(TORCH))
            answer = worker.call(start, "torch", params_path, batch, train_batches, evaluation_samples, layout)
            if "unavailable" in answer:
                torch_note = answer["unavailable"]
            else:
                workers[TORCH], setups[TORCH] = worker, answer["ready"]
        if torch_note:
            notes.append(torch_note)
        rounds: dict[str, list[dict]] = {name: [] for name in workers}
        for _ in range(repeats):
            for name, worker in workers.items():
                time.sleep(_SETTLE_S)
                rounds[name].append(worker.call(measure_round))
        gemm, slices = {}, params.mnist.parallel_slices
        for name, worker in workers.items():
            for library, rate in worker.call(measure_gemm, batch, params.mnist.units, slices).items():
                gemm[library if name == TORCH else f"{library} {name.removeprefix('pipeline ')}"] = rate
    units = params.mnist.units
    gemm["numpy"] = gemm_gflops("numpy", batch, layout["features"] + units, 4 * units)
    one_core = {}  # each library on one thread at one step's products on one batch slice
    for library in ("portable", "numpy") + (("torch",) if TORCH in workers else ()):
        one_core[library] = run_once(
            f"one core {library}", one_core_gflops, library, batch // slices, layout["features"], units
        )
    flops = lstm_flops(layout["steps"], layout["features"], units, 10)
    peak = machine_peak(peak_size)  # after the rounds: its threads on every core disturb no timing
    implementations = {}
    for name, measured in rounds.items():
        train_samples, eval_samples = measured[0]["train_samples"], measured[0]["eval_samples"]
        rates = {
            "train": median_rate(train_samples, [m["train_seconds"] for m in measured]),
            "eval": median_rate(eval_samples, [m["eval_seconds"] for m in measured]),
        }
        shares = shares_of_peak(rates, flops, peak["peak_gflops"])
        implementations[name] = {
            "train_samples_per_s": rates["train"],
            "eval_samples_per_s": rates["eval"],
            "train_share_of_peak": shares["train"],
            "eval_share_of_peak": shares["eval"],
            "train_samples_per_round": train_samples,
            "eval_samples_per_round": eval_samples,
            "train_seconds": [m["train_seconds"] for m in measured],
            "eval_seconds": [m["eval_seconds"] for m in measured],
            "setup": setups[name],
        }
    from pipeline.model.numerics import describe

    return {
        "batch_size": batch,
        "repeats": repeats,
        "steps_per_execution": layout["steps_per_execution"],
        "timed_batches_per_round": layout["total_batches"] - layout["skip_batches"],
        "parallel_slices": params.mnist.parallel_slices,
        "threads_per_slice": params.numerics.threads_per_slice,
        "numerics": {mode: describe(mode) for mode in runnable},
        "implementations": implementations,
        "ratios": ratios(implementations),
        "gemm_gflops": gemm,
        "one_core_gflops": one_core,
        "flop_per_sample": flops,
        "peak": peak,
        "torch": torch_note or "measured",
        "notes": notes,
    }
