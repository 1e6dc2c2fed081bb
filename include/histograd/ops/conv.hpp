// conv2d with torch.nn.functional.conv2d's semantics (stride, padding, dilation, groups) as
// im2col + GEMM, and patch_embed, the kernel == stride stem of every ViT (MODELS.md §1.1,
// §2.1): a reshape/permute of the image into patch rows and one GEMM. Kernels: cpu/conv.hpp.
// Shapes: x [N, C, H, W], weight [O, C/groups, kh, kw], bias [O] or undefined (no bias).
// CUDA tensors (float32) go to cuDNN (cuda/conv.hpp; TF32 as cuda::allow_tf32()); without cuDNN,
// the kernel == stride convolutions take the patch path on the device, the rest are refused.
// Under autocast (core/autocast.hpp) float convolutions compute in bf16 on either device: the
// patch path is autocast's bf16 linear; any other convolution runs the fp32 kernel on operands
// rounded to bf16, its output and gradients rounded (bf16's numerics, not its speed).
#pragma once
#include <type_traits>

#include "../autograd/node.hpp"
#include "../core/tensor.hpp"
#include "../cpu/conv.hpp"
#include "../cuda/conv.hpp"
#include "matmul.hpp"

namespace histograd {

// An (h, w) pair that, like PyTorch's int-or-tuple arguments, also accepts one int for both.
struct IntPair {
  int64_t h, w;
  IntPair(int64_t both) : h(both), w(both) {}  // NOLINT: implicit, so conv2d(x, w, b, 2) reads as in PyTorch
  IntPair(int64_t h_, int64_t w_) : h(h_), w(w_) {}
};

namespace detail {

template <class T>
cpu::Conv2dShape conv2d_shape(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, IntPair stride,
                              IntPair padding, IntPair dilation, int64_t groups) {
  HG_CHECK(x.dim() == 4, "conv2d", "expected a 4-D input [N, C, H, W], got shape ", to_string(x.shape()));
  HG_CHECK(weight.dim() == 4, "conv2d", "expected a 4-D weight [out_channels, in_channels/groups, kh, kw], got shape ",
           to_string(weight.shape()));
  HG_CHECK(groups >= 1, "conv2d", "expected groups >= 1, got ", groups);
  HG_CHECK(stride.h >= 1 && stride.w >= 1, "conv2d", "expected a positive stride, got (", stride.h, ", ", stride.w,
           ")");
  HG_CHECK(dilation.h >= 1 && dilation.w >= 1, "conv2d", "expected a positive dilation, got (", dilation.h, ", ",
           dilation.w, ")");
  HG_CHECK(padding.h >= 0 && padding.w >= 0, "conv2d", "expected a non-negative padding, got (", padding.h, ", ",
           padding.w, ")");
  cpu::Conv2dShape s;
  s.batch = x.size(0), s.in_channels = x.size(1), s.in_h = x.size(2), s.in_w = x.size(3);
  s.out_channels = weight.size(0), s.kernel_h = weight.size(2), s.kernel_w = weight.size(3), s.groups = groups;
  HG_CHECK(s.in_channels == weight.size(1) * groups, "conv2d", "expected input with ", weight.size(1) * groups,
           " channels (weight ", to_string(weight.shape()), " with groups=", groups, "), got ", s.in_channels);
  HG_CHECK(s.out_channels % groups == 0, "conv2d", "expected out_channels divisible by groups=", groups,
           ", got weight ", to_string(weight.shape()));
  HG_CHECK(!bias.defined() || bias.shape() == Shape{s.out_channels}, "conv2d", "expected a bias of shape [",
           s.out_channels, "], got ", to_string(bias.shape()));
  s.stride_h = stride.h, s.stride_w = stride.w, s.pad_h = padding.h, s.pad_w = padding.w;
  s.dilation_h = dilation.h, s.dilation_w = dilation.w;
  s.out_h = (s.in_h + 2 * s.pad_h - s.dilation_h * (s.kernel_h - 1) - 1) / s.stride_h + 1;
  s.out_w = (s.in_w + 2 * s.pad_w - s.dilation_w * (s.kernel_w - 1) - 1) / s.stride_w + 1;
  const int64_t span_h = s.dilation_h * (s.kernel_h - 1) + 1, span_w = s.dilation_w * (s.kernel_w - 1) + 1;
  HG_CHECK(s.kernel_h >= 1 && s.kernel_w >= 1 && s.in_h + 2 * s.pad_h >= span_h && s.in_w + 2 * s.pad_w >= span_w,
           "conv2d", "expected a positive output size, but the padded input ", s.in_h + 2 * s.pad_h, "x",
           s.in_w + 2 * s.pad_w, " is smaller than the dilated kernel ", span_h, "x", span_w);
  return s;
}

// The patch path shared by patch_embed and conv2d (kernel == stride, no padding, dilation 1,
// groups 1, sizes divisible): x viewed [N, C, Hp, kh, Wp, kw] -> [N, Hp, Wp, C, kh, kw] is the
// patch matrix, one GEMM makes [N, Hp, Wp, D], returned as the view [N, D, Hp, Wp], so
// ViT's flatten(2).transpose(1, 2) gets back contiguous [N, Hp·Wp, D] tokens with no copy.
// The GEMM is linear()'s, forward and backward, so the stem gets every speed-up of the GEMM.
template <class T>
Tensor<T> patchify_conv(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias) {
  const int64_t N = x.size(0), C = x.size(1), kh = weight.size(2), kw = weight.size(3);
  const int64_t Hp = x.size(2) / kh, Wp = x.size(3) / kw, D = weight.size(0);
  Tensor<T> patches =
      x.reshape({N, C, Hp, kh, Wp, kw}).permute({0, 2, 4, 1, 3, 5}).reshape({N * Hp * Wp, C * kh * kw});
  Tensor<T> tokens = linear(patches, weight.reshape({D, C * kh * kw}), bias);
  return tokens.view({N, Hp, Wp, D}).permute({0, 3, 1, 2});
}

// conv2d on CUDA through cuDNN (groups 1, dilation 1); `patchable` convolutions fall back to the
// patch path (device reshape + GEMM) when cuDNN is missing.
template <class T>
Tensor<T> cuda_conv2d(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias,
                      [[maybe_unused]] const cpu::Conv2dShape& s, [[maybe_unused]] bool patchable) {
  HG_CHECK(weight.device() == x.device() && (!bias.defined() || bias.device() == x.device()), "conv2d",
           "expected input, weight and bias on one device, got ", x.device().str(), " and ", weight.device().str());
  HG_CHECK((std::is_same_v<T, float>), "conv2d", "no CUDA kernel for ", dtype_name<T>(), " tensors (float32 only)");
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    cuda::set_device(x.device().index);
    const bool cudnn_fits = s.groups == 1 && s.dilation_h == 1 && s.dilation_w == 1;
    if (cudnn_fits && cuda::cudnn_available()) {
      cuda::Conv2dArgs args;
      args.batch = s.batch, args.in_channels = s.in_channels, args.height = s.in_h, args.width = s.in_w;
      args.out_channels = s.out_channels, args.kernel_h = s.kernel_h, args.kernel_w = s.kernel_w;
      args.stride_h = s.stride_h, args.stride_w = s.stride_w, args.pad_h = s.pad_h, args.pad_w = s.pad_w;
      args.allow_tf32 = cuda::allow_tf32();
      Tensor<T> xc = x.detach().contiguous(), wc = weight.detach().contiguous();
      Tensor<T> bc = bias.defined() ? bias.detach().contiguous() : Tensor<T>();
      Tensor<T> y({s.batch, s.out_channels, s.out_h, s.out_w}, x.device());
      cuda::conv2d_forward<float>(args, xc.device_data(), wc.device_data(), bc.defined() ? bc.device_data() : nullptr,
                                  y.device_data());
      if (autograd::needs_grad(x, weight, bias))
        autograd::record(y, "Conv2d", {x, weight, bias}, [xc, wc, s, args](const Tensor<T>& g, const NeedsGrad& need) {
          Tensor<T> dy = g.contiguous(), dx, dw, db;
          if (need[0]) dx = Tensor<T>({s.batch, s.in_channels, s.in_h, s.in_w}, dy.device());
          if (need[1]) dw = Tensor<T>({s.out_channels, s.group_in(), s.kernel_h, s.kernel_w}, dy.device());
          if (need[2]) db = Tensor<T>({s.out_channels}, dy.device());
          auto ptr = [](Tensor<T>& t) { return t.defined() ? t.device_data() : nullptr; };
          cuda::conv2d_backward<float>(args, xc.device_data(), wc.device_data(), dy.device_data(), ptr(dx), ptr(dw),
                                       ptr(db));
          return std::vector<Tensor<T>>{dx, dw, db};
        });
      return y;
    }
    if (patchable) return patchify_conv(x, weight, bias);
    fail("conv2d", cudnn_fits ? "this convolution needs cuDNN on CUDA, and histograd::cuda has none"
                              : "grouped or dilated convolutions are not supported on CUDA");
  }
#endif
  fail("conv2d", "histograd was built without CUDA");
}

}  // namespace detail

// conv2d: y[n, o, oh, ow] = b[o] + Σ_{c in o's group, ki, kj} W[o, c, ki, kj] · x[n, c, ih, iw]
// with ih = oh·sh - ph + ki·dh, iw = ow·sw - pw + kj·dw (0 outside), as y[n, g] = W_g · im2col(x[n, g]).
// Backward: dx = col2im(W_g^T · dy), dW_g = Σ_n dy · col^T, db = Σ dy. Kernel == stride convolutions
// (ViT stems, 1x1) take the patch path above, whose output is an NHWC-strided view.
template <class T>
Tensor<T> conv2d(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias = Tensor<T>(), IntPair stride = 1,
                 IntPair padding = 0, IntPair dilation = 1, int64_t groups = 1) {
  const cpu::Conv2dShape s = detail::conv2d_shape(x, weight, bias, stride, padding, dilation, groups);
  const bool patchable = s.kernel_h == s.stride_h && s.kernel_w == s.stride_w && s.pad_h == 0 && s.pad_w == 0 &&
                         groups == 1 && (s.kernel_h == 1 || s.dilation_h == 1) &&
                         (s.kernel_w == 1 || s.dilation_w == 1) && s.in_h % s.kernel_h == 0 && s.in_w % s.kernel_w == 0;
  if constexpr (std::is_same_v<T, float>)
    if (Autocast::is_enabled()) {
      if (patchable) return detail::patchify_conv(x, weight, bias);
      AutocastGuard fp32_kernel(false);  // on the rounded operands; the rounding nodes keep backward in bf16
      return detail::autocast_round(conv2d(detail::autocast_round(x), detail::autocast_round(weight),
                                           detail::autocast_round(bias), stride, padding, dilation, groups));
    }
  if (x.device().is_cuda()) return detail::cuda_conv2d(x, weight, bias, s, patchable);
  if (patchable) return detail::patchify_conv(x, weight, bias);
  Tensor<T> xc = x.detach().contiguous(), wc = weight.detach().contiguous();
  Tensor<T> bc = bias.defined() ? bias.detach().contiguous() : bias;
  Tensor<T> y({s.batch, s.out_channels, s.out_h, s.out_w});
  cpu::conv2d_forward(s, xc.data(), wc.data(), bc.defined() ? bc.data() : nullptr, y.data());
  if (!weight.requires_grad()) xc = Tensor<T>();  // x is only needed for dW, W only for dx
  if (!x.requires_grad()) wc = Tensor<T>();
  if (autograd::needs_grad(x, weight, bias))
    autograd::record(y, "Conv2d", {x, weight, bias}, [xc, wc, s](const Tensor<T>& g, const NeedsGrad& need) {
      Tensor<T> dy = g.contiguous(), dx, dw, db;
      if (need[0]) {
        dx = Tensor<T>({s.batch, s.in_channels, s.in_h, s.in_w});
        cpu::conv2d_backward_input(s, wc.data(), dy.data(), dx.data());
      }
      if (need[1]) {
        dw = Tensor<T>({s.out_channels, s.group_in(), s.kernel_h, s.kernel_w});
        cpu::conv2d_backward_weight(s, xc.data(), dy.data(), dw.data());
      }
      if (need[2]) {
        db = Tensor<T>({s.out_channels});
        cpu::conv2d_backward_bias(s, dy.data(), db.data());
      }
      return std::vector<Tensor<T>>{dx, dw, db};
    });
  return y;
}

// patch_embed: conv2d with kernel == stride == p and no padding, the ViT stem
// (PatchEmbed.proj), computed as one GEMM over the non-overlapping patches; equals conv2d.
// x [N, C, H, W], weight [D, C, p, p] -> [N, D, H/p, W/p] (an NHWC-strided view).
template <class T>
Tensor<T> patch_embed(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias = Tensor<T>()) {
  HG_CHECK(x.dim() == 4, "patch_embed", "expected a 4-D input [N, C, H, W], got shape ", to_string(x.shape()));
  HG_CHECK(weight.dim() == 4 && weight.size(2) >= 1 && weight.size(3) >= 1, "patch_embed",
           "expected a 4-D weight [embed_dim, in_channels, p, p], got shape ", to_string(weight.shape()));
  HG_CHECK(weight.size(1) == x.size(1), "patch_embed", "expected input with ", weight.size(1), " channels (weight ",
           to_string(weight.shape()), "), got ", x.size(1));
  HG_CHECK(x.size(2) % weight.size(2) == 0 && x.size(3) % weight.size(3) == 0, "patch_embed", "expected an image size ",
           x.size(2), "x", x.size(3), " divisible by the patch size ", weight.size(2), "x", weight.size(3));
  HG_CHECK(!bias.defined() || bias.shape() == Shape{weight.size(0)}, "patch_embed", "expected a bias of shape [",
           weight.size(0), "], got ", to_string(bias.shape()));
  return detail::patchify_conv(x, weight, bias);
}

}  // namespace histograd
