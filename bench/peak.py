"""Honest yardsticks: the FLOP one MNIST sample needs, counted from the model's shapes, and the machine's float32
peak, measured in the same run by the fastest large square matrix product this machine has on all its cores.

FLOP (multiply and add counted apart) of the seed model, an LSTM of ``units`` over ``steps`` rows of
``features`` pixels and a dense layer to ``classes``, per sample:

- inference (the forward pass): each step's gates, ``2 · (features + units) · 4 units``, and the dense
  layer once, ``2 · units · classes``;
- training: the forward pass, then per step the weights' gradient (as many FLOP as the forward product) and
  the recurrent state's (``2 · units · 4 units``: the pixels need none), and the dense layer's two gradients.

Elementwise work (the gates' activations, the optimizer) is not counted: it is a few percent of the
products' and no GEMM can do it. The products the pipeline runs are slightly larger (the bias is a row of
ones in the gates' product, and the gradient of the whole stacked input is formed): counted here is what
the model needs, so a share of the peak is what a perfect implementation could not beat.

The peak: a ``size`` × ``size`` float32 product, timed as the best of a few calls after one untimed, in
each library that has one on this machine, each in a fresh process (bench.workers) with its threads on
every core: TensorFlow with oneDNN (``numerics.mode`` native, no thread limit), NumPy (its BLAS), PyTorch
when installed. The fastest is the machine's peak for this arithmetic.
"""

from __future__ import annotations

import importlib.util
import os
import time

from bench.workers import run_once

# The square product's side: large enough that every library runs at its best kernel on all cores.
PEAK_SIZE = 4096
_TRIES = 3


def lstm_flops(steps: int, features: int, units: int, classes: int) -> dict[str, float]:
    """FLOP of one sample through the model: ``inference`` (forward) and ``train`` (forward and backward)."""
    gates = 4 * units
    dense = 2.0 * units * classes
    forward = steps * 2.0 * (features + units) * gates + dense
    backward = steps * 2.0 * ((features + units) * gates + units * gates) + 2 * dense
    return {"inference": forward, "train": forward + backward}


def square_gemm_gflops(library: str, size: int) -> float:
    """In a fresh worker: GFLOP/s of ``library``'s ``size`` × ``size`` float32 product on every core."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    if library == "tensorflow":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"  # before TensorFlow loads: oneDNN, all cores
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        x, y = tf.constant(a), tf.constant(b)
        product = tf.function(lambda p, q: tf.linalg.matmul(p, q))
        action = lambda: product(x, y).numpy()  # noqa: E731
    elif library == "torch":
        import torch

        x, y = torch.from_numpy(a), torch.from_numpy(b)
        action = lambda: torch.matmul(x, y)  # noqa: E731
    else:
        action = lambda: np.matmul(a, b)  # noqa: E731
    action()
    best = float("inf")
    for _ in range(_TRIES):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def machine_peak(size: int = PEAK_SIZE) -> dict:
    """Each library's square-product rate, each in a process of its own, and the best of them: the peak."""
    libraries = ["tensorflow", "numpy"] + (["torch"] if importlib.util.find_spec("torch") is not None else [])
    rates, notes = {}, []
    for library in libraries:
        try:
            rates[library] = run_once(f"peak {library}", square_gemm_gflops, library, size)
        except RuntimeError as error:  # torch hidden or broken: the others still give a peak
            notes.append(f"{library}: {str(error).splitlines()[0]}")
    if not rates:
        raise RuntimeError("no library could measure a square product:\n" + "\n".join(notes))
    best = max(rates, key=rates.__getitem__)
    return {"size": size, "gflops": rates, "peak_gflops": rates[best], "peak_library": best, "notes": notes}


def shares_of_peak(samples_per_s: dict[str, float], flops: dict[str, float], peak_gflops: float) -> dict[str, float]:
    """The share of the peak that ``samples_per_s`` (train, eval) reach at ``flops`` per sample."""
    return {
        part: samples_per_s[part] * flops["train" if part == "train" else "inference"] / (peak_gflops * 1e9)
        for part in ("train", "eval")
    }
