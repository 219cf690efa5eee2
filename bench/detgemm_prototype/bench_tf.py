"""tf.linalg.matmul (Eigen, portable env) vs DetMatMul inside tf.function, 1 intra-op thread.
Each tf.function call runs R matmuls with R distinct first operands (shared second operand,
like weights) so nothing can be CSE'd; time per matmul = wall / (calls*R). Variants are
timed round-robin in the same process; median over repeats."""
import os
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ["TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"] = "false"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detgemm import det_matmul
from shapes import SHAPES

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
R = 32
BATCHED = [("bw_batched_28x(128^T@512)", True, False, 128, 512, 128, 28)]
rows = []
for spec in [s + (None,) for s in SHAPES] + BATCHED:
    name, ta, tb, M, N, K, batch = spec
    rng = np.random.default_rng(0)
    pre = (batch,) if batch else ()
    nA = R if not batch else 4
    # ONE stacked argument, unstacked inside the graph (Unpack on axis 0 aliases the buffer):
    # passing R separate tensors costs ~10-20 us each of Python argument handling per call.
    As = tf.constant(rng.standard_normal((nA,) + pre + ((K, M) if ta else (M, K))).astype(np.float32))
    B = tf.constant(rng.standard_normal(pre + ((N, K) if tb else (K, N))).astype(np.float32))
    # each function returns ONE scalar (sum of one element of every product): returning R
    # tensors costs ~15 us each in Python; "overhead" = same graph without the matmuls.
    red = lambda outs: tf.add_n([tf.reshape(o, [-1])[0] for o in outs])
    fns = {
        "eigen": tf.function(lambda As, B: red([tf.linalg.matmul(a, B, transpose_a=ta, transpose_b=tb) for a in tf.unstack(As)])),
        "det_avx512": tf.function(lambda As, B: red([det_matmul(a, B, transpose_a=ta, transpose_b=tb, isa="avx512") for a in tf.unstack(As)])),
        "det_avx2": tf.function(lambda As, B: red([det_matmul(a, B, transpose_a=ta, transpose_b=tb, isa="avx2") for a in tf.unstack(As)])),
        "overhead": tf.function(lambda As, B: red([a for a in tf.unstack(As)]) + tf.reshape(B, [-1])[0]),
    }
    flop = 2.0 * M * N * K * (batch or 1) * nA
    calls = max(2, int(0.04 * 150e9 / flop))  # ~40 ms per timing at 150 GFLOP/s
    for f in fns.values():
        for _ in range(3): f(As, B)
    t = {k: [] for k in fns}
    for _ in range(REPS):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls): out = f(As, B)
            t[k].append((time.perf_counter() - t0) / calls)
    ov = np.median(t.pop("overhead"))
    g = {k: flop / np.median(v) / 1e9 for k, v in t.items()}           # including harness overhead
    gs = {k: flop / max(np.median(v) - ov, 1e-9) / 1e9 for k, v in t.items()}  # overhead subtracted
    rows.append((name, M, N, K, ta, tb, batch, g, gs, ov))
    print(f"{name:26s} {M:4d}x{N:3d}x{K:3d} ta={ta:d} tb={tb:d}{' b='+str(batch) if batch else ''}: "
          f"eigen {g['eigen']:6.1f}  det512 {g['det_avx512']:6.1f} ({g['det_avx512']/g['eigen']:.2f}x)  "
          f"det_avx2 {g['det_avx2']:6.1f} ({g['det_avx2']/g['eigen']:.2f}x) | overhead-subtracted ({ov*1e6/nA:.1f} us/op): "
          f"eigen {gs['eigen']:6.1f} det512 {gs['det_avx512']:6.1f} ({gs['det_avx512']/gs['eigen']:.2f}x) "
          f"det_avx2 {gs['det_avx2']:6.1f} ({gs['det_avx2']/gs['eigen']:.2f}x)", flush=True)
