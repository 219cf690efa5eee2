"""Benchmark the MNIST LSTM's training and evaluation in both numerics modes against PyTorch, side by side.

Run from the project root, after `dvc repro` (it reads the prepared data and the vocabulary)::

    make bench                                   # torch==2.13.0 CPU is installed for it
    python -m bench.benchmark --repeats 5 --output bench/results.json

TensorFlow reads its kernels and threads once per process (pipeline.model.numerics), so every implementation
runs in a process of its own: the pipeline's compiled model and ``fit`` pinned to ``numerics.mode``
portable, the same pinned to native (each with params.yaml's slices and threads per slice), and PyTorch
(``nn.LSTM`` + ``nn.Linear``, Adam, float32, same sizes and batches). This process imports no
TensorFlow: it starts the workers, lets each warm up (graphs traced, caches filled), then asks them for
one timed round each in turn, ``--repeats`` times, so that drift of a noisy machine hits all of them;
medians are reported, with the ratios of each mode to PyTorch and of portable to native. Also: the
float32 GEMM rate at the LSTM's shapes in each library and mode (the ceiling the step's matrix products
can reach); where one training step and one inference batch spend their time, a no-op ``dvc repro``
next to DVC's floor (a one-stage project) and the time the fable model takes to reach its accuracy
ceiling, those in params.yaml's numerics mode; and a full ``dvc repro`` in a fresh clone of the last
commit: wall time, peak RSS of every stage, accuracies, and whether its outputs match the committed dvc.lock.

Before any measurement it checks what the phases will need and stops, with one line for each thing
missing and what to do about it (exit status 1, nothing measured): params.yaml valid, the prepared MNIST
splits (and, unless ``--skip fable``, the fable and its vocabulary) at the paths params.yaml names, and,
unless ``--skip repro``, a source for every data file the fresh clone's fetch stages download. That is
``$PIPELINE_MIRROR`` (a relative one is resolved here, since the clone runs elsewhere) or else the
sources in params.yaml, each asked for its headers: offline and without a mirror the benchmark refuses
to start rather than fail after minutes of measuring. PyTorch is optional: without it a note says it is
not measured.

Each phase prints a line to stderr when it starts and one when it ends, with its headline figure and
time. ``--output`` (JSON, with the table under ``table``) is rewritten atomically after every phase, so
a failure or Ctrl-C keeps every figure measured before it; a phase that fails is recorded as
``{"error": "..."}`` under its key, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.cli import debugging, duration, run_stage
from pipeline.config import Params, ParamsError, load_params, parse_params
from pipeline.errors import PipelineError
from pipeline.files import write_json
from pipeline.stages.fetch import MIRROR_ENV
from pipeline.tasks.base import Examples, TrainingData

MODES = ("portable", "native")
TORCH = "PyTorch"
TORCH_MISSING = "torch is not installed (make bench installs torch==2.13.0): PyTorch not measured, no ratios to it"
# Seconds of quiet before each timed turn: the worker that just finished may still have threads spinning.
_SETTLE_S = 0.25


def implementation_name(mode: str) -> str:
    return f"pipeline {mode}"


def median_rate(samples: int, timings: Sequence[float]) -> float:
    return samples / statistics.median(timings)


def lstm_train_flops(steps: int, features: int, units: int, classes: int) -> float:
    """Multiply-adds ×2 of one sample's forward pass, ×3 for forward + backward."""
    forward = steps * 2 * (features + units) * 4 * units + 2 * units * classes
    return 3.0 * forward


def mode_params(params: Params, mode: str, batch: int | None = None, source: str = "params.yaml") -> Params:
    """``params`` with ``numerics.mode`` set to ``mode`` (and ``mnist.batch_size`` to ``batch``), validated again.

    The change is made on the params as plain values and checked by pipeline.config's own validator, so
    it raises pipeline.config.ParamsError when the params cannot run in that mode (portable needs one
    thread per slice), naming ``source`` and the key.
    """
    raw = params.model_dump()
    raw["numerics"]["mode"] = mode
    if batch:
        raw["mnist"]["batch_size"] = batch
    return parse_params(raw, source=f"{source} with numerics.mode {mode}" + (f", batch {batch}" if batch else ""))


def ratios(implementations: dict[str, dict]) -> dict[str, dict[str, float]]:
    """samples/s of each mode over PyTorch's, and of portable over native, for training and evaluation."""
    pairs = [(f"{mode} / {TORCH}", implementation_name(mode), TORCH) for mode in MODES]
    pairs.append(("portable / native", implementation_name("portable"), implementation_name("native")))
    result = {}
    for key, numerator, denominator in pairs:
        if numerator in implementations and denominator in implementations:
            result[key] = {
                part: implementations[numerator][f"{part}_samples_per_s"]
                / implementations[denominator][f"{part}_samples_per_s"]
                for part in ("train", "eval")
            }
    return result


# --- what the phases need, checked before any of them runs --------------------------------------------

# The fetch stages' layout of a mirror (pipeline.stages.fetch), for the line that asks for one.
MIRROR_HINT = (
    f"set {MIRROR_ENV} to an offline mirror laid out as mnist/<file>.gz and fable/<file> "
    "(README: Quick start), or leave the phase out with --skip repro"
)


def missing_prerequisites(
    params: Params,
    skip: Collection[str],
    environ: Mapping[str, str] = os.environ,
    source: Path = Path(),
    timeout: float = 5.0,
) -> list[str]:
    """One line for each thing a phase that will run needs and does not have, saying what to do; [] if none.

    The data is read with the pipeline's own readers (a file that is there but unreadable counts as
    missing). The full-repro phase (unless skipped) needs ``source`` to be a git repository with a commit
    and every data file to have a source that answers: see :func:`unreachable_data`.
    """
    from pipeline.datasets.splits import load_split
    from pipeline.datasets.text import load_vocabulary, read_text

    problems = []
    prepared, unreadable = params.paths.mnist.prepared, {}
    for split in ("train", "validation", "test"):
        try:
            load_split(prepared, split)
        except (OSError, ValueError) as error:
            unreadable[split] = f"{error.strerror}: {error.filename}" if isinstance(error, OSError) else str(error)
    if unreadable:
        problems.append(
            f"{prepared}: the prepared MNIST split(s) {', '.join(unreadable)} cannot be read "
            f"({next(iter(unreadable.values()))}): run `dvc repro` first"
        )
    if "fable" not in skip:
        for read in (lambda: read_text(params.paths.fable.raw), lambda: load_vocabulary(params.paths.fable.vocabulary)):
            try:
                read()
            except PipelineError as error:
                problems.append(f"{error}: run `dvc repro` first, or --skip fable")
    if "repro" not in skip:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True)
        if head.returncode != 0:
            problems.append(
                f"the full-repro phase clones the last commit of {source.resolve()}, which has none "
                f"(not a git repository?): commit first, or leave the phase out with --skip repro"
            )
        unreachable = unreachable_data(params, environ.get(MIRROR_ENV) or None, timeout)
        if unreachable:
            problems.append(
                f"the full-repro phase's fresh clone fetches the data, and no source answers for "
                f"{', '.join(unreachable)} ({next(iter(unreachable.values()))}): {MIRROR_HINT}"
            )
    return problems


def unreachable_data(params: Params, mirror: str | None, timeout: float) -> dict[str, str]:
    """``{file name: "first source: why not"}`` for each data file none of whose fetch sources answers.

    The sources are pipeline.stages.fetch's own: ``mirror`` first, then params.yaml's. A local file must exist; a
    URL must answer its GET with a success within ``timeout`` seconds (only the headers are read, and a host
    that cannot be reached is asked once).
    """
    from pipeline.stages.fetch import fable_target, mnist_targets

    down: dict[str, str] = {}  # host -> why it cannot be reached
    unreachable = {}
    for target in [*mnist_targets(params, mirror), fable_target(params, mirror)]:
        reasons = []
        for source in target.sources:
            reason = _unanswered(source, timeout, down)
            if reason is None:
                break
            reasons.append(reason)
        else:
            unreachable[target.destination.name] = f"{target.sources[0]}: {reasons[0]}"
    return unreachable


def _unanswered(source: str, timeout: float, down: dict[str, str]) -> str | None:
    """Why ``source`` (a path or URL) cannot be fetched, or None if it is there."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme not in ("http", "https", "file"):
        return None if Path(source).is_file() else "no such file"
    if parts.netloc in down:
        return down[parts.netloc]
    try:
        with urllib.request.urlopen(source, timeout=timeout):  # closed after the headers: nothing downloaded
            return None
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} {error.reason}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        down[parts.netloc] = f"cannot connect: {getattr(reason, 'strerror', None) or reason}"
        return down[parts.netloc]


def clone_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``environ`` for the fresh clone's `dvc repro`: a relative ``$PIPELINE_MIRROR`` made absolute.

    The clone runs in a temporary directory, where ``../shared/mirror`` would name another place.
    """
    environment = dict(environ)
    mirror = environment.get(MIRROR_ENV)
    if mirror and urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        environment[MIRROR_ENV] = str(Path(mirror).resolve())
    return environment


# --- float32 GEMM at the step's shape --------------------------------------------------------------------


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


# --- the implementations, each in a worker process of its own ----------------------------------------


def bench_batches(x: np.ndarray, y: np.ndarray, batch: int, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """``batches`` full batches from the start of ``x``, ``y`` (from the start again if it has fewer)."""
    index = np.arange(batch * batches) % len(x)
    return x[index], y[index]


def timed_span(marks: Sequence[tuple[int, float]], batch: int) -> tuple[float, int]:
    """Seconds and samples between the first and the last of ``marks``: (index of the last batch done, time).

    With ``steps_per_execution`` > 1 Keras reports once per execution, with the index of its last batch:
    the samples are counted from the indices, not from the number of reports.
    """
    (first_index, first_time), (last_index, last_time) = marks[0], marks[-1]
    return last_time - first_time, (last_index - first_index) * batch


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


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def throughput_worker(args: argparse.Namespace) -> None:
    """A worker (``--worker portable|native|torch``): set up, warm up, then answer commands on stdin.

    One JSON line on stdout per answer: ``ready`` once warmed up, then one per ``round`` (a timed
    training round and a timed evaluation) and ``gemm``; ``quit`` or the end of stdin ends it.
    """
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever else is printed goes to stderr

    def answer(message: dict) -> None:
        answers.write(json.dumps(message) + "\n")

    params = load_params(args.params)
    if args.worker == "torch":
        try:
            import torch  # noqa: F401
        except ImportError as error:
            answer({"unavailable": f"torch cannot be imported ({error}): PyTorch not measured, no ratios to it"})
            return
        params = mode_params(params, "native", args.batch, args.params)  # native: no constraint on slices to meet
        implementation: Ours | Torch = Torch(
            params, args.total_batches, args.skip_batches, args.eval_samples, args.inference_batch
        )
        libraries = ("torch",)
    else:
        from pipeline.model.numerics import pin_for

        params = mode_params(params, args.worker, args.batch, args.params)
        pin_for(params, "mnist", f"bench {args.worker}")  # before anything imports TensorFlow
        implementation = Ours(params, args.train_batches, args.eval_samples)
        libraries = ("tensorflow",)

    def one_round() -> dict:
        train_seconds, train_samples = implementation.train()
        return {
            "train_seconds": train_seconds,
            "train_samples": train_samples,
            "eval_seconds": timed(implementation.evaluate),
            "eval_samples": len(implementation.x_eval),
        }

    one_round()  # builds graphs, warms caches: not timed
    answer({"ready": implementation.describe()})
    inner, outer = implementation.x.shape[2] + params.mnist.units, 4 * params.mnist.units
    for command in sys.stdin:
        command = command.strip()
        if command == "round":
            answer(one_round())
        elif command == "gemm":
            answer(
                {
                    "gemm_gflops": {
                        library: gemm_gflops(library, params.mnist.batch_size, inner, outer) for library in libraries
                    }
                }
            )
        elif command == "quit":
            break
        else:
            raise ValueError(f"unknown command {command!r}")


class Worker:
    """A worker process of this module, spoken to one JSON line at a time; its stderr kept for errors."""

    def __init__(self, name: str, arguments: Sequence[str]):
        self.name, self.log = name, tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.benchmark", *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"benchmark worker {self.name} ended ({self.process.wait()}) without answering:\n{self.stderr_tail()}"
            )
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.receive()

    def stderr_tail(self, lines: int = 30) -> str:
        self.log.seek(0)
        return "\n".join(self.log.read().splitlines()[-lines:])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def throughput(
    params_path: str,
    params: Params,
    modes: Sequence[str],
    batch: int,
    train_batches: int,
    evaluation_samples: int,
    repeats: int,
) -> dict:
    """samples/s of each implementation, each in its own warmed-up worker, timed in turns ``repeats`` times."""
    common = ["--params", params_path, "--batch", str(batch), "--eval-samples", str(evaluation_samples)]
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
    workers: dict[str, Worker] = {}
    setups: dict[str, dict] = {}
    torch_note = None
    with contextlib.ExitStack() as stack:
        for mode in runnable:  # one after the other: no set-up runs beside another's
            name = implementation_name(mode)
            workers[name] = Worker(name, ["--worker", mode, "--train-batches", str(train_batches), *common])
            stack.callback(workers[name].close)
            setups[name] = workers[name].receive()["ready"]
        layout = setups[implementation_name(runnable[0])]
        if importlib.util.find_spec("torch") is None:
            torch_note = TORCH_MISSING
        else:
            worker = Worker(
                TORCH,
                [
                    "--worker",
                    "torch",
                    "--total-batches",
                    str(layout["total_batches"]),
                    "--skip-batches",
                    str(layout["skip_batches"]),
                    "--inference-batch",
                    str(layout["inference_batch"]),
                    *common,
                ],
            )
            stack.callback(worker.close)
            answer = worker.receive()
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
                rounds[name].append(worker.ask("round"))
        gemm = {}
        for name, worker in workers.items():
            for library, rate in worker.ask("gemm")["gemm_gflops"].items():
                gemm[library if name == TORCH else f"{library} {name.removeprefix('pipeline ')}"] = rate
    units = params.mnist.units
    gemm["numpy"] = gemm_gflops("numpy", batch, layout["features"] + units, 4 * units)
    flops = lstm_train_flops(layout["steps"], layout["features"], units, 10)
    limit = max(gemm.values())
    implementations = {}
    for name, measured in rounds.items():
        train_samples, eval_samples = measured[0]["train_samples"], measured[0]["eval_samples"]
        train_rate = median_rate(train_samples, [m["train_seconds"] for m in measured])
        implementations[name] = {
            "train_samples_per_s": train_rate,
            "eval_samples_per_s": median_rate(eval_samples, [m["eval_seconds"] for m in measured]),
            "train_fraction_of_gemm_limit": train_rate * flops / (limit * 1e9),
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
        "gemm_limit_gflops": limit,
        "gemm_limit_train_samples_per_s": limit * 1e9 / flops,
        "torch": torch_note or "measured",
        "notes": notes,
    }


# --- the parts that run TensorFlow once, in params.yaml's numerics mode --------------------------------


def one_shot(kind: str, arguments: Sequence[str]) -> dict:
    """Run ``--worker kind`` to its end in a process of its own and return the JSON it wrote."""
    with tempfile.TemporaryDirectory() as scratch, open(Path(scratch) / "stderr", "w+", encoding="utf-8") as log:
        output = Path(scratch) / "result.json"
        done = subprocess.run(
            [sys.executable, "-m", "bench.benchmark", "--worker", kind, *arguments, "--json-out", str(output)],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if done.returncode != 0:
            log.seek(0)
            raise RuntimeError(
                f"benchmark worker {kind} failed ({done.returncode}):\n" + "\n".join(log.read().splitlines()[-30:])
            )
        return json.loads(output.read_text())


def one_shot_worker(args: argparse.Namespace) -> None:
    """``--worker profile`` or ``--worker fable``: pin as params.yaml says, measure, write ``--json-out``."""
    from pipeline.model.numerics import pin_for

    params = load_params(args.params)
    mode = params.numerics.mode
    if args.worker == "profile":
        params = mode_params(params, mode, args.batch, args.params)
        pin_for(params, "mnist", "bench profile")
        result = {"mode": mode, **step_profile(params, params.mnist.batch_size, args.repeats)}
    else:
        pin_for(params, "fable", "bench fable")
        result = {"mode": mode, **fable_time_to_ceiling(params)}
    Path(args.json_out).write_text(json.dumps(result))


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

    # TensorFlow's product (native numerics) and pipeline.model.detgemm's (portable), each redone as itself
    products = {"MatMul": tf.linalg.matmul, "DetMatMul": detgemm.matmul}
    graph = function.get_concrete_function(*arguments).graph
    kinds: dict[str, int] = {}
    shapes = []
    for operation in graph.get_operations():
        kinds[operation.type] = kinds.get(operation.type, 0) + 1
        if operation.type in products:
            a, b = (tuple(t.shape) for t in operation.inputs)
            shapes.append((operation.type, a, b, operation.get_attr("transpose_a"), operation.get_attr("transpose_b")))
    rng = np.random.default_rng(0)
    operands = [
        (
            products[kind],
            tf.constant(rng.random(a, dtype=np.float32)),
            tf.constant(rng.random(b, dtype=np.float32)),
            ta,
            tb,
        )
        for kind, a, b, ta, tb in shapes
    ]

    @tf.function
    def matmuls_only() -> tf.Tensor:
        return tf.add_n(
            [tf.reduce_sum(product(a, b, transpose_a=ta, transpose_b=tb)[:1, :1]) for product, a, b, ta, tb in operands]
        )

    def median_ms(action: Callable[[], object], calls: int = 20) -> float:
        action()
        return statistics.median(timed(lambda: [action() for _ in range(calls)]) for _ in range(repeats)) / calls * 1e3

    step_ms = median_ms(lambda: tf.nest.map_structure(lambda t: t.numpy(), function(*arguments)))
    matmul_ms = median_ms(lambda: matmuls_only().numpy())
    matmuls = sum(kinds.get(kind, 0) for kind in products)
    others = sum(kinds.values()) - matmuls
    return {
        "step_ms": step_ms,
        "matmul_ms": matmul_ms,
        "matmuls": matmuls,
        "other_ops": others,
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
        for command in (
            ["git", "init", "-q"],
            [sys.executable, "-m", "dvc", "init", "-q"],
            [sys.executable, "-m", "dvc", "stage", "add", "-q", "-n", "one", "-o", "out.txt", "echo one > out.txt"],
        ):
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
    """Train the fable model as the train stage does; when does its accuracy over every window hit the ceiling?

    pipeline.training.train runs it (same batches, optimizer, history and checkpoint every epoch), with
    the history and the checkpoint in a scratch directory rather than over the project's outputs; after
    each epoch the model is judged on every window and stopped once it reaches the vocabulary's ceiling.
    """
    import keras

    from pipeline.datasets.text import load_vocabulary
    from pipeline.tasks.fable import TASK
    from pipeline.training.loop import train

    data = TASK.load_training_data(params)
    ceiling = load_vocabulary(params.paths.fable.vocabulary)["ceiling"]
    reached: dict = {}

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            predicted = self.model.predict(data.train.x, batch_size=len(data.train), verbose=0).argmax(axis=1)
            if "epoch" not in reached and (predicted == data.train.y).mean() >= ceiling:
                reached.update(epoch=epoch + 1, seconds=time.perf_counter() - self.start)
                self.model.stop_training = True

    with tempfile.TemporaryDirectory() as scratch:
        raw = params.model_dump()
        raw["paths"]["fable"].update(
            history=str(Path(scratch) / "history.csv"), checkpoint=str(Path(scratch) / "checkpoint.npz")
        )
        train(
            TASK, parse_params(raw, source="params.yaml with the fable's history and checkpoint in scratch"), [Watch()]
        )
    return {"ceiling": ceiling, "reached": bool(reached), **reached, "epochs_allowed": params.fable.epochs}


def full_repro(source: Path) -> dict:
    """`dvc repro` in a fresh clone of ``source``'s last commit: wall time, peak RSS per stage, results.

    The clone first builds its matrix-product library as its ``make setup`` would (the Makefile's rule,
    with this interpreter's virtual environment for TensorFlow's headers): timed apart, not in the wall time.

    The peak RSS of each stage is its process's VmHWM, sampled every 50 ms while it runs (the kernel keeps
    the maximum, so sampling misses at most the growth of a stage's last 50 ms). The outputs' hashes are
    compared with the committed dvc.lock: byte-reproducibility checked on every benchmark run.
    """
    import psutil

    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
        committed = yaml.safe_load((clone / "dvc.lock").read_text()) if (clone / "dvc.lock").exists() else None
        (clone / "dvc.lock").unlink(missing_ok=True)  # from empty: nothing is up to date
        build_seconds = _build_library(clone)
        peaks: dict[str, float] = {}
        start = time.perf_counter()
        dvc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=clone,
            env=clone_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
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
        "library_build_s": build_seconds,
        "peak_rss_mb": peaks,
        "mnist_test_accuracy": metrics["mnist"]["test_accuracy"],
        "fable_accuracy": metrics["fable"]["accuracy"],
        "fable_ceiling": metrics["fable"]["ceiling"],
        "outputs_match_committed_dvc_lock": None if committed is None else _outs(produced) == _outs(committed),
    }


def _build_library(clone: Path) -> float:
    """Seconds to build ``clone``'s pipeline.model.detgemm library with the Makefile's rule, this venv's TensorFlow."""
    from pipeline.model.detgemm import LIBRARY

    venv = Path(sys.prefix)
    start = time.perf_counter()
    build = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(clone),
            f"VENV={venv}",
            "-o",
            f"{venv}/.installed",
            f"pipeline/{LIBRARY}",
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        raise RuntimeError(
            f"building the matrix product's library in the fresh clone failed:\n{build.stdout}{build.stderr}"
        )
    return time.perf_counter() - start


def _children(process) -> list:
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _stage_name(process) -> str | None:
    """``train mnist`` for ``python -m pipeline.stages.train mnist``."""
    import psutil

    try:
        command = process.cmdline()
    except psutil.Error:
        return None
    if "-m" in command and command.index("-m") + 1 < len(command):
        module = command[command.index("-m") + 1]
        if module.startswith("pipeline."):
            return " ".join([module.removeprefix("pipeline."), *command[command.index("-m") + 2 :]]).strip()
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
    return {
        name: [(out["path"], out.get("md5")) for out in stage.get("outs", [])] for name, stage in lock["stages"].items()
    }


# --- the phases, each announced, timed, and written as soon as it is done ------------------------------


@dataclass(frozen=True)
class Phase:
    """One part of the benchmark: its key in the results, what it measures, how, and its headline figure."""

    key: str
    title: str
    run: Callable[[], dict]
    headline: Callable[[dict], str]


def say(line: str) -> None:
    """A progress line on stderr (stdout gets the table), shown at once even through a pipe."""
    print(f"bench: {line}", file=sys.stderr, flush=True)


def run_phases(phases: Sequence[Phase], output: str | Path) -> dict:
    """Run ``phases`` in turn; after each, rewrite ``output`` (atomically) with every figure so far and its table.

    A phase that raises is recorded as ``{"error": message}`` under its key and the next one runs: the
    phases do not depend on each other. Ctrl-C stops at once, with the earlier phases' figures on disk.
    """
    results: dict[str, Any] = {}
    for phase in phases:
        say(f"{phase.key} ({phase.title}) ...")
        start = time.perf_counter()
        try:
            results[phase.key] = phase.run()
        except Exception as error:
            results[phase.key] = {"error": f"{type(error).__name__}: {error}"}
            say(f"{phase.key} failed after {duration(time.perf_counter() - start)}: {results[phase.key]['error']}")
            if debugging():
                traceback.print_exc()
        else:
            say(f"{phase.key} done in {duration(time.perf_counter() - start)}: {phase.headline(results[phase.key])}")
        write_json(output, {**results, "table": table(results)})
    return results


def failed(results: dict) -> list[str]:
    """The keys of the phases that failed."""
    return [key for key, item in results.items() if isinstance(item, dict) and "error" in item]


def phases(args: argparse.Namespace, params: Params, modes: Sequence[str], batch: int, torch: bool) -> list[Phase]:
    """The benchmark's phases in the order they run, less those ``--skip`` names."""
    common = ["--params", args.params, "--repeats", str(args.repeats)]
    mode = params.numerics.mode
    measured = [*modes, *([TORCH] if torch else [])]
    listed = [
        Phase(
            "throughput",
            f"{', '.join(measured)}; {args.repeats} round(s) each, in turns",
            lambda: throughput(args.params, params, modes, batch, args.train_batches, args.eval_samples, args.repeats),
            lambda t: (
                ", ".join(
                    f"{name.removeprefix('pipeline ')} {item['train_samples_per_s']:,.0f}"
                    for name, item in t["implementations"].items()
                )
                + " train samples/s"
            ),
        ),
        Phase(
            "profile",
            f"one training step of batch {batch} and one inference batch, {mode}",
            lambda: one_shot("profile", [*common, "--batch", str(batch)]),
            lambda p: (
                f"training step {p['train']['step_ms']:.1f} ms, inference batch {p['inference']['step_ms']:.1f} ms"
            ),
        ),
        Phase(
            "dvc",
            f"no-op dvc repro here and in a one-stage project, {args.repeats} time(s) each",
            lambda: dvc_no_op(args.repeats),
            lambda d: f"{d['pipeline_no_op_repro_s']:.2f} s, DVC's floor {d['dvc_floor_no_op_repro_s']:.2f} s",
        ),
        Phase(
            "fable",
            f"the fable model trained as its stage does until its ceiling, {mode}, at most "
            f"{params.fable.epochs} epochs",
            lambda: one_shot("fable", common),
            _fable_line,
        ),
        Phase(
            "repro",
            "dvc repro from empty in a fresh clone of the last commit",
            lambda: full_repro(Path.cwd()),
            lambda r: (
                f"{duration(r['wall_s'])}, outputs match the committed dvc.lock: "
                f"{r['outputs_match_committed_dvc_lock']}"
            ),
        ),
    ]
    return [phase for phase in listed if phase.key not in args.skip]


def table(results: dict) -> str:
    """The figures as text: the throughput table, then one or two lines per other phase, or why it failed."""
    lines: list[str] = []
    for key, section in (
        ("throughput", _throughput_lines),
        ("profile", _profile_lines),
        ("dvc", _dvc_lines),
        ("fable", lambda f: [f"fable reaches its ceiling {_fable_line(f)}"]),
        ("repro", _repro_lines),
    ):
        if key in results:
            item = results[key]
            lines.extend([f"{key}: failed: {item['error'].splitlines()[0]}"] if "error" in item else section(item))
    return "\n".join(lines) + "\n"


def _throughput_lines(t: dict) -> list[str]:
    rows = ["| implementation | train samples/s | eval samples/s | train, share of GEMM limit |", "|---|---|---|---|"]
    for name, item in t["implementations"].items():
        rows.append(
            f"| {name} | {item['train_samples_per_s']:,.0f} | {item['eval_samples_per_s']:,.0f} | "
            f"{item['train_fraction_of_gemm_limit']:.1%} |"
        )
    lines = ["\n".join(rows), ""]
    for mode in MODES:
        if f"{mode} / {TORCH}" in t["ratios"]:
            r = t["ratios"][f"{mode} / {TORCH}"]
            lines.append(f"{mode} / {TORCH}: train {r['train']:.2f}×, eval {r['eval']:.2f}×")
    if "portable / native" in t["ratios"]:
        r = t["ratios"]["portable / native"]
        lines.append(f"portable costs: train {1 / r['train']:.2f}× native's time, eval {1 / r['eval']:.2f}×")
    lines.extend(t["notes"])
    torch_threads = t["implementations"].get(TORCH, {}).get("setup", {}).get("threads")
    lines.append(
        f"batch {t['batch_size']}, {t['steps_per_execution']} steps per execution, "
        f"{t['timed_batches_per_round']} timed batches per round after the first execution; medians of "
        f"{t['repeats']} round(s) in turns, each implementation in its own process; pipeline "
        f"{t['parallel_slices']} slice(s) × {t['threads_per_slice']} thread(s)"
        + (f", PyTorch {torch_threads} thread(s)" if torch_threads else "")
    )
    lines.append(
        "float32 GEMM at the step's shape: "
        + ", ".join(f"{k} {v:.0f}" for k, v in t["gemm_gflops"].items())
        + f" GFLOP/s; limit ≈ {t['gemm_limit_train_samples_per_s']:,.0f} training samples/s"
    )
    return lines


def _profile_lines(profile: dict) -> list[str]:
    return [
        f"{what}: {p['step_ms']:.1f} ms; its {p['matmuls']} matrix products alone {p['matmul_ms']:.1f} ms; "
        f"the other {p['other_ops']:,} graph operations ≈ {p['other_ms_per_op']:.1f} µs each"
        for what, p in (
            (f"one training step (batch {profile['train_batch']}, {profile['mode']})", profile["train"]),
            (f"one inference batch ({profile['inference_batch']}, {profile['mode']})", profile["inference"]),
        )
    ]


def _dvc_lines(d: dict) -> list[str]:
    return [
        f"no-op dvc repro {d['pipeline_no_op_repro_s']:.2f} s vs DVC floor {d['dvc_floor_no_op_repro_s']:.2f} s "
        f"({d['ratio']:.2f}×)"
    ]


def _fable_line(f: dict) -> str:
    return f"{f['ceiling']:.4f} ({f['mode']}): " + (
        f"epoch {f['epoch']}, {f['seconds']:.1f} s" if f["reached"] else f"not within {f['epochs_allowed']} epochs"
    )


def _repro_lines(r: dict) -> list[str]:
    return [
        f"full dvc repro from empty: {duration(r['wall_s'])} (and {duration(r['library_build_s'])} "
        f"to build the matrix product's library first); "
        f"MNIST test_accuracy {r['mnist_test_accuracy']:.4f}, fable {r['fable_accuracy']:.4f} "
        f"(ceiling {r['fable_ceiling']:.4f}); outputs match the committed dvc.lock: "
        f"{r['outputs_match_committed_dvc_lock']}",
        "peak RSS: " + ", ".join(f"{stage} {mb:,.0f} MB" for stage, mb in sorted(r["peak_rss_mb"].items())),
    ]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def benchmark(args: argparse.Namespace) -> dict:
    """Check the prerequisites (exit status 1 with one line for each missing), then run the phases."""
    params = load_params(args.params)  # the params as they are must be valid
    problems = missing_prerequisites(params, args.skip)
    if problems:
        for problem in problems:
            say(f"cannot start: {problem}")
        sys.exit(1)
    torch = importlib.util.find_spec("torch") is not None
    if not torch:
        say(f"note: {TORCH_MISSING}")
    batch = args.batch or params.mnist.batch_size
    results = run_phases(phases(args, params, list(dict.fromkeys(args.modes)), batch, torch), args.output)
    say(f"figures in {args.output}")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=_positive, default=5, help="timed rounds per measurement (median)")
    parser.add_argument(
        "--train-batches",
        type=_positive,
        default=50,
        help="timed batches per training round, at least (rounded up to whole executions)",
    )
    parser.add_argument("--eval-samples", type=_positive, default=10_000)
    parser.add_argument("--batch", type=_positive, help="training batch (default: mnist.batch_size of params.yaml)")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=list(MODES),
        choices=MODES,
        help="numerics modes of the pipeline to measure, each in its own process (default: both)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["dvc", "fable", "repro"],
        help="leave out slower parts (repro runs the whole pipeline in a fresh clone, fetching "
        f"the data: it needs ${MIRROR_ENV} or the internet)",
    )
    parser.add_argument("--output", default="bench/results.json", help="the figures, rewritten after every phase")
    # A worker process of the benchmark's own (see throughput_worker and one_shot_worker).
    parser.add_argument("--worker", choices=[*MODES, "torch", "profile", "fable"], help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    parser.add_argument("--total-batches", type=_positive, help=argparse.SUPPRESS)
    parser.add_argument("--skip-batches", type=_positive, help=argparse.SUPPRESS)
    parser.add_argument("--inference-batch", type=_positive, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker in ("profile", "fable"):
        one_shot_worker(args)
        return
    if args.worker:
        throughput_worker(args)
        return
    with run_stage("bench"):  # a bad params.yaml: one line naming the file and the key, exit status 1
        results = benchmark(args)
    print(table(results), end="")
    if failed(results):
        say(f"failed: {', '.join(failed(results))} (their errors are in {args.output})")
        sys.exit(1)


if __name__ == "__main__":
    main()
