"""Python side of the DetMatMul custom op: loading + gradient registration.

Import AFTER setting the portable env vars (TF_ENABLE_ONEDNN_OPTS=0 etc.) if
this is the first TensorFlow import of the process."""
import os

import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))
_mod = tf.load_op_library(os.path.join(_HERE, "detgemm_op.so"))
det_matmul = _mod.det_mat_mul  # det_matmul(a, b, transpose_a=False, transpose_b=False, isa="auto")


def _grads(a, b, g, ta, tb, isa):
    """dA, dB for C = op(A) @ op(B), each again one DetMatMul (same rules as
    TF's MatMul gradient; rank-3 batched inputs work unchanged)."""
    mm = lambda x, y, tx, ty: det_matmul(x, y, transpose_a=tx, transpose_b=ty, isa=isa)
    if not ta and not tb:
        return mm(g, b, False, True), mm(a, g, True, False)
    if not ta and tb:
        return mm(g, b, False, False), mm(g, a, True, False)
    if ta and not tb:
        return mm(b, g, False, True), mm(a, g, False, False)
    return mm(b, g, True, True), mm(g, a, True, True)


# Option 1: register for the op type -> works for GradientTape and graph-mode
# tf.gradients on any DetMatMul node, no wrapper needed.
@tf.RegisterGradient("DetMatMul")
def _det_matmul_grad(op, grad):
    isa = op.get_attr("isa")
    isa = isa.decode() if isinstance(isa, bytes) else isa
    return _grads(op.inputs[0], op.inputs[1], grad,
                  op.get_attr("transpose_a"), op.get_attr("transpose_b"), isa)


# Option 2: tf.custom_gradient wrapper (equivalent; handy if one prefers not
# to rely on the global registry, or wants to add e.g. a K-cut policy here).
def det_matmul_cg(a, b, transpose_a=False, transpose_b=False, isa="auto"):
    @tf.custom_gradient
    def _f(a, b):
        c = det_matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b, isa=isa)
        def grad(g):
            return _grads(a, b, g, transpose_a, transpose_b, isa)
        return c, grad
    return _f(a, b)
