// TensorFlow custom ops for products with CPU-independent bits (see detgemm_kernel.h):
//  "DetMatMul": float32 C = op(A) @ op(B). Rank 2 inputs, or rank 3 with equal batch dim. Its gradient
//    (pipeline/model/detgemm.py) is DetMatMuls again.
//  "DetGates" and its gradient "DetGatesGrad": an LSTM step's gate products (below).
// Built by the Makefile (make setup) into _detgemm.so; loaded by pipeline/model/detgemm.py, which also
// registers the gradients.
#include <algorithm>
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

// "DetGates": an LSTM step's gate products, feature-major: z = weightsᵀ · [x; h; 1], with weights
// (features + units + 1, gates) (the input kernel, the recurrent kernel and the bias stacked), x
// (features, batch), h (units, batch): the DetMatMul of weights (transposed) and the inputs stacked with
// a row of ones, without the stacking as an op of its own. "DetGatesGrad" gives, from dz (gates, batch),
// d weights = [x; h; 1] · dzᵀ and dx, dh: the rows of weights · dz that they are (dx only if asked, and
// no row for the ones). Every element is the chain the DetMatMuls of the stacked inputs computed (the
// same terms, in the same order), so the bits are theirs; what is saved is the stacking, the slicing of
// its gradient and the rows of weights · dz that nothing uses.
namespace {

bool GatesShapesOk(OpKernelContext* ctx, const char* op) {
  const Tensor &w = ctx->input(0), &x = ctx->input(1), &h = ctx->input(2);
  bool ok = w.dims() == 2 && x.dims() == 2 && h.dims() == 2 && x.dim_size(1) == h.dim_size(1) &&
            w.dim_size(0) == x.dim_size(0) + h.dim_size(0) + 1;
  std::string shapes = absl::StrCat(w.shape().DebugString(), " ", x.shape().DebugString(), " ",
                                    h.shape().DebugString());
  if (ctx->num_inputs() > 3) {
    const Tensor& dz = ctx->input(3);
    ok = ok && dz.dims() == 2 && dz.dim_size(0) == w.dim_size(1) && dz.dim_size(1) == x.dim_size(1);
    absl::StrAppend(&shapes, " ", dz.shape().DebugString());
  }
  if (!ok)
    ctx->SetStatus(absl::InvalidArgumentError(absl::StrCat(
        op, ": weights must be (features + units + 1, gates), x (features, batch), h (units, batch)",
        ctx->num_inputs() > 3 ? ", dz (gates, batch)" : "", "; got ", shapes)));
  return ok;
}

// [x; h; a row of ones] into a temporary tensor.
const float* Stacked(OpKernelContext* ctx, Tensor* stacked) {
  const Tensor &x = ctx->input(1), &h = ctx->input(2);
  const int64_t batch = x.dim_size(1), features = x.dim_size(0), units = h.dim_size(0);
  const absl::Status status =
      ctx->allocate_temp(DT_FLOAT, TensorShape({features + units + 1, batch}), stacked);
  if (!status.ok()) {
    ctx->SetStatus(status);
    return nullptr;
  }
  float* out = stacked->flat<float>().data();
  std::memcpy(out, x.flat<float>().data(), sizeof(float) * features * batch);
  std::memcpy(out + features * batch, h.flat<float>().data(), sizeof(float) * units * batch);
  std::fill(out + (features + units) * batch, out + (features + units + 1) * batch, 1.0f);
  return out;
}

detgemm::Isa IsaOf(OpKernelConstruction* ctx) {
  std::string isa;
  const absl::Status status = ctx->GetAttr("isa", &isa);
  if (!status.ok()) ctx->SetStatus(status);
  return detgemm::ParseIsa(isa.c_str());
}

}  // namespace

REGISTER_OP("DetGates")
    .Input("weights: float")
    .Input("x: float")
    .Input("h: float")
    .Output("z: float")
    .Attr("isa: {'auto', 'scalar', 'avx2', 'avx512'} = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle w, x, h;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &w));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &h));
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->Dim(h, 1), &batch));
      c->set_output(0, c->Matrix(c->Dim(w, 1), batch));
      return absl::OkStatus();
    })
    .Doc(R"doc(
An LSTM step's gate products weightsᵀ · [x; h; 1] (DetMatMul's bits). Single-threaded.
)doc");

class DetGatesOp : public OpKernel {
 public:
  explicit DetGatesOp(OpKernelConstruction* ctx) : OpKernel(ctx) { isa_ = IsaOf(ctx); }

  void Compute(OpKernelContext* ctx) override {
    if (!GatesShapesOk(ctx, "DetGates")) return;
    const Tensor& w = ctx->input(0);
    const int64_t inputs = w.dim_size(0), gates = w.dim_size(1), batch = ctx->input(1).dim_size(1);
    Tensor stacked_tensor, *z = nullptr;
    const float* stacked = Stacked(ctx, &stacked_tensor);
    if (stacked == nullptr) return;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({gates, batch}), &z));
    detgemm::Gemm(isa_, true, false, gates, batch, inputs, w.flat<float>().data(), gates, stacked, batch,
                  z->flat<float>().data(), batch);
  }

 private:
  detgemm::Isa isa_ = detgemm::kAuto;
};

REGISTER_KERNEL_BUILDER(Name("DetGates").Device(DEVICE_CPU), DetGatesOp);

REGISTER_OP("DetGatesGrad")
    .Input("weights: float")
    .Input("x: float")
    .Input("h: float")
    .Input("dz: float")
    .Output("d_weights: float")
    .Output("dx: float")
    .Output("dh: float")
    .Attr("with_dx: bool = true")
    .Attr("with_dh: bool = true")
    .Attr("isa: {'auto', 'scalar', 'avx2', 'avx512'} = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      bool with_dx, with_dh;
      TF_RETURN_IF_ERROR(c->GetAttr("with_dx", &with_dx));
      TF_RETURN_IF_ERROR(c->GetAttr("with_dh", &with_dh));
      c->set_output(0, c->input(0));
      c->set_output(1, with_dx ? c->input(1) : c->Matrix(0, c->Dim(c->input(1), 1)));
      c->set_output(2, with_dh ? c->input(2) : c->Matrix(0, c->Dim(c->input(2), 1)));
      return absl::OkStatus();
    })
    .Doc(R"doc(
DetGates' gradient: d weights = [x; h; 1] · dzᵀ, and dx, dh (the rows of weights · dz). dx has no rows
unless with_dx, dh none unless with_dh (an initial state of zeros needs none). Single-threaded.
)doc");

class DetGatesGradOp : public OpKernel {
 public:
  explicit DetGatesGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    isa_ = IsaOf(ctx);
    OP_REQUIRES_OK(ctx, ctx->GetAttr("with_dx", &with_dx_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("with_dh", &with_dh_));
  }

  void Compute(OpKernelContext* ctx) override {
    if (!GatesShapesOk(ctx, "DetGatesGrad")) return;
    const Tensor &w = ctx->input(0), &x = ctx->input(1), &h = ctx->input(2), &dz = ctx->input(3);
    const int64_t inputs = w.dim_size(0), gates = w.dim_size(1), batch = x.dim_size(1);
    const int64_t features = x.dim_size(0), units = h.dim_size(0);
    Tensor stacked_tensor, *dw = nullptr, *dx = nullptr, *dh = nullptr;
    const float* stacked = Stacked(ctx, &stacked_tensor);
    if (stacked == nullptr) return;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, w.shape(), &dw));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({with_dx_ ? features : 0, batch}), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({with_dh_ ? units : 0, batch}), &dh));
    const float *pw = w.flat<float>().data(), *pdz = dz.flat<float>().data();
    detgemm::Gemm(isa_, false, true, inputs, gates, batch, stacked, batch, pdz, batch, dw->flat<float>().data(),
                  gates);
    if (with_dx_)
      detgemm::Gemm(isa_, false, false, features, batch, gates, pw, gates, pdz, batch, dx->flat<float>().data(),
                    batch);
    if (with_dh_)
      detgemm::Gemm(isa_, false, false, units, batch, gates, pw + features * gates, gates, pdz, batch,
                    dh->flat<float>().data(), batch);
  }

 private:
  detgemm::Isa isa_ = detgemm::kAuto;
  bool with_dx_ = true, with_dh_ = true;
};

REGISTER_KERNEL_BUILDER(Name("DetGatesGrad").Device(DEVICE_CPU), DetGatesGradOp);

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

// For tests, through ctypes: the cell and its gradient called directly on the caller's thread (outside
// TensorFlow's executor); n elements per block; each returns the ISA used.
extern "C" const char* detgemm_lstm_cell(const char* isa, int64_t n, const float* z, const float* c_prev,
                                         float* h, float* c, float* act, float* tanh_c) {
  return detgemm::IsaName(detgemm::LstmCell(detgemm::ParseIsa(isa), n, z, c_prev, h, c, act, tanh_c));
}
extern "C" const char* detgemm_lstm_cell_grad(const char* isa, int64_t n, const float* z, const float* c_prev,
                                              const float* dh, const float* dc, float* dz, float* dc_prev) {
  return detgemm::IsaName(
      detgemm::LstmCellGrad(detgemm::ParseIsa(isa), n, z, c_prev, dh, dc, dz, dc_prev));
}
