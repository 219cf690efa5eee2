"""The float32 GEMM rate at the LSTM step's shapes, for reference beside the machine's peak (bench.peak): what
the step's products reach in each library when nothing else takes time.

The rate is measured in whichever library and numerics mode the calling process runs: the throughput
workers ask for it after their rounds (TensorFlow in each mode, PyTorch), the benchmark's own process for
NumPy's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def gemm_operands(batch: int, inner: int, outer: int, count: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
    """``count`` (batch × inner) matrices, one (inner × outer), and the FLOP of multiplying each by it.

    Each timed call multiplies the 64 pairs at once, so that call overhead does not count: the figure is
    what the matrix products of one training step could reach if nothing else took time.
    """
    rng = np.random.default_rng(0)
    a, b = rng.random((count, batch, inner), dtype=np.float32), rng.random((inner, outer), dtype=np.float32)
    return a, b, 2.0 * batch * inner * outer * count


def gemm_gflops(library: str, batch: int, inner: int, outer: int, seconds: float = 1.0) -> float:
    """float32 GEMM rate (GFLOP/s) of ``library`` (tensorflow, torch, numpy) in this process's settings."""
    a, b, flop = gemm_operands(batch, inner, outer)
    if library == "tensorflow":
        import tensorflow as tf

        from pipeline.model.layers import matmul  # the product the model runs in this process's numerics mode

        # the 64 products as one of 64 times the rows: the same sums, and the op takes matrices only
        tf_a, tf_b = tf.constant(a.reshape(-1, inner)), tf.constant(b)
        stacked = tf.function(lambda x, y: matmul(x, y))
        return _rate(lambda: stacked(tf_a, tf_b).numpy(), flop, seconds)
    if library == "torch":
        import torch

        t_a, t_b = torch.from_numpy(a), torch.from_numpy(b)
        return _rate(lambda: torch.matmul(t_a, t_b), flop, seconds)
    return _rate(lambda: np.matmul(a, b), flop, seconds)


def _rate(action: Callable[[], object], flop: float, seconds: float, tries: int = 3) -> float:
    """The best of ``tries`` timings: a limit is what the library reaches when the machine lets it."""
    action()
    rates = []
    for _ in range(tries):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            action()
            calls += 1
        rates.append(flop * calls / (time.perf_counter() - start) / 1e9)
    return max(rates)
