// Gradient surgery between backward() and step(): DINO's per-parameter clipping and its
// last-layer freeze (dino/utils.py clip_gradients, cancel_gradients_last_layer), and the
// global-norm clip of torch.nn.utils.clip_grad_norm_ that DINOv2 applies per submodule.
// Norms are accumulated in double; gradients are scaled in place as the references do.
#pragma once
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/tensor.hpp"
#include "../cpu/parallel.hpp"

namespace histograd::optim {

template <class T> using NamedParameters = std::vector<std::pair<std::string, Tensor<T>>>;

namespace detail {
// Σ g² of one gradient, in double; rows of 4096 summed in a fixed order, so thread-count free.
template <class T>
double squared_norm(const Tensor<T>& grad) {
  Tensor<T> g = grad.contiguous();
  const T* x = g.data();
  const int64_t n = g.numel(), chunk = 4096, chunks = (n + chunk - 1) / chunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  cpu::parallel_for(chunks, chunk, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double sum = 0;
      for (int64_t k = c * chunk, stop = std::min(n, (c + 1) * chunk); k < stop; ++k) sum += double(x[k]) * double(x[k]);
      partial[size_t(c)] = sum;
    }
  });
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

// grad *= factor, in place where the gradient is contiguous, else replaced by a scaled copy.
template <class T>
void scale_gradient(Tensor<T>& param, T factor) {
  NoGradGuard no_grad;
  Tensor<T> grad = param.grad();
  if (!grad.is_contiguous()) {
    grad = grad.contiguous().clone();
    param.set_grad(grad);
  }
  T* g = grad.data();
  cpu::parallel_for(grad.numel(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) g[k] *= factor;
  });
}
}  // namespace detail

// DINO: for each parameter with a gradient, coef = clip / (‖g‖₂ + 1e-6) and g *= coef when
// coef < 1. Returns the norms before clipping, in parameter order (parameters without a
// gradient are skipped, as in the reference).
template <class T>
std::vector<double> clip_gradients(const NamedParameters<T>& named_params, double clip) {
  HG_CHECK(clip > 0, "clip_gradients", "expected a positive clip value, got ", clip);
  std::vector<double> norms;
  for (const auto& [name, param] : named_params) {
    if (!param.grad().defined()) continue;
    const T norm = T(std::sqrt(detail::squared_norm(param.grad())));
    norms.push_back(double(norm));
    const T coef = T(clip) / (norm + T(1e-6));
    if (coef < T(1)) {
      Tensor<T> p = param;
      detail::scale_gradient(p, coef);
    }
  }
  return norms;
}

// torch.nn.utils.clip_grad_norm_ (norm_type 2): total = ‖(‖g_i‖₂)_i‖₂ over the parameters with
// gradients; every gradient is multiplied by min(1, max_norm / (total + 1e-6)). Returns total.
// A non-finite total is returned as is (torch's error_if_nonfinite = False) and scales by NaN.
template <class T>
double clip_grad_norm(const std::vector<Tensor<T>>& params, double max_norm) {
  HG_CHECK(max_norm >= 0, "clip_grad_norm", "expected a non-negative max_norm, got ", max_norm);
  double sum = 0;
  for (const auto& p : params)
    if (p.grad().defined()) {
      const T norm = T(std::sqrt(detail::squared_norm(p.grad())));
      sum += double(norm) * double(norm);
    }
  const T total = T(std::sqrt(sum));
  const T coef = std::min(T(max_norm) / (total + T(1e-6)), T(1));
  if (!(coef == T(1)))
    for (const auto& p : params)
      if (p.grad().defined()) {
        Tensor<T> handle = p;
        detail::scale_gradient(handle, coef);
      }
  return double(total);
}
template <class T>
double clip_grad_norm(const NamedParameters<T>& named_params, double max_norm) {
  std::vector<Tensor<T>> params;
  for (const auto& [name, p] : named_params) params.push_back(p);
  return clip_grad_norm(params, max_norm);
}

// DINO's freeze of the head's last layer: while epoch < freeze_last_layer, the gradients of
// parameters whose name contains "last_layer" are dropped, so the optimizer skips them.
template <class T>
void cancel_gradients_last_layer(int64_t epoch, const NamedParameters<T>& named_params, int64_t freeze_last_layer) {
  if (epoch >= freeze_last_layer) return;
  for (const auto& [name, param] : named_params)
    if (name.find("last_layer") != std::string::npos) {
      Tensor<T> p = param;
      p.zero_grad();
    }
}

}  // namespace histograd::optim
