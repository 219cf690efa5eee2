// Deterministic (CPU-independent) float32 GEMM kernel.
//
// C[i,j] = sum_{k=0..K-1} opA(A)[i,k] * opB(B)[k,j], computed for EVERY output
// element as one in-order fused-multiply-add chain:
//     acc = +0.0f;  for k in 0..K-1:  acc = fma(a[i,k], b[k,j], acc);
// Vectorisation is across output columns j only (each SIMD lane is one
// independent chain) and register blocking is over i and j only, so the
// AVX-512F, AVX2+FMA and scalar (std::fma) paths produce identical bits.
// No sum is cut into blocks (by cache size or otherwise), and a call runs on
// the calling thread only, so nothing about the CPU but its instruction set
// enters, and that only chooses how many chains run side by side.
// Subnormals: the product runs with flush-to-zero and denormals-are-zero on,
// whatever the caller's MXCSR (restored after): see detgemm_kernel.cc.
//
// No TensorFlow dependency: the TF op is detgemm_op.cc (pipeline/model/detgemm.py
// loads it; the Makefile builds both into pipeline/model/native/_detgemm.so).
#pragma once
#include <xmmintrin.h>

#include <cstdint>

namespace detgemm {

// MXCSR for the duration of one call of the library's kernels (a product, an LSTM cell): flush-to-zero
// and denormals-are-zero on, round to nearest, every exception masked. The SIMD FMAs (and the scalar
// path's fmaf, an FMA instruction on every CPU with FMA) round as MXCSR says,
// so a subnormal input or partial sum would otherwise give bits that depend on
// the calling thread's state. FTZ and DAZ on is what TensorFlow's executor sets
// for its own kernels (port::ScopedFlushDenormal), so the kernels round like
// every other operation of the graph; the caller's MXCSR is restored after.
constexpr unsigned kMxcsr = 0x8000u /* FTZ */ | 0x1F80u /* masks */ | 0x0040u /* DAZ */;
class FixedMxcsr {
 public:
  FixedMxcsr() : saved_(_mm_getcsr()) { _mm_setcsr(kMxcsr); }
  ~FixedMxcsr() { _mm_setcsr(saved_ | (_mm_getcsr() & 0x3Fu) /* keep raised flags */); }
  FixedMxcsr(const FixedMxcsr&) = delete;
  FixedMxcsr& operator=(const FixedMxcsr&) = delete;

 private:
  const unsigned saved_;
};


enum Isa : int { kAuto = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3 };

// Which ISA "auto" resolves to on this CPU (cpuid): AVX-512F, else AVX2 with
// FMA, else scalar. A forced ISA (the op's isa attr, for tests) that the CPU
// lacks falls back to the best one it has.
Isa ResolveIsa(Isa requested);
const char* IsaName(Isa isa);
// The op attr's and the test entry points' names ("auto", "scalar", "avx2", "avx512") as the enum.
Isa ParseIsa(const char* name);

// Row-major A, B, C with leading dimensions (elements).
//  transpose_a=false: A is M x K (lda >= K); true: A is K x M (lda >= M)
//  transpose_b=false: B is K x N (ldb >= N); true: B is N x K (ldb >= K)
//  C is M x N (ldc >= N). C is overwritten (no beta).
// Returns the ISA actually used.
Isa Gemm(Isa isa, bool transpose_a, bool transpose_b, int64_t M, int64_t N,
         int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
         float* C, int64_t ldc);

// An LSTM cell's elementwise part over n elements per block (detgemm_cell.cc, ops "DetLstmCell" and, with
// act and tanh_c, "DetLstmCellSaving"): z holds the 4 blocks i, f, o, g; writes h, c (n each) and, unless
// act is null, the activated gates (4 n), unless tanh_c is null tanh_c (n).
Isa LstmCell(Isa isa, int64_t n, const float* z, const float* c_prev, float* h, float* c, float* act,
             float* tanh_c);
// Its gradient (op "DetLstmCellGrad"): from z, c_prev and the gradients dh, dc of h and c, writes dz (4 n)
// and dc_prev (n), with the same operations as the cell's gradient in TensorFlow's elementwise ops.
Isa LstmCellGrad(Isa isa, int64_t n, const float* z, const float* c_prev, const float* dh, const float* dc,
                 float* dz, float* dc_prev);
// The same gradient (op "DetLstmCellSavedGrad") from the activations and tanh_c LstmCell saved: the same bits.
Isa LstmCellGradSaved(Isa isa, int64_t n, const float* act, const float* tanh_c, const float* c_prev,
                      const float* dh, const float* dc, float* dz, float* dc_prev);

}  // namespace detgemm
