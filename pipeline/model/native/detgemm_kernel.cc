// Deterministic float32 GEMM: see detgemm_kernel.h for the numerical contract.
// Build with -O3 -ffp-contract=off, WITHOUT -ffast-math and WITHOUT -m<isa>
// flags: ISA-specific code is confined to target("...") functions and chosen
// at runtime, so one object serves every x86-64 CPU.
#include "detgemm_kernel.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <vector>

#if defined(__FAST_MATH__)
#error "detgemm must not be compiled with -ffast-math"
#endif

namespace detgemm {

namespace {

// ---------------------------------------------------------------------------
// Packing (ISA independent, pure data movement, zero padding).
//  Ap: [ceil(M/MR)][K][MR]   Ap[p][k][r] = opA(A)[p*MR + r, k]   (0 if row>=M)
//  Bp: [ceil(N/NR)][K][NR]   Bp[p][k][c] = opB(B)[k, p*NR + c]   (0 if col>=N)
// Padded rows/columns are separate lanes/chains and are discarded, so they
// cannot influence any valid output element.
// ---------------------------------------------------------------------------
void PackA(bool ta, int64_t M, int64_t K, const float* A, int64_t lda, int MR,
           float* Ap) {
  const int64_t mp = (M + MR - 1) / MR;
  for (int64_t p = 0; p < mp; ++p) {
    float* dst = Ap + p * K * MR;
    const int64_t i0 = p * MR;
    const int rows = static_cast<int>(M - i0 < MR ? M - i0 : MR);
    if (!ta) {
      for (int r = 0; r < rows; ++r) {
        const float* src = A + (i0 + r) * lda;
        for (int64_t k = 0; k < K; ++k) dst[k * MR + r] = src[k];
      }
      for (int r = rows; r < MR; ++r)
        for (int64_t k = 0; k < K; ++k) dst[k * MR + r] = 0.0f;
    } else {
      for (int64_t k = 0; k < K; ++k) {
        const float* src = A + k * lda + i0;
        float* d = dst + k * MR;
        std::memcpy(d, src, sizeof(float) * rows);
        for (int r = rows; r < MR; ++r) d[r] = 0.0f;
      }
    }
  }
}

void PackB(bool tb, int64_t N, int64_t K, const float* B, int64_t ldb, int NR,
           float* Bp) {
  const int64_t np = (N + NR - 1) / NR;
  for (int64_t p = 0; p < np; ++p) {
    float* dst = Bp + p * K * NR;
    const int64_t j0 = p * NR;
    const int cols = static_cast<int>(N - j0 < NR ? N - j0 : NR);
    if (!tb) {
      for (int64_t k = 0; k < K; ++k) {
        float* d = dst + k * NR;
        std::memcpy(d, B + k * ldb + j0, sizeof(float) * cols);
        for (int c = cols; c < NR; ++c) d[c] = 0.0f;
      }
    } else {
      for (int c = 0; c < cols; ++c) {
        const float* src = B + (j0 + c) * ldb;
        for (int64_t k = 0; k < K; ++k) dst[k * NR + c] = src[k];
      }
      for (int c = cols; c < NR; ++c)
        for (int64_t k = 0; k < K; ++k) dst[k * NR + c] = 0.0f;
    }
  }
}

// ---------------------------------------------------------------------------
// Micro-kernels: C tile (MR x NR, leading dim ldc) = Ap_panel^T-ish * Bp_panel
// acc starts at +0.0f, then acc = fma(a, b, acc) for k = 0..K-1 in order.
// ---------------------------------------------------------------------------
template <int MR, int NV, bool ROWA>
__attribute__((target("avx512f"))) void KernAvx512(const float* __restrict Ap, int64_t lda,
                                                   const float* __restrict Bp,
                                                   int64_t K,
                                                   float* __restrict C,
                                                   int64_t ldc) {
  constexpr int NR = 16 * NV;
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(Bp + k * NR + 16 * v);
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(ROWA ? Ap[r * lda + k] : Ap[k * lda + r]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
}

template <int MR, int NV, bool ROWA>
__attribute__((target("avx2,fma"))) void KernAvx2(const float* __restrict Ap, int64_t lda,
                                                  const float* __restrict Bp,
                                                  int64_t K,
                                                  float* __restrict C,
                                                  int64_t ldc) {
  constexpr int NR = 8 * NV;
  __m256 acc[MR][NV];
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m256 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(Bp + k * NR + 8 * v);
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(ROWA ? Ap + r * lda + k : Ap + k * lda + r);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      _mm256_storeu_ps(C + r * ldc + 8 * v, acc[r][v]);
}

using KernFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t);

struct KernDesc {
  KernFn fn_row;  // A element (r,k) at A[r*lda + k]  (transpose_a = false, unpacked)
  KernFn fn_col;  // A element (r,k) at A[k*lda + r]  (transpose_a = true, or packed panel)
  int MR;
  int NR;
};

// Thread-local packing buffers (the op is single-threaded per call).
struct Scratch {
  std::vector<float> a, b;
};
Scratch& GetScratch() {
  static thread_local Scratch s;
  return s;
}

void RunTiled(const KernDesc& kd, bool ta, bool tb, int64_t M, int64_t N,
              int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, float* C, int64_t ldc) {
  const int MR = kd.MR, NR = kd.NR;
  const int64_t mp = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
  Scratch& s = GetScratch();
  // A is NOT packed (kernels broadcast straight from A, row- or column-strided);
  // only a partial last row panel is copied into a zero-padded MR x K buffer.
  if (s.a.size() < static_cast<size_t>(MR * K)) s.a.resize(MR * K);
  if (s.b.size() < static_cast<size_t>(np * NR * K)) s.b.resize(np * NR * K);
  PackB(tb, N, K, B, ldb, NR, s.b.data());
  alignas(64) float tile[32 * 64];  // >= MR*NR for every variant below
  // A micro-panel (K*MR floats) stays in L1 across the inner j loop; the packed
  // B (K*N floats, <= 1 MiB for the shapes of interest) streams from L2.
  for (int64_t ip = 0; ip < mp; ++ip) {
    const int64_t i0 = ip * MR;
    const int64_t rows = M - i0 < MR ? M - i0 : MR;
    const float* ap;
    int64_t alda;
    KernFn fn;
    if (rows == MR) {
      ap = ta ? A + i0 : A + i0 * lda;
      alda = lda;
      fn = ta ? kd.fn_col : kd.fn_row;
    } else {
      PackA(ta, rows, K, ta ? A + i0 : A + i0 * lda, lda, MR, s.a.data());
      ap = s.a.data();
      alda = MR;
      fn = kd.fn_col;
    }
    for (int64_t jp = 0; jp < np; ++jp) {
      const int64_t j0 = jp * NR;
      const int64_t cols = N - j0 < NR ? N - j0 : NR;
      const float* bp = s.b.data() + jp * K * NR;
      if (rows == MR && cols == NR) {
        fn(ap, alda, bp, K, C + i0 * ldc + j0, ldc);
      } else {
        fn(ap, alda, bp, K, tile, NR);
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(C + (i0 + r) * ldc + j0, tile + r * NR,
                      sizeof(float) * cols);
      }
    }
  }
}

// Scalar reference path: identical per-element order, std::fma rounding.
void GemmScalar(bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                const float* A, int64_t lda, const float* B, int64_t ldb,
                float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) c[j] = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const float a = ta ? A[k * lda + i] : A[i * lda + k];
      if (!tb) {
        const float* b = B + k * ldb;
        for (int64_t j = 0; j < N; ++j) c[j] = std::fma(a, b[j], c[j]);
      } else {
        for (int64_t j = 0; j < N; ++j)
          c[j] = std::fma(a, B[j * ldb + k], c[j]);
      }
    }
  }
}

// Register blockings (MR rows x NR columns), chosen by N: the widest for most
// products, a narrow one for the logits (N <= 16 or 8). The prototype's tuning
// (bench/detgemm_prototype, removed) found these fastest; any blocking gives
// the same bits, since it only decides which chains run side by side.
const KernDesc kAvx512Wide[] = {
    {KernAvx512<12, 2, true>, KernAvx512<12, 2, false>, 12, 32},
    {KernAvx512<24, 1, true>, KernAvx512<24, 1, false>, 24, 16},
};
const KernDesc kAvx2Wide[] = {
    {KernAvx2<6, 2, true>, KernAvx2<6, 2, false>, 6, 16},
    {KernAvx2<12, 1, true>, KernAvx2<12, 1, false>, 12, 8},
};

Isa BestIsa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return kAvx2;
    return kScalar;
  }();
  return isa;
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case kScalar: return "scalar";
    case kAvx2: return "avx2";
    case kAvx512: return "avx512";
    default: return "auto";
  }
}

Isa ParseIsa(const char* name) {
  return !std::strcmp(name, "scalar") ? kScalar
       : !std::strcmp(name, "avx2")   ? kAvx2
       : !std::strcmp(name, "avx512") ? kAvx512
                                      : kAuto;
}

Isa ResolveIsa(Isa requested) {
  const Isa best = BestIsa();
  if (requested == kAuto || requested > best) return best;
  return requested;
}

Isa Gemm(Isa isa, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
         const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
         int64_t ldc) {
  isa = ResolveIsa(isa);
  if (M <= 0 || N <= 0) return isa;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = 0.0f;
    return isa;
  }
  const FixedMxcsr fixed;
  if (isa == kAvx512) {
    RunTiled(kAvx512Wide[N <= 16 ? 1 : 0], ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  } else if (isa == kAvx2) {
    RunTiled(kAvx2Wide[N <= 8 ? 1 : 0], ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  } else {
    GemmScalar(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  }
  return isa;
}

}  // namespace detgemm
