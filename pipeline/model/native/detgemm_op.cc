// TensorFlow custom op "DetMatMul": float32 C = op(A) @ op(B) with CPU-independent
// bits (see detgemm_kernel.h). Rank 2 inputs, or rank 3 with equal batch dim.
// Built by the Makefile (make setup) into _detgemm.so; loaded by pipeline/model/detgemm.py,
// which also registers the gradient (each again one DetMatMul).
#include <cstring>

#include "detgemm_kernel.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;
using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

REGISTER_OP("DetMatMul")
    .Input("a: float")
    .Input("b: float")
    .Output("product: float")
    .Attr("transpose_a: bool = false")
    .Attr("transpose_b: bool = false")
    .Attr("isa: {'auto', 'scalar', 'avx2', 'avx512'} = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle a = c->input(0), b = c->input(1);
      if (!c->RankKnown(a) || !c->RankKnown(b)) {
        c->set_output(0, c->UnknownShape());
        return absl::OkStatus();
      }
      const int ra = c->Rank(a), rb = c->Rank(b);
      if (ra != rb || (ra != 2 && ra != 3))
        return absl::InvalidArgumentError("DetMatMul: inputs must both be rank 2 or rank 3");
      bool ta, tb;
      TF_RETURN_IF_ERROR(c->GetAttr("transpose_a", &ta));
      TF_RETURN_IF_ERROR(c->GetAttr("transpose_b", &tb));
      const int o = ra - 2;
      DimensionHandle m = c->Dim(a, o + (ta ? 1 : 0));
      DimensionHandle ka = c->Dim(a, o + (ta ? 0 : 1));
      DimensionHandle kb = c->Dim(b, o + (tb ? 1 : 0));
      DimensionHandle n = c->Dim(b, o + (tb ? 0 : 1));
      DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->Merge(ka, kb, &unused));
      if (ra == 3) {
        DimensionHandle batch;
        TF_RETURN_IF_ERROR(c->Merge(c->Dim(a, 0), c->Dim(b, 0), &batch));
        c->set_output(0, c->MakeShape({batch, m, n}));
      } else {
        c->set_output(0, c->Matrix(m, n));
      }
      return absl::OkStatus();
    })
    .Doc(R"doc(
Deterministic float32 matmul: every output element is one in-order FMA chain
over k (acc=+0; acc=fma(a,b,acc)), identical bits on AVX-512F, AVX2+FMA and
scalar CPUs. Single-threaded. Rank 2, or rank 3 batched with equal batch size.
)doc");

class DetMatMulOp : public OpKernel {
 public:
  explicit DetMatMulOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_a", &ta_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_b", &tb_));
    std::string isa;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("isa", &isa));
    isa_ = detgemm::ParseIsa(isa.c_str());
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    const Tensor& b = ctx->input(1);
    const int r = a.dims();
    OP_REQUIRES(ctx, r == b.dims() && (r == 2 || r == 3),
                absl::InvalidArgumentError(absl::StrCat("DetMatMul: inputs must both be rank 2 or 3, got ",
                                        a.shape().DebugString(), " ", b.shape().DebugString())));
    const int o = r - 2;
    const int64_t batch = r == 3 ? a.dim_size(0) : 1;
    OP_REQUIRES(ctx, r == 2 || b.dim_size(0) == batch,
                absl::InvalidArgumentError("DetMatMul: batch sizes differ"));
    const int64_t ar = a.dim_size(o), ac = a.dim_size(o + 1);
    const int64_t br = b.dim_size(o), bc = b.dim_size(o + 1);
    const int64_t M = ta_ ? ac : ar, K = ta_ ? ar : ac;
    const int64_t Kb = tb_ ? bc : br, N = tb_ ? br : bc;
    OP_REQUIRES(ctx, K == Kb,
                absl::InvalidArgumentError(absl::StrCat("DetMatMul: inner dimensions differ: ",
                                        a.shape().DebugString(), " ", b.shape().DebugString())));
    TensorShape out_shape;
    if (r == 3) out_shape.AddDim(batch);
    out_shape.AddDim(M);
    out_shape.AddDim(N);
    Tensor* c = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &c));
    const float* pa = a.flat<float>().data();
    const float* pb = b.flat<float>().data();
    float* pc = c->flat<float>().data();
    for (int64_t i = 0; i < batch; ++i)
      detgemm::Gemm(isa_, ta_, tb_, M, N, K, pa + i * ar * ac, ac, pb + i * br * bc, bc,
                    pc + i * M * N, N);
  }

 private:
  bool ta_ = false, tb_ = false;
  detgemm::Isa isa_ = detgemm::kAuto;
};

REGISTER_KERNEL_BUILDER(Name("DetMatMul").Device(DEVICE_CPU), DetMatMulOp);

// What the build was made from, found in the file's bytes by pipeline/model/detgemm.py
// before it loads the library (the Makefile passes both): the sha256 of this
// directory's detgemm_* sources and the TensorFlow whose headers it compiled with.
#ifndef DETGEMM_SOURCE_DIGEST
#error "build with -DDETGEMM_SOURCE_DIGEST=... (the Makefile's rule does)"
#endif
#ifndef DETGEMM_TENSORFLOW_VERSION
#error "build with -DDETGEMM_TENSORFLOW_VERSION=... (the Makefile's rule does)"
#endif
extern "C" __attribute__((used)) const char detgemm_build[] =
    "detgemm build: sources " DETGEMM_SOURCE_DIGEST " tensorflow " DETGEMM_TENSORFLOW_VERSION ";";

// For tests, through ctypes: the instruction set a DetMatMul with this isa attr
// runs on this CPU, and the kernel called directly on the caller's thread,
// outside TensorFlow (whose executor sets its own MXCSR around every kernel):
// contiguous row-major op(A) @ op(B) into C (M x N); returns the ISA used.
extern "C" const char* detgemm_resolved_isa(const char* requested) {
  return detgemm::IsaName(detgemm::ResolveIsa(detgemm::ParseIsa(requested)));
}
extern "C" const char* detgemm_matmul(const char* isa, int transpose_a, int transpose_b, int64_t m,
                                      int64_t n, int64_t k, const float* a, const float* b, float* c) {
  return detgemm::IsaName(detgemm::Gemm(detgemm::ParseIsa(isa), transpose_a, transpose_b, m, n, k, a,
                                        transpose_a ? m : k, b, transpose_b ? k : n, c, n));
}
