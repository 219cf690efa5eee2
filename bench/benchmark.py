"""Benchmark the MNIST LSTM training step and evaluation against a PyTorch reference, side by side.

Run from the project root, after `dvc repro` (it reads the prepared data and the vocabulary)::

    make bench                                   # torch==2.13.0 CPU is installed for it
    python -m bench.benchmark --repeats 5 --output bench/results.json

Ours (the pipeline's own compiled model and ``fit``) and PyTorch (``nn.LSTM`` + ``nn.Linear``, Adam,
float32, same sizes and batch) are timed in turns in one process, so drift of a noisy machine hits
both; medians are reported. Also: the float32 GEMM rate at the LSTM's shapes (the ceiling the step's
matrix products can reach), no-op ``dvc repro`` next to DVC's floor (a one-stage project), the peak RSS
of each training stage, and the time the fable model takes to reach its accuracy ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.config import Params, load_params
from pipeline.files import write_json
from pipeline.tasks import Examples, TrainingData


def median_rate(samples: int, timings: Sequence[float]) -> float:
    return samples / statistics.median(timings)


def lstm_train_flops(steps: int, features: int, units: int, classes: int) -> float:
    """Multiply-adds ×2 of one sample's forward pass, ×3 for forward + backward."""
    forward = steps * 2 * (features + units) * 4 * units + 2 * units * classes
    return 3.0 * forward


def gemm_gflops(batch: int, inner: int, outer: int, seconds: float = 1.0) -> float:
    """float32 GEMM rate of TensorFlow at the LSTM step's shape (batch × inner) @ (inner × outer)."""
    import tensorflow as tf

    a = tf.random.normal((batch, inner))
    b = tf.random.normal((inner, outer))
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    matmul(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            matmul(a, b)
        count += 100
    return 2.0 * batch * inner * outer * count / (time.perf_counter() - start) / 1e9


class Ours:
    """The pipeline's own MNIST model and training step."""

    name = "pipeline (Keras)"

    def __init__(self, params: Params, data: TrainingData):
        from pipeline.mnist import EVALUATION_BATCH, TASK
        from pipeline.train import compiled_model

        self.model = compiled_model(TASK, params, data)
        self.batch, self.evaluation_batch = params.mnist.batch_size, EVALUATION_BATCH

    def train(self, x: np.ndarray, y: np.ndarray) -> None:
        self.model.fit(x, y, batch_size=self.batch, epochs=1, shuffle=False, verbose=0)

    def evaluate(self, x: np.ndarray) -> None:
        self.model.predict(x, batch_size=self.evaluation_batch, verbose=0)


class Torch:
    """The same network in PyTorch: LSTM(units) over the rows, the last output -> dense 10, Adam."""

    name = "PyTorch"

    def __init__(self, params: Params, data: TrainingData):
        import torch

        torch.manual_seed(params.mnist.seed)
        torch.set_num_threads(os.cpu_count() or 1)
        features, units = data.train.x.shape[2], params.mnist.units

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = torch.nn.LSTM(features, units, num_layers=params.mnist.layers, batch_first=True)
                self.logits = torch.nn.Linear(units, data.classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.logits(self.lstm(x)[0][:, -1])

        self.torch, self.net = torch, Net()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=params.mnist.learning_rate)
        self.loss = torch.nn.CrossEntropyLoss()
        self.batch = params.mnist.batch_size

    def train(self, x: np.ndarray, y: np.ndarray) -> None:
        inputs = self.torch.from_numpy(x.astype(np.float32) / 255)
        labels = self.torch.from_numpy(y.astype(np.int64))
        for start in range(0, len(x), self.batch):
            self.optimizer.zero_grad()
            self.loss(self.net(inputs[start : start + self.batch]), labels[start : start + self.batch]).backward()
            self.optimizer.step()

    def evaluate(self, x: np.ndarray) -> None:
        from pipeline.mnist import EVALUATION_BATCH

        inputs = self.torch.from_numpy(x.astype(np.float32) / 255)
        with self.torch.inference_mode():
            for start in range(0, len(x), EVALUATION_BATCH):
                self.net(inputs[start : start + EVALUATION_BATCH])


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def throughput(params: Params, train_batches: int, evaluation_samples: int, repeats: int) -> dict:
    """samples/s of each implementation, measured in turns; the first round of each is a warm-up."""
    from pipeline.prepare import load_split

    x, y = load_split(params.paths.mnist.prepared, "train")
    x, y = x[: train_batches * params.mnist.batch_size], y[: train_batches * params.mnist.batch_size]
    x_eval = load_split(params.paths.mnist.prepared, "test")[0][:evaluation_samples]
    data = TrainingData(train=Examples(x, y), validation=None, classes=10)
    implementations: list = [Ours(params, data)]
    try:
        implementations.append(Torch(params, data))
        torch_note = None
    except ImportError:
        torch_note = "torch is not installed (make bench installs torch==2.13.0)"
    timings: dict[str, dict[str, list[float]]] = {i.name: {"train": [], "eval": []} for i in implementations}
    for round_ in range(repeats + 1):
        for implementation in implementations:
            train_seconds = timed(lambda: implementation.train(x, y))
            eval_seconds = timed(lambda: implementation.evaluate(x_eval))
            if round_:  # round 0 builds graphs and warms caches
                timings[implementation.name]["train"].append(train_seconds)
                timings[implementation.name]["eval"].append(eval_seconds)
    flops = lstm_train_flops(x.shape[1], x.shape[2], params.mnist.units, 10)
    limit = gemm_gflops(params.mnist.batch_size, x.shape[2] + params.mnist.units, 4 * params.mnist.units)
    results = {"gemm_limit_gflops": limit, "gemm_limit_train_samples_per_s": limit * 1e9 / flops,
               "torch": torch_note or "measured"}
    for name, timing in timings.items():
        train_rate = median_rate(len(x), timing["train"])
        results[name] = {
            "train_samples_per_s": train_rate,
            "eval_samples_per_s": median_rate(len(x_eval), timing["eval"]),
            "train_fraction_of_gemm_limit": train_rate * flops / (limit * 1e9),
            "train_seconds": timing["train"],
            "eval_seconds": timing["eval"],
        }
    if "PyTorch" in results:
        ours, reference = results[Ours.name], results["PyTorch"]
        results["ratio_train"] = ours["train_samples_per_s"] / reference["train_samples_per_s"]
        results["ratio_eval"] = ours["eval_samples_per_s"] / reference["eval_samples_per_s"]
    return results


def dvc_no_op(repeats: int) -> dict:
    """Wall time of a no-op `dvc repro` here, next to the same in a one-stage DVC project."""
    def no_op_seconds(cwd: Path) -> list[float]:
        run = lambda: subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=cwd, capture_output=True, check=True)  # noqa: E731
        run()
        return [timed(run) for _ in range(repeats)]

    with tempfile.TemporaryDirectory() as scratch:
        floor = Path(scratch)
        for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                        [sys.executable, "-m", "dvc", "stage", "add", "-q", "-n", "one", "-o", "out.txt",
                         "echo one > out.txt"]):
            subprocess.run(command, cwd=floor, check=True, capture_output=True)
        floor_seconds = no_op_seconds(floor)
    up_to_date = subprocess.run([sys.executable, "-m", "dvc", "status"], capture_output=True, text=True)
    ours_seconds = no_op_seconds(Path.cwd())
    return {
        "pipeline_no_op_repro_s": statistics.median(ours_seconds),
        "dvc_floor_no_op_repro_s": statistics.median(floor_seconds),
        "ratio": statistics.median(ours_seconds) / statistics.median(floor_seconds),
        "pipeline_was_up_to_date": "up to date" in up_to_date.stdout,
    }


def fable_time_to_ceiling(params: Params) -> dict:
    """Train the fable model as params.yaml says; when does its accuracy over every window hit the ceiling?"""
    import keras

    from pipeline.fable import TASK
    from pipeline.train import compiled_model
    from pipeline.vocabulary import load_vocabulary

    data = TASK.load_training_data(params)
    ceiling = load_vocabulary(params.paths.fable.vocabulary)["ceiling"]
    model = compiled_model(TASK, params, data)
    reached: dict = {}
    start = time.perf_counter()

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            predicted = self.model.predict(data.train.x, batch_size=len(data.train), verbose=0).argmax(axis=1)
            if "epoch" not in reached and (predicted == data.train.y).mean() >= ceiling:
                reached.update(epoch=epoch + 1, seconds=time.perf_counter() - start)
                self.model.stop_training = True

    model.fit(data.train.x, data.train.y, batch_size=params.fable.batch_size, epochs=params.fable.epochs,
              shuffle=True, verbose=0, callbacks=[Watch()])
    return {"ceiling": ceiling, "reached": bool(reached), **reached, "epochs_allowed": params.fable.epochs}


def training_peak_rss(params_file: str) -> dict:
    """Peak RSS (MB) of each training stage, run as DVC runs it (MLflow logging included)."""
    peaks = {}
    for model in ("mnist", "fable"):
        process = subprocess.Popen([sys.executable, "-m", "pipeline.train", model, "--params", params_file],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"python -m pipeline.train {model} exited with {process.returncode}")
        peaks[model] = usage.ru_maxrss / 1024  # Linux reports kilobytes
    return peaks


def table(results: dict) -> str:
    rows = ["| implementation | train samples/s | eval samples/s | train, share of GEMM limit |",
            "|---|---|---|---|"]
    for name in (Ours.name, "PyTorch"):
        if name in results["throughput"]:
            item = results["throughput"][name]
            rows.append(f"| {name} | {item['train_samples_per_s']:,.0f} | {item['eval_samples_per_s']:,.0f} | "
                        f"{item['train_fraction_of_gemm_limit']:.1%} |")
    lines = ["\n".join(rows), ""]
    t = results["throughput"]
    if "ratio_train" in t:
        lines.append(f"ours / PyTorch: train {t['ratio_train']:.2f}×, eval {t['ratio_eval']:.2f}×")
    lines.append(f"GEMM limit {t['gemm_limit_gflops']:.0f} GFLOP/s ≈ {t['gemm_limit_train_samples_per_s']:,.0f} "
                 "training samples/s")
    if "dvc" in results:
        d = results["dvc"]
        lines.append(f"no-op dvc repro {d['pipeline_no_op_repro_s']:.2f} s vs DVC floor "
                     f"{d['dvc_floor_no_op_repro_s']:.2f} s ({d['ratio']:.2f}×)")
    if "fable" in results:
        f = results["fable"]
        lines.append(f"fable reaches its ceiling {f['ceiling']:.4f}: " + (
            f"epoch {f['epoch']}, {f['seconds']:.1f} s" if f["reached"] else f"not within {f['epochs_allowed']} epochs"))
    if "peak_rss_mb" in results:
        lines.append("peak RSS of training: " + ", ".join(f"{k} {v:,.0f} MB" for k, v in results["peak_rss_mb"].items()))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement (median)")
    parser.add_argument("--train-batches", type=int, default=50, help="batches per timed training round")
    parser.add_argument("--eval-samples", type=int, default=10_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["dvc", "fable", "rss"],
                        help="leave out slower parts (rss retrains both models)")
    parser.add_argument("--output", default="bench/results.json")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    results: dict = {"throughput": throughput(params, args.train_batches, args.eval_samples, args.repeats)}
    if "dvc" not in args.skip:
        results["dvc"] = dvc_no_op(args.repeats)
    if "fable" not in args.skip:
        results["fable"] = fable_time_to_ceiling(params)
    if "rss" not in args.skip:
        results["peak_rss_mb"] = training_peak_rss(args.params)
    results["table"] = table(results)
    write_json(args.output, results)
    print(results["table"], end="")


if __name__ == "__main__":
    main()
