"""Where one training step and one inference batch of the pipeline's MNIST model spend their time.

Measured in a fresh worker process (bench.workers), pinned to params.yaml's numerics mode: each is traced
into one TensorFlow graph, its operations counted by type, and timed against a graph of its matrix
products alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

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
    """``function``'s graph: its time per call, its matrix products' time alone, and its operations by type."""
    import tensorflow as tf

    from pipeline.model import detgemm

    # The matrix products, each redone as itself on random operands of its shapes: TensorFlow's (native
    # numerics) and pipeline.model.detgemm's (portable: DetMatMul, and an LSTM step's gates and their gradient).
    def attributes(operation: tf.Operation, *names: str) -> dict:
        return {name: operation.get_attr(name) for name in names}

    products: dict[str, tuple[Callable, tuple[str, ...]]] = {
        "MatMul": (tf.linalg.matmul, ("transpose_a", "transpose_b")),
        "DetMatMul": (detgemm.matmul, ("transpose_a", "transpose_b")),
        "DetGates": (detgemm.gates, ()),
        "DetGatesGrad": (detgemm.gates_gradient, ("with_dx",)),
    }
    graph = function.get_concrete_function(*arguments).graph
    kinds: dict[str, int] = {}
    rng = np.random.default_rng(0)
    operands = []
    for operation in graph.get_operations():
        kinds[operation.type] = kinds.get(operation.type, 0) + 1
        if operation.type in products:
            product, names = products[operation.type]
            inputs = [tf.constant(rng.random(tuple(t.shape), dtype=np.float32)) for t in operation.inputs]
            operands.append((product, inputs, attributes(operation, *names)))

    @tf.function
    def matmuls_only() -> tf.Tensor:
        first = [tf.nest.flatten(product(*inputs, **attrs))[0] for product, inputs, attrs in operands]
        return tf.add_n([tf.reduce_sum(output[:1, :1]) for output in first])

    def median_ms(action: Callable[[], object], calls: int = 20) -> float:
        action()
        return statistics.median(timed(lambda: [action() for _ in range(calls)]) for _ in range(repeats)) / calls * 1e3

    step_ms = median_ms(lambda: tf.nest.map_structure(lambda t: t.numpy(), function(*arguments)))
    matmul_ms = median_ms(lambda: matmuls_only().numpy())
    by_kind = {kind: kinds[kind] for kind in products if kind in kinds}
    matmuls = sum(by_kind.values())
    others = sum(kinds.values()) - matmuls
    return {
        "step_ms": step_ms,
        "matmul_ms": matmul_ms,
        "matmuls": matmuls,
        "products": by_kind,
        "other_ops": others,
        "other_ms_per_op": (step_ms - matmul_ms) / others * 1e3 if others else 0.0,
        "top_ops": dict(sorted(kinds.items(), key=lambda item: -item[1])[:12]),
    }
