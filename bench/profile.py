"""Where one training step and one inference batch of the pipeline's MNIST model spend their time.

Measured in a fresh worker process (bench.workers), pinned to params.yaml's numerics mode: each is traced
into one TensorFlow graph, its operations counted by type, timed, and run under TensorFlow's profiler, whose
trace gives each operation's own time: the matrix products' share of it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.modes import mode_params
from bench.timing import timed
from bench.workers import run_once
from pipeline.config import Params, load_params
from pipeline.tasks.base import Examples, TrainingData


def measure_profile(params_path: str, batch: int, repeats: int) -> dict:
    """The profile of a training step of ``batch`` and an inference batch, in a worker of its own."""
    return run_once("profile", profile_worker, params_path, batch, repeats)


def profile_worker(params_path: str, batch: int, repeats: int) -> dict:
    """In a fresh worker process: pin as params.yaml says (with ``batch``), then :func:`step_profile`."""
    from pipeline.model.numerics import pin_for

    params = load_params(params_path)
    mode = params.numerics.mode
    params = mode_params(params, mode, batch, params_path)
    pin_for(params, "mnist", "bench profile")  # before anything imports TensorFlow
    return {"mode": mode, **step_profile(params, params.mnist.batch_size, repeats)}


def step_profile(params: Params, batch: int, repeats: int) -> dict:
    """Where the pipeline's MNIST model spends its time: one training step, and one inference batch.

    Each is traced into one TensorFlow graph; its operations are counted by type, it is timed, and so is
    a graph of only its matrix products (the same shapes, on random inputs). What is left is the cost of
    the hundreds of small operations between them: gate activations, slicing, gradient plumbing, each a
    separate kernel call. The PyTorch reference runs the whole 28-step sequence as one oneDNN kernel
    (``aten::mkldnn_rnn_layer``) and its backward as another.
    """
    import keras
    import tensorflow as tf

    from pipeline.datasets.splits import load_split
    from pipeline.model.inference import INFERENCE_BATCH
    from pipeline.tasks.mnist import TASK
    from pipeline.training.loop import compiled_model

    images, labels = load_split(params.paths.mnist.prepared, "validation")
    data = TrainingData(train=Examples(images[:batch], labels[:batch]), validation=None, classes=10)
    x, y = tf.constant(data.train.x), tf.constant(data.train.y.astype(np.int32))
    model = compiled_model(TASK, params, data)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_function(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(gradients, model.trainable_variables)
        return loss

    inference = tf.function(lambda images: model(images, training=False))
    return {
        "train": _graph_profile(step, (x, y), repeats),
        "inference": _graph_profile(inference, (tf.constant(images[:INFERENCE_BATCH]),), repeats),
        "train_batch": len(data.train),  # fewer than asked when the validation split is smaller
        "inference_batch": len(images[:INFERENCE_BATCH]),
    }


def _graph_profile(function: Callable, arguments: tuple, repeats: int) -> dict:
    """``function``'s graph: its time per call, its operations by type, and from TensorFlow's trace of it (the
    executor's threads, every operation's own time) how much of its operations' time the matrix products take.

    Products are timed where they run, on the step's own operands: replayed alone on fresh random operands
    (an earlier yardstick) they read cold memory and timed slower than inside the step, up to longer than
    the whole step.
    """
    import tensorflow as tf

    products = ("MatMul", "DetMatMul", "DetGates", "DetGatesGrad")
    graph = function.get_concrete_function(*arguments).graph
    kinds: dict[str, int] = {}
    for operation in graph.get_operations():
        kinds[operation.type] = kinds.get(operation.type, 0) + 1

    def median_ms(action: Callable[[], object], calls: int = 20) -> float:
        action()
        return statistics.median(timed(lambda: [action() for _ in range(calls)]) for _ in range(repeats)) / calls * 1e3

    def call() -> None:
        tf.nest.map_structure(lambda t: t.numpy(), function(*arguments))

    step_ms = median_ms(call)
    by_type, runs = _traced_by_type(call, calls=max(repeats, 3), types=set(kinds))
    by_kind = {kind: kinds[kind] for kind in products if kind in kinds}
    matmuls = sum(by_kind.values())
    # The other operations that ran: the graph also holds some the executor prunes unrun (a custom
    # gradient's unread zeros), which would make the time per operation look smaller than it is.
    others = round(sum(count for kind, count in runs.items() if kind not in products))
    products_ms = sum(ms for kind, ms in by_type.items() if kind in products)
    ops_ms = sum(by_type.values())
    return {
        "step_ms": step_ms,
        "matmuls": matmuls,
        "products": by_kind,
        "other_ops": others,  # that ran, per call
        "graph_ops": sum(kinds.values()),
        "products_ms": products_ms,  # per call, summed over the threads that ran them
        "ops_ms": ops_ms,
        "product_share": products_ms / ops_ms if ops_ms else 0.0,
        "other_ms_per_op": (ops_ms - products_ms) / others * 1e3 if others else 0.0,
        "top_ops": dict(sorted(kinds.items(), key=lambda item: -item[1])[:12]),
    }


def _traced_by_type(call: Callable[[], None], calls: int, types: set[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds per call that each operation type of the graph ran, summed over threads, and how many of
    its operations ran per call: TensorFlow's profiler around ``calls`` calls, its host events named
    ``node:Type`` for the graph's types (not the executor's own events around them)."""
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as directory:
        tf.profiler.experimental.start(directory)
        try:
            for _ in range(calls):
                call()
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        for path in Path(directory).rglob("*.xplane.pb"):
            space.MergeFromString(path.read_bytes())
    totals: dict[str, float] = {}
    runs: dict[str, float] = {}
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                kind = names.get(event.metadata_id, "").rpartition(":")[2]
                if kind in types:
                    totals[kind] = totals.get(kind, 0.0) + event.duration_ps / 1e9 / calls
                    runs[kind] = runs.get(kind, 0.0) + 1 / calls
    return totals, runs
