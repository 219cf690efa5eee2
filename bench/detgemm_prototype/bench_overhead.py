"""Per-op fixed cost inside tf.function (1x1 @ 1x1, 16 ops per call), same harness as bench_tf."""
import os
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"; os.environ["TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"] = "false"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import sys, time, numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1); tf.config.threading.set_inter_op_parallelism_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detgemm import det_matmul
As = [tf.constant([[float(i)]]) for i in range(16)]; B = tf.constant([[2.0]])
fe = tf.function(lambda As, B: [tf.linalg.matmul(a, B) for a in As])
fd = tf.function(lambda As, B: [det_matmul(a, B) for a in As])
fi = tf.function(lambda As, B: [a for a in As])
for f in (fe, fd, fi): f(As, B)
res = {"eigen": [], "det": [], "identity": []}
for _ in range(7):
    for k, f in (("eigen", fe), ("det", fd), ("identity", fi)):
        t0 = time.perf_counter()
        for _ in range(2000): f(As, B)
        res[k].append((time.perf_counter() - t0) / 2000)
for k, v in res.items(): print(f"{k:9s} per call (16 ops): {np.median(v)*1e6:.1f} us -> {np.median(v)/16*1e6:.2f} us/op")
