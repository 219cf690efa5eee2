"""Machine-independent arithmetic: the pinned environment, the portable layers, and the same bytes under
every setting a machine or a user could bring (instruction-set caps, one core, other CPUs emulated by qemu)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from pipeline.config import ParamsError, parse_params
from pipeline.model.numerics import environment


def test_portable_environment_turns_onednn_off_and_overrides_the_users_arithmetic_settings():
    user = {
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "OMP_NUM_THREADS": "7",
        "XLA_FLAGS": "--x",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "ONEDNN_VERBOSE": "1",
        "TF_CLI_CONFIG_FILE": "/t",
        "HOME": "/root",
    }
    pinned, overridden = environment("portable", user)
    assert pinned["TF_ENABLE_ONEDNN_OPTS"] == "0" and pinned["TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"] == "false"
    assert pinned["CUDA_VISIBLE_DEVICES"] == "-1"
    assert "ONEDNN_MAX_CPU_ISA" not in pinned and "OMP_NUM_THREADS" not in pinned and "XLA_FLAGS" not in pinned
    # output-only variables, Terraform's and the rest of the environment stay
    assert {k: pinned[k] for k in ("TF_CPP_MIN_LOG_LEVEL", "ONEDNN_VERBOSE", "TF_CLI_CONFIG_FILE", "HOME")} == {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "ONEDNN_VERBOSE": "1",
        "TF_CLI_CONFIG_FILE": "/t",
        "HOME": "/root",
    }
    assert overridden == ["OMP_NUM_THREADS=7", "ONEDNN_MAX_CPU_ISA=SSE41", "TF_ENABLE_ONEDNN_OPTS=1", "XLA_FLAGS=--x"]
    assert environment("portable", {"HOME": "/root"})[0]["TF_CPP_MIN_LOG_LEVEL"] == "3"  # quiet unless asked
    native, _ = environment("native", user)
    assert native["TF_ENABLE_ONEDNN_OPTS"] == "1" and "ONEDNN_MAX_CPU_ISA" not in native


@pytest.mark.slow
def test_a_pinned_process_loads_keras_and_mlflow_without_scikit_learn_or_pyplot_and_still_draws_figures(tmp_path):
    script = """
import sys
from pipeline.model.numerics import pin
pin("portable", 1, 1)
import keras, mlflow
from pipeline.tasks.reports import confusion_matrix
confusion_matrix([0, 1, 1], [0, 1, 0], 2).savefig(sys.argv[1])
print(sorted(name for name in ("sklearn", "matplotlib.pyplot", "matplotlib.figure") if sys.modules.get(name)))
"""
    figure = tmp_path / "confusion.png"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, str(figure)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "['matplotlib.figure']"  # Keras left out its scikit-learn and pyplot parts
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_portable_refuses_threads_whose_sums_would_depend_on_the_cpu_but_not_long_slices(raw):
    raw["numerics"]["threads_per_slice"] = 2
    with pytest.raises(ParamsError, match=r"numerics: .*portable runs each slice on 1 thread"):
        parse_params(raw)
    raw["numerics"]["threads_per_slice"] = 1
    raw["mnist"].update(batch_size=600, parallel_slices=1)  # a weight's gradient: one chain of 600 terms
    assert parse_params(raw).mnist.batch_size == 600
    raw["numerics"].update(mode="native", threads_per_slice=2)
    assert parse_params(raw).numerics.threads_per_slice == 2


def test_portable_layers_run_every_product_forward_and_backward_as_the_deterministic_op():
    import tensorflow as tf

    from pipeline.model.layers import matmul

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((8, 773), dtype=np.float32))  # a sum Eigen would cut by L1 size
    w = tf.constant(rng.standard_normal((773, 7), dtype=np.float32))

    @tf.function  # as Keras's fit runs it
    def forward_backward(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            product = matmul(a, b)
            loss = tf.reduce_sum(product * product)
        return (product, *tape.gradient(loss, [a, b]))

    y, dx, dw = forward_backward(x, w)
    x64, w64 = x.numpy().astype(np.float64), w.numpy().astype(np.float64)
    np.testing.assert_allclose(y.numpy(), x64 @ w64, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dx.numpy(), 2 * (x64 @ w64) @ w64.T, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(dw.numpy(), 2 * x64.T @ (x64 @ w64), rtol=1e-3, atol=1e-2)
    graph = forward_backward.get_concrete_function(x, w).graph
    products = [op.type for op in graph.get_operations() if "MatMul" in op.type]
    assert products.count("DetMatMul") == 3 and set(products) == {"DetMatMul"}, products


def test_portable_orthogonal_is_orthonormal_and_plain_float64_arithmetic():
    from pipeline.model.layers import PortableOrthogonal, gram_schmidt

    a = np.random.default_rng(1).standard_normal((40, 12))
    q = gram_schmidt(a)
    np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-12)
    r = q.T @ a  # upper triangular with a positive diagonal, as QR's R with the sign fix
    np.testing.assert_allclose(np.tril(r, -1), 0, atol=1e-10)
    assert (np.diag(r) > 0).all()
    w = np.asarray(PortableOrthogonal(seed=3)((16, 64)))
    np.testing.assert_allclose(w @ w.T, np.eye(16), atol=1e-5)
    assert np.array_equal(w, np.asarray(PortableOrthogonal(seed=3)((16, 64))))


# --- the same bytes whatever the machine or the environment -------------------------------------------


MODELS = ("mnist", "fable")


def model_md5s(project, models=MODELS) -> dict[str, str]:
    return {m: hashlib.md5((project.root / f"models/{m}.keras").read_bytes()).hexdigest() for m in models}


def train_stages(project, models=MODELS, env_extra=None, prefix=()) -> dict:
    """Train ``models`` again in ``project`` (a copy of the trained project) with the train stage; each process."""
    return {
        model: project.run(
            *prefix, sys.executable, "-m", "pipeline.stages.train", model, env_extra=env_extra, timeout=1800
        )
        for model in models
    }


def train(project, models=MODELS, env_extra=None, prefix=()) -> dict[str, str]:
    """:func:`train_stages`, then the models' md5s."""
    train_stages(project, models, env_extra, prefix)
    return model_md5s(project, models)


@pytest.mark.parametrize("setting", ["ONEDNN_MAX_CPU_ISA=SSE41", "one core"])
def test_models_are_byte_identical_under_a_users_isa_cap_or_on_one_core(trained_project, trained_copy, setting):
    """The trained project's models, trained by `dvc repro` on every core the process may use; the same bytes on
    one core, or with a user's oneDNN cap below the CPU in the environment (portable overrides it, saying so:
    the other variables it overrides are test_portable_environment_…'s)."""
    if setting == "one core":
        trained = train(trained_copy, prefix=("taskset", "-c", str(min(os.sched_getaffinity(0)))))
    else:
        variable, value = setting.split("=")
        for model, stage in train_stages(trained_copy, env_extra={variable: value}).items():
            assert f"train {model}: ignoring {setting} from the environment" in stage.stderr, stage.stderr
        trained = model_md5s(trained_copy)
    assert trained == model_md5s(trained_project)


def test_portable_runs_no_onednn_kernel_and_native_does(trained_copy):
    """The kernel path, checked: a TensorFlow upgrade that routes portable products to oneDNN fails here."""
    verbose = {"ONEDNN_VERBOSE": "1"}
    portable = trained_copy.run(sys.executable, "-m", "pipeline.stages.train", "fable", env_extra=verbose)
    assert ",exec," not in portable.stdout + portable.stderr
    trained_copy.edit_params(lambda raw: raw["numerics"].update(mode="native"))
    native = trained_copy.run(sys.executable, "-m", "pipeline.stages.train", "fable", env_extra=verbose)
    assert ",exec,cpu," in native.stdout + native.stderr


# The train stage's training and saving (pipeline.training.loop.train, pipeline.model.saving) without its MLflow
# run: under emulation MLflow's logging takes longer than the training, and it has no part in the bytes.
TRAIN_WITHOUT_TRACKING = """
from pipeline.config import load_params
from pipeline.model.numerics import pin_for
from pipeline.tasks.registry import get_task
params = load_params()
pin_for(params, "mnist", "train mnist")
from pipeline.model.saving import save_model
from pipeline.training.loop import train
save_model(train(get_task("mnist"), params), params.paths_of("mnist").model)
"""


@pytest.mark.minutes(1.5)
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="qemu-user is not installed (make test installs it)")
def test_the_model_is_byte_identical_on_another_cpu_emulated_by_qemu(trained_project, trained_copy):
    """An Intel Haswell (AVX2, no AVX-512, 32 KB L1 data cache), emulated: the op's cpuid dispatch picks its AVX2
    path and TensorFlow's other kernels run on another CPU; the same model bytes as the trained project's `dvc
    repro` on this CPU. The MNIST model (batch slices, Adam) only: TensorFlow alone takes 40-80 s to import under
    emulation, and the fable model runs the same two ops, whose AVX2 and scalar paths tests/test_detgemm.py holds
    to the AVX-512 bits on the host."""
    (trained_copy.root / "models/mnist.keras").unlink()
    trained_copy.run("qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", TRAIN_WITHOUT_TRACKING, timeout=1800)
    assert model_md5s(trained_copy, ("mnist",)) == model_md5s(trained_project, ("mnist",))
