"""The LSTM cell's gradient (pipeline.model.detgemm's ops DetLstmCellGrad, and DetLstmCellSavedGrad of the
activations training keeps): TensorFlow's own gradient of the same step within float tolerance, the same bits
on every instruction-set path, in and outside TensorFlow, from either op, and the same bits as the
elementwise TensorFlow graph that computed it before the ops existed."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.model import detgemm

ISAS = ("avx512", "avx2", "scalar")
# (units, batch): the layers' slices (MNIST LSTM(128), 128 examples; the fable's LSTM(512), batch 16), the
# shrunken test project's, batch 1, and odd sizes that leave a remainder after every vector width.
SHAPES = [(128, 128), (512, 16), (16, 32), (128, 1), (1, 1), (3, 37), (7, 13), (33, 17)]


def step(units: int, batch: int, seed: int) -> dict[str, np.ndarray]:
    """A step's gate products (over the tanh approximation's range, its clamp and its small-x branch), the
    previous cell state, and the gradients arriving at h and c (a few tiny and huge ones, signed zeros)."""
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((4 * units, batch)) * 4).astype(np.float32)
    z.flat[:6] = [0.0, 1e-5, -3e-4, 20.0, -20.0, -0.0][: z.size]
    dh, dc = rng.standard_normal((2, units, batch)).astype(np.float32)
    dh.flat[1::7] *= np.float32(1e-30)
    dc.flat[2::11] = -0.0
    dc.flat[3::13] *= np.float32(1e25)
    c_prev = (rng.standard_normal((units, batch)) * 2).astype(np.float32)
    return {"z": z, "c_prev": c_prev, "dh": dh, "dc": dc}


def fused(inputs: dict[str, np.ndarray], isa: str = "auto", saving: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """dz, dc_prev through the registered gradient of DetLstmCell (tf.function), or with ``saving`` through
    DetLstmCellSavedGrad of the activations DetLstmCellSaving kept, as training computes it."""
    import tensorflow as tf

    @tf.function
    def gradient(z, c_prev, dh, dc):
        with tf.GradientTape() as tape:
            tape.watch([z, c_prev])
            h, c = detgemm.lstm_cell(z, c_prev, isa=isa, saving=saving)
        return tape.gradient([h, c], [z, c_prev], output_gradients=[dh, dc])

    dz, dc_prev = gradient(*(tf.constant(inputs[name]) for name in ("z", "c_prev", "dh", "dc")))
    return dz.numpy(), dc_prev.numpy()


def elementwise(inputs: dict[str, np.ndarray], compiled: bool) -> tuple[np.ndarray, np.ndarray]:
    """The gradient as TensorFlow's elementwise ops computed it before DetLstmCellGrad (eager, or as one
    tf.function graph), from the activations the forward kernel saves."""
    import tensorflow as tf

    saved = detgemm.kernel_lstm_cell(inputs["z"], inputs["c_prev"])[0]

    def gradient(activations, tanh_c, c_prev, dh, dc):
        i, f, o, g = tf.split(activations, 4, axis=0)
        dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
        dz = tf.concat(
            [
                dc_total * g * i * (1 - i),
                dc_total * c_prev * f * (1 - f),
                dh * tanh_c * o * (1 - o),
                dc_total * i * (1 - g * g),
            ],
            axis=0,
        )
        return dz, dc_total * f

    function = tf.function(gradient) if compiled else gradient
    values = (saved["activations"], saved["tanh_c"], inputs["c_prev"], inputs["dh"], inputs["dc"])
    dz, dc_prev = function(*(tf.constant(value) for value in values))
    return dz.numpy(), dc_prev.numpy()


@pytest.mark.parametrize(("units", "batch"), SHAPES)
def test_the_gradient_is_tensorflows_own_gradient_of_the_step(units, batch):
    """TensorFlow's GradientTape through a plain-TensorFlow LSTM step (its own sigmoid and tanh): the same
    gradient within float32 tolerance (the activations differ by up to 3e-7)."""
    import tensorflow as tf

    inputs = step(units, batch, seed=units + batch)
    inputs["dc"].flat[3::13] = 1.0  # no huge gradients here: tolerances are absolute
    z, c_prev = tf.constant(inputs["z"]), tf.constant(inputs["c_prev"])
    with tf.GradientTape() as tape:
        tape.watch([z, c_prev])
        i, f, o, g = tf.split(z, 4, axis=0)
        c = tf.sigmoid(f) * c_prev + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
    expected = tape.gradient([h, c], [z, c_prev], output_gradients=[inputs["dh"], inputs["dc"]])
    for got, want in zip(fused(inputs), expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(("units", "batch"), SHAPES)
def test_every_isa_gives_the_same_bits_in_and_outside_tensorflow(units, batch):
    """Odd sizes leave a remainder to the scalar path after the vector ones."""
    inputs = step(units, batch, seed=units * batch)
    direct = {isa: detgemm.kernel_lstm_cell_grad(**inputs, isa=isa) for isa in ISAS}
    assert {isa: used for isa, (_, used) in direct.items()} == {isa: detgemm.resolved_isa(isa) for isa in ISAS}
    reference = direct["scalar"][0]
    for isa, (outputs, _) in direct.items():
        for saving in (False, True):
            in_tensorflow = dict(zip(("dz", "dc_prev"), fused(inputs, isa=isa, saving=saving), strict=True))
            for name in ("dz", "dc_prev"):
                assert outputs[name].tobytes() == in_tensorflow[name].tobytes() == reference[name].tobytes(), (
                    isa,
                    saving,
                    name,
                )


@pytest.mark.parametrize(("units", "batch"), SHAPES)
def test_the_gradient_has_the_bits_of_the_elementwise_graph_it_replaces(units, batch):
    inputs = step(units, batch, seed=7 * units + batch)
    for saving in (False, True):
        dz, dc_prev = fused(inputs, saving=saving)
        for compiled in (False, True):
            old_dz, old_dc_prev = elementwise(inputs, compiled)
            assert dz.tobytes() == old_dz.tobytes() and dc_prev.tobytes() == old_dc_prev.tobytes(), (saving, compiled)


@pytest.mark.parametrize("saving", [False, True])
def test_a_step_whose_cell_state_is_unused_gets_the_gradient_of_dc_zero(saving):
    """The last step's c feeds nothing: the tape passes zeros for its gradient (so does the op for a None)."""
    import tensorflow as tf

    inputs = step(16, 9, seed=3)
    z, c_prev = tf.constant(inputs["z"]), tf.constant(inputs["c_prev"])
    with tf.GradientTape() as tape:
        tape.watch([z, c_prev])
        h, _ = detgemm.lstm_cell(z, c_prev, saving=saving)
    dz, dc_prev = tape.gradient(h, [z, c_prev], output_gradients=inputs["dh"])
    zero_dc = detgemm.kernel_lstm_cell_grad(**{**inputs, "dc": np.zeros_like(inputs["dc"])})[0]
    assert dz.numpy().tobytes() == zero_dc["dz"].tobytes()
    assert dc_prev.numpy().tobytes() == zero_dc["dc_prev"].tobytes()
    assert np.abs(zero_dc["dz"]).sum() > 0


@pytest.mark.parametrize(
    ("saving", "forward", "backward"),
    [(False, "DetLstmCell", "DetLstmCellGrad"), (True, "DetLstmCellSaving", "DetLstmCellSavedGrad")],
)
def test_the_gradient_is_one_op_per_step_and_no_zeros_are_filled_for_it(saving, forward, backward):
    """No elementwise kernels, and no zero-filled gradients that anything reads (the saving forward's
    activations are outputs of the op, not of the step: the custom gradient's graph leaves unread zeros of
    its own, which the executor never runs)."""
    import tensorflow as tf

    @tf.function
    def gradient(z, c_prev):
        with tf.GradientTape() as tape:
            tape.watch([z, c_prev])
            h, c = detgemm.lstm_cell(z, c_prev, saving=saving)
            h, c = detgemm.lstm_cell(tf.concat([h, c, h, c], axis=0), c, saving=saving)  # a second step
        return tape.gradient([h, c], [z, c_prev])

    graph = gradient.get_concrete_function(tf.TensorSpec((8, 3)), tf.TensorSpec((2, 3))).graph
    kinds = [operation.type for operation in graph.get_operations()]
    assert kinds.count(forward) == kinds.count(backward) == 2, kinds
    assert not {"Mul", "Sub", "Split", "ZerosLike"} & set(kinds), kinds
    read = [op.name for op in graph.get_operations() if op.type == "Fill" and op.outputs[0].consumers()]
    assert read == [], read


def test_the_lstm_keeps_its_activations_in_training_only():
    import tensorflow as tf

    from pipeline.model.layers import LSTM

    layer = LSTM(4, seed=0)
    sequence = tf.constant(np.random.default_rng(2).random((3, 5, 2)), dtype=tf.float32)
    layer(sequence)  # built
    for training, expected in ((True, "DetLstmCellSaving"), (False, "DetLstmCell")):
        graph = (
            tf.function(lambda x, training=training: layer(x, training=training)).get_concrete_function(sequence).graph
        )
        kinds = {operation.type for operation in graph.get_operations()}
        (other,) = {"DetLstmCell", "DetLstmCellSaving"} - {expected}
        assert expected in kinds and other not in kinds, (training, kinds)
    assert layer(sequence, training=True).numpy().tobytes() == layer(sequence, training=False).numpy().tobytes()


def test_the_gradient_flushes_subnormals_whatever_the_callers_floating_point_state():
    """FTZ and DAZ, as TensorFlow's executor runs its kernels: the same bits called directly on this thread
    (whose MXCSR has both off) as inside TensorFlow, and the caller's state restored."""
    inputs = step(4, 16, seed=11)
    inputs["z"][:, ::2] = np.float32(2.0**-130)  # subnormal inputs: DAZ reads them as 0
    inputs["c_prev"][:, 1::3] = np.float32(2.0**-127)
    inputs["dh"][:, ::3] = np.float32(2.0**-100)  # products far below the smallest normal: flushed
    inputs["dc"][:, 1::2] = np.float32(2.0**-128)
    for isa in ISAS:
        direct = detgemm.kernel_lstm_cell_grad(**inputs, isa=isa)[0]
        in_tensorflow = fused(inputs, isa=isa)
        assert direct["dz"].tobytes() == in_tensorflow[0].tobytes(), isa
        assert direct["dc_prev"].tobytes() == in_tensorflow[1].tobytes(), isa
    assert np.float32(2.0**-130) * np.float32(1.0) != 0  # this thread does not flush, before or after
