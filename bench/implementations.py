"""The measured implementations of the MNIST model: the pipeline's own, in its process's numerics mode, and PyTorch's.

Each runs in a throughput worker of its own (bench.throughput): set up, a training round over the same full
batches, an evaluation over the same test images.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from bench.timing import timed_span
from pipeline.config import Params
from pipeline.tasks.base import Examples, TrainingData


def bench_batches(x: np.ndarray, y: np.ndarray, batch: int, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """``batches`` full batches from the start of ``x``, ``y`` (from the start again if it has fewer)."""
    index = np.arange(batch * batches) % len(x)
    return x[index], y[index]


class Ours:
    """The pipeline's own MNIST model, training step and input pipeline, in this process's numerics mode.

    Batches come from pipeline.training.epoch_batches, as in the train stage (indices shuffled by
    epoch, images gathered in TensorFlow, prefetched), over the same full batches PyTorch trains on.
    """

    def __init__(self, params: Params, train_batches: int, eval_samples: int):
        from pipeline.datasets.splits import load_split
        from pipeline.model.inference import INFERENCE_BATCH, logits_function
        from pipeline.tasks.mnist import TASK
        from pipeline.training.loop import compiled_model, epoch_batches

        x, y = load_split(params.paths.mnist.prepared, "train")
        # Compiled for the whole training split, as the train stage compiles it: the same steps per
        # execution (the largest divisor of an epoch's steps up to mnist.steps_per_execution).
        self.model = compiled_model(TASK, params, TrainingData(train=Examples(x, y), validation=None, classes=10))
        self.batch, self.logits = params.mnist.batch_size, logits_function(self.model)
        self.steps_per_execution = int(self.model.steps_per_execution)
        # One untimed execution, then at least ``train_batches`` timed batches in whole executions.
        self.skip_batches = self.steps_per_execution
        self.total_batches = self.skip_batches + self.steps_per_execution * math.ceil(
            train_batches / self.steps_per_execution
        )
        self.x, self.y = bench_batches(x, y, self.batch, self.total_batches)
        self.batches = epoch_batches(Examples(self.x, self.y), params.mnist.seed, range(1), self.batch)
        self.x_eval = load_split(params.paths.mnist.prepared, "test")[0][:eval_samples]
        self.inference_batch = INFERENCE_BATCH

    def train(self) -> tuple[float, int]:
        """Seconds and samples after the first execution: ``fit``'s set-up is paid once per training run."""
        import keras

        marks: list[tuple[int, float]] = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                marks.append((batch, time.perf_counter()))

        self.model.fit(
            self.batches, steps_per_epoch=self.total_batches, epochs=1, shuffle=False, verbose=0, callbacks=[Clock()]
        )
        if marks[0][0] != self.skip_batches - 1 or marks[-1][0] != self.total_batches - 1:
            raise RuntimeError(
                f"fit reported batches {marks[0][0]}..{marks[-1][0]}, expected "
                f"{self.skip_batches - 1}..{self.total_batches - 1}"
            )
        return timed_span(marks, self.batch)

    def evaluate(self) -> None:
        self.logits(self.x_eval)  # as the evaluate stage does

    def describe(self) -> dict:
        import keras
        import tensorflow as tf

        return {
            "steps": self.x.shape[1],
            "features": self.x.shape[2],
            "steps_per_execution": self.steps_per_execution,
            "skip_batches": self.skip_batches,
            "total_batches": self.total_batches,
            "inference_batch": self.inference_batch,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        }


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Torch:
    """The same network in PyTorch: LSTM(units) over the rows, the last output -> dense 10, Adam."""

    def __init__(self, params: Params, total_batches: int, skip_batches: int, eval_samples: int, inference_batch: int):
        import torch

        from pipeline.datasets.splits import load_split

        torch.manual_seed(params.mnist.seed)
        torch.set_num_threads(cores())
        x, y = load_split(params.paths.mnist.prepared, "train")
        features, units, classes = x.shape[2], params.mnist.units, 10

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = torch.nn.LSTM(features, units, num_layers=params.mnist.layers, batch_first=True)
                self.logits = torch.nn.Linear(units, classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.logits(self.lstm(x)[0][:, -1])

        self.torch, self.net = torch, Net()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=params.mnist.learning_rate)
        self.loss = torch.nn.CrossEntropyLoss()
        self.batch, self.skip_batches, self.inference_batch = params.mnist.batch_size, skip_batches, inference_batch
        self.x, self.y = bench_batches(x, y, self.batch, total_batches)  # the batches ours trains on
        self.x_eval = load_split(params.paths.mnist.prepared, "test")[0][:eval_samples]

    def train(self) -> tuple[float, int]:
        """Seconds and samples after the batches ours does not time either (its first execution)."""
        inputs = self.torch.from_numpy(self.x.astype(np.float32) / 255)
        labels = self.torch.from_numpy(self.y.astype(np.int64))
        marks = []
        for index, start in enumerate(range(0, len(inputs), self.batch)):
            self.optimizer.zero_grad()
            self.loss(self.net(inputs[start : start + self.batch]), labels[start : start + self.batch]).backward()
            self.optimizer.step()
            if index >= self.skip_batches - 1:
                marks.append((index, time.perf_counter()))
        return timed_span(marks, self.batch)

    def evaluate(self) -> None:
        inputs = self.torch.from_numpy(self.x_eval.astype(np.float32) / 255)
        with self.torch.inference_mode():
            for start in range(0, len(inputs), self.inference_batch):
                self.net(inputs[start : start + self.inference_batch])

    def describe(self) -> dict:
        return {"threads": self.torch.get_num_threads(), "torch": self.torch.__version__}
