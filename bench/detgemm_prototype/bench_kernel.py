"""Raw kernel GFLOP/s via ctypes (no TF): median of repeats. usage: bench_kernel.py isa [reps]
(DETGEMM_VARIANT env picks a register-blocking variant, for tuning)."""
import ctypes, os, sys, time
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shapes import SHAPES
import test_capi
lib = test_capi.lib
I64, P = ctypes.c_int64, ctypes.c_void_p
lib.detgemm_time.argtypes = [ctypes.c_int] * 3 + [I64] * 3 + [P, I64, P, I64, P, I64, I64]
lib.detgemm_time.restype = I64
isa = sys.argv[1] if len(sys.argv) > 1 else "auto"
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
res = []
for name, ta, tb, M, N, K in SHAPES:
    A, B = test_capi.make_inputs(ta, tb, M, N, K, 1)
    C = np.empty((M, N), np.float32)
    args = (test_capi.ISA[isa], ta, tb, M, N, K, A.ctypes.data, A.shape[1], B.ctypes.data, B.shape[1], C.ctypes.data, N)
    flop = 2.0 * M * N * K
    iters = max(1, int(0.05 * 100e9 / flop))  # ~50 ms per rep at 100 GFLOP/s
    lib.detgemm_time(*args, iters)
    ts = sorted(lib.detgemm_time(*args, iters) / iters for _ in range(reps))
    g = flop / ts[len(ts) // 2]
    res.append(g)
    print(f"{name:18s} {M}x{N}x{K} ta={ta:d} tb={tb:d} {isa}: {g:7.1f} GFLOP/s (median of {reps}, {ts[len(ts)//2]/1e3:.1f} us)")
