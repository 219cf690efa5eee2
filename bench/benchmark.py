"""Benchmark the MNIST LSTM's training and evaluation in both numerics modes against PyTorch, side by side.

Run from the project root, after `dvc repro` (it reads the prepared data and the vocabulary)::

    make bench                                   # torch==2.13.0 CPU is installed for it
    python -m bench.benchmark --repeats 5 --output bench/results.json

TensorFlow reads its kernels and threads once per process (pipeline.model.numerics), so every implementation
runs in a process of its own (bench.workers: a spawned single-worker process pool): the pipeline's compiled
model and ``fit`` pinned to ``numerics.mode`` portable, the same pinned to native (each with params.yaml's
slices and threads per slice), and PyTorch (``nn.LSTM`` + ``nn.Linear``, Adam, float32, same sizes and
batches). This process imports no TensorFlow: it starts the workers, lets each warm up (graphs traced,
caches filled), then asks them for one timed round each in turn, ``--repeats`` times, so that drift of a
noisy machine hits all of them; medians are reported, with the ratios of each mode to PyTorch and of
portable to native (bench.throughput), and each one's share of the machine's float32 peak, measured in the
same run by the fastest large square product of any library on all cores (bench.peak, which also counts
the FLOP of a sample from the model's shapes). Also: the float32 GEMM rate at the LSTM's shapes in each
library and mode (bench.gemm_limit); where one training step and
one inference batch spend their time (bench.profile), a no-op ``dvc repro`` next to DVC's floor (a
one-stage project) and the time the fable model takes to reach its accuracy ceiling (bench.fable_ceiling),
those in params.yaml's numerics mode; and a full ``dvc repro`` in a fresh clone of the last commit: wall
time, peak RSS of every stage, accuracies, and whether its outputs match the committed dvc.lock
(bench.repro).

Before any measurement it checks what the phases will need and stops, with one line for each thing
missing and what to do about it (exit status 1, nothing measured): params.yaml valid, the prepared MNIST
splits (and, unless ``--skip fable``, the fable and its vocabulary) at the paths params.yaml names, and,
unless ``--skip repro``, a source for every data file the fresh clone's fetch stages download. That is
``$PIPELINE_MIRROR`` (a relative one is resolved here, since the clone runs elsewhere) or else the
sources in params.yaml, each asked for its headers: offline and without a mirror the benchmark refuses
to start rather than fail after minutes of measuring (bench.prerequisites). PyTorch is optional: without
it a note says it is not measured.

Each phase prints a line to stderr when it starts and one when it ends, with its headline figure and
time. ``--output`` (JSON, with the table under ``table``: bench.report) is rewritten atomically after every
phase, so a failure or Ctrl-C keeps every figure measured before it; a phase that fails (a worker's error
with its traceback) is recorded as ``{"error": "..."}`` under its key, the others still run, and the exit
status is 1 (bench.phases).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.fable_ceiling import measure_fable_ceiling
from bench.modes import MODES, TORCH, TORCH_MISSING
from bench.peak import PEAK_SIZE
from bench.phases import Phase, failed, run_phases, say
from bench.prerequisites import missing_prerequisites
from bench.profile import measure_profile
from bench.report import fable_line, table
from bench.repro import dvc_no_op, full_repro
from bench.throughput import throughput
from pipeline.cli import duration, run_stage
from pipeline.config import Params, load_params
from pipeline.stages.fetch import MIRROR_ENV


def phases(args: argparse.Namespace, params: Params, modes: Sequence[str], batch: int, torch: bool) -> list[Phase]:
    """The benchmark's phases in the order they run, less those ``--skip`` names."""
    mode = params.numerics.mode
    measured = [*modes, *([TORCH] if torch else [])]
    listed = [
        Phase(
            "throughput",
            f"{', '.join(measured)}; {args.repeats} round(s) each, in turns",
            lambda: throughput(
                args.params, params, modes, batch, args.train_batches, args.eval_samples, args.repeats, args.peak_size
            ),
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
            lambda: measure_profile(args.params, batch, args.repeats),
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
            lambda: measure_fable_ceiling(args.params),
            fable_line,
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
    parser.add_argument(
        "--peak-size", type=_positive, default=PEAK_SIZE, help="side of the square product that measures the peak"
    )
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
    args = parser.parse_args(argv)
    with run_stage("bench"):  # a bad params.yaml: one line naming the file and the key, exit status 1
        results = benchmark(args)
    print(table(results), end="")
    if failed(results):
        say(f"failed: {', '.join(failed(results))} (their errors are in {args.output})")
        sys.exit(1)


if __name__ == "__main__":
    main()
