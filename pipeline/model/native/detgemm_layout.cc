// TensorFlow custom op "DetTranspose": a matrix's transpose, for the LSTM's change of layout between the
// batch-major sequence (batch, steps x features) and its feature-major steps (steps x features, batch), and
// back. Pure data movement, so the bits are the input's whatever the loop order.
//
// TensorFlow's Transpose (an Eigen shuffle, built for SSE/AVX without knowing the shape) took 1.5-1.8 ms of
// an MNIST inference slice of 1,000 images on a 2-core AMD EPYC (3 MB), on the path before the first product.
// Here: tiles of 32 x 32 (a tile's rows and columns stay in L1), each as 4 x 4 blocks transposed in SSE
// registers, which every x86-64 CPU has; the edges element by element. Single-threaded.
#include <xmmintrin.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace detgemm {
namespace {

constexpr int64_t kTile = 32;

// out (columns x rows) = in (rows x columns)ᵀ, both row-major and contiguous.
void Transpose(const float* in, int64_t rows, int64_t columns, float* out) {
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = r0 + kTile < rows ? r0 + kTile : rows;
    for (int64_t c0 = 0; c0 < columns; c0 += kTile) {
      const int64_t c1 = c0 + kTile < columns ? c0 + kTile : columns;
      int64_t r = r0;
      for (; r + 4 <= r1; r += 4) {
        const float* s = in + r * columns;
        int64_t c = c0;
        for (; c + 4 <= c1; c += 4) {
          __m128 x0 = _mm_loadu_ps(s + c), x1 = _mm_loadu_ps(s + columns + c);
          __m128 x2 = _mm_loadu_ps(s + 2 * columns + c), x3 = _mm_loadu_ps(s + 3 * columns + c);
          _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
          _mm_storeu_ps(out + c * rows + r, x0);
          _mm_storeu_ps(out + (c + 1) * rows + r, x1);
          _mm_storeu_ps(out + (c + 2) * rows + r, x2);
          _mm_storeu_ps(out + (c + 3) * rows + r, x3);
        }
        for (; c < c1; ++c)
          for (int64_t i = 0; i < 4; ++i) out[c * rows + r + i] = s[i * columns + c];
      }
      for (; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[c * rows + r] = in[r * columns + c];
    }
  }
}

}  // namespace
}  // namespace detgemm

using namespace tensorflow;

REGISTER_OP("DetTranspose")
    .Input("x: float")
    .Output("y: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      c->set_output(0, c->Matrix(c->Dim(x, 1), c->Dim(x, 0)));
      return absl::OkStatus();
    })
    .Doc(R"doc(
A matrix's transpose (rank 2, float32). Single-threaded.
)doc");

class DetTransposeOp : public OpKernel {
 public:
  explicit DetTransposeOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() == 2,
                absl::InvalidArgumentError(absl::StrCat("DetTranspose: x must be rank 2, got ", x.shape().DebugString())));
    const int64_t rows = x.dim_size(0), columns = x.dim_size(1);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({columns, rows}), &y));
    detgemm::Transpose(x.flat<float>().data(), rows, columns, y->flat<float>().data());
  }
};

REGISTER_KERNEL_BUILDER(Name("DetTranspose").Device(DEVICE_CPU), DetTransposeOp);
