"""The float32 GEMM rate at the LSTM step's shapes, for reference beside the machine's peak (bench.peak): what
the step's products reach in each library when nothing else takes time.

Two yardsticks. :func:`gemm_gflops`, on all cores as each library runs a step: 64 batch × (features + units)
by (features + units) × 4 units products, measured in whichever library and numerics mode the calling process
runs (the throughput workers ask for it after their rounds: TensorFlow in each mode, with the rows cut into
as many slices side by side as the model's batch, and PyTorch; the benchmark's own process NumPy's).
:func:`one_core_gflops`, one thread each: the three products of one LSTM step on one batch slice (the gates,
the weights' gradient, the state's gradient, with the transposes the op's kernel runs), through the portable
kernel itself (pipeline.model.detgemm's ``kernel_matmul``: the op's code, without TensorFlow's executor),
NumPy's BLAS and PyTorch's; the comparison the portable kernel's speed is held to.
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


def gemm_gflops(library: str, batch: int, inner: int, outer: int, seconds: float = 1.0, slices: int = 1) -> float:
    """float32 GEMM rate (GFLOP/s) of ``library`` (tensorflow, torch, numpy) in this process's settings.

    TensorFlow's product runs as ``slices`` ops side by side (the executor's inter-op threads take them as
    they take a step's batch slices); its results stay tensors, as the other libraries' stay arrays.
    """
    a, b, flop = gemm_operands(batch, inner, outer)
    if library == "tensorflow":
        import tensorflow as tf

        from pipeline.model.layers import matmul  # the product the model runs in this process's numerics mode

        # the 64 products as products of 64 / slices times the rows: the same sums; the op takes matrices only
        parts = [tf.constant(part.reshape(-1, inner)) for part in np.array_split(a, slices)]
        tf_b = tf.constant(b)
        sliced = tf.function(lambda xs, y: [matmul(x, y) for x in xs])
        return _rate(lambda: sliced(parts, tf_b), flop, seconds)
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


# One LSTM step's products on a batch slice of ``batch`` (feature-major, as pipeline/model/native/detgemm_op.cc
# runs them): name, M, N, K, transpose_a, transpose_b.
def step_products(batch: int, features: int, units: int) -> list[tuple[str, int, int, int, bool, bool]]:
    inputs, gates = features + units + 1, 4 * units  # the stacked [x; h; 1]
    return [
        ("gates", gates, batch, inputs, True, False),  # weightsᵀ · stacked
        ("weights' gradient", inputs, gates, batch, False, True),  # stacked · dzᵀ
        ("state's gradient", units, batch, gates, False, False),  # weights' h rows · dz
    ]


def one_core_gflops(library: str, batch: int, features: int, units: int, seconds: float = 0.3) -> dict[str, float]:
    """In a fresh worker: GFLOP/s of ``library`` (portable: the kernel itself; numpy; torch) on one thread at
    each of :func:`step_products`, and ``step``: all three, their FLOP over their time."""
    rng = np.random.default_rng(0)
    if library == "portable":
        from pipeline.model.detgemm import kernel_matmul

        def product(a: np.ndarray, b: np.ndarray, ta: bool, tb: bool) -> Callable[[], object]:
            return lambda: kernel_matmul(a, b, ta, tb)
    elif library == "torch":
        import torch

        torch.set_num_threads(1)

        def product(a: np.ndarray, b: np.ndarray, ta: bool, tb: bool) -> Callable[[], object]:
            x, y = torch.from_numpy(a), torch.from_numpy(b)
            x, y = (x.T if ta else x), (y.T if tb else y)
            return lambda: torch.matmul(x, y)
    else:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)

        def product(a: np.ndarray, b: np.ndarray, ta: bool, tb: bool) -> Callable[[], object]:
            x, y = (a.T if ta else a), (b.T if tb else b)  # views: the BLAS call gets the transposes
            return lambda: np.matmul(x, y)

    rates, flop_total, seconds_total = {}, 0.0, 0.0
    for name, m, n, k, ta, tb in step_products(batch, features, units):
        a = rng.random((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.random((n, k) if tb else (k, n), dtype=np.float32)
        flop = 2.0 * m * n * k
        rates[name] = _rate(product(a, b, ta, tb), flop, seconds)
        flop_total, seconds_total = flop_total + flop, seconds_total + flop / (rates[name] * 1e9)
    rates["step"] = flop_total / seconds_total / 1e9
    return rates
