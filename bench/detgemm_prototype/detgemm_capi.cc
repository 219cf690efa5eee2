// Plain C ABI around the same kernel (no TensorFlow): for ctypes tests, the
// qemu-Haswell check and raw kernel timing.
#include <chrono>
#include "detgemm_kernel.h"

extern "C" {
// isa: 0 auto, 1 scalar, 2 avx2, 3 avx512. Returns the ISA actually used.
int detgemm_sgemm(int isa, int ta, int tb, int64_t M, int64_t N, int64_t K,
                  const float* A, int64_t lda, const float* B, int64_t ldb,
                  float* C, int64_t ldc) {
  return detgemm::Gemm(static_cast<detgemm::Isa>(isa), ta != 0, tb != 0, M, N,
                       K, A, lda, B, ldb, C, ldc);
}
int detgemm_resolve(int isa) {
  return detgemm::ResolveIsa(static_cast<detgemm::Isa>(isa));
}
// Runs the GEMM `iters` times, returns elapsed nanoseconds.
int64_t detgemm_time(int isa, int ta, int tb, int64_t M, int64_t N, int64_t K,
                     const float* A, int64_t lda, const float* B, int64_t ldb,
                     float* C, int64_t ldc, int64_t iters) {
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t it = 0; it < iters; ++it)
    detgemm::Gemm(static_cast<detgemm::Isa>(isa), ta != 0, tb != 0, M, N, K, A,
                  lda, B, ldb, C, ldc);
  auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
}
}
