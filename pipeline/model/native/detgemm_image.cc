// TensorFlow custom op "DetProjectiveTransform": TensorFlow's ImageProjectiveTransformV3 with bilinear
// interpolation and a constant fill (what keras.layers.RandomTranslation runs for the MNIST augmentation),
// with the same bits, several times faster.
//
// TensorFlow's kernel (tensorflow/core/kernels/image/image_ops.h, ProjectiveGenerator) computes each output
// pixel on its own, calling a generic per-coefficient generator through Eigen: on a 2-core AMD EPYC it took
// about 2.2 ms of every MNIST training step of 256 images, alone on one core (the batch is sliced only
// after it). This op computes every pixel with the same float operations in the same order
// (-ffp-contract=off: no fused multiply-add where TensorFlow's wheel, built for AVX without FMA, has none):
//     projection = t6 * x + t7 * y + 1;  (fill where it is 0)
//     in_x = (t0 * x + t1 * y + t2) / projection;  in_y = (t3 * x + t4 * y + t5) / projection
//     with x0 = floor(in_x), x1 = x0 + 1 (y alike), and a pixel outside the image read as the fill value:
//     top = (x1 - in_x) * p(y0, x0) + (in_x - x0) * p(y0, x1);  bottom = the same on row y1
//     out = (y1 - in_y) * top + (in_y - y0) * bottom
// (TensorFlow 2.21's kernel, whose headers the library compiles with: no test of in_x, in_y against the
// image's bounds before the reads), but reads the transform once per image, multiplies by y once per row and
// computes the coordinates once per output position, not per channel.
// Per-pixel independence makes the order of the loops irrelevant to the bits. Runs on the caller's thread
// under detgemm::FixedMxcsr (flush-to-zero and denormals-are-zero, as TensorFlow's executor runs its kernels).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "detgemm_kernel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

#if defined(__FAST_MATH__)
#error "detgemm must not be compiled with -ffast-math"
#endif

// GCC 12 warns about its own AVX-512 intrinsics' _mm512_undefined_* pass-through values.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"  // vector types in the signatures of functions only ever inlined

namespace detgemm {
namespace {

// The image's and the output's sizes, the transform of one image, the products with one output row's y.
struct Row {
  const float* image;  // (height, width, channels)
  int64_t height, width, channels;
  const float* t;  // 8 values
  float fy, py, xy, yy;  // the row's y, t7 * y, t1 * y, t4 * y
  float fill;
};

// The row's output pixels [0, end), one by one; TensorFlow's operations in its order. AVX (which
// TensorFlow itself requires) so that floor is one instruction (roundss), not a call into libm: the same result.
__attribute__((target("avx"))) void PixelsScalar(const Row& r, int64_t end, float* out) {
  const int64_t channels = r.channels;
  for (int64_t ox = 0; ox < end; ++ox) {
    float* o = out + ox * channels;
    const float fx = static_cast<float>(ox);
    const float projection = r.t[6] * fx + r.py + 1.f;
    if (projection == 0) {
      for (int64_t c = 0; c < channels; ++c) o[c] = r.fill;
      continue;
    }
    const float in_x = (r.t[0] * fx + r.xy + r.t[2]) / projection, in_y = (r.t[3] * fx + r.yy + r.t[5]) / projection;
    const float y_floor = std::floor(in_y), x_floor = std::floor(in_x);
    const float y_ceil = y_floor + 1, x_ceil = x_floor + 1;
    // Float to integer as TensorFlow's DenseIndex(...) (cvttss2si: out of range or NaN gives INT64_MIN).
    const int64_t y0 = static_cast<int64_t>(y_floor), x0 = static_cast<int64_t>(x_floor);
    const int64_t y1 = static_cast<int64_t>(y_ceil), x1 = static_cast<int64_t>(x_ceil);
    const bool in_y0 = 0 <= y0 && y0 < r.height, in_y1 = 0 <= y1 && y1 < r.height;
    const bool in_x0 = 0 <= x0 && x0 < r.width, in_x1 = 0 <= x1 && x1 < r.width;
    const float wx0 = x_ceil - in_x, wx1 = in_x - x_floor, wy0 = y_ceil - in_y, wy1 = in_y - y_floor;
    // TensorFlow's read_with_fill_value: a pixel of the image, or the fill value outside it.
    auto pixel = [&](bool inside, int64_t y, int64_t x, int64_t c) {
      return inside ? r.image[(y * r.width + x) * channels + c] : r.fill;
    };
    for (int64_t c = 0; c < channels; ++c) {
      const float p00 = pixel(in_y0 && in_x0, y0, x0, c), p01 = pixel(in_y0 && in_x1, y0, x1, c);
      const float p10 = pixel(in_y1 && in_x0, y1, x0, c), p11 = pixel(in_y1 && in_x1, y1, x1, c);
      const float top = wx0 * p00 + wx1 * p01, bottom = wx0 * p10 + wx1 * p11;
      o[c] = wy0 * top + wy1 * bottom;
    }
  }
}

// The vector operations the generic loop below needs, 8 lanes (AVX2) or 16 (AVX-512). Mask: a lane mask
// (AVX2: all bits of the lane set; AVX-512: a bit per lane).
#define DETGEMM_AVX2 __attribute__((target("avx2,fma")))
struct Avx2 {
  using V = __m256;
  using I = __m256i;
  using Mask = __m256i;
  static constexpr int kWidth = 8;
  DETGEMM_AVX2 static V Set(float x) { return _mm256_set1_ps(x); }
  DETGEMM_AVX2 static I SetI(int64_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  DETGEMM_AVX2 static I Lanes() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  DETGEMM_AVX2 static I AddI(I a, I b) { return _mm256_add_epi32(a, b); }
  DETGEMM_AVX2 static V Float(I x) { return _mm256_cvtepi32_ps(x); }
  DETGEMM_AVX2 static I Truncate(V x) { return _mm256_cvttps_epi32(x); }
  DETGEMM_AVX2 static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  DETGEMM_AVX2 static V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
  DETGEMM_AVX2 static V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  DETGEMM_AVX2 static V Div(V a, V b) { return _mm256_div_ps(a, b); }
  DETGEMM_AVX2 static V Floor(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  DETGEMM_AVX2 static bool AnyNot(V x, V value) {
    return _mm256_movemask_ps(_mm256_cmp_ps(x, value, _CMP_NEQ_UQ)) != 0;
  }
  DETGEMM_AVX2 static Mask Equal(V x, V value) { return _mm256_castps_si256(_mm256_cmp_ps(x, value, _CMP_EQ_OQ)); }
  DETGEMM_AVX2 static Mask Inside(I v, I size) {  // 0 <= v < size
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), v), _mm256_cmpgt_epi32(size, v));
  }
  DETGEMM_AVX2 static Mask And(Mask a, Mask b) { return _mm256_and_si256(a, b); }
  // vgatherdps written out, with ymm4 clobbered so that no operand is it: qemu 7.2 (Debian 12's, which runs
  // the cross-CPU test) decodes a VSIB index of ymm4 as no index and reads the wrong pixels. The hardware
  // does not care which registers; the bits are _mm256_mask_i32gather_ps's.
  DETGEMM_AVX2 static V Read(const float* image, I width, I y, I x, Mask mask, V fill) {
    const I index = _mm256_add_epi32(_mm256_mullo_epi32(y, width), x);
    V result = fill;
    __asm__("vgatherdps %[mask], (%[image],%[index],4), %[result]"
            : [result] "+&x"(result), [mask] "+&x"(mask)
            : [image] "r"(image), [index] "x"(index)
            : "xmm4", "memory");
    return result;
  }
  DETGEMM_AVX2 static V Blend(V value, V other, Mask mask) {
    return _mm256_blendv_ps(value, other, _mm256_castsi256_ps(mask));
  }
  DETGEMM_AVX2 static void Store(float* out, int64_t count, V v) {  // the first `count` lanes
    if (count >= kWidth) _mm256_storeu_ps(out, v);
    else _mm256_maskstore_ps(out, _mm256_cmpgt_epi32(SetI(count), Lanes()), v);
  }
};

#define DETGEMM_AVX512 __attribute__((target("avx512f")))
struct Avx512 {
  using V = __m512;
  using I = __m512i;
  using Mask = __mmask16;
  static constexpr int kWidth = 16;
  DETGEMM_AVX512 static V Set(float x) { return _mm512_set1_ps(x); }
  DETGEMM_AVX512 static I SetI(int64_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  DETGEMM_AVX512 static I Lanes() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  DETGEMM_AVX512 static I AddI(I a, I b) { return _mm512_add_epi32(a, b); }
  DETGEMM_AVX512 static V Float(I x) { return _mm512_cvtepi32_ps(x); }
  DETGEMM_AVX512 static I Truncate(V x) { return _mm512_cvttps_epi32(x); }
  DETGEMM_AVX512 static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  DETGEMM_AVX512 static V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  DETGEMM_AVX512 static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  DETGEMM_AVX512 static V Div(V a, V b) { return _mm512_div_ps(a, b); }
  DETGEMM_AVX512 static V Floor(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  DETGEMM_AVX512 static bool AnyNot(V x, V value) { return _mm512_cmp_ps_mask(x, value, _CMP_NEQ_UQ) != 0; }
  DETGEMM_AVX512 static Mask Equal(V x, V value) { return _mm512_cmp_ps_mask(x, value, _CMP_EQ_OQ); }
  DETGEMM_AVX512 static Mask Inside(I v, I size) {  // 0 <= v < size
    return _mm512_cmpge_epi32_mask(v, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(v, size);
  }
  DETGEMM_AVX512 static Mask And(Mask a, Mask b) { return a & b; }
  DETGEMM_AVX512 static V Read(const float* image, I width, I y, I x, Mask mask, V fill) {
    const I index = _mm512_add_epi32(_mm512_mullo_epi32(y, width), x);
    return _mm512_mask_i32gather_ps(fill, mask, index, image, 4);
  }
  DETGEMM_AVX512 static V Blend(V value, V other, Mask mask) { return _mm512_mask_blend_ps(mask, value, other); }
  DETGEMM_AVX512 static void Store(float* out, int64_t count, V v) {  // the first `count` lanes
    _mm512_mask_storeu_ps(out, count >= kWidth ? 0xFFFF : static_cast<__mmask16>((1u << count) - 1), v);
  }
};

// One channel, kWidth output pixels at a time: PixelsScalar's operations lane by lane (a lane's integer
// coordinate is cvttps2dq's, INT32_MIN out of range: outside the image exactly where TensorFlow's INT64_MIN
// or a large value is, for an image of fewer than 2^31 floats), reads by masked gathers, the row's last
// pixels by a masked store (lanes past its end computed, not stored). Inlined into each ISA's loop.
template <class O>
inline void Pixels(const Row& r, int64_t end, float* out) {
  using V = typename O::V;
  using I = typename O::I;
  using Mask = typename O::Mask;
  const V t0 = O::Set(r.t[0]), t2 = O::Set(r.t[2]), t3 = O::Set(r.t[3]), t5 = O::Set(r.t[5]), t6 = O::Set(r.t[6]);
  const V py = O::Set(r.py), xy = O::Set(r.xy), yy = O::Set(r.yy), one = O::Set(1.f), fill = O::Set(r.fill);
  const I height = O::SetI(r.height), width = O::SetI(r.width);
  for (int64_t ox = 0; ox < end; ox += O::kWidth) {
    const V fx = O::Float(O::AddI(O::SetI(ox), O::Lanes()));
    const V projection = O::Add(O::Add(O::Mul(t6, fx), py), one);
    V in_x = O::Add(O::Add(O::Mul(t0, fx), xy), t2), in_y = O::Add(O::Add(O::Mul(t3, fx), yy), t5);
    if (O::AnyNot(projection, one)) {  // x / 1 is x, bit for bit: an affine warp skips the divisions
      in_x = O::Div(in_x, projection);
      in_y = O::Div(in_y, projection);
    }
    const V y_floor = O::Floor(in_y), x_floor = O::Floor(in_x);
    const V y_ceil = O::Add(y_floor, one), x_ceil = O::Add(x_floor, one);
    const I y0 = O::Truncate(y_floor), x0 = O::Truncate(x_floor), y1 = O::Truncate(y_ceil), x1 = O::Truncate(x_ceil);
    const Mask in_y0 = O::Inside(y0, height), in_y1 = O::Inside(y1, height);
    const Mask in_x0 = O::Inside(x0, width), in_x1 = O::Inside(x1, width);
    const V wx0 = O::Sub(x_ceil, in_x), wx1 = O::Sub(in_x, x_floor), wy0 = O::Sub(y_ceil, in_y), wy1 = O::Sub(in_y, y_floor);
    const V p00 = O::Read(r.image, width, y0, x0, O::And(in_y0, in_x0), fill);
    const V p01 = O::Read(r.image, width, y0, x1, O::And(in_y0, in_x1), fill);
    const V p10 = O::Read(r.image, width, y1, x0, O::And(in_y1, in_x0), fill);
    const V p11 = O::Read(r.image, width, y1, x1, O::And(in_y1, in_x1), fill);
    const V top = O::Add(O::Mul(wx0, p00), O::Mul(wx1, p01)), bottom = O::Add(O::Mul(wx0, p10), O::Mul(wx1, p11));
    const V value = O::Add(O::Mul(wy0, top), O::Mul(wy1, bottom));
    O::Store(out + ox, end - ox, O::Blend(value, fill, O::Equal(projection, O::Set(0.f))));
  }
}

// Each ISA's loop: the generic code inlined (flatten) and so compiled for the loop's target.
__attribute__((target("avx2,fma"), flatten)) void PixelsAvx2(const Row& r, int64_t end, float* out) {
  Pixels<Avx2>(r, end, out);
}
__attribute__((target("avx512f"), flatten)) void PixelsAvx512(const Row& r, int64_t end, float* out) {
  Pixels<Avx512>(r, end, out);
}

}  // namespace

// images (batch, height, width, channels); transforms (1 or batch, 8); out (batch, out_height, out_width,
// channels). Vector paths for one channel (MNIST's) and images of fewer than 2^31 floats; the rest one by one.
Isa ProjectiveTransform(Isa isa, const float* images, int64_t batch, int64_t height, int64_t width,
                        int64_t channels, const float* transforms, bool one_transform, int64_t out_height,
                        int64_t out_width, float fill, float* out) {
  isa = ResolveIsa(isa);
  const FixedMxcsr fixed;
  const bool vector = channels == 1 && height * width < (int64_t{1} << 31) && out_width < (int64_t{1} << 31);
  for (int64_t b = 0; b < batch; ++b) {
    const float* t = transforms + (one_transform ? 0 : 8 * b);
    for (int64_t oy = 0; oy < out_height; ++oy) {
      const float fy = static_cast<float>(oy);
      const Row row{images + b * height * width * channels, height, width, channels, t, fy, t[7] * fy, t[1] * fy,
                    t[4] * fy, fill};
      float* o = out + (b * out_height + oy) * out_width * channels;
      if (vector && isa == kAvx512) PixelsAvx512(row, out_width, o);
      else if (vector && isa == kAvx2) PixelsAvx2(row, out_width, o);
      else PixelsScalar(row, out_width, o);
    }
  }
  return isa;
}

}  // namespace detgemm

using namespace tensorflow;

REGISTER_OP("DetProjectiveTransform")
    .Input("images: float")
    .Input("transforms: float")
    .Input("output_shape: int32")
    .Input("fill_value: float")
    .Output("transformed_images: float")
    .Attr("isa: {'auto', 'scalar', 'avx2', 'avx512'} = 'auto'")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle images, size;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &images));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &size));
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(2, &size));
      TF_RETURN_IF_ERROR(c->WithRank(size, 2, &size));
      c->set_output(0, c->MakeShape({c->Dim(images, 0), c->Dim(size, 0), c->Dim(size, 1), c->Dim(images, 3)}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
ImageProjectiveTransformV3 with interpolation BILINEAR and fill_mode CONSTANT, the same bits. images
(batch, height, width, channels), transforms (1 or batch, 8), output_shape (2: height, width), fill_value
(a scalar). Single-threaded.
)doc");

class DetProjectiveTransformOp : public OpKernel {
 public:
  explicit DetProjectiveTransformOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string isa;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("isa", &isa));
    isa_ = detgemm::ParseIsa(isa.c_str());
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &images = ctx->input(0), &transforms = ctx->input(1), &shape = ctx->input(2);
    const Tensor& fill = ctx->input(3);
    OP_REQUIRES(ctx, images.dims() == 4,
                absl::InvalidArgumentError(absl::StrCat("DetProjectiveTransform: images must be rank 4, got ",
                                                        images.shape().DebugString())));
    const int64_t batch = images.dim_size(0);
    OP_REQUIRES(ctx,
                transforms.dims() == 2 && transforms.dim_size(1) == 8 &&
                    (transforms.dim_size(0) == 1 || transforms.dim_size(0) == batch),
                absl::InvalidArgumentError(absl::StrCat("DetProjectiveTransform: transforms must be (1 or ", batch,
                                                        ", 8), got ", transforms.shape().DebugString())));
    OP_REQUIRES(ctx, shape.dims() == 1 && shape.dim_size(0) == 2 && fill.dims() == 0,
                absl::InvalidArgumentError("DetProjectiveTransform: output_shape must be 2 values, fill_value a scalar"));
    const int32_t out_height = shape.vec<int32_t>()(0), out_width = shape.vec<int32_t>()(1);
    OP_REQUIRES(ctx, out_height >= 0 && out_width >= 0,
                absl::InvalidArgumentError("DetProjectiveTransform: output_shape must not be negative"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, out_height, out_width, images.dim_size(3)}), &out));
    detgemm::ProjectiveTransform(isa_, images.flat<float>().data(), batch, images.dim_size(1), images.dim_size(2),
                                 images.dim_size(3), transforms.flat<float>().data(), transforms.dim_size(0) == 1,
                                 out_height, out_width, fill.scalar<float>()(), out->flat<float>().data());
  }

 private:
  detgemm::Isa isa_ = detgemm::kAuto;
};

REGISTER_KERNEL_BUILDER(Name("DetProjectiveTransform").Device(DEVICE_CPU).HostMemory("output_shape"),
                        DetProjectiveTransformOp);
