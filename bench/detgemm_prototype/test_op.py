"""TF op test (fresh process): portable env, 1 intra-op thread.
 - DetMatMul isa=auto/avx512/avx2/scalar byte-identical, == ctypes kernel, vs float64
 - batched [28x128x128]^T @ [28x128x512] == per-slice
 - gradients (RegisterGradient and custom_gradient) vs float64 reference."""
import os
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ["TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"] = "false"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import hashlib, sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detgemm import det_matmul, det_matmul_cg
from shapes import SHAPES, EXTRA, make_inputs
import test_capi

ok = True
print("TF", tf.__version__)
for si, (name, ta, tb, M, N, K) in enumerate(SHAPES + EXTRA):
    A, B = make_inputs(ta, tb, M, N, K, seed=1000 + si)  # same seeds as test_capi 'all'
    hs = {}
    for isa in ["auto", "avx512", "avx2", "scalar"]:
        f = tf.function(lambda a, b, isa=isa: det_matmul(a, b, transpose_a=ta, transpose_b=tb, isa=isa))
        C = f(tf.constant(A), tf.constant(B)).numpy()
        hs[isa] = hashlib.sha256(C.tobytes()).hexdigest()[:16]
    Cc, _ = test_capi.run("auto", ta, tb, A, B, M, N)
    hs["ctypes"] = hashlib.sha256(Cc.tobytes()).hexdigest()[:16]
    ref = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
    rel = np.max(np.abs(C - ref)) / np.max(np.abs(ref))
    Ctf = tf.linalg.matmul(A, B, transpose_a=ta, transpose_b=tb).numpy()
    rel_tf = np.max(np.abs(Ctf - ref)) / np.max(np.abs(ref))
    same = len(set(hs.values())) == 1
    ok &= same and rel < 1e-5
    print(f"{name:16s} ta={ta:d} tb={tb:d} {M}x{N}x{K}: identical={same} sha={hs['auto']} "
          f"maxabs/max|ref|: det={rel:.2e} eigen={rel_tf:.2e} det==eigen bits: {np.array_equal(C, Ctf)}")

# batched per-step weight gradient shape: [28,128,128]^T @ [28,128,512]
rng = np.random.default_rng(0)
X = rng.standard_normal((28, 128, 128)).astype(np.float32)
G = rng.standard_normal((28, 128, 512)).astype(np.float32)
hb = {}
for isa in ["auto", "avx2", "scalar"]:
    Cb = tf.function(lambda x, g, isa=isa: det_matmul(x, g, transpose_a=True, isa=isa))(X, G).numpy()
    hb[isa] = hashlib.sha256(Cb.tobytes()).hexdigest()[:16]
per = np.stack([det_matmul(X[t], G[t], transpose_a=True).numpy() for t in range(28)])
refb = np.einsum("tki,tkj->tij", X.astype(np.float64), G.astype(np.float64))
bsame = len(set(hb.values())) == 1 and np.array_equal(per, Cb)
ok &= bsame
print(f"batched 28x[128x128]^T@[128x512]: isa-identical+per-slice-identical={bsame} sha={hb['auto']} "
      f"rel={np.max(np.abs(Cb-refb))/np.max(np.abs(refb)):.2e}")

# gradients
for ta in (False, True):
    for tb in (False, True):
        M, N, K = 13, 17, 11
        A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        W = rng.standard_normal((M, N)).astype(np.float32)  # loss = sum(W * C)
        a64, b64 = tf.constant(A, tf.float64), tf.constant(B, tf.float64)
        with tf.GradientTape() as t:
            t.watch([a64, b64])
            l = tf.reduce_sum(W * tf.linalg.matmul(a64, b64, transpose_a=ta, transpose_b=tb))
        ra, rb = t.gradient(l, [a64, b64])
        for label, fn in [("RegisterGradient", det_matmul), ("custom_gradient", det_matmul_cg)]:
            a, b = tf.constant(A), tf.constant(B)
            with tf.GradientTape() as t:
                t.watch([a, b])
                l = tf.reduce_sum(W * fn(a, b, transpose_a=ta, transpose_b=tb))
            da, db = t.gradient(l, [a, b])
            ea = np.max(np.abs(da.numpy() - ra.numpy())) / np.max(np.abs(ra.numpy()))
            eb = np.max(np.abs(db.numpy() - rb.numpy())) / np.max(np.abs(rb.numpy()))
            ok &= ea < 1e-5 and eb < 1e-5
            print(f"grad ta={ta:d} tb={tb:d} {label:16s} dA rel={ea:.1e} dB rel={eb:.1e}")

# graph-mode: the gradient graph contains only DetMatMul (no MatMul)
@tf.function
def step(a, b):
    with tf.GradientTape() as t:
        t.watch([a, b])
        l = tf.reduce_sum(det_matmul(a, b, transpose_b=True))
    return t.gradient(l, [a, b])
g = step.get_concrete_function(tf.TensorSpec([128, 512]), tf.TensorSpec([128, 512])).graph
types = sorted({op.type for op in g.get_operations() if "MatMul" in op.type})
print("matmul-like op types in tf.function gradient graph:", types)
# batched gradient
with tf.GradientTape() as t:
    x, gg = tf.constant(X[:3]), tf.constant(G[:3])
    t.watch([x, gg])
    l = tf.reduce_sum(det_matmul(x, gg, transpose_a=True) ** 2)
dx, dg = t.gradient(l, [x, gg])
print("batched grad shapes:", dx.shape, dg.shape)
print("ALL_OK" if ok else "FAILURES")
