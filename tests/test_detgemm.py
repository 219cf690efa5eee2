"""The deterministic matrix product (pipeline.model.detgemm): right within float32 rounding, the same bits on
every instruction-set path, gradients, subnormals, and one-line errors for a missing or stale build."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.model import detgemm
from pipeline.model.detgemm import NativeLibraryError

# (rows of op(a), columns of op(b), summed terms, transpose_a, transpose_b): the products the layers run
# at the default params (slices of 128 examples, 28 pixels, LSTM(128) for MNIST; LSTM(512) for the fable),
# forward and backward, in inference batches, and edge tiles of every transpose: between them every
# register blocking of every instruction set, B packed and read in place, A packed and read in place.
SHAPES = [
    (128, 512, 28, False, False),  # x @ W
    (128, 512, 128, False, False),  # h @ U
    (128, 10, 128, False, False),  # h @ W_logits
    (1000, 512, 128, False, False),  # an inference slice's h @ U
    (128, 128, 512, False, True),  # dh = g @ Uᵀ
    (128, 512, 128, True, False),  # dU = hᵀ @ g (a sum over the slice)
    (28, 512, 128, True, False),  # dW = xᵀ @ g
    (512, 2048, 3, True, False),  # the fable's first layer's dW: 3 words embedded, 4 × 512 gates
    (2048, 16, 545, True, False),  # the fable's z = Wᵀ[x;h;1] at batch 16 (B read in place: 16 floats a row)
    (545, 16, 2048, False, False),  # its d[x;h;1] = W dz (8-row blocking, N <= 16)
    (157, 128, 512, False, False),  # MNIST's d[x;h;1] (8 x 32 blocking, B packed)
    (512, 128, 157, True, False),  # MNIST's z = Wᵀ[x;h;1] on a slice of 128 (AVX-512 14 x 32, a partial row panel;
    # AVX2: A all packed first, N >= 64)
    (512, 1000, 157, True, False),  # the same on an inference slice of 1000 (A packed too: N >= 256)
    (61, 70, 33, True, False),  # AVX2's A all packed first with a partial last panel of A and of B
    (61, 63, 33, True, False),  # one column short of that: A in place
    (16, 112, 512, False, False),  # the fable's logits: a partial last column panel beside whole ones in place
    (37, 53, 19, True, True),
    (5, 7, 1, False, False),
    (13, 1, 300, False, True),
    (3, 17, 3000, True, False),  # a sum far longer than any cache block
]


def operands(rows: int, columns: int, terms: int, transpose_a: bool, transpose_b: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((terms, rows) if transpose_a else (rows, terms), dtype=np.float32)
    b = rng.standard_normal((columns, terms) if transpose_b else (terms, columns), dtype=np.float32)
    return a, b


def reference(a: np.ndarray, b: np.ndarray, transpose_a: bool, transpose_b: bool) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64.T if transpose_a else a64) @ (b64.T if transpose_b else b64)


def digest(array) -> str:
    return hashlib.sha256(np.asarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize(("rows", "columns", "terms", "transpose_a", "transpose_b"), SHAPES)
def test_every_isa_gives_the_same_bits_within_float32_rounding_of_float64(
    rows, columns, terms, transpose_a, transpose_b
):
    import tensorflow as tf

    a, b = operands(rows, columns, terms, transpose_a, transpose_b)
    expected = reference(a, b, transpose_a, transpose_b)
    results = {}
    for isa in ("avx512", "avx2", "scalar"):
        product = tf.function(lambda x, y, isa=isa: detgemm.matmul(x, y, transpose_a, transpose_b, isa=isa))
        results[isa] = product(tf.constant(a), tf.constant(b)).numpy()
        # a chain of `terms` FMAs rounds `terms` times: off by at most terms · 2⁻²⁴ · Σ|products|
        bound = terms * 2.0**-24 * reference(np.abs(a), np.abs(b), transpose_a, transpose_b)
        assert (np.abs(results[isa] - expected) <= bound).all(), isa
    assert len({digest(c) for c in results.values()}) == 1, {isa: digest(c)[:12] for isa, c in results.items()}
    assert np.array_equal(detgemm.matmul(a, b, transpose_a, transpose_b).numpy(), results["scalar"])  # eager, auto


def test_the_isa_paths_tested_are_the_ones_that_ran():
    """A forced ISA that the CPU lacks falls back: the identity above compares real paths only where they ran."""
    assert detgemm.resolved_isa("scalar") == "scalar"
    ran = {detgemm.resolved_isa(isa) for isa in ("avx512", "avx2", "scalar")}
    if detgemm.resolved_isa("auto") != "avx512":
        pytest.skip(f"this CPU runs {detgemm.resolved_isa('auto')} at best: compared {sorted(ran)}")
    assert ran == {"avx512", "avx2", "scalar"}


def test_a_batch_of_products_is_the_products_one_by_one():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((28, 128, 128), dtype=np.float32), rng.standard_normal((28, 128, 512), dtype=np.float32)
    batched = detgemm.matmul(tf.constant(x), tf.constant(g), transpose_a=True).numpy()
    one_by_one = np.stack([detgemm.matmul(x[t], g[t], transpose_a=True).numpy() for t in range(28)])
    assert np.array_equal(batched, one_by_one)


@pytest.mark.parametrize(("transpose_a", "transpose_b"), [(False, False), (False, True), (True, False), (True, True)])
def test_gradients_are_products_too_and_match_float64(transpose_a, transpose_b):
    import tensorflow as tf

    a, b = operands(13, 17, 11, transpose_a, transpose_b, seed=2)
    weights = np.random.default_rng(3).standard_normal((13, 17))  # loss = Σ weights · C
    a64, b64 = tf.constant(a, tf.float64), tf.constant(b, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([a64, b64])
        loss = tf.reduce_sum(weights * tf.linalg.matmul(a64, b64, transpose_a=transpose_a, transpose_b=transpose_b))
    expected = tape.gradient(loss, [a64, b64])

    @tf.function
    def gradients(x, y):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            loss = tf.reduce_sum(weights.astype(np.float32) * detgemm.matmul(x, y, transpose_a, transpose_b))
        return tape.gradient(loss, [x, y])

    for got, want in zip(gradients(tf.constant(a), tf.constant(b)), expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    graph = gradients.get_concrete_function(tf.TensorSpec(a.shape), tf.TensorSpec(b.shape)).graph
    products = [op.type for op in graph.get_operations() if "MatMul" in op.type]
    assert products and set(products) == {"DetMatMul"}, products


def test_subnormals_are_flushed_whatever_the_callers_floating_point_state():
    """FTZ/DAZ: TensorFlow runs its kernels with flush-to-zero and denormals-are-zero on; the kernel sets
    them itself too, so called directly on this thread (whose MXCSR has them off) it gives the same bits."""
    import tensorflow as tf

    tiny = np.float32(2.0**-130)  # subnormal in float32
    a = np.array([[tiny, 1.0, 2.0**-70, 0.5]], dtype=np.float32)  # 2⁻⁷⁰ · 2⁻⁶⁰ = 2⁻¹³⁰: a subnormal product
    b = np.array([[1.0], [tiny], [2.0**-60], [2.0**-126]], dtype=np.float32)  # 0.5 · 2⁻¹²⁶: a subnormal sum
    assert tf.multiply(tf.constant(tiny), 1.0).numpy() == 0  # TensorFlow's own kernels flush (DAZ)
    assert np.float32(tiny) * np.float32(1.0) != 0  # this thread does not
    for isa in ("avx512", "avx2", "scalar"):
        in_tensorflow = detgemm.matmul(a, b, isa=isa).numpy()
        direct, _ = detgemm.kernel_matmul(a, b, isa=isa)
        assert in_tensorflow.tolist() == direct.tolist() == [[0.0]], isa
    assert np.float32(tiny) * np.float32(1.0) != 0  # and the caller's state is restored after the call
    # the same flush on the layers' shapes: products with subnormal inputs, in and outside TensorFlow
    x, w = operands(128, 512, 128, False, False, seed=4)
    x[::3] *= np.float32(2.0**-125)
    for isa in ("avx512", "avx2", "scalar"):
        assert np.array_equal(detgemm.kernel_matmul(x, w, isa=isa)[0], detgemm.matmul(x, w, isa=isa).numpy()), isa


# --- an LSTM step's gate products (DetGates) -------------------------------------------------------------


def gates_inputs(features: int, units: int, batch: int, seed: int = 8):
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((features + units + 1, 4 * units), dtype=np.float32)
    x, h = (
        rng.standard_normal((features, batch), dtype=np.float32),
        rng.standard_normal((units, batch), dtype=np.float32),
    )
    return weights, x, h, rng.standard_normal((4 * units, batch), dtype=np.float32)


@pytest.mark.parametrize(
    ("features", "units", "batch"), [(28, 128, 128), (32, 512, 16), (28, 16, 32), (3, 5, 1), (7, 9, 37)]
)
def test_gates_and_their_gradient_have_the_bits_of_the_product_of_the_stacked_inputs(features, units, batch):
    """DetGates is DetMatMul of weightsᵀ and [x; h; 1] without the stacking; DetGatesGrad the gradients that
    product and the stacking's slicing gave, on every instruction set (dx only where x needs one)."""
    import tensorflow as tf

    weights, x, h, dz = (tf.constant(value) for value in gates_inputs(features, units, batch))

    def gradients(fused: bool, isa: str, watch_x: bool, watch_h: bool = True):
        with tf.GradientTape() as tape:
            tape.watch([weights, *([h] if watch_h else []), *([x] if watch_x else [])])
            if fused:
                z = detgemm.gates(weights, x, h, isa=isa)
            else:
                stacked = tf.concat([x, h, tf.ones((1, batch))], axis=0)
                z = detgemm.matmul(weights, stacked, transpose_a=True, isa=isa)
        return z, *tape.gradient(z, [weights, h, x], output_gradients=dz)

    for isa in ("avx512", "avx2", "scalar"):
        for watch_x, watch_h in ((True, True), (False, True), (True, False), (False, False)):
            fused, plain = (tf.function(gradients)(flag, isa, watch_x, watch_h) for flag in (True, False))
            names = ("z", "d weights", "dh", "dx")
            for name, got, want in zip(names, fused, plain, strict=True):
                if want is None:  # x or h unwatched: no gradient asked for, none computed
                    assert got is None, (isa, name)
                    continue
                assert got.numpy().tobytes() == want.numpy().tobytes(), (isa, watch_x, watch_h, name)
    graph = tf.function(gradients).get_concrete_function(True, "auto", False).graph
    kinds = [operation.type for operation in graph.get_operations()]
    assert kinds.count("DetGatesGrad") == 1 and "ConcatV2" not in kinds and "Slice" not in kinds, kinds
    [gradient] = [operation for operation in graph.get_operations() if operation.type == "DetGatesGrad"]
    assert gradient.get_attr("with_dx") is False  # x (a model's input) needs no gradient: its rows are skipped
    assert gradient.get_attr("with_dh") is True
    graph = tf.function(gradients).get_concrete_function(True, "auto", True, False).graph
    [gradient] = [operation for operation in graph.get_operations() if operation.type == "DetGatesGrad"]
    assert (gradient.get_attr("with_dx"), gradient.get_attr("with_dh")) == (True, False)


# --- the LSTM cell (DetLstmCell) ------------------------------------------------------------------------


def cell_inputs(units: int, batch: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A step's gate products (spread over the approximation's range, its clamp and its small-x branch)
    and a previous cell state, feature-major."""
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((4 * units, batch)) * 4).astype(np.float32)
    z.flat[:6] = [0.0, 1e-5, -3e-4, 20.0, -20.0, 7.9]
    return z, rng.standard_normal((units, batch)).astype(np.float32)


def reference_cell(z: np.ndarray, c_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    units = len(c_prev)
    z64 = z.astype(np.float64)
    i, f, o = (1 / (1 + np.exp(-z64[k * units : (k + 1) * units])) for k in range(3))
    c = f * c_prev + i * np.tanh(z64[3 * units :])
    return o * np.tanh(c), c


@pytest.mark.parametrize(("units", "batch"), [(128, 128), (128, 1000), (512, 1), (3, 37)])
def test_the_cell_gives_the_same_bits_on_every_isa_in_and_outside_tensorflow(units, batch):
    """Odd sizes leave a remainder to the scalar path after the vector ones; tanh and sigmoid within 3e-7."""
    z, c_prev = cell_inputs(units, batch)
    direct = {isa: detgemm.kernel_lstm_cell(z, c_prev, isa=isa)[0] for isa in ("avx512", "avx2", "scalar")}
    for isa, outputs in direct.items():
        h, c = detgemm.lstm_cell(z, c_prev, isa=isa)
        assert np.array_equal(h.numpy(), outputs["h"]) and np.array_equal(c.numpy(), outputs["c"]), isa
        assert all(np.array_equal(outputs[name], direct["scalar"][name]) for name in outputs), isa
    h, c = reference_cell(z, c_prev)
    assert np.abs(direct["scalar"]["h"] - h).max() < 1e-6 and np.abs(direct["scalar"]["c"] - c).max() < 1e-6


def test_the_cells_activations_are_tanh_and_sigmoid_within_3e_7():
    x = np.linspace(-12, 12, 240_001, dtype=np.float32)
    z = np.zeros((4, x.size), dtype=np.float32)
    z[0] = z[3] = x
    activations = detgemm.kernel_lstm_cell(z, np.zeros((1, x.size), dtype=np.float32))[0]["activations"]
    x64 = x.astype(np.float64)
    assert np.abs(activations[0] - 1 / (1 + np.exp(-x64))).max() < 3e-7
    assert np.abs(activations[3] - np.tanh(x64)).max() < 3e-7


def test_the_cells_gradient_is_the_lstm_steps_gradient():
    import tensorflow as tf

    z, c_prev = (tf.constant(v) for v in cell_inputs(16, 9))
    weights_h, weights_c = np.random.default_rng(6).standard_normal((2, 16, 9)).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([z, c_prev])
        h, c = detgemm.lstm_cell(z, c_prev)
        fused = tf.reduce_sum(weights_h * h) + tf.reduce_sum(weights_c * c)
        i, f, o, g = tf.split(z, 4, axis=0)
        c_ops = tf.sigmoid(f) * c_prev + tf.sigmoid(i) * tf.tanh(g)
        ops = tf.reduce_sum(weights_h * tf.sigmoid(o) * tf.tanh(c_ops)) + tf.reduce_sum(weights_c * c_ops)
        h_only = tf.reduce_sum(h)  # c's gradient unconnected
    for got, want in zip(tape.gradient(fused, [z, c_prev]), tape.gradient(ops, [z, c_prev]), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=5e-6)
    assert np.isfinite(tape.gradient(h_only, z).numpy()).all()


def test_the_cell_flushes_subnormals_whatever_the_callers_floating_point_state():
    z, c_prev = cell_inputs(4, 16)
    z[:, ::2] = np.float32(2.0**-130)  # subnormal inputs: DAZ reads them as 0
    c_prev[:, 1::2] = np.float32(2.0**-127)
    for isa in ("avx512", "avx2", "scalar"):
        direct = detgemm.kernel_lstm_cell(z, c_prev, isa=isa)[0]
        h, c = detgemm.lstm_cell(z, c_prev, isa=isa)
        assert np.array_equal(direct["h"], h.numpy()) and np.array_equal(direct["c"], c.numpy()), isa
    assert np.float32(2.0**-130) * np.float32(1.0) != 0  # the caller's state is restored after the call


# --- the build: present, of these sources, for this TensorFlow -----------------------------------------


def test_the_makefile_builds_the_library_this_module_loads():
    from conftest import ROOT

    library = (detgemm.PACKAGE / detgemm.LIBRARY).relative_to(ROOT)
    assert f"DETGEMM := {library.as_posix()}\n" in (ROOT / "Makefile").read_text()
    assert [path.name for path in detgemm.sources()] == [
        "detgemm_cell.cc",
        "detgemm_cell_op.cc",
        "detgemm_image.cc",
        "detgemm_kernel.cc",
        "detgemm_kernel.h",
        "detgemm_layout.cc",
        "detgemm_op.cc",
    ]


def test_a_missing_or_stale_build_is_one_line_saying_make_setup(tmp_path):
    import tensorflow as tf

    package = tmp_path / "pipeline"
    shutil.copytree(detgemm.PACKAGE / "native", package / "native", ignore=shutil.ignore_patterns("_*"))
    library = package / detgemm.LIBRARY
    with pytest.raises(NativeLibraryError, match=r"_detgemm.so: missing .*; `make setup` builds it$"):
        detgemm.check_build(library, tf.__version__, package)
    library.write_bytes(b"\x7fELF not ours")
    with pytest.raises(NativeLibraryError, match=r"not a build of .*detgemm_\* \(no build record\); `make setup`"):
        detgemm.check_build(library, tf.__version__, package)
    shutil.copy2(detgemm.library_path(), library)
    detgemm.check_build(library, tf.__version__, package)  # a build of these very sources
    with pytest.raises(NativeLibraryError, match=r"built for TensorFlow [\d.]+, this is 9.9.9; `make setup` rebuilds"):
        detgemm.check_build(library, "9.9.9", package)
    kernel = package / "native" / "detgemm_kernel.cc"
    kernel.write_text(kernel.read_text() + "\n// edited\n")
    with pytest.raises(NativeLibraryError, match=r"built from other sources than .* now hold; `make setup` rebuilds"):
        detgemm.check_build(library, tf.__version__, package)


def test_an_experiment_in_dvcs_temporary_copy_uses_the_projects_build(tmp_path):
    project, copy = tmp_path / "project", tmp_path / "project" / ".dvc" / "tmp" / "exps" / "tmpabc"
    (copy / "pipeline" / "model").mkdir(parents=True)
    built = project / "pipeline" / "model" / detgemm.LIBRARY
    assert detgemm.library_path(copy / "pipeline" / "model") == built
    assert detgemm.library_path(project / "pipeline" / "model") == built


# --- the image warp: TensorFlow's own op, the same bits -------------------------------------------------


def warp_cases(count: int = 120):
    """Images, transforms (translations as Keras builds them, general projective ones, one for the whole batch),
    output sizes (the image's and others) and fill values."""
    rng = np.random.default_rng(5)
    for case in range(count):
        batch, height, width, channels = (int(n) for n in rng.integers(1, (6, 33, 33, 4)))
        channels = 1 if case % 2 else channels  # one channel: the vector paths (16 or 8 pixels at a time)
        images = rng.standard_normal((batch, height, width, channels)).astype(np.float32) * 100
        if case % 3 == 0:  # a translation by up to 30% of the size, as RandomTranslation's matrix
            transforms = np.zeros((batch, 8), np.float32)
            transforms[:, 0] = transforms[:, 4] = 1
            transforms[:, 2] = rng.uniform(-0.3, 0.3, batch) * width
            transforms[:, 5] = rng.uniform(-0.3, 0.3, batch) * height
        else:  # projective, per image or one for all
            transforms = rng.standard_normal((batch if case % 3 == 1 else 1, 8)).astype(np.float32)
            transforms[:, 6:] *= 0.05
        size = (height, width) if case % 4 else tuple(int(n) for n in rng.integers(1, 40, 2))
        yield images, transforms, np.array(size, np.int32), np.float32(rng.choice([0.0, 1.5, -7.25]))


def tensorflows_warp(images, transforms, size, fill):
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=size,
        fill_value=fill,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    ).numpy()


@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
def test_the_warp_has_the_bits_of_tensorflows_bilinear_constant_fill_transform_on_every_isa(isa):
    cases = list(warp_cases())
    for images, transforms, size, fill in cases:
        expected = tensorflows_warp(images, transforms, size, fill)
        warped = detgemm.projective_transform(images, transforms, size, fill, isa=isa).numpy()
        assert warped.shape == expected.shape, (images.shape, size)
        assert digest(warped) == digest(expected), (images.shape, transforms[0], size)
    # the cases reach the edges: pixels blended with the fill value, and whole rows of it
    assert any((tensorflows_warp(*case) == case[3]).any() for case in cases)


def test_the_warp_fills_where_the_projection_is_zero_and_takes_one_transform_for_the_whole_batch():
    images = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1)
    vanishing = np.array([[1, 0, 0, 0, 1, 0, -1, 0]], np.float32)  # projection 1 - x: 0 in column 1
    for transforms in (vanishing, np.repeat(vanishing, 2, axis=0)):
        warped = detgemm.projective_transform(images, transforms, np.array([3, 4], np.int32), 9.0).numpy()
        assert (warped[:, :, 1] == 9.0).all()
        assert digest(warped) == digest(tensorflows_warp(images, transforms, np.array([3, 4], np.int32), 9.0))


def test_a_wrong_shape_for_the_warp_is_one_line_naming_it():
    import tensorflow as tf

    images = np.zeros((2, 3, 4, 1), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"transforms must be \(1 or 2, 8\), got \[3,8\]"):
        detgemm.projective_transform(images, np.zeros((3, 8), np.float32), np.array([3, 4], np.int32), 0.0)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank 4|must be rank 4"):
        detgemm.projective_transform(images[0], np.zeros((1, 8), np.float32), np.array([3, 4], np.int32), 0.0)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils, installed with g++) is missing")
def test_no_gather_in_the_library_takes_ymm4_as_its_index():
    """qemu 7.2 (Debian 12's, which runs the cross-CPU test in tests/test_numerics.py) decodes a VSIB index of
    ymm4 as no index, so a gather through ymm4 reads the wrong floats there (and crashed the emulated training):
    the warp's AVX2 gather is written out with ymm4 clobbered. Every gather the library holds, checked."""
    code = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(detgemm.library_path())], capture_output=True, text=True, check=True
    ).stdout
    gathers = [line for line in code.splitlines() if re.search(r"\tvp?gather\w+", line)]
    indices = [re.search(r"\(%\w+,%([xyz]mm\d+),\d\)", line).group(1) for line in gathers]
    assert {index[0] for index in indices} == {"y", "z"}  # the warp's AVX2 and AVX-512 paths
    assert "ymm4" not in indices and "xmm4" not in indices, [line for line in gathers if "mm4," in line]
