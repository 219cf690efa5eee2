// An LSTM cell's elementwise part and its gradient, each in one pass, with the same bits on every x86-64 CPU
// (AVX-512F, AVX2 with FMA, or neither): the kernels of the ops in detgemm_cell_op.cc.
//
// Feature-major layout (pipeline/model/layers.py): z is the step's product, 4 blocks of n = units * batch
// floats (the gates i, f, o, then the candidate g, each units x batch), c_prev one block. For every
// element j of a block:
//     i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
//     c = fma(f, c_prev, i * g);  tanh_c = tanh(c);  h = o * tanh_c
// The gradient takes i, f, o, g and tanh_c as the training forward saved them (LstmCellGradSaved), or
// recomputes them from z and c_prev (LstmCellGrad: the same operations, so the same bits) and, given dh
// and dc, computes what the cell's gradient in TensorFlow's elementwise ops computed, operation for
// operation (each a separate multiply, subtract or add, in the same order; -ffp-contract=off):
//     dc_total = dc + (dh * o) * (1 - tanh_c * tanh_c)
//     dz = [((dc_total * g) * i) * (1 - i), ((dc_total * c_prev) * f) * (1 - f),
//           ((dh * tanh_c) * o) * (1 - o), (dc_total * i) * (1 - g * g)];  dc_prev = dc_total * f
//
// tanh is Eigen's float approximation (clamped to +-7.9053, x itself below 4e-4, else a 13/6-degree odd
// over even rational function, < 1e-6 from the true tanh), sigmoid(x) = fma(0.5, tanh(0.5 x), 0.5). Every
// step is one IEEE operation (fma, multiply, divide, add, subtract, min, max, compare), so the 16-wide
// (AVX-512), 8-wide (AVX2) and scalar paths round alike and give the same bits; one pass over memory
// instead of TensorFlow's ten (forward) and twenty-odd (gradient) elementwise kernels per step. Runs on the
// caller's thread, under detgemm::FixedMxcsr (flush-to-zero and denormals-are-zero, as TensorFlow's
// executor runs its own kernels).
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "detgemm_kernel.h"

#if defined(__FAST_MATH__)
#error "detgemm must not be compiled with -ffast-math"
#endif

// GCC 12 warns about its own _mm512_min_ps/_mm512_max_ps (their _mm512_undefined_ps pass-through),
// and that vector types change the ABI of functions that are only ever inlined (flatten).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"

namespace detgemm {
namespace {

constexpr float kClamp = 7.90531110763549805f, kTiny = 0.0004f;
constexpr float kAlpha[] = {4.89352455891786e-03f, 6.37261928875436e-04f, 1.48572235717979e-05f,
                            5.12229709037114e-08f, -8.60467152213735e-11f, 2.00018790482477e-13f,
                            -2.76076847742355e-16f};  // x^1 ... x^13
constexpr float kBeta[] = {4.89352518554385e-03f, 2.26843463243900e-03f, 1.18534705686654e-04f,
                           1.19825839466702e-06f};  // x^0 ... x^6

// The same operations on one float (Scalar), 8 (Avx2) or 16 (Avx512). The generic code below is
// inlined into each ISA's loop by __attribute__((flatten)), which compiles it for that loop's target.
struct Scalar {
  using V = float;
  static constexpr int kWidth = 1;
  static V Load(const float* p) { return *p; }
  static void Store(float* p, V v) { *p = v; }
  static V Set(float x) { return x; }
  static V Fma(V a, V b, V c) { return std::fma(a, b, c); }
  static V Mul(V a, V b) { return a * b; }
  static V Add(V a, V b) { return a + b; }
  static V Sub(V a, V b) { return a - b; }
  static V Div(V a, V b) { return a / b; }
  static V Clamp(V x) { return x > kClamp ? kClamp : (x < -kClamp ? -kClamp : x); }
  static V TinyOr(V x, V otherwise) { return std::fabs(x) < kTiny ? x : otherwise; }
};

struct Avx2 {
  using V = __m256;
  static constexpr int kWidth = 8;
  __attribute__((target("avx2,fma"))) static V Load(const float* p) { return _mm256_loadu_ps(p); }
  __attribute__((target("avx2,fma"))) static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  __attribute__((target("avx2,fma"))) static V Set(float x) { return _mm256_set1_ps(x); }
  __attribute__((target("avx2,fma"))) static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  __attribute__((target("avx2,fma"))) static V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  __attribute__((target("avx2,fma"))) static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  __attribute__((target("avx2,fma"))) static V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
  __attribute__((target("avx2,fma"))) static V Div(V a, V b) { return _mm256_div_ps(a, b); }
  __attribute__((target("avx2,fma"))) static V Clamp(V x) {
    return _mm256_max_ps(_mm256_min_ps(x, Set(kClamp)), Set(-kClamp));
  }
  __attribute__((target("avx2,fma"))) static V TinyOr(V x, V otherwise) {
    const V magnitude = _mm256_andnot_ps(Set(-0.0f), x);
    return _mm256_blendv_ps(otherwise, x, _mm256_cmp_ps(magnitude, Set(kTiny), _CMP_LT_OQ));
  }
};

struct Avx512 {
  using V = __m512;
  static constexpr int kWidth = 16;
  __attribute__((target("avx512f"))) static V Load(const float* p) { return _mm512_loadu_ps(p); }
  __attribute__((target("avx512f"))) static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  __attribute__((target("avx512f"))) static V Set(float x) { return _mm512_set1_ps(x); }
  __attribute__((target("avx512f"))) static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  __attribute__((target("avx512f"))) static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  __attribute__((target("avx512f"))) static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  __attribute__((target("avx512f"))) static V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  __attribute__((target("avx512f"))) static V Div(V a, V b) { return _mm512_div_ps(a, b); }
  __attribute__((target("avx512f"))) static V Clamp(V x) {
    return _mm512_max_ps(_mm512_min_ps(x, Set(kClamp)), Set(-kClamp));
  }
  __attribute__((target("avx512f"))) static V TinyOr(V x, V otherwise) {
    const V magnitude = _mm512_abs_ps(x);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(magnitude, Set(kTiny), _CMP_LT_OQ), otherwise, x);
  }
};

// tanh of N vectors, each step for all N before the next: N independent chains side by side in program
// order, so the CPU's scheduler holds ready work of each rather than one chain's waiting operations. Every
// element sees the same operations as alone, so the same bits.
template <class O, int N>
void Tanh(typename O::V (&v)[N]) {
  using V = typename O::V;
  V x[N], x2[N], p[N], q[N];
  for (int e = 0; e < N; ++e) x[e] = O::Clamp(v[e]);
  for (int e = 0; e < N; ++e) x2[e] = O::Mul(x[e], x[e]), p[e] = O::Set(kAlpha[6]), q[e] = O::Set(kBeta[3]);
  for (int k = 5; k >= 0; --k) {
    for (int e = 0; e < N; ++e) p[e] = O::Fma(x2[e], p[e], O::Set(kAlpha[k]));
    if (k < 3)
      for (int e = 0; e < N; ++e) q[e] = O::Fma(x2[e], q[e], O::Set(kBeta[k]));
  }
  for (int e = 0; e < N; ++e) v[e] = O::TinyOr(x[e], O::Div(O::Mul(x[e], p[e]), q[e]));
}

// The gates at element j: i, f, o = sigmoid(x) = fma(0.5, tanh(0.5 x), 0.5), and g = tanh(x).
template <class O>
void Gates(const float* z, int64_t n, int64_t j, typename O::V (&gate)[4]) {
  const auto half = O::Set(0.5f);
  for (int e = 0; e < 4; ++e) {
    typename O::V v[1] = {e < 3 ? O::Mul(half, O::Load(z + e * n + j)) : O::Load(z + e * n + j)};
    Tanh<O, 1>(v);
    gate[e] = e < 3 ? O::Fma(half, v[0], half) : v[0];
  }
}

// Both passes go through their elements a chunk at a time, in two loops: first the four gates (independent
// of one another) up to the cell state, parked in the outputs; then what depends on tanh(c), kGroup vectors
// at a time. One loop doing all of it per element is a chain of two tanh latencies that the CPU cannot
// overlap with the next element's. Each element sees the same operations, so the same bits.
constexpr int64_t kChunk = 256;  // a multiple of every width; what one chunk parks stays in L1
constexpr int kGroup = 2;  // 2 and 4 measured alike on an AVX2 EPYC; 4 spills registers

// pass.Finish<O, kGroup> over [chunk, stop) while whole groups fit, then Finish<O, 1> for the rest.
template <class O, class Pass>
void Grouped(const Pass& pass, int64_t chunk, int64_t stop, int64_t n) {
  int64_t j = chunk;
  for (; j + kGroup * O::kWidth <= stop; j += kGroup * O::kWidth) pass.template Finish<O, kGroup>(j, n);
  for (; j < stop; j += O::kWidth) pass.template Finish<O, 1>(j, n);
}

// The cell's forward pass: h, c and, where given (the tests' entry point), the activations and tanh_c.
struct Forward {
  const float *z, *c_prev;
  float *h, *c, *act, *tanh_c;
  // Elements [begin, end) of every block, `O::kWidth` at a time (end - begin a multiple of it).
  template <class O>
  void Run(int64_t begin, int64_t end, int64_t n) const {
    for (int64_t chunk = begin; chunk < end; chunk += kChunk) {
      const int64_t stop = chunk + kChunk < end ? chunk + kChunk : end;
      for (int64_t j = chunk; j < stop; j += O::kWidth) {
        typename O::V gate[4];
        Gates<O>(z, n, j, gate);
        O::Store(c + j, O::Fma(gate[1], O::Load(c_prev + j), O::Mul(gate[0], gate[3])));
        O::Store(h + j, gate[2]);  // o, parked until tanh(c) is known
        if (act != nullptr)
          for (int e = 0; e < 4; ++e) O::Store(act + e * n + j, gate[e]);
      }
      Grouped<O>(*this, chunk, stop, n);
    }
  }
  // h = o * tanh(c) for N vectors from element j.
  template <class O, int N>
  void Finish(int64_t j, int64_t) const {
    typename O::V squashed[N];
    for (int e = 0; e < N; ++e) squashed[e] = O::Load(c + j + e * O::kWidth);
    Tanh<O, N>(squashed);
    for (int e = 0; e < N; ++e) {
      const int64_t at = j + e * O::kWidth;
      O::Store(h + at, O::Mul(O::Load(h + at), squashed[e]));
      if (tanh_c != nullptr) O::Store(tanh_c + at, squashed[e]);
    }
  }
};

// The cell's gradient: the forward's activations recomputed (parked in dz, the cell state in dc_prev), then
// the operations in the header's order.
struct Backward {
  const float *z, *c_prev, *dh, *dc;
  float *dz, *dc_prev;
  template <class O>
  void Run(int64_t begin, int64_t end, int64_t n) const {
    for (int64_t chunk = begin; chunk < end; chunk += kChunk) {
      const int64_t stop = chunk + kChunk < end ? chunk + kChunk : end;
      for (int64_t j = chunk; j < stop; j += O::kWidth) {
        typename O::V gate[4];
        Gates<O>(z, n, j, gate);
        for (int e = 0; e < 4; ++e) O::Store(dz + e * n + j, gate[e]);
        O::Store(dc_prev + j, O::Fma(gate[1], O::Load(c_prev + j), O::Mul(gate[0], gate[3])));
      }
      Grouped<O>(*this, chunk, stop, n);
    }
  }
  // The gradient for N vectors from element j, from the parked activations and cell state.
  template <class O, int N>
  void Finish(int64_t j, int64_t n) const {
    using V = typename O::V;
    const V one = O::Set(1.0f);
    V squashed[N];
    for (int e = 0; e < N; ++e) squashed[e] = O::Load(dc_prev + j + e * O::kWidth);
    Tanh<O, N>(squashed);
    for (int e = 0; e < N; ++e) {
      const int64_t at = j + e * O::kWidth;
      const V i = O::Load(dz + at), f = O::Load(dz + n + at), o = O::Load(dz + 2 * n + at);
      const V g = O::Load(dz + 3 * n + at), previous = O::Load(c_prev + at), up_h = O::Load(dh + at);
      const V total = O::Add(O::Load(dc + at),
                             O::Mul(O::Mul(up_h, o), O::Sub(one, O::Mul(squashed[e], squashed[e]))));
      O::Store(dz + at, O::Mul(O::Mul(O::Mul(total, g), i), O::Sub(one, i)));
      O::Store(dz + n + at, O::Mul(O::Mul(O::Mul(total, previous), f), O::Sub(one, f)));
      O::Store(dz + 2 * n + at, O::Mul(O::Mul(O::Mul(up_h, squashed[e]), o), O::Sub(one, o)));
      O::Store(dz + 3 * n + at, O::Mul(O::Mul(total, i), O::Sub(one, O::Mul(g, g))));
      O::Store(dc_prev + at, O::Mul(total, f));
    }
  }
};

// The gradient from the activations and tanh_c the training forward saved (DetLstmCellSaving): the same
// operations as Backward::Finish on the same values, so the same bits, without recomputing five tanh.
struct BackwardSaved {
  const float *act, *tanh_c, *c_prev, *dh, *dc;
  float *dz, *dc_prev;
  template <class O>
  void Run(int64_t begin, int64_t end, int64_t n) const {
    using V = typename O::V;
    const V one = O::Set(1.0f);
    for (int64_t at = begin; at < end; at += O::kWidth) {
      const V i = O::Load(act + at), f = O::Load(act + n + at), o = O::Load(act + 2 * n + at);
      const V g = O::Load(act + 3 * n + at), squashed = O::Load(tanh_c + at), up_h = O::Load(dh + at);
      const V total =
          O::Add(O::Load(dc + at), O::Mul(O::Mul(up_h, o), O::Sub(one, O::Mul(squashed, squashed))));
      O::Store(dz + at, O::Mul(O::Mul(O::Mul(total, g), i), O::Sub(one, i)));
      O::Store(dz + n + at, O::Mul(O::Mul(O::Mul(total, O::Load(c_prev + at)), f), O::Sub(one, f)));
      O::Store(dz + 2 * n + at, O::Mul(O::Mul(O::Mul(up_h, squashed), o), O::Sub(one, o)));
      O::Store(dz + 3 * n + at, O::Mul(O::Mul(total, i), O::Sub(one, O::Mul(g, g))));
      O::Store(dc_prev + at, O::Mul(total, f));
    }
  }
};

// Each ISA's loop: the generic code above inlined (flatten) and so compiled for the loop's target.
template <class Pass>
__attribute__((flatten)) void RunScalar(const Pass& pass, int64_t begin, int64_t n) {
  pass.template Run<Scalar>(begin, n, n);
}
template <class Pass>
__attribute__((target("avx2,fma"), flatten)) int64_t RunAvx2(const Pass& pass, int64_t n) {
  const int64_t whole = n - n % Avx2::kWidth;
  pass.template Run<Avx2>(0, whole, n);
  return whole;
}
template <class Pass>
__attribute__((target("avx512f"), flatten)) int64_t RunAvx512(const Pass& pass, int64_t n) {
  const int64_t whole = n - n % Avx512::kWidth;
  pass.template Run<Avx512>(0, whole, n);
  return whole;
}

// A pass over n elements per block; the vector paths leave the last n % width to the scalar one.
template <class Pass>
Isa Run(Isa isa, int64_t n, const Pass& pass) {
  isa = ResolveIsa(isa);
  const FixedMxcsr fixed;
  int64_t done = 0;
  if (isa == kAvx512) done = RunAvx512(pass, n);
  if (isa == kAvx2) done = RunAvx2(pass, n);
  RunScalar(pass, done, n);
  return isa;
}

}  // namespace

Isa LstmCell(Isa isa, int64_t n, const float* z, const float* c_prev, float* h, float* c, float* act,
             float* tanh_c) {
  return Run(isa, n, Forward{z, c_prev, h, c, act, tanh_c});
}

Isa LstmCellGrad(Isa isa, int64_t n, const float* z, const float* c_prev, const float* dh, const float* dc,
                 float* dz, float* dc_prev) {
  return Run(isa, n, Backward{z, c_prev, dh, dc, dz, dc_prev});
}

Isa LstmCellGradSaved(Isa isa, int64_t n, const float* act, const float* tanh_c, const float* c_prev,
                      const float* dh, const float* dc, float* dz, float* dc_prev) {
  return Run(isa, n, BackwardSaved{act, tanh_c, c_prev, dh, dc, dz, dc_prev});
}

}  // namespace detgemm
