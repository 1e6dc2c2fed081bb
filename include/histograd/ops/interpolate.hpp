// Bicubic and bilinear resizing of NCHW images in PyTorch's variants (MODELS.md §0.2). Bicubic is the
// positional-embedding resampling of every ViT here: (A) F.interpolate(mode='bicubic') as
// DINO, HIPT, LongViT and DINOv2 without registers call it, and (B) antialias=True as DINOv2
// register models and timm's resample_abs_pos_embed do; bilinear with antialias is torchvision's
// Resize on tensors (data/transforms.hpp). Kernels: cpu/interpolate.hpp. On CUDA the same taps,
// built on the host, drive cuda/interpolate.hpp's kernel; the backward uses the transposed taps.
#pragma once
#include <algorithm>
#include <optional>
#include <type_traits>

#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/interpolate.hpp"
#include "../cuda/interpolate.hpp"

namespace histograd {

namespace detail {

// The adjoint taps: for each input position i, the (output o, weight) pairs that read it, in
// increasing o, so the backward is a gather (no atomics) summing in the CPU's order.
template <class T>
cpu::ResampleTaps<T> transposed_taps(const cpu::ResampleTaps<T>& taps) {
  std::vector<std::vector<std::pair<int64_t, T>>> readers(static_cast<size_t>(taps.in_size));
  for (int64_t o = 0; o < taps.out_size; ++o)
    for (int64_t j = 0; j < taps.count[o]; ++j)
      readers[static_cast<size_t>(taps.index[o * taps.max_taps + j])].push_back({o, taps.weight[o * taps.max_taps + j]});
  int64_t most = 1;
  for (const auto& r : readers) most = std::max<int64_t>(most, static_cast<int64_t>(r.size()));
  cpu::ResampleTaps<T> adjoint(taps.out_size, taps.in_size, most, false);
  for (int64_t i = 0; i < taps.in_size; ++i) {
    const auto& r = readers[static_cast<size_t>(i)];
    adjoint.count[i] = static_cast<int64_t>(r.size());
    for (size_t c = 0; c < r.size(); ++c) {
      adjoint.index[i * most + static_cast<int64_t>(c)] = r[c].first;
      adjoint.weight[i * most + static_cast<int64_t>(c)] = r[c].second;
    }
  }
  return adjoint;
}

// Taps copied to a device, with the sizes the kernel needs.
template <class T>
struct DeviceTaps {
  Tensor<int64_t> index, count;
  Tensor<T> weight;
  int64_t in_size = 0, out_size = 0, max_taps = 0;
  bool fuse_pair = false;
};
template <class T>
DeviceTaps<T> upload_taps(const cpu::ResampleTaps<T>& taps, Device device) {
  DeviceTaps<T> d;
  d.index = from_vector<int64_t>(taps.index, {static_cast<int64_t>(taps.index.size())}, device);
  d.count = from_vector<int64_t>(taps.count, {static_cast<int64_t>(taps.count.size())}, device);
  d.weight = from_vector<T>(taps.weight, {static_cast<int64_t>(taps.weight.size())}, device);
  d.in_size = taps.in_size, d.out_size = taps.out_size, d.max_taps = taps.max_taps, d.fuse_pair = taps.fuse_pair;
  return d;
}

// out [planes, taps.out_size, width] from in [planes, taps.in_size, width], both contiguous.
template <class T>
void cuda_resample([[maybe_unused]] const DeviceTaps<T>& taps, const Tensor<T>& in, [[maybe_unused]] Tensor<T>& out,
                   [[maybe_unused]] int64_t planes, [[maybe_unused]] int64_t width) {
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    cuda::set_device(in.device().index);
    cuda::resample_axis<T>(in.device_data(), out.device_data(), planes, taps.in_size, taps.out_size, width,
                           taps.index.device_data(), taps.count.device_data(), taps.weight.device_data(),
                           taps.max_taps, taps.fuse_pair);
    return;
  }
#endif
  fail("interpolate", "no CUDA kernel for ", dtype_name<T>(), " tensors on ", in.device().str());
}

// resample_separable on a CUDA tensor: the same passes in the same order.
template <class T>
Tensor<T> cuda_resample_separable(const Tensor<T>& x, const cpu::ResampleTaps<T>& taps_h,
                                  const cpu::ResampleTaps<T>& taps_w, bool resize_h, bool resize_w,
                                  const char* node_name) {
  const Device device = x.device();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t out_h = taps_h.out_size, out_w = taps_w.out_size;
  const DeviceTaps<T> h = upload_taps(taps_h, device), w = upload_taps(taps_w, device);
  Tensor<T> image = x.detach().contiguous(), wide = image;
  if (resize_w) {
    wide = Tensor<T>({N, C, H, out_w}, device);
    cuda_resample(w, image, wide, N * C * H, 1);
  }
  Tensor<T> y = wide;
  if (resize_h) {
    y = Tensor<T>({N, C, out_h, out_w}, device);
    cuda_resample(h, wide, y, N * C, out_w);
  }
  if (!resize_w && !resize_h) y = image.clone();
  if (autograd::needs_grad(x)) {
    const DeviceTaps<T> h_adjoint = resize_h ? upload_taps(transposed_taps(taps_h), device) : DeviceTaps<T>();
    const DeviceTaps<T> w_adjoint = resize_w ? upload_taps(transposed_taps(taps_w), device) : DeviceTaps<T>();
    autograd::record(y, node_name, {x}, [=](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> grad = g.contiguous();
      if (resize_h) {
        Tensor<T> grad_wide({N, C, H, grad.size(3)}, device);
        cuda_resample(h_adjoint, grad, grad_wide, N * C, grad.size(3));
        grad = grad_wide;
      }
      if (resize_w) {
        Tensor<T> grad_in({N, C, H, W}, device);
        cuda_resample(w_adjoint, grad, grad_in, N * C * H, 1);
        grad = grad_in;
      }
      return std::vector<Tensor<T>>{grad};
    });
  }
  return y;
}

// y = R_h · x · R_w^T per (n, c) plane: the width pass first, then the height pass (PyTorch's
// order and rounding); dx = R_h^T · dy · R_w, the same taps scatter-added. A pass whose flag is
// false is skipped (the antialias paths skip a dim whose size is unchanged, as PyTorch's do).
template <class T>
Tensor<T> resample_separable(const Tensor<T>& x, const cpu::ResampleTaps<T>& taps_h, const cpu::ResampleTaps<T>& taps_w,
                             bool resize_h, bool resize_w, const char* node_name) {
  if (x.device().is_cuda()) return cuda_resample_separable(x, taps_h, taps_w, resize_h, resize_w, node_name);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t out_h = taps_h.out_size, out_w = taps_w.out_size;
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
    autograd::record(y, node_name, {x}, [=](const Tensor<T>& g, const NeedsGrad&) {
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

template <class T>
void check_interpolate_args(const char* op, const Tensor<T>& x, int64_t out_h, int64_t out_w,
                            std::optional<double> scale_h, std::optional<double> scale_w) {
  HG_CHECK(x.dim() == 4, op, "expected a 4-D input [N, C, H, W], got shape ", to_string(x.shape()));
  HG_CHECK(out_h > 0 && out_w > 0, op, "expected a positive output size, got ", out_h, "x", out_w);
  HG_CHECK(x.size(2) > 0 && x.size(3) > 0, op, "expected a non-empty input image, got shape ", to_string(x.shape()));
  HG_CHECK((!scale_h || *scale_h > 0) && (!scale_w || *scale_w > 0), op, "expected positive scale factors, got ",
           scale_h.value_or(1.0), " and ", scale_w.value_or(1.0));
}

}  // namespace detail

// interpolate_bicubic: F.interpolate(x, (out_h, out_w), mode='bicubic'), either variant.
// scale_h/scale_w are F.interpolate's scale_factor: when given, the source ratio is 1/scale
// instead of in/out.
template <class T>
Tensor<T> interpolate_bicubic(const Tensor<T>& x, int64_t out_h, int64_t out_w, bool align_corners = false,
                              bool antialias = false, std::optional<double> scale_h = std::nullopt,
                              std::optional<double> scale_w = std::nullopt) {
  detail::check_interpolate_args("interpolate_bicubic", x, out_h, out_w, scale_h, scale_w);
  const int64_t H = x.size(2), W = x.size(3);
  auto make_taps = [&](int64_t in, int64_t out, std::optional<double> scale) {
    return antialias ? cpu::bicubic_antialias_taps<T>(in, out, align_corners, scale)
                     : cpu::bicubic_taps<T>(in, out, align_corners, scale);
  };
  // mode (A) resamples every dim (with a scale factor an unchanged size is not the identity)
  return detail::resample_separable(x, make_taps(H, out_h, scale_h), make_taps(W, out_w, scale_w),
                                    !antialias || H != out_h, !antialias || W != out_w, "InterpolateBicubic");
}

// interpolate_bilinear: F.interpolate(x, (out_h, out_w), mode='bilinear'): plain (two taps,
// clamped source index) or antialias=True (triangle filter stretched when shrinking, as
// torchvision's Resize does on float tensors). Same separable passes and gradient as bicubic.
template <class T>
Tensor<T> interpolate_bilinear(const Tensor<T>& x, int64_t out_h, int64_t out_w, bool align_corners = false,
                               bool antialias = false, std::optional<double> scale_h = std::nullopt,
                               std::optional<double> scale_w = std::nullopt) {
  detail::check_interpolate_args("interpolate_bilinear", x, out_h, out_w, scale_h, scale_w);
  const int64_t H = x.size(2), W = x.size(3);
  auto make_taps = [&](int64_t in, int64_t out, std::optional<double> scale) {
    return antialias ? cpu::bilinear_antialias_taps<T>(in, out, align_corners, scale)
                     : cpu::bilinear_taps<T>(in, out, align_corners, scale);
  };
  return detail::resample_separable(x, make_taps(H, out_h, scale_h), make_taps(W, out_w, scale_w),
                                    !antialias || H != out_h, !antialias || W != out_w, "InterpolateBilinear");
}

}  // namespace histograd
