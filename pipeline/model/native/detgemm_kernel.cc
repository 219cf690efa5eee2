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
// Packing: pure data movement into zero-padded panels, so that a micro-kernel reads its operand
// contiguously, in the order it uses it. Padded rows and columns are separate chains whose results are
// discarded: they cannot influence any valid element.
//  B panels (columns p*NR...):  Bp[p][k][c] = opB(B)[k, p*NR + c]   (every product)
//  A panel (rows i0..i0+MR):    Ap[k][r] = opA(A)[i0 + r, k]         (only a last, partial row panel;
//                               whole panels are read in place: see RunTiled)
// ---------------------------------------------------------------------------

template <int W>
void PackWhole(const float* src, int64_t ld, int64_t K, float* dst) {
  for (int64_t k = 0; k < K; ++k) __builtin_memcpy(dst + k * W, src + k * ld, 4 * W);
}

// dst[k * width + c] = src[k * ld + c] for c < cols, 0 up to width (k < K). A whole panel of a blocking's
// width is one fixed-size copy a row (an inference slice's gates 512 x 1000 x 157 on AVX2: 91.8 -> 93.0 GFLOP/s
// against a loop of runtime length, 2-core AMD EPYC Zen 2).
void PackStraight(const float* src, int64_t ld, int cols, int64_t K, int width, float* dst) {
  if (cols == width) switch (width) {
      case 6: return PackWhole<6>(src, ld, K, dst);
      case 8: return PackWhole<8>(src, ld, K, dst);
      case 14: return PackWhole<14>(src, ld, K, dst);
      case 16: return PackWhole<16>(src, ld, K, dst);
      case 32: return PackWhole<32>(src, ld, K, dst);
      default: break;
    }
  for (int64_t k = 0; k < K; ++k) {
    const float* s = src + k * ld;
    float* d = dst + k * width;
    for (int c = 0; c < cols; ++c) d[c] = s[c];  // a loop, not memcpy: a call costs more than 16 floats
    for (int c = cols; c < width; ++c) d[c] = 0.0f;
  }
}

// dst[k * width + r] = src[r * ld + k] for r < rows, 0 up to width (k < K): 4 x 4 blocks transposed in
// SSE registers (every x86-64 CPU has SSE), the edges one by one.
void PackTransposed(const float* src, int64_t ld, int rows, int64_t K, int width, float* dst) {
  for (int64_t k = 0; k < K; ++k)
    for (int r = rows; r < width; ++r) dst[k * width + r] = 0.0f;
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* s = src + r * ld;
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      __m128 x0 = _mm_loadu_ps(s + k), x1 = _mm_loadu_ps(s + ld + k);
      __m128 x2 = _mm_loadu_ps(s + 2 * ld + k), x3 = _mm_loadu_ps(s + 3 * ld + k);
      _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
      _mm_storeu_ps(dst + k * width + r, x0);
      _mm_storeu_ps(dst + (k + 1) * width + r, x1);
      _mm_storeu_ps(dst + (k + 2) * width + r, x2);
      _mm_storeu_ps(dst + (k + 3) * width + r, x3);
    }
    for (; k < K; ++k)
      for (int i = 0; i < 4; ++i) dst[k * width + r + i] = s[i * ld + k];
  }
  for (; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) dst[k * width + r] = src[r * ld + k];
}

// Every row panel of a transposed A (K x M, row-major) packed, panel after panel: dst[p][k][r] =
// A[k, p*MR + r], the last panel zero-padded. Whole panels by k, so that each row of A is read once, in
// order, and each panel's MR floats are one fixed-size copy (a scalar loop per panel cost about a fifth
// of an LSTM step's product on a Zen 2).
template <int MR>
void PackPanelsTransposed(const float* A, int64_t lda, int64_t M, int64_t K, float* dst) {
  const int64_t whole = M / MR;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t p = 0; p < whole; ++p) __builtin_memcpy(dst + (p * K + k) * MR, A + k * lda + p * MR, 4 * MR);
  if (whole * MR < M) PackStraight(A + whole * MR, lda, static_cast<int>(M - whole * MR), K, MR, dst + whole * MR * K);
}

// ---------------------------------------------------------------------------
// Micro-kernels: C tile (MR x NR, leading dim ldc) from MR rows of opA(A) and a B panel [K][NR]:
// acc starts at +0.0f, then acc = fma(a, b, acc) for k = 0..K-1 in order.
// ---------------------------------------------------------------------------
template <int MR, int NV, bool ROWA>
__attribute__((target("avx512f"))) void KernAvx512(const float* __restrict Ap, int64_t lda,
                                                   const float* __restrict Bp, int64_t ldb, int64_t K,
                                                   float* __restrict C, int64_t ldc) {
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(Bp + k * ldb + 16 * v);
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(ROWA ? Ap[r * lda + k] : Ap[k * lda + r]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
}

template <int MR, int NV, bool ROWA>
__attribute__((target("avx2,fma"))) void KernAvx2(const float* __restrict Ap, int64_t lda,
                                                  const float* __restrict Bp, int64_t ldb, int64_t K,
                                                  float* __restrict C, int64_t ldc) {
  __m256 acc[MR][NV];
  // The tile's lines of C asked for (to write) before its sums, which write them once at the end: an MNIST
  // training step 26.8 -> 26.0 ms on a 2-core AMD EPYC Zen 2 (medians of 6 runs, old and new alternating).
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r) {
    __builtin_prefetch(C + r * ldc, 1, 3);
    __builtin_prefetch(C + r * ldc + 8 * NV - 1, 1, 3);
  }
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m256 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(Bp + k * ldb + 8 * v);
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(ROWA ? Ap + r * lda + k : Ap + k * lda + r);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(C + r * ldc + 8 * v, acc[r][v]);
}

using KernFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t);
using PackFn = void (*)(const float*, int64_t, int64_t, int64_t, float*);

struct KernDesc {
  KernFn fn_row;  // A element (r,k) at A[r*lda + k]  (transpose_a = false, in place)
  KernFn fn_col;  // A element (r,k) at A[k*lda + r]  (transpose_a = true, or a packed panel)
  int MR;
  int NR;
  PackFn pack_transposed_a;  // PackPanelsTransposed<MR>
};
constexpr int kMaxTile = 448;  // floats: >= MR * NR of every blocking below

// Thread-local packing buffers (the op is single-threaded per call).
struct Scratch {
  std::vector<float> a, b;
};
Scratch& GetScratch() {
  static thread_local Scratch s;
  return s;
}

// How RunTiled reads A's whole row panels: in place, each copied to [K][MR] before its row of tiles, or
// all packed first (a transposed A only) and the tiles then done column panel by column panel.
enum class APanels { kInPlace, kPackEach, kPackAllFirst };

void RunTiled(const KernDesc& kd, bool direct_b, APanels a_panels, bool ta, bool tb, int64_t M, int64_t N,
              int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc) {
  const int MR = kd.MR, NR = kd.NR;
  const int64_t mp = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
  const bool all_first = ta && a_panels == APanels::kPackAllFirst;
  Scratch& s = GetScratch();
  const size_t a_size = static_cast<size_t>(all_first ? mp * MR * K : MR * K);
  if (s.a.size() < a_size) s.a.resize(a_size);
  if (s.b.size() < static_cast<size_t>(np * NR * K)) s.b.resize(np * NR * K);
  // B packed once (a transposed B through 4 x 4 register transposes): read in order by every row panel.
  for (int64_t jp = 0; jp < np; ++jp) {
    const int64_t j0 = jp * NR;
    const int cols = static_cast<int>(N - j0 < NR ? N - j0 : NR);
    float* bp = s.b.data() + jp * K * NR;
    if (direct_b && cols == NR) continue;
    if (tb) PackTransposed(B + j0 * ldb, ldb, cols, K, NR, bp);
    else PackStraight(B + j0, ldb, cols, K, NR, bp);
  }
  alignas(64) float tile[kMaxTile];
  const auto tile_product = [&](KernFn fn, const float* ap, int64_t alda, int64_t i0, int64_t jp) __attribute__((always_inline)) {
    const int64_t j0 = jp * NR;
    const int64_t rows = M - i0 < MR ? M - i0 : MR, cols = N - j0 < NR ? N - j0 : NR;
    const bool in_place = direct_b && cols == NR;
    const float* bp = in_place ? B + j0 : s.b.data() + jp * K * NR;
    const int64_t bld = in_place ? ldb : NR;
    if (rows == MR && cols == NR) {
      fn(ap, alda, bp, bld, K, C + i0 * ldc + j0, ldc);
    } else {
      fn(ap, alda, bp, bld, K, tile, NR);
      for (int64_t r = 0; r < rows; ++r) std::memcpy(C + (i0 + r) * ldc + j0, tile + r * NR, sizeof(float) * cols);
    }
  };
  if (all_first) {
    // A transposed A's panels are MR floats of rows lda floats apart (often a multiple of 2 KiB: a few L1
    // sets): packed once, a panel is then read in order from L2 while one column panel of B stays in L1.
    kd.pack_transposed_a(A, lda, M, K, s.a.data());
    for (int64_t jp = 0; jp < np; ++jp)
      for (int64_t ip = 0; ip < mp; ++ip) tile_product(kd.fn_col, s.a.data() + ip * MR * K, MR, ip * MR, jp);
    return;
  }
  // Whole row panels of A are read in place: MR consecutive floats per k (transpose_a), or MR rows
  // (few, so that their pointers stay in registers and their streams in the prefetchers), unless
  // kPackEach: then each row panel is copied to [K][MR] first, which pays where it is read by many
  // column panels (transpose_a with a wide N).
  for (int64_t ip = 0; ip < mp; ++ip) {
    const int64_t i0 = ip * MR;
    const int rows = static_cast<int>(M - i0 < MR ? M - i0 : MR);
    const float* ap = ta ? A + i0 : A + i0 * lda;
    int64_t alda = lda;
    KernFn fn = ta ? kd.fn_col : kd.fn_row;
    if (rows < MR || a_panels != APanels::kInPlace) {  // the last rows (zero-padded to a whole panel), or every panel
      if (ta) PackStraight(ap, lda, rows, K, MR, s.a.data());
      else PackTransposed(ap, lda, rows, K, MR, s.a.data());
      ap = s.a.data(), alda = MR, fn = kd.fn_col;
    }
    for (int64_t jp = 0; jp < np; ++jp) tile_product(fn, ap, alda, i0, jp);
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

// Register blockings (MR rows x NR columns), measured fastest at the layers' shapes (docs/numerics.md:
// 2-core Intel Xeon with AVX-512, and AMD EPYC Zen 4). AVX-512 where N > 16: 14 x 32 (28 accumulators) for
// transpose_a (an LSTM step's gates: 196 GFLOP/s against 16 x 16's 143 on the Xeon), 8 x 32 otherwise; where
// N <= 16 (the fable's batch of 16; no zero columns) 16 x 16 for transpose_a, 8 x 16 otherwise. AVX2 6 x 16.
// Any blocking gives the same bits: it only decides which chains run side by side.
const KernDesc kAvx512Gates = {KernAvx512<14, 2, true>, KernAvx512<14, 2, false>, 14, 32, PackPanelsTransposed<14>};
const KernDesc kAvx512Columns = {KernAvx512<16, 1, true>, KernAvx512<16, 1, false>, 16, 16, PackPanelsTransposed<16>};
const KernDesc kAvx512Rows = {KernAvx512<8, 2, true>, KernAvx512<8, 2, false>, 8, 32, PackPanelsTransposed<8>};
const KernDesc kAvx512RowsNarrow = {KernAvx512<8, 1, true>, KernAvx512<8, 1, false>, 8, 16, PackPanelsTransposed<8>};
const KernDesc kAvx2Blocking = {KernAvx2<6, 2, true>, KernAvx2<6, 2, false>, 6, 16, PackPanelsTransposed<6>};
static_assert(14 * 32 <= kMaxTile && 16 * 16 <= kMaxTile && 6 * 16 <= kMaxTile, "tile buffer too small");

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
  // B is read in place (whole column panels) where N <= 16 unless transposed or its rows are a multiple
  // of 2 KiB apart (every k's load would then fall in the same few L1 sets), and for AVX2 also where A is
  // not transposed; else packed (14 x 32 and 8 x 32 ran 3-10% faster on packed panels). A transposed A
  // is packed where N >= 256 for AVX-512 (an inference batch's slice: 14 x 32 188 GFLOP/s packed, 164 in
  // place), where N >= 64 for AVX2; a narrower product reads each panel of A a few times only.
  const bool b_in_place = !tb && ldb % 512 != 0;
  if (isa == kAvx512) {
    const bool narrow = N <= 16;
    const KernDesc& blocking = narrow ? (ta ? kAvx512Columns : kAvx512RowsNarrow) : ta ? kAvx512Gates : kAvx512Rows;
    const APanels a_panels = ta && N >= 256 ? APanels::kPackEach : APanels::kInPlace;
    RunTiled(blocking, b_in_place && narrow, a_panels, ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  } else if (isa == kAvx2) {
    // A transposed A all packed first (2-core AMD EPYC Zen 2, an LSTM step's gates 512 x 128 x 157: 73 ->
    // 83 GFLOP/s against A in place; the evaluation slice's 512 x 1000 x 157: 90 -> 92 against each panel
    // packed in turn).
    const APanels a_panels = ta && N >= 64 ? APanels::kPackAllFirst : APanels::kInPlace;
    RunTiled(kAvx2Blocking, b_in_place && !ta, a_panels, ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  } else {
    GemmScalar(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  }
  return isa;
}

}  // namespace detgemm
