"""Benchmark the MNIST LSTM training step and evaluation against a PyTorch reference, side by side.

Run from the project root, after `dvc repro` (it reads the prepared data and the vocabulary)::

    make bench                                   # torch==2.13.0 CPU is installed for it
    python -m bench.benchmark --repeats 5 --output bench/results.json

Ours (the pipeline's own compiled model and ``fit``) and PyTorch (``nn.LSTM`` + ``nn.Linear``, Adam,
float32, same sizes and batch) are timed in turns in one process, so drift of a noisy machine hits
both; medians are reported. Also: the float32 GEMM rate at the LSTM's shapes (the ceiling the step's
matrix products can reach), no-op ``dvc repro`` next to DVC's floor (a one-stage project), the time the
fable model takes to reach its accuracy ceiling, and a full ``dvc repro`` in a fresh clone of the last
commit: wall time, peak RSS of every stage, accuracies, and whether its outputs match the committed dvc.lock.
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


def gemm_gflops(batch: int, inner: int, outer: int, seconds: float = 1.0) -> dict[str, float]:
    """float32 GEMM rate (GFLOP/s) at the LSTM step's shape (batch × inner) @ (inner × outer), per library.

    Each timed call multiplies 64 such pairs at once, so that call overhead does not count: the figure
    is what the matrix products of one training step could reach if nothing else took time.
    """
    import tensorflow as tf

    count = 64
    flop = 2.0 * batch * inner * outer * count
    rates = {}
    rng = np.random.default_rng(0)
    a, b = rng.random((count, batch, inner), dtype=np.float32), rng.random((inner, outer), dtype=np.float32)
    tf_a, tf_b = tf.constant(a), tf.constant(b)
    batched = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    rates["tensorflow"] = _rate(lambda: batched(tf_a, tf_b).numpy(), flop, seconds)
    rates["numpy"] = _rate(lambda: np.matmul(a, b), flop, seconds)
    try:
        import torch
    except ImportError:
        pass
    else:
        t_a, t_b = torch.from_numpy(a), torch.from_numpy(b)
        rates["torch"] = _rate(lambda: torch.matmul(t_a, t_b), flop, seconds)
    return rates


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


class Ours:
    """The pipeline's own MNIST model and training step."""

    name = "pipeline (Keras)"

    def __init__(self, params: Params, data: TrainingData, batch: int):
        from pipeline.mnist import TASK
        from pipeline.model import logits_function, use_cores
        from pipeline.train import compiled_model

        use_cores(params.mnist.parallel_slices)  # as the train stage does, before TensorFlow starts
        self.model = compiled_model(TASK, params, data)
        self.batch, self.logits = batch, logits_function(self.model)

    def train(self, x: np.ndarray, y: np.ndarray) -> float:
        """Seconds for the batches after the first: ``fit``'s set-up is paid once per training run, not per step."""
        import keras

        marks: list[float] = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                marks.append(time.perf_counter())

        self.model.fit(x, y, batch_size=self.batch, epochs=1, shuffle=False, verbose=0, callbacks=[Clock()])
        return marks[-1] - marks[0]

    def evaluate(self, x: np.ndarray) -> None:
        self.logits(x)  # as the evaluate stage does


class Torch:
    """The same network in PyTorch: LSTM(units) over the rows, the last output -> dense 10, Adam."""

    name = "PyTorch"

    def __init__(self, params: Params, data: TrainingData, batch: int):
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
        self.batch = batch

    def train(self, x: np.ndarray, y: np.ndarray) -> float:
        """Seconds for the batches after the first, as for ours."""
        inputs = self.torch.from_numpy(x.astype(np.float32) / 255)
        labels = self.torch.from_numpy(y.astype(np.int64))
        marks = []
        for start in range(0, len(x), self.batch):
            self.optimizer.zero_grad()
            self.loss(self.net(inputs[start : start + self.batch]), labels[start : start + self.batch]).backward()
            self.optimizer.step()
            marks.append(time.perf_counter())
        return marks[-1] - marks[0]

    def evaluate(self, x: np.ndarray) -> None:
        from pipeline.model import INFERENCE_BATCH

        inputs = self.torch.from_numpy(x.astype(np.float32) / 255)
        with self.torch.inference_mode():
            for start in range(0, len(x), INFERENCE_BATCH):
                self.net(inputs[start : start + INFERENCE_BATCH])


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def throughput(params: Params, batch: int, train_batches: int, evaluation_samples: int, repeats: int) -> dict:
    """samples/s of each implementation, measured in turns; the first round of each is a warm-up."""
    from pipeline.prepare import load_split

    x, y = load_split(params.paths.mnist.prepared, "train")
    x, y = x[: train_batches * batch], y[: train_batches * batch]
    x_eval = load_split(params.paths.mnist.prepared, "test")[0][:evaluation_samples]
    data = TrainingData(train=Examples(x, y), validation=None, classes=10)
    implementations: list = [Ours(params, data, batch)]
    try:
        implementations.append(Torch(params, data, batch))
        torch_note = None
    except ImportError:
        torch_note = "torch is not installed (make bench installs torch==2.13.0)"
    timings: dict[str, dict[str, list[float]]] = {i.name: {"train": [], "eval": []} for i in implementations}
    for round_ in range(repeats + 1):
        for implementation in implementations:
            train_seconds = implementation.train(x, y)
            eval_seconds = timed(lambda: implementation.evaluate(x_eval))
            if round_:  # round 0 builds graphs and warms caches
                timings[implementation.name]["train"].append(train_seconds)
                timings[implementation.name]["eval"].append(eval_seconds)
    flops = lstm_train_flops(x.shape[1], x.shape[2], params.mnist.units, 10)
    gemm = gemm_gflops(batch, x.shape[2] + params.mnist.units, 4 * params.mnist.units)
    limit = max(gemm.values())
    results = {"batch_size": batch, "gemm_gflops": gemm, "gemm_limit_gflops": limit,
               "gemm_limit_train_samples_per_s": limit * 1e9 / flops, "torch": torch_note or "measured"}
    for name, timing in timings.items():
        train_rate = median_rate(len(x) - batch, timing["train"])  # the timed batches: all but the first
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

    from pipeline.mnist import TASK
    from pipeline.model import INFERENCE_BATCH
    from pipeline.prepare import load_split
    from pipeline.train import compiled_model

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
        "inference_batch": INFERENCE_BATCH,
    }


def _graph_profile(function: Callable, arguments: tuple, repeats: int) -> dict:
    """``function``'s graph: its time per call, its matrix products' time alone, and its operations by type."""
    import tensorflow as tf

    graph = function.get_concrete_function(*arguments).graph
    kinds: dict[str, int] = {}
    shapes = []
    for operation in graph.get_operations():
        kinds[operation.type] = kinds.get(operation.type, 0) + 1
        if operation.type == "MatMul":
            a, b = (tuple(t.shape) for t in operation.inputs)
            shapes.append((a, b, operation.get_attr("transpose_a"), operation.get_attr("transpose_b")))
    rng = np.random.default_rng(0)
    operands = [(tf.constant(rng.random(a, dtype=np.float32)), tf.constant(rng.random(b, dtype=np.float32)), ta, tb)
                for a, b, ta, tb in shapes]

    @tf.function
    def matmuls_only() -> tf.Tensor:
        return tf.add_n([tf.reduce_sum(tf.matmul(a, b, transpose_a=ta, transpose_b=tb)[:1, :1])
                         for a, b, ta, tb in operands])

    def median_ms(action: Callable[[], object], calls: int = 20) -> float:
        action()
        return statistics.median(timed(lambda: [action() for _ in range(calls)]) for _ in range(repeats)) / calls * 1e3

    step_ms = median_ms(lambda: tf.nest.map_structure(lambda t: t.numpy(), function(*arguments)))
    matmul_ms = median_ms(lambda: matmuls_only().numpy())
    others = sum(kinds.values()) - kinds.get("MatMul", 0)
    return {
        "step_ms": step_ms, "matmul_ms": matmul_ms, "matmuls": kinds.get("MatMul", 0), "other_ops": others,
        "other_ms_per_op": (step_ms - matmul_ms) / others * 1e3 if others else 0.0,
        "top_ops": dict(sorted(kinds.items(), key=lambda item: -item[1])[:12]),
    }


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


def full_repro(source: Path) -> dict:
    """`dvc repro` in a fresh clone of ``source``'s last commit: wall time, peak RSS per stage, results.

    The peak RSS of each stage is its process's VmHWM, sampled every 50 ms while it runs (the kernel keeps
    the maximum, so sampling misses at most the growth of a stage's last 50 ms). The outputs' hashes are
    compared with the committed dvc.lock: byte-reproducibility checked on every benchmark run.
    """
    import psutil
    import yaml

    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
        committed = yaml.safe_load((clone / "dvc.lock").read_text()) if (clone / "dvc.lock").exists() else None
        (clone / "dvc.lock").unlink(missing_ok=True)  # from empty: nothing is up to date
        peaks: dict[str, float] = {}
        start = time.perf_counter()
        dvc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=clone,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        watcher = psutil.Process(dvc.pid)
        while dvc.poll() is None:
            for child in _children(watcher):
                stage = _stage_name(child)
                peak = _vm_hwm_mb(child.pid) if stage else 0.0
                if peak:  # 0: the process ended between the two reads
                    peaks[stage] = max(peaks.get(stage, 0.0), peak)
            time.sleep(0.05)
        output = dvc.communicate()[0]
        seconds = time.perf_counter() - start
        if dvc.returncode != 0:
            raise RuntimeError(f"dvc repro in a fresh clone failed:\n{output}")
        produced = yaml.safe_load((clone / "dvc.lock").read_text())
        metrics = {name: json.loads((clone / "metrics" / f"{name}.json").read_text()) for name in ("mnist", "fable")}
    return {
        "wall_s": seconds,
        "peak_rss_mb": peaks,
        "mnist_test_accuracy": metrics["mnist"]["test_accuracy"],
        "fable_accuracy": metrics["fable"]["accuracy"],
        "fable_ceiling": metrics["fable"]["ceiling"],
        "outputs_match_committed_dvc_lock": None if committed is None else _outs(produced) == _outs(committed),
    }


def _children(process) -> list:
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _stage_name(process) -> str | None:
    """``train mnist`` for ``python -m pipeline.train mnist``."""
    import psutil

    try:
        command = process.cmdline()
    except psutil.Error:
        return None
    if "-m" in command and command.index("-m") + 1 < len(command):
        module = command[command.index("-m") + 1]
        if module.startswith("pipeline."):
            return " ".join([module.removeprefix("pipeline."), *command[command.index("-m") + 2:]]).strip()
    return None


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _outs(lock: dict) -> dict:
    return {name: [(out["path"], out.get("md5")) for out in stage.get("outs", [])] for name, stage in lock["stages"].items()}


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
    lines.append(f"batch {t['batch_size']}; float32 GEMM at the step's shape: "
                 + ", ".join(f"{k} {v:.0f}" for k, v in t["gemm_gflops"].items())
                 + f" GFLOP/s; limit ≈ {t['gemm_limit_train_samples_per_s']:,.0f} training samples/s")
    if "profile" in results:
        profile = results["profile"]
        for what, p in ((f"one training step (batch {t['batch_size']})", profile["train"]),
                        (f"one inference batch ({profile['inference_batch']})", profile["inference"])):
            lines.append(f"{what}: {p['step_ms']:.1f} ms; its {p['matmuls']} matrix products alone "
                         f"{p['matmul_ms']:.1f} ms; the other {p['other_ops']:,} graph operations "
                         f"≈ {p['other_ms_per_op']:.1f} µs each")
    if "dvc" in results:
        d = results["dvc"]
        lines.append(f"no-op dvc repro {d['pipeline_no_op_repro_s']:.2f} s vs DVC floor "
                     f"{d['dvc_floor_no_op_repro_s']:.2f} s ({d['ratio']:.2f}×)")
    if "fable" in results:
        f = results["fable"]
        lines.append(f"fable reaches its ceiling {f['ceiling']:.4f}: " + (
            f"epoch {f['epoch']}, {f['seconds']:.1f} s" if f["reached"] else f"not within {f['epochs_allowed']} epochs"))
    if "repro" in results:
        r = results["repro"]
        lines.append(f"full dvc repro from empty: {r['wall_s'] / 60:.0f} min {r['wall_s'] % 60:02.0f} s; "
                     f"MNIST test_accuracy {r['mnist_test_accuracy']:.4f}, fable {r['fable_accuracy']:.4f} "
                     f"(ceiling {r['fable_ceiling']:.4f}); outputs match the committed dvc.lock: "
                     f"{r['outputs_match_committed_dvc_lock']}")
        lines.append("peak RSS: " + ", ".join(f"{stage} {mb:,.0f} MB" for stage, mb in sorted(r["peak_rss_mb"].items())))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement (median)")
    parser.add_argument("--train-batches", type=int, default=50, help="batches per timed training round")
    parser.add_argument("--eval-samples", type=int, default=10_000)
    parser.add_argument("--batch", type=int, help="training batch (default: mnist.batch_size of params.yaml)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["dvc", "fable", "repro"],
                        help="leave out slower parts (repro runs the whole pipeline in a fresh clone)")
    parser.add_argument("--output", default="bench/results.json")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    batch = args.batch or params.mnist.batch_size
    results: dict = {"throughput": throughput(params, batch, args.train_batches, args.eval_samples, args.repeats)}
    results["profile"] = step_profile(params, batch, args.repeats)
    if "dvc" not in args.skip:
        results["dvc"] = dvc_no_op(args.repeats)
    if "fable" not in args.skip:
        results["fable"] = fable_time_to_ceiling(params)
    if "repro" not in args.skip:
        results["repro"] = full_repro(Path.cwd())
    results["table"] = table(results)
    write_json(args.output, results)
    print(results["table"], end="")


if __name__ == "__main__":
    main()
