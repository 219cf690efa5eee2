"""Which kernels, which devices and how many threads TensorFlow uses: fixed by params.yaml, not by the machine.

Every stage that runs TensorFlow calls :func:`pin` before TensorFlow loads. ``numerics.mode`` in
params.yaml chooses:

- ``portable`` (the default, what dvc.lock is committed with): every matrix product and every LSTM
  cell's elementwise step are ``pipeline.model.detgemm``'s ops (``pipeline.model.layers``): in-order chains of fused
  multiply-adds and a fixed sequence of IEEE operations, with the same bits on every x86-64 CPU, whatever
  its instruction set, caches or cores; everything else is TensorFlow's own Eigen kernels, compiled into
  the wheel for one instruction set (AVX, no FMA), with oneDNN off both as graph rewrites
  (``TF_ENABLE_ONEDNN_OPTS=0``) and inside Eigen (``TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=false``); one
  thread per slice of the batch, because an operation split between threads may sum in an order that
  depends on the CPU's caches; and no graph rewrite to approximate instructions (Grappler's arithmetic
  optimizer would turn RMSprop's ``x / sqrt(y)`` into ``x * rsqrt(y)``, from the CPU's ``rsqrtps``).
  Same bytes on every x86-64 CPU with AVX and FMA. Its cost against ``native`` is a few per cent of
  samples/s, and both run faster than PyTorch's ``nn.LSTM`` (``make bench``; docs/benchmark.md): the
  default because the committed results are then everyone's, any x86-64 machine's ``dvc repro`` writing
  the same bytes.
- ``native``: TensorFlow's own products and kernels, oneDNN's, which TensorFlow picks for this CPU (AVX2,
  AVX-512, AMX), and the same LSTM cell op: identical from run to run on one machine, different from
  machine to machine.

Both hide GPUs (CUDA kernels are yet another arithmetic). A variable in the environment that would
change the arithmetic (``ONEDNN_*``, ``TF_*``, ``OMP_*``, ``XLA_FLAGS``, ...) is overridden with one
line on stderr naming it: the params decide, not the shell the stage happens to run in. Variables that
only change what is printed (``TF_CPP_MIN_LOG_LEVEL``, ``ONEDNN_VERBOSE``) are left alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.config import Mode, Params

_KERNELS: dict[str, dict[str, str]] = {
    "portable": {"TF_ENABLE_ONEDNN_OPTS": "0", "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"},
    "native": {"TF_ENABLE_ONEDNN_OPTS": "1", "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "true"},
}
_CPU_ONLY = {"CUDA_VISIBLE_DEVICES": "-1"}
# Prefixes of variables read by TensorFlow, oneDNN, MKL, OpenMP or XLA: each may change the arithmetic.
_ARITHMETIC_PREFIXES = ("TF_", "TENSORFLOW_", "ONEDNN_", "DNNL_", "MKL_", "KMP_", "OMP_", "XLA_")
# ... except these, which only change what is printed.
_OUTPUT_ONLY = frozenset(
    {
        "TF_CPP_MIN_LOG_LEVEL",
        "TF_CPP_MAX_VLOG_LEVEL",
        "TF_CPP_VMODULE",
        "TF_CPP_LOG_THREAD_ID",
        "ONEDNN_VERBOSE",
        "ONEDNN_VERBOSE_TIMESTAMP",
        "DNNL_VERBOSE",
        "DNNL_VERBOSE_TIMESTAMP",
    }
)
# Modules Keras imports at its own import when they are installed (MLflow brings them), for parts the pipeline
# never uses: its scikit-learn wrappers and an image gallery's pyplot. They took 1.4 s of the 5.4 s that
# TensorFlow, Keras and MLflow took to import (2-core AMD EPYC Zen 4), in every stage. A None in sys.modules
# makes their import fail as if they were not installed (Keras then leaves those parts out); the pipeline's own
# figures draw on matplotlib.figure, without pyplot.
_UNUSED_BY_THE_PIPELINE = ("sklearn", "matplotlib.pyplot")
# TensorFlow's C++ log (CUDA probing, CPU feature notes, absl start-up) is silenced unless the user sets
# the level: TF_CPP_MIN_LOG_LEVEL=0 brings it all back.
_LOG_LEVEL, QUIET = "TF_CPP_MIN_LOG_LEVEL", "3"
# Terraform's variables share the TF_ prefix; TensorFlow reads none of them.
_TERRAFORM = (
    "TF_CLI_",
    "TF_VAR_",
    "TF_LOG",
    "TF_DATA_DIR",
    "TF_IN_AUTOMATION",
    "TF_INPUT",
    "TF_WORKSPACE",
    "TF_PLUGIN_CACHE",
    "TF_REGISTRY_",
    "TF_TOKEN_",
    "TF_APPEND_USER_AGENT",
    "TF_IGNORE",
)


class NumericsError(PipelineError):
    """The kernels cannot be pinned as params.yaml says (TensorFlow already loaded with other settings)."""


def environment(mode: Mode, environ: Mapping[str, str] = os.environ) -> tuple[dict[str, str], list[str]]:
    """The environment TensorFlow must load in for ``mode``, and the user's variables it overrides."""
    pinned = {**_KERNELS[mode], **_CPU_ONLY}
    result = {
        name: value
        for name, value in environ.items()
        if name in _OUTPUT_ONLY
        or name.startswith(_TERRAFORM)
        or not (name.startswith(_ARITHMETIC_PREFIXES) or name in pinned)
    }
    overridden = sorted(
        f"{name}={value}" for name, value in environ.items() if name not in result and pinned.get(name) != value
    )
    return {_LOG_LEVEL: QUIET} | result | pinned, overridden


@contextlib.contextmanager
def _quiet_stderr(quiet: bool) -> Iterator[None]:
    """File descriptor 2 to /dev/null while TensorFlow loads (``quiet``): its libraries log the CUDA probe
    and absl's start-up notice in C++ before any log level applies. A Python exception still propagates."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_pinned: tuple[str, int, int] | None = None  # what pin() set in this process


def pin(
    mode: Mode,
    parallel_slices: int,
    threads_per_slice: int,
    environ: MutableMapping[str, str] = os.environ,
    stage: str = "numerics",
) -> None:
    """Set kernels, devices and threads for ``mode`` in this process, before TensorFlow loads.

    In a process where TensorFlow is already loaded (a test, a notebook) only the same setting again is
    accepted; anything else fails with one line, since TensorFlow reads its settings once. Where neither is
    imported yet, scikit-learn and matplotlib.pyplot are kept out of the process (``_UNUSED_BY_THE_PIPELINE``).
    """
    global _pinned
    wanted = (mode, parallel_slices, threads_per_slice)
    if "tensorflow" in sys.modules:
        if _pinned == wanted:
            return
        raise NumericsError(
            f"numerics.mode {mode} with {parallel_slices} slice(s) × {threads_per_slice} thread(s): "
            f"TensorFlow was loaded in this process before the pipeline could pin its kernels "
            f"({'as ' + ' with '.join(map(str, _pinned)) if _pinned else 'unpinned'}); "
            f"run the stage in a process of its own"
        )
    pinned, overridden = environment(mode, environ)
    for item in overridden:
        print(
            f"{stage}: ignoring {item} from the environment: params.yaml numerics.mode ({mode}) decides",
            file=sys.stderr,
        )
    environ.clear()
    environ.update(pinned)
    for name in _UNUSED_BY_THE_PIPELINE:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    with _quiet_stderr(environ.get(_LOG_LEVEL) == QUIET):
        import tensorflow as tf  # noqa: PLC0415 - the point of this module: TensorFlow loads only now

    tf.config.threading.set_intra_op_parallelism_threads(threads_per_slice)
    # Slices run side by side on inter-op threads, one each: a third thread for the input pipeline on 2 cores
    # made the two slices' chains take turns with it (an MNIST step 19.3 ms against 15.5 ms with 2; make bench's
    # portable training 14,606 -> 16,620 samples/s on a 2-core Xeon). Which thread runs an operation never
    # changes its result.
    tf.config.threading.set_inter_op_parallelism_threads(parallel_slices)
    tf.config.experimental.enable_op_determinism()
    if mode == "portable":
        # Grappler's arithmetic rewrites turn x / sqrt(y) (RMSprop's step) into x * rsqrt(y), which Eigen
        # computes from the CPU's approximate rsqrtps: its bits differ between Intel, AMD and emulators.
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    _pinned = wanted


def pinned_mode() -> Mode | None:
    """The mode :func:`pin` set in this process; None where it did not run (TensorFlow loaded unpinned)."""
    return _pinned[0] if _pinned else None


def pin_for(params: Params, model: str, stage: str) -> None:
    """:func:`pin` for the stage ``stage`` of ``model`` as params.yaml says: before anything imports TensorFlow."""
    pin(params.numerics.mode, params.training(model).parallel_slices, params.numerics.threads_per_slice, stage=stage)


def describe(mode: Mode) -> dict[str, str]:
    """Tags for an MLflow run: which arithmetic produced it."""
    return {"numerics.mode": mode, **{f"numerics.env.{name}": value for name, value in _KERNELS[mode].items()}}
