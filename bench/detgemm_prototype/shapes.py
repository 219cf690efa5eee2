"""Shapes of interest: (name, transpose_a, transpose_b, M, N, K) for C[MxN] = op(A)[MxK] @ op(B)[KxN]."""
SHAPES = [
    ("fwd_x@W_28",        False, False, 128, 512, 28),
    ("fwd_h@U_128",       False, False, 128, 512, 128),
    ("fwd_h@Wout_10",     False, False, 128, 10, 128),
    ("inf_x@W_1000x28",   False, False, 1000, 512, 28),
    ("inf_h@U_1000x128",  False, False, 1000, 512, 128),
    ("bwd_g@U^T_K512",    False, True, 128, 128, 512),
    ("bwd_h^T@g_128",     True, False, 128, 512, 128),
    ("bwd_x^T@g_28",      True, False, 28, 512, 128),
]
# extra edge / transpose coverage (odd sizes, both transposes)
EXTRA = [
    ("odd_nn", False, False, 37, 53, 19),
    ("odd_nt", False, True, 37, 53, 19),
    ("odd_tn", True, False, 37, 53, 19),
    ("odd_tt", True, True, 37, 53, 19),
    ("tt_128", True, True, 128, 512, 128),
    ("k1", False, False, 5, 7, 1),
    ("n1", False, True, 13, 1, 300),
]
SMALL = [  # for qemu (slow): a few small shapes, all transposes, edge tiles
    ("q_nn", False, False, 29, 70, 28),
    ("q_nt", False, True, 29, 70, 64),
    ("q_tn", True, False, 29, 70, 33),
    ("q_tt", True, True, 13, 10, 17),
    ("q_n10", False, False, 32, 10, 128),
]


def make_inputs(ta, tb, M, N, K, seed):
    """Exactly reproducible float32 inputs on any CPU (integer RNG only, exact
    scaling by powers of two; no libm / SIMD float code involved)."""
    import numpy as np
    rng = np.random.Generator(np.random.PCG64(seed))
    def gen(shape):
        m = rng.integers(-(1 << 23), 1 << 23, size=shape, dtype=np.int64)
        e = rng.integers(-6, 3, size=shape, dtype=np.int64)
        return np.ldexp(m.astype(np.float64) / (1 << 23), e).astype(np.float32)
    A = gen((K, M) if ta else (M, K))
    B = gen((N, K) if tb else (K, N))
    return A, B
