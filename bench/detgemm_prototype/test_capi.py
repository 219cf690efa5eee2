"""Kernel test via ctypes (no TensorFlow): correctness vs float64 and
byte-identity of the scalar / AVX2 / AVX-512 paths. Prints one sha256 per shape
and ISA so runs on different (emulated) CPUs can be compared.
usage: python test_capi.py [small|all] [isa,isa,...]   isa in auto,scalar,avx2,avx512"""
import ctypes, hashlib, json, os, sys
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shapes import SHAPES, EXTRA, SMALL, make_inputs

lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "libdetgemm.so"))
I64, P = ctypes.c_int64, ctypes.c_void_p
lib.detgemm_sgemm.argtypes = [ctypes.c_int] * 3 + [I64] * 3 + [P, I64, P, I64, P, I64]
lib.detgemm_resolve.argtypes = [ctypes.c_int]
ISA = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}
NAME = {v: k for k, v in ISA.items()}


def run(isa, ta, tb, A, B, M, N):
    A = np.ascontiguousarray(A); B = np.ascontiguousarray(B)
    K = A.shape[0] if ta else A.shape[1]
    C = np.empty((M, N), np.float32)
    used = lib.detgemm_sgemm(ISA[isa], ta, tb, M, N, K, A.ctypes.data, A.shape[1],
                             B.ctypes.data, B.shape[1], C.ctypes.data, N)
    return C, NAME[used]


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    isas = (sys.argv[2] if len(sys.argv) > 2 else "scalar,avx2,avx512,auto").split(",")
    shapes = SMALL if which == "small" else SHAPES + EXTRA + SMALL
    print("auto resolves to:", NAME[lib.detgemm_resolve(0)])
    out, ok = {}, True
    for si, (name, ta, tb, M, N, K) in enumerate(shapes):
        A, B = make_inputs(ta, tb, M, N, K, seed=1000 + si)
        noref = os.environ.get("NOREF") == "1"  # numpy/OpenBLAS matmul SIGILLs under qemu -cpu SandyBridge
        if not noref:
            ref = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
            absref = np.abs(A.T if ta else A).astype(np.float64) @ np.abs(B.T if tb else B).astype(np.float64)
        hin = hashlib.sha256(A.tobytes() + B.tobytes()).hexdigest()[:12]
        hs = {}
        for isa in isas:
            C, used = run(isa, ta, tb, A, B, M, N)
            h = hashlib.sha256(C.tobytes()).hexdigest()[:16]
            # error relative to sum |a||b| (the natural bound for a K-term sum)
            err = float("nan") if noref else float(np.max(np.abs(C - ref) / np.maximum(absref, 1e-30)))
            hs[f"{isa}->{used}"] = h
            if err > K * 2 ** -24 * 1.01:
                ok = False
            print(f"{name:18s} ta={ta:d} tb={tb:d} {M}x{N}x{K} in={hin} {isa:6s}->{used:6s} "
                  f"sha256={h} maxerr/sum|ab|={err:.2e}")
        same = len(set(hs.values())) == 1
        ok &= same
        print(f"{'':18s} identical across {list(hs)}: {same}")
        out[name] = hs
    print("ALL_OK" if ok else "FAILURES")
    with open(os.environ.get("RESULT_JSON", "/dev/null"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
