// Normalisations: layer_norm over the last dim (nn.LayerNorm; kernels in cpu/layer_norm.hpp)
// and normalize, x / max(||x||_p, eps) along one dim (F.normalize, used on CLIP embeddings and
// the DINO head's bottleneck). On CUDA: layer_norm runs cuda/layer_norm.hpp's kernels (float32),
// normalize is composed of device elementwise and reduction ops (autograd gives its backward).
// weight_norm: nn.utils.weight_norm's w = g · v / ||v|| per output row (kernels in
// cpu/weight_norm.hpp; composed from device ops on CUDA).
#pragma once
#include <cmath>
#include <type_traits>

#include "../autograd/node.hpp"
#include "../core/tensor.hpp"
#include "../cpu/elementwise.hpp"
#include "../cpu/layer_norm.hpp"
#include "../cpu/weight_norm.hpp"
#include "../cuda/layer_norm.hpp"
#include "elementwise.hpp"
#include "reduce.hpp"

namespace histograd {

namespace detail {
// layer_norm on a CUDA float tensor: mean and rstd saved in fp32 per row; absent affine
// parameters are passed as null pointers (the kernels read them as ones and zeros).
template <class T>
Tensor<T> cuda_layer_norm(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, [[maybe_unused]] double eps,
                          [[maybe_unused]] int64_t rows, [[maybe_unused]] int64_t cols) {
  for (const Tensor<T>* param : {&weight, &bias})
    HG_CHECK(!param->defined() || param->device() == x.device(), "layer_norm", "expected weight and bias on ",
             x.device().str(), ", got one on ", param->device().str());
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    cuda::set_device(x.device().index);
    Tensor<T> xc = x.detach().contiguous(), y(x.shape(), x.device());
    Tensor<float> mean(Shape{rows}, x.device()), rstd(Shape{rows}, x.device());
    Tensor<T> w = weight.defined() ? weight.detach().contiguous() : Tensor<T>();
    Tensor<T> b = bias.defined() ? bias.detach().contiguous() : Tensor<T>();
    auto ptr = [](const Tensor<T>& t) { return t.defined() ? t.device_data() : nullptr; };
    cuda::layer_norm_forward<T>(xc.device_data(), ptr(w), ptr(b), y.device_data(), mean.device_data(),
                                rstd.device_data(), rows, cols, eps);
    if (autograd::needs_grad(x, weight, bias))
      autograd::record(y, "LayerNorm", {x, weight, bias}, [xc, w, mean, rstd, rows, cols, ptr](const Tensor<T>& g,
                                                                                            const NeedsGrad& need) {
        Tensor<T> gc = g.contiguous(), dx, dw, db;
        if (need[0]) dx = Tensor<T>(xc.shape(), xc.device());
        if (need[1]) dw = Tensor<T>(Shape{cols}, xc.device());
        if (need[2]) db = Tensor<T>(Shape{cols}, xc.device());
        cuda::layer_norm_backward<T>(xc.device_data(), gc.device_data(), ptr(w), mean.device_data(),
                                     rstd.device_data(), ptr(dx), ptr(dw), ptr(db), rows, cols);
        return std::vector<Tensor<T>>{dx, dw, db};
      });
    return y;
  }
#endif
  fail("layer_norm", "no CUDA kernel for ", dtype_name<T>(), " tensors on ", x.device().str(), " (float32 only)");
}
}  // namespace detail

// layer_norm: y = (x - mean) * rstd * w + b over the last dim, rstd = 1/sqrt(biased var + eps);
// weight and bias may be undefined (1 and 0). Saves mean and rstd per row.
// dx = rstd * (dy*w - mean(dy*w) - xhat * mean(dy*w * xhat)), dw = Σ dy*xhat, db = Σ dy over rows.
template <class T>
Tensor<T> layer_norm(const Tensor<T>& x, const Tensor<T>& weight = Tensor<T>(), const Tensor<T>& bias = Tensor<T>(),
                     double eps = 1e-5) {
  HG_CHECK(x.dim() >= 1, "layer_norm", "expected an input with at least 1 dim, got a scalar");
  const int64_t cols = x.size(-1), rows = numel_of(Shape(x.shape().begin(), x.shape().end() - 1));
  for (auto [param, what] : {std::pair{&weight, "weight"}, std::pair{&bias, "bias"}})
    HG_CHECK(!param->defined() || param->shape() == Shape{cols}, "layer_norm", "expected ", what, " of shape [", cols,
             "] (the input's last dim), got ", to_string(param->shape()));
  HG_CHECK(eps >= 0, "layer_norm", "expected eps >= 0, got ", eps);
  if (x.device().is_cuda()) return detail::cuda_layer_norm(x, weight, bias, eps, rows, cols);
  // Absent affine parameters become ones and zeros, so the kernels have no per-element branch.
  Tensor<T> xc = x.detach().contiguous(), y(x.shape()), mean(Shape{rows}), rstd(Shape{rows});
  Tensor<T> w = weight.defined() ? weight.detach().contiguous() : ones<T>({cols});
  Tensor<T> b = bias.defined() ? bias.detach().contiguous() : zeros<T>({cols});
  cpu::layer_norm_forward(xc.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, cols, eps);
  if (autograd::needs_grad(x, weight, bias))
    autograd::record(y, "LayerNorm", {x, weight, bias}, [xc, w, mean, rstd, rows, cols](const Tensor<T>& g,
                                                                                     const NeedsGrad& need) {
      Tensor<T> gc = g.contiguous(), dx, dw, db;
      if (need[0]) dx = Tensor<T>(xc.shape());
      if (need[1]) dw = Tensor<T>(Shape{cols});
      if (need[2]) db = Tensor<T>(Shape{cols});
      auto data_or_null = [](Tensor<T>& t) { return t.defined() ? t.data() : nullptr; };
      cpu::layer_norm_backward(xc.data(), gc.data(), w.data(), mean.data(), rstd.data(), data_or_null(dx),
                               data_or_null(dw), data_or_null(db), rows, cols);
      return std::vector<Tensor<T>>{dx, dw, db};
    });
  return y;
}

// normalize: y = x / max(||x||_p, eps) along dim (F.normalize). With n = ||x||_p and
// dn/dx = sign(x) |x|^(p-1) / n^(p-1):  dx = g / max(n, eps) - [n > eps] (Σ g x) / n^(p+1) * sign(x) |x|^(p-1).
template <class T>
Tensor<T> normalize(const Tensor<T>& x, double p = 2.0, int64_t dim = -1, double eps = 1e-12) {
  HG_CHECK(x.dim() >= 1, "normalize", "expected an input with at least 1 dim, got a scalar");
  HG_CHECK(p > 0 && std::isfinite(p), "normalize", "expected a finite p > 0, got ", p);
  const int64_t d = wrap_dim(dim, x.dim(), "normalize");
  if (x.device().is_cuda()) {
    // From device ops: max(||x||_p, eps) = (max(Σ|x|^p, eps^p))^(1/p). Clamping the sum, not the
    // norm, gives the CPU's [n > eps] gradient mask without 0 · inf = NaN on an all-zero row.
    const Tensor<T> powered = p == 2.0 ? square(x) : pow(abs(x), static_cast<T>(p));
    const Tensor<T> clamped = clamp_min(sum(powered, {d}, true), static_cast<T>(std::pow(eps, p)));
    return x / (p == 2.0 ? sqrt(clamped) : pow(clamped, static_cast<T>(1.0 / p)));
  }
  const Tensor<T> xd = x.detach();
  const T pt = static_cast<T>(p), eps_t = static_cast<T>(eps);
  Tensor<T> norm = p == 2.0 ? sqrt(sum(square(xd), {d}, true))
                            : pow(sum(cpu::map<T>(xd, [pt](T v) { return std::pow(std::abs(v), pt); }), {d}, true),
                                  T(1) / pt);
  Tensor<T> y = cpu::map<T>(xd, norm, [eps_t](T v, T n) { return v / std::max(n, eps_t); }, "normalize");
  if (autograd::needs_grad(x))
    autograd::record(y, "Normalize", {x}, [xd, norm, pt, eps_t, d](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> g_dot_x = sum(cpu::map<T>(g, xd, [](T a, T b) { return a * b; }, "normalize"), {d}, true);
      Tensor<T> coefficient = cpu::map<T>(norm, g_dot_x, [pt, eps_t](T n, T s) {
        return n > eps_t ? s / std::pow(n, pt + T(1)) : T(0);
      }, "normalize");
      Tensor<T> direct = cpu::map<T>(g, norm, [eps_t](T gv, T n) { return gv / std::max(n, eps_t); }, "normalize");
      return std::vector<Tensor<T>>{cpu::map<T>(direct, xd, coefficient, [pt](T dv, T v, T c) {
        const T dn = pt == T(2) ? v : v == T(0) ? T(0) : std::copysign(std::pow(std::abs(v), pt - T(1)), v);
        return dv - c * dn;
      }, "normalize")};
    });
  return y;
}

// weight_norm: w[r, :] = g[r] · v[r, :] / ||v[r, :]||₂ for v [rows, cols] and g [rows, 1]
// (torch._weight_norm(v, g, 0); no eps, so an all-zero row gives NaN as in torch). Saves the row
// norms; dv = (g/n)(dw - v·(Σ dw·v)/n²), dg = (Σ dw·v)/n.
template <class T>
Tensor<T> weight_norm(const Tensor<T>& v, const Tensor<T>& g) {
  HG_CHECK(v.dim() == 2, "weight_norm", "expected v of shape [rows, cols], got ", to_string(v.shape()));
  HG_CHECK(g.shape() == Shape({v.size(0), 1}), "weight_norm", "expected g of shape [", v.size(0), ", 1], got ",
           to_string(g.shape()));
  HG_CHECK(g.device() == v.device(), "weight_norm", "expected g on ", v.device().str(), ", got ", g.device().str());
  if (v.device().is_cuda()) return v * (g / sqrt(sum(square(v), {1}, true)));
  const int64_t rows = v.size(0), cols = v.size(1);
  const Tensor<T> vc = v.detach().contiguous(), gc = g.detach().contiguous();
  Tensor<T> w({rows, cols}), norms({rows});
  cpu::weight_norm_forward(vc.data(), gc.data(), rows, cols, w.data(), norms.data());
  if (autograd::needs_grad(v, g))
    autograd::record(w, "WeightNorm", {v, g}, [vc, gc, norms, rows, cols](const Tensor<T>& grad, const NeedsGrad& need) {
      const Tensor<T> dw = grad.contiguous();
      Tensor<T> dv = need[0] ? Tensor<T>({rows, cols}) : Tensor<T>(), dg = need[1] ? Tensor<T>({rows, 1}) : Tensor<T>();
      cpu::weight_norm_backward(dw.data(), vc.data(), gc.data(), norms.data(), rows, cols,
                                need[0] ? dv.data() : nullptr, need[1] ? dg.data() : nullptr);
      return std::vector<Tensor<T>>{dv, dg};
    });
  return w;
}

}  // namespace histograd
