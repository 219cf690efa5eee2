// TensorFlow custom ops of the LSTM cell (kernels: detgemm_cell.cc), feature-major: z (4 units x batch: the
// gates i, f, o, candidate g) and c_prev (units x batch).
//  - "DetLstmCell" -> h, c; its registered gradient (pipeline/model/detgemm.py) is "DetLstmCellGrad", which
//    recomputes the activations from z and c_prev: inference, and any gradient TensorFlow's tape asks for.
//  - "DetLstmCellSaving" -> h, c and the activations i, f, o, g and tanh_c, for training: the gradient
//    "DetLstmCellSavedGrad" then reads them instead of computing five tanh again (its gradient is
//    pipeline.model.detgemm's custom gradient around the pair: the saved outputs are no outputs of the step
//    there, so the tape fills no zero gradients for them).
// The same bits from every one of them, on every x86-64 CPU.
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "detgemm_kernel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;
using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

namespace {

// z (4 units, batch) and c_prev (units, batch): the shapes of both ops' first two inputs.
absl::Status CellShapes(InferenceContext* c, ShapeHandle* z, ShapeHandle* c_prev) {
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, z));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, c_prev));
  DimensionHandle batch, units4;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(*z, 1), c->Dim(*c_prev, 1), &batch));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(*c_prev, 0), 4, &units4));
  return c->Merge(c->Dim(*z, 0), units4, &units4);
}

// Inputs 0 and 1 as z and c_prev, then the others up to `inputs` shaped as c_prev.
bool CellShapesOk(OpKernelContext* ctx, const char* op, int inputs) {
  const Tensor &z = ctx->input(0), &c_prev = ctx->input(1);
  bool ok = z.dims() == 2 && c_prev.dims() == 2 && z.dim_size(1) == c_prev.dim_size(1) &&
            z.dim_size(0) == 4 * c_prev.dim_size(0);
  std::string shapes = absl::StrCat(z.shape().DebugString(), " ", c_prev.shape().DebugString());
  for (int k = 2; k < inputs; ++k) {
    ok = ok && ctx->input(k).shape() == c_prev.shape();
    absl::StrAppend(&shapes, " ", ctx->input(k).shape().DebugString());
  }
  if (!ok)
    ctx->SetStatus(absl::InvalidArgumentError(
        absl::StrCat(op, ": z must be (4 units, batch), the others (units, batch), got ", shapes)));
  return ok;
}

detgemm::Isa IsaAttr(OpKernelConstruction* ctx) {
  std::string isa;
  const absl::Status status = ctx->GetAttr("isa", &isa);
  if (!status.ok()) ctx->SetStatus(status);
  return detgemm::ParseIsa(isa.c_str());
}

const float* In(OpKernelContext* ctx, int k) { return ctx->input(k).flat<float>().data(); }

float* Out(OpKernelContext* ctx, int k, const TensorShape& shape) {
  Tensor* out = nullptr;
  const absl::Status status = ctx->allocate_output(k, shape, &out);
  if (!status.ok()) ctx->SetStatus(status);
  return status.ok() ? out->flat<float>().data() : nullptr;
}

}  // namespace

REGISTER_OP("DetLstmCell")
    .Input("z: float")
    .Input("c_prev: float")
    .Output("h: float")
    .Output("c: float")
    .Attr("isa: {'auto', 'scalar', 'avx2', 'avx512'} = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle z, c_prev;
      TF_RETURN_IF_ERROR(CellShapes(c, &z, &c_prev));
      c->set_output(0, c_prev);
      c->set_output(1, c_prev);
      return absl::OkStatus();
    })
    .Doc(R"doc(
LSTM cell, elementwise, feature-major: z (4 units x batch: gates i, f, o, candidate g) and c_prev
(units x batch) -> h, c. Same bits on every x86-64 CPU. Single-threaded.
)doc");

// DetLstmCell, or with kSaving DetLstmCellSaving (its activations and tanh_c as outputs 2 and 3).
template <bool kSaving>
class DetLstmCellOp : public OpKernel {
 public:
  explicit DetLstmCellOp(OpKernelConstruction* ctx) : OpKernel(ctx), isa_(IsaAttr(ctx)) {}

  void Compute(OpKernelContext* ctx) override {
    if (!CellShapesOk(ctx, kSaving ? "DetLstmCellSaving" : "DetLstmCell", 2)) return;
    const TensorShape& shape = ctx->input(1).shape();
    float *h = Out(ctx, 0, shape), *c = Out(ctx, 1, shape);
    float* act = kSaving ? Out(ctx, 2, ctx->input(0).shape()) : nullptr;
    float* tanh_c = kSaving ? Out(ctx, 3, shape) : nullptr;
    if (h == nullptr || c == nullptr || (kSaving && (act == nullptr || tanh_c == nullptr))) return;
    detgemm::LstmCell(isa_, shape.num_elements(), In(ctx, 0), In(ctx, 1), h, c, act, tanh_c);
  }

 private:
  const detgemm::Isa isa_;
};

REGISTER_KERNEL_BUILDER(Name("DetLstmCell").Device(DEVICE_CPU), DetLstmCellOp<false>);

REGISTER_OP("DetLstmCellGrad")
    .Input("z: float")
    .Input("c_prev: float")
    .Input("dh: float")
    .Input("dc: float")
    .Output("dz: float")
    .Output("dc_prev: float")
    .Attr("isa: {'auto', 'scalar', 'avx2', 'avx512'} = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle z, c_prev, merged;
      TF_RETURN_IF_ERROR(CellShapes(c, &z, &c_prev));
      TF_RETURN_IF_ERROR(c->Merge(c_prev, c->input(2), &merged));
      TF_RETURN_IF_ERROR(c->Merge(merged, c->input(3), &merged));
      c->set_output(0, z);
      c->set_output(1, merged);
      return absl::OkStatus();
    })
    .Doc(R"doc(
DetLstmCell's gradient: from its inputs z and c_prev and the gradients dh, dc of its outputs, dz and
dc_prev in one pass (the activations recomputed). Same bits on every x86-64 CPU. Single-threaded.
)doc");

// DetLstmCellGrad (z, c_prev, dh, dc), or with kSaved DetLstmCellSavedGrad (activations, tanh_c, c_prev, dh, dc).
template <bool kSaved>
class DetLstmCellGradOp : public OpKernel {
 public:
  explicit DetLstmCellGradOp(OpKernelConstruction* ctx) : OpKernel(ctx), isa_(IsaAttr(ctx)) {}

  void Compute(OpKernelContext* ctx) override {
    if (!CellShapesOk(ctx, kSaved ? "DetLstmCellSavedGrad" : "DetLstmCellGrad", kSaved ? 5 : 4)) return;
    const TensorShape& shape = ctx->input(1).shape();
    float *dz = Out(ctx, 0, ctx->input(0).shape()), *dc_prev = Out(ctx, 1, shape);
    if (dz == nullptr || dc_prev == nullptr) return;
    const int64_t n = shape.num_elements();
    if constexpr (kSaved)
      detgemm::LstmCellGradSaved(isa_, n, In(ctx, 0), In(ctx, 1), In(ctx, 2), In(ctx, 3), In(ctx, 4), dz, dc_prev);
    else
      detgemm::LstmCellGrad(isa_, n, In(ctx, 0), In(ctx, 1), In(ctx, 2), In(ctx, 3), dz, dc_prev);
  }

 private:
  const detgemm::Isa isa_;
};

REGISTER_KERNEL_BUILDER(Name("DetLstmCellGrad").Device(DEVICE_CPU), DetLstmCellGradOp<false>);

REGISTER_OP("DetLstmCellSaving")
    .Input("z: float")
    .Input("c_prev: float")
    .Output("h: float")
    .Output("c: float")
    .Output("activations: float")
    .Output("tanh_c: float")
    .Attr("isa: {'auto', 'scalar', 'avx2', 'avx512'} = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle z, c_prev;
      TF_RETURN_IF_ERROR(CellShapes(c, &z, &c_prev));
      c->set_output(0, c_prev);
      c->set_output(1, c_prev);
      c->set_output(2, z);
      c->set_output(3, c_prev);
      return absl::OkStatus();
    })
    .Doc(R"doc(
DetLstmCell, and the activations i, f, o, g (shaped as z) and tanh(c) it computed, for
DetLstmCellSavedGrad. Same bits on every x86-64 CPU. Single-threaded.
)doc");

REGISTER_KERNEL_BUILDER(Name("DetLstmCellSaving").Device(DEVICE_CPU), DetLstmCellOp<true>);

REGISTER_OP("DetLstmCellSavedGrad")
    .Input("activations: float")
    .Input("tanh_c: float")
    .Input("c_prev: float")
    .Input("dh: float")
    .Input("dc: float")
    .Output("dz: float")
    .Output("dc_prev: float")
    .Attr("isa: {'auto', 'scalar', 'avx2', 'avx512'} = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle activations, tanh_c, merged;
      TF_RETURN_IF_ERROR(CellShapes(c, &activations, &tanh_c));
      for (int k = 2; k < 5; ++k) TF_RETURN_IF_ERROR(c->Merge(tanh_c, c->input(k), &merged));
      c->set_output(0, activations);
      c->set_output(1, tanh_c);
      return absl::OkStatus();
    })
    .Doc(R"doc(
DetLstmCellGrad's dz and dc_prev (the same bits) from DetLstmCellSaving's activations and tanh_c, the step's
c_prev and the gradients dh, dc of h and c. Single-threaded.
)doc");

REGISTER_KERNEL_BUILDER(Name("DetLstmCellSavedGrad").Device(DEVICE_CPU), DetLstmCellGradOp<true>);
