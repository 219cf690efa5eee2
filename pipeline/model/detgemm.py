"""A matrix product with the same bits on every x86-64 CPU: the TensorFlow op ``DetMatMul``, in C++.

Each element of ``op(a) @ op(b)`` (float32) is one chain of fused multiply-adds over the summed
dimension, in order, starting from +0 (``pipeline/model/native/detgemm_kernel.h``). The kernel runs its
chains 16 (AVX-512), 8 (AVX2 with FMA) or 1 (scalar) at a time, as cpuid allows, and an FMA rounds the
same in every case, so the bits depend on the inputs only: not on the instruction set, the cache sizes
(no sum is cut into blocks) or the threads (a call runs on its caller's thread). Subnormals are flushed
(FTZ and DAZ on, set by the kernel itself for each call, as TensorFlow sets them for its own kernels).
Gradients are DetMatMuls again (registered here for the op type).

The same library holds an LSTM step's ops, each with its registered gradient: ``DetGates`` (the step's
product of the stacked weights and ``[x; h; 1]``, the kernel's bits without the stacking as an op;
gradient ``DetGatesGrad``) and ``DetLstmCell`` (the gates' activations and the new state; gradient
``DetLstmCellGrad``, the operations TensorFlow's elementwise graph of it ran, in one pass; in training
``DetLstmCellSaving`` and ``DetLstmCellSavedGrad``, the same from the activations kept). And two ops for speed
alone: ``DetProjectiveTransform``, TensorFlow's bilinear image warp with the same bits, vectorised (the MNIST
augmentation's), and ``DetTranspose``, a matrix's transpose (the LSTM's changes of layout).

``make setup`` builds the library (``pipeline/model/native/_detgemm.so``) with g++ and TensorFlow's headers,
whenever the sources or the installed TensorFlow change; ``python -m pipeline.model.detgemm`` prints the flags
it compiles with. The library is loaded on the first product, after checking that it was built from
these sources for this TensorFlow: a missing or stale build fails with one line saying to run ``make setup``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import tensorflow as tf

PACKAGE = Path(__file__).resolve().parent
# The C++ sources (.cc and .h) of the library, relative to the package: dependencies of every stage
# that imports this module (pipeline.dependencies reads this line), and what the build's digest covers.
NATIVE_SOURCES = "native/detgemm_*"
LIBRARY = "native/_detgemm.so"  # what `make setup` builds (the Makefile's DETGEMM)
ISAS = ("auto", "avx512", "avx2", "scalar")  # the op's isa attribute: auto in the pipeline, the others for tests
# Where DVC runs an experiment in a temporary copy of the project (`dvc exp run --temp`, `--queue`).
_EXPERIMENT_COPIES = (".dvc", "tmp", "exps")
IN_PROJECT = PACKAGE.relative_to(PACKAGE.parents[1])  # pipeline/model


class NativeLibraryError(PipelineError):
    """The op's library is missing, or was built from other sources or for another TensorFlow."""


def sources(package: Path = PACKAGE) -> list[Path]:
    """The library's C++ sources, sorted by name (the Makefile's wildcard picks the same files)."""
    return sorted(path for path in package.glob(NATIVE_SOURCES) if path.suffix in (".cc", ".h"))


def source_digest(package: Path = PACKAGE) -> str:
    """sha256 over the sources' names and bytes: the build records it, loading compares it."""
    digest = hashlib.sha256()
    for path in sources(package):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def library_path(package: Path = PACKAGE) -> Path:
    """The built library: beside the sources; in a DVC experiment's temporary copy of the project, which
    holds git's files but no ignored build, the project's own (checked against the copy's sources)."""
    built, parts, width = package / LIBRARY, package.parts, len(_EXPERIMENT_COPIES)
    if not built.exists():
        for index in range(len(parts) - width):
            if parts[index : index + width] == _EXPERIMENT_COPIES:  # <project>/.dvc/tmp/exps/…/pipeline/model
                return Path(*parts[:index]) / IN_PROJECT / LIBRARY
    return built


# What the Makefile's build records in the library (detgemm_op.cc's detgemm_build).
_BUILD_RECORD = re.compile(rb"detgemm build: sources ([0-9a-f]{64}) tensorflow ([^;\s]+);")


def check_build(path: Path, tensorflow_version: str, package: Path = PACKAGE) -> None:
    """Raise :class:`NativeLibraryError` unless ``path`` is a build of ``package``'s sources for this
    TensorFlow: read from the file's bytes, before anything of it is loaded into the process."""
    if not path.is_file():
        raise NativeLibraryError(
            f"{path}: missing (the deterministic matrix product's library); `make setup` builds it"
        )
    record = _BUILD_RECORD.search(path.read_bytes())
    if record is None:
        raise NativeLibraryError(
            f"{path}: not a build of {package / NATIVE_SOURCES} (no build record); `make setup` rebuilds it"
        )
    digest, built_for = record.group(1).decode(), record.group(2).decode()
    if built_for != tensorflow_version:
        raise NativeLibraryError(
            f"{path}: built for TensorFlow {built_for}, this is {tensorflow_version}; `make setup` rebuilds it"
        )
    if digest != source_digest(package):
        raise NativeLibraryError(
            f"{path}: built from other sources than {package / NATIVE_SOURCES} now hold; `make setup` rebuilds it"
        )


@functools.cache
def _library() -> tuple[Any, ctypes.CDLL]:
    """The op's Python module and the same library through ctypes (for tests), loaded once, after
    :func:`check_build`; the op's gradient registered with it."""
    import tensorflow as tf  # noqa: PLC0415 - only once the stage has pinned TensorFlow's kernels

    path = library_path()
    check_build(path, tf.__version__)
    try:
        module = tf.load_op_library(str(path))
    except (tf.errors.OpError, OSError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise NativeLibraryError(f"{path}: cannot be loaded ({reason}); `make setup` rebuilds it") from None
    native = ctypes.CDLL(str(path))  # the same handle: dlopen loads a file once
    native.detgemm_resolved_isa.restype = native.detgemm_matmul.restype = ctypes.c_char_p
    native.detgemm_lstm_cell.restype = native.detgemm_lstm_cell_grad.restype = ctypes.c_char_p
    tf.RegisterGradient("DetMatMul")(_gradient)
    tf.RegisterGradient("DetGates")(_gates_gradient)
    tf.RegisterGradient("DetLstmCell")(_cell_gradient)
    tf.RegisterGradient("DetTranspose")(lambda operation, gradient: transpose(gradient))
    tf.no_gradient("DetProjectiveTransform")
    return module, native


def matmul(
    a: tf.Tensor, b: tf.Tensor, transpose_a: bool = False, transpose_b: bool = False, isa: str = "auto"
) -> tf.Tensor:
    """``op(a) @ op(b)`` for float32 matrices (rank 2), or batches of them (rank 3, the same batch size)."""
    return _library()[0].det_mat_mul(a, b, transpose_a=transpose_a, transpose_b=transpose_b, isa=isa)


def gates(weights: tf.Tensor, x: tf.Tensor, h: tf.Tensor, isa: str = "auto") -> tf.Tensor:
    """An LSTM step's gate products ``weightsᵀ · [x; h; 1]``, feature-major (weights: features + units + 1 rows,
    x: features x batch, h: units x batch): the op ``DetGates``, the bits of ``matmul`` of ``weights`` and the
    three stacked, without the stacking; its gradient computes only the rows that ``x`` and ``h`` need."""
    return _library()[0].det_gates(weights, x, h, isa=isa)


def gates_gradient(
    weights: tf.Tensor,
    x: tf.Tensor,
    h: tf.Tensor,
    dz: tf.Tensor,
    with_dx: bool = True,
    with_dh: bool = True,
    isa: str = "auto",
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``d weights = [x; h; 1] · dzᵀ``, ``dx``, ``dh`` (the rows of ``weights · dz``; ``dx`` without rows unless
    ``with_dx``, ``dh`` unless ``with_dh``) of :func:`gates`: the op ``DetGatesGrad``, its registered gradient."""
    return tuple(_library()[0].det_gates_grad(weights, x, h, dz, with_dx=with_dx, with_dh=with_dh, isa=isa))


def lstm_cell(z: tf.Tensor, c_prev: tf.Tensor, isa: str = "auto", saving: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """``h, c`` of an LSTM step from its gates' product ``z`` (4 units x batch: i, f, o, candidate) and the
    previous cell state (units x batch), feature-major: the op ``DetLstmCell``, one pass, the same bits on
    every x86-64 CPU (``pipeline/model/native/detgemm_cell_op.cc``). Its gradient is one op too,
    ``DetLstmCellGrad``, which computes the activations again. ``saving`` (training): ``DetLstmCellSaving``
    keeps them, and the step's gradient is ``DetLstmCellSavedGrad`` of them, the same bits without five tanh
    (an MNIST training step's cell gradients on a 2-core Zen 2: 81 µs each before, 45 after)."""
    module = _library()[0]
    if not saving:
        h, c = module.det_lstm_cell(z, c_prev, isa=isa)
        return h, c
    import tensorflow as tf  # noqa: PLC0415

    @tf.custom_gradient
    def cell(z: tf.Tensor, c_prev: tf.Tensor):
        h, c, activations, tanh_c = module.det_lstm_cell_saving(z, c_prev, isa=isa)

        def gradient(dh: tf.Tensor | None, dc: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
            dh = tf.zeros_like(c_prev) if dh is None else dh
            dc = tf.zeros_like(c_prev) if dc is None else dc
            return tuple(module.det_lstm_cell_saved_grad(activations, tanh_c, c_prev, dh, dc, isa=isa))

        return (h, c), gradient

    return cell(z, c_prev)


def transpose(x: tf.Tensor) -> tf.Tensor:
    """A float32 matrix's transpose: the op ``DetTranspose`` (``pipeline/model/native/detgemm_layout.cc``),
    several times faster than TensorFlow's for the LSTM's changes of layout; its gradient is one again."""
    return _library()[0].det_transpose(x)


def projective_transform(
    images: tf.Tensor,
    transforms: tf.Tensor,
    output_shape: tf.Tensor,
    fill_value: float | tf.Tensor,
    isa: str = "auto",
) -> tf.Tensor:
    """TensorFlow's ``ImageProjectiveTransformV3`` with bilinear interpolation and a constant fill, the same bits,
    faster: the op ``DetProjectiveTransform`` (``pipeline/model/native/detgemm_image.cc``). images (batch,
    height, width, channels) float32, transforms (1 or batch, 8), output_shape (height, width). No gradient:
    it warps a model's input. One channel runs 16 (AVX-512) or 8 (AVX2) output pixels at a time, the same bits."""
    return _library()[0].det_projective_transform(images, transforms, output_shape, fill_value, isa=isa)


def resolved_isa(isa: str = "auto") -> str:
    """The instruction set a product with ``isa`` runs on this CPU: the best it has when asked for more."""
    return _library()[1].detgemm_resolved_isa(isa.encode()).decode()


def kernel_matmul(
    a: np.ndarray, b: np.ndarray, transpose_a: bool = False, transpose_b: bool = False, isa: str = "auto"
) -> tuple[np.ndarray, str]:
    """The kernel called directly on this thread, outside TensorFlow's executor (which sets its own
    floating-point state around each kernel), and the instruction set it ran: for tests."""
    a, b = (np.ascontiguousarray(x, dtype=np.float32) for x in (a, b))
    (k, m), n = (a.shape if transpose_a else a.shape[::-1]), (b.shape[0] if transpose_b else b.shape[1])
    c = np.empty((m, n), dtype=np.float32)
    pointer = ctypes.POINTER(ctypes.c_float)
    used = _library()[1].detgemm_matmul(
        isa.encode(),
        int(transpose_a),
        int(transpose_b),
        ctypes.c_int64(m),
        ctypes.c_int64(n),
        ctypes.c_int64(k),
        a.ctypes.data_as(pointer),
        b.ctypes.data_as(pointer),
        c.ctypes.data_as(pointer),
    )
    return c, used.decode()


def kernel_lstm_cell(z: np.ndarray, c_prev: np.ndarray, isa: str = "auto") -> tuple[dict[str, np.ndarray], str]:
    """The cell called directly on this thread, outside TensorFlow's executor: its outputs ``h``, ``c``,
    ``activations`` and ``tanh_c``, and the instruction set it ran: for tests."""
    z, c_prev = (np.ascontiguousarray(x, dtype=np.float32) for x in (z, c_prev))
    outputs = {
        name: np.empty(like.shape, dtype=np.float32)
        for name, like in (("h", c_prev), ("c", c_prev), ("activations", z), ("tanh_c", c_prev))
    }
    pointer = ctypes.POINTER(ctypes.c_float)
    used = _library()[1].detgemm_lstm_cell(
        isa.encode(),
        ctypes.c_int64(c_prev.size),
        z.ctypes.data_as(pointer),
        c_prev.ctypes.data_as(pointer),
        *(array.ctypes.data_as(pointer) for array in outputs.values()),
    )
    return outputs, used.decode()


def kernel_lstm_cell_grad(
    z: np.ndarray, c_prev: np.ndarray, dh: np.ndarray, dc: np.ndarray, isa: str = "auto"
) -> tuple[dict[str, np.ndarray], str]:
    """The cell's gradient called directly on this thread, outside TensorFlow's executor: ``dz`` and
    ``dc_prev``, and the instruction set it ran: for tests."""
    z, c_prev, dh, dc = (np.ascontiguousarray(x, dtype=np.float32) for x in (z, c_prev, dh, dc))
    if z.shape != (4 * len(c_prev), *c_prev.shape[1:]) or not c_prev.shape == dh.shape == dc.shape:
        shapes = f"z {z.shape}, c_prev {c_prev.shape}, dh {dh.shape}, dc {dc.shape}"
        raise ValueError(f"{shapes}: z must be (4 units, batch), the others (units, batch)")
    outputs = {"dz": np.empty_like(z), "dc_prev": np.empty_like(c_prev)}
    pointer = ctypes.POINTER(ctypes.c_float)
    used = _library()[1].detgemm_lstm_cell_grad(
        isa.encode(),
        ctypes.c_int64(c_prev.size),
        *(array.ctypes.data_as(pointer) for array in (z, c_prev, dh, dc, *outputs.values())),
    )
    return outputs, used.decode()


def _cell_gradient(operation: tf.Operation, dh: tf.Tensor | None, dc: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
    """``dz``, ``dc_prev`` of DetLstmCell: one op, ``DetLstmCellGrad``, that recomputes the cell's activations
    from its inputs and computes what TensorFlow's elementwise ops computed before it existed, operation for
    operation (``detgemm_cell.cc``; ``tests/test_detgemm_grad.py`` holds both to the same bits)."""
    import tensorflow as tf  # noqa: PLC0415

    z, c_prev = operation.inputs
    dh = tf.zeros_like(c_prev) if dh is None else dh
    dc = tf.zeros_like(c_prev) if dc is None else dc
    return tuple(_library()[0].det_lstm_cell_grad(z, c_prev, dh, dc, isa=_isa(operation)))


def _gates_gradient(operation: tf.Operation, dz: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """``d weights``, ``dx``, ``dh`` of DetGates: one ``DetGatesGrad`` (``detgemm_op.cc``); ``dx`` or ``dh`` not
    computed where the tape says nothing needs it (a model's input; the first step's state of zeros)."""
    skipped = getattr(operation, "skip_input_indices", None) or ()
    with_dx, with_dh = 1 not in skipped, 2 not in skipped
    d_weights, dx, dh = gates_gradient(*operation.inputs, dz, with_dx=with_dx, with_dh=with_dh, isa=_isa(operation))
    return d_weights, dx if with_dx else None, dh if with_dh else None


def _gradient(operation: tf.Operation, gradient: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``dA``, ``dB`` of ``C = op(A) @ op(B)``, each one DetMatMul (TensorFlow's MatMul gradient rules)."""
    a, b = operation.inputs
    transpose_a, transpose_b = operation.get_attr("transpose_a"), operation.get_attr("transpose_b")
    isa = _isa(operation)

    def product(x: tf.Tensor, y: tf.Tensor, tx: bool, ty: bool) -> tf.Tensor:
        return matmul(x, y, transpose_a=tx, transpose_b=ty, isa=isa)

    if not transpose_a and not transpose_b:
        return product(gradient, b, False, True), product(a, gradient, True, False)
    if not transpose_a:
        return product(gradient, b, False, False), product(gradient, a, True, False)
    if not transpose_b:
        return product(b, gradient, False, True), product(a, gradient, False, False)
    return product(b, gradient, True, True), product(gradient, a, True, True)


def _isa(operation: tf.Operation) -> str:
    """The op's isa attribute: its gradient runs on the same instruction-set path."""
    isa = operation.get_attr("isa")
    return isa.decode() if isinstance(isa, bytes) else isa


def compile_flags() -> list[str]:
    """g++ flags for the library: TensorFlow's headers (as -isystem, so their warnings stay theirs) and
    link flags, and what the build records: the sources' digest and TensorFlow's version."""
    import tensorflow as tf  # noqa: PLC0415

    flags = [f"-isystem{flag[2:]}" if flag.startswith("-I") else flag for flag in tf.sysconfig.get_compile_flags()]
    return [
        *flags,
        f'-DDETGEMM_SOURCE_DIGEST="{source_digest()}"',
        f'-DDETGEMM_TENSORFLOW_VERSION="{tf.__version__}"',
        *tf.sysconfig.get_link_flags(),
    ]


if __name__ == "__main__":  # python -m pipeline.model.detgemm: the flags the Makefile compiles the library with
    from pipeline.model.numerics import pin

    pin("portable", parallel_slices=1, threads_per_slice=1, stage="pipeline.model.detgemm")
    print(" ".join(compile_flags()))
