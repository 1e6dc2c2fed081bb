// Bicubic resizing of NCHW images in both of PyTorch's variants (MODELS.md §0.2), the
// positional-embedding resampling of every ViT here: (A) F.interpolate(mode='bicubic') as
// DINO, HIPT, LongViT and DINOv2 without registers call it, and (B) antialias=True as DINOv2
// register models and timm's resample_abs_pos_embed do. Kernels: cpu/interpolate.hpp.
#pragma once
#include <optional>

#include "../autograd/node.hpp"
#include "../core/tensor.hpp"
#include "../cpu/interpolate.hpp"

namespace histograd {

// interpolate_bicubic: y = R_h · x · R_w^T per (n, c) plane, R the resampling matrices of the
// chosen variant; the width pass runs first, then the height pass (PyTorch's order and
// rounding). dx = R_h^T · dy · R_w: the same taps scatter-added. scale_h/scale_w are
// F.interpolate's scale_factor: when given, the source ratio is 1/scale instead of in/out.
template <class T>
Tensor<T> interpolate_bicubic(const Tensor<T>& x, int64_t out_h, int64_t out_w, bool align_corners = false,
                              bool antialias = false, std::optional<double> scale_h = std::nullopt,
                              std::optional<double> scale_w = std::nullopt) {
  HG_CHECK(x.dim() == 4, "interpolate_bicubic", "expected a 4-D input [N, C, H, W], got shape ", to_string(x.shape()));
  HG_CHECK(out_h > 0 && out_w > 0, "interpolate_bicubic", "expected a positive output size, got ", out_h, "x", out_w);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  HG_CHECK(H > 0 && W > 0, "interpolate_bicubic", "expected a non-empty input image, got shape ", to_string(x.shape()));
  HG_CHECK((!scale_h || *scale_h > 0) && (!scale_w || *scale_w > 0), "interpolate_bicubic",
           "expected positive scale factors, got ", scale_h.value_or(1.0), " and ", scale_w.value_or(1.0));
  auto make_taps = [&](int64_t in, int64_t out, std::optional<double> scale) {
    return antialias ? cpu::bicubic_antialias_taps<T>(in, out, align_corners, scale)
                     : cpu::bicubic_taps<T>(in, out, align_corners, scale);
  };
  auto taps_w = make_taps(W, out_w, scale_w), taps_h = make_taps(H, out_h, scale_h);
  // The antialias path skips a dim whose size is unchanged, as PyTorch's does; mode (A)
  // resamples every dim (with a scale factor an unchanged size is not the identity).
  const bool resize_w = !antialias || W != out_w, resize_h = !antialias || H != out_h;

  Tensor<T> image = x.detach().contiguous(), wide = image;
  if (resize_w) {
    wide = Tensor<T>({N, C, H, out_w});
    cpu::resample_rows(taps_w, image.data(), N * C * H, wide.data());
  }
  Tensor<T> y = wide;
  if (resize_h) {
    y = Tensor<T>({N, C, out_h, out_w});
    cpu::resample_columns(taps_h, wide.data(), N * C, out_w, y.data());
  }
  if (!resize_w && !resize_h) y = image.clone();  // never alias the input

  if (autograd::needs_grad(x))
    autograd::record(y, "InterpolateBicubic", {x}, [=](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> grad = g.contiguous();
      if (resize_h) {
        Tensor<T> grad_wide({N, C, H, grad.size(3)});
        cpu::resample_columns_backward(taps_h, grad.data(), N * C, grad.size(3), grad_wide.data());
        grad = grad_wide;
      }
      if (resize_w) {
        Tensor<T> grad_in({N, C, H, W});
        cpu::resample_rows_backward(taps_w, grad.data(), N * C * H, grad_in.data());
        grad = grad_in;
      }
      return std::vector<Tensor<T>>{grad};
    });
  return y;
}

}  // namespace histograd
