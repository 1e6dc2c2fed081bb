// Random regularisers: dropout (inverted: survivors scaled by 1/(1-p), as torch's
// F.dropout) and drop_path (stochastic depth, Huang et al. 2016: one keep/drop draw per
// sample, as timm.layers.drop_path with scale_by_keep=True). Masks come from a Philox
// Generator, so the same seed gives the same mask on any thread count, and on the GPU
// (cuda/random.cu reads the same Philox blocks).
#pragma once
#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "../cpu/random.hpp"
#include "device.hpp"
#include "elementwise.hpp"

namespace histograd {

// dropout: y = x · keep / (1-p) with keep ~ Bernoulli(1-p) per element; identity when
// !training or p == 0, zeros when p == 1.  dx = g · keep / (1-p)
template <class T>
Tensor<T> dropout(const Tensor<T>& x, double p, bool training = true, Generator& gen = default_generator()) {
  HG_CHECK(p >= 0.0 && p <= 1.0, "dropout", "expected a drop probability p in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  const T scale = p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
  Tensor<T> xc = x.detach().contiguous(), out(x.shape(), x.device());
  Tensor<bool> keep(x.shape(), x.device());
  const uint64_t start = gen.reserve(static_cast<uint64_t>((x.numel() + 3) / 4));
  if (detail::is_cuda(x)) {
#ifdef HISTOGRAD_WITH_CUDA
    if constexpr (detail::cuda_reduce_type<T>) {
      cuda::dropout<T>(xc.device_data(), x.numel(), p, scale, gen.seed(), start, out.device_data(), keep.device_data());
      autograd::record(out, "Dropout", {x}, [keep, scale](const Tensor<T>& g, const NeedsGrad&) {
        Tensor<T> gc = g.contiguous(), grad_input(g.shape(), g.device());
        cuda::dropout_backward<T>(gc.device_data(), keep.device_data(), gc.numel(), scale, grad_input.device_data());
        return std::vector<Tensor<T>>{grad_input};
      });
      return out;
    }
#endif
    detail::no_cuda_kernel("dropout", dtype_name<T>());
  }
  cpu::dropout_forward(xc.data(), x.numel(), p, scale, gen, start, out.data(), keep.data());
  autograd::record(out, "Dropout", {x}, [keep, scale](const Tensor<T>& g, const NeedsGrad&) {
    return std::vector<Tensor<T>>{cpu::map<T>(g, keep, [scale](T v, bool k) { return k ? v * scale : T(0); }, "dropout")};
  });
  return out;
}

// drop_path: y[b] = x[b] · keep_b / (1-p) with one keep_b ~ Bernoulli(1-p) per sample of
// the leading dim (a residual branch dropped for the whole sample); identity when
// !training or p == 0. As in timm, p == 1 drops every sample without scaling.
// dx[b] = g[b] · keep_b / (1-p)  (the Mul's backward)
template <class T>
Tensor<T> drop_path(const Tensor<T>& x, double p, bool training = true, Generator& gen = default_generator()) {
  HG_CHECK(p >= 0.0 && p <= 1.0, "drop_path", "expected a drop probability p in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  HG_CHECK(x.dim() >= 1, "drop_path", "expected a batch dim first, got a 0-d tensor");
  const int64_t samples = x.size(0);
  const T scale = p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
  Shape mask_shape(static_cast<size_t>(x.dim()), 1);
  mask_shape[0] = samples;
  if (detail::is_cuda(x)) {  // the same uniforms as below, drawn and compared in double on the device
    Tensor<bool> keep = detail::cuda_compare(cuda::CompareOp::Ge, rand<double>(Shape{samples}, gen, x.device()),
                                             Tensor<double>(), p, "drop_path");
    return mul(x, detail::cuda_where(keep, Tensor<T>(), double(scale), Tensor<T>(), 0.0, "drop_path").reshape(mask_shape));
  }
  Tensor<T> mask(mask_shape);
  const uint64_t start = gen.reserve(static_cast<uint64_t>((samples + 3) / 4));
  for (int64_t b = 0; b < samples; ++b)
    mask.data()[b] = gen.uniforms(start, static_cast<uint64_t>(b / 4))[static_cast<size_t>(b % 4)] >= p ? scale : T(0);
  return mul(x, mask);
}

}  // namespace histograd
