// Gradient surgery between backward() and step(): DINO's per-parameter clipping and its
// last-layer freeze (dino/utils.py clip_gradients, cancel_gradients_last_layer), and the
// global-norm clip of torch.nn.utils.clip_grad_norm_ that DINOv2 applies per submodule.
// Norms are accumulated in double; gradients are scaled in place as the references do. GPU
// gradients are measured in one cuda/optim.cu call (one host sync) and scaled in one launch.
#pragma once
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/tensor.hpp"
#include "../cpu/parallel.hpp"
#include "../cuda/optim.hpp"
#include "../ops/device.hpp"

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

// The gradient of param, made contiguous in place (replaced by a contiguous copy) if needed.
template <class T>
Tensor<T> contiguous_gradient(Tensor<T>& param) {
  Tensor<T> grad = param.grad();
  if (!grad.is_contiguous()) {
    grad = grad.contiguous().clone();
    param.set_grad(grad);
  }
  return grad;
}

// Σ g² of each gradient, in double (GPU gradients in one call).
template <class T>
std::vector<double> squared_norms(const std::vector<Tensor<T>>& grads, const char* op) {
  std::vector<double> out(grads.size());
  std::vector<Tensor<T>> device_grads;
  std::vector<size_t> device_index;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (::histograd::detail::is_cuda(grads[i])) {
      device_grads.push_back(grads[i].contiguous());
      device_index.push_back(i);
    } else {
      out[i] = squared_norm(grads[i]);
    }
  }
  ::histograd::detail::launch_on_device<::histograd::detail::one_of<T, float, double>>(device_grads, op, [&] {
    std::vector<const T*> data;
    std::vector<int64_t> sizes;
    for (const auto& g : device_grads) {
      data.push_back(g.device_data());
      sizes.push_back(g.numel());
    }
    std::vector<double> norms(device_grads.size());
    cuda::squared_norms(data.data(), sizes.data(), int64_t(data.size()), norms.data());
    for (size_t j = 0; j < norms.size(); ++j) out[device_index[j]] = norms[j];
  });
  return out;
}

// grad *= factor for each (parameter, factor), in place (GPU gradients in one launch).
template <class T>
void scale_gradients(std::vector<std::pair<Tensor<T>, T>> scaled, const char* op) {
  NoGradGuard no_grad;
  std::vector<Tensor<T>> device_grads;
  std::vector<cuda::ScaleTensor<T>> entries;
  for (auto& [param, factor] : scaled) {
    Tensor<T> grad = contiguous_gradient(param);
    if (::histograd::detail::is_cuda(grad)) {
      device_grads.push_back(grad);
      entries.push_back({grad.device_data(), grad.numel(), factor});
      continue;
    }
    T* g = grad.data();
    const T f = factor;
    cpu::parallel_for(grad.numel(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) g[k] *= f;
    });
  }
  ::histograd::detail::launch_on_device<::histograd::detail::one_of<T, float, double>>(
      device_grads, op, [&] { cuda::scale(entries.data(), int64_t(entries.size())); });
}
}  // namespace detail

// DINO: for each parameter with a gradient, coef = clip / (‖g‖₂ + 1e-6) and g *= coef when
// coef < 1. Returns the norms before clipping, in parameter order (parameters without a
// gradient are skipped, as in the reference).
template <class T>
std::vector<double> clip_gradients(const NamedParameters<T>& named_params, double clip) {
  HG_CHECK(clip > 0, "clip_gradients", "expected a positive clip value, got ", clip);
  std::vector<Tensor<T>> params, grads;
  for (const auto& [name, param] : named_params)
    if (param.grad().defined()) {
      params.push_back(param);
      grads.push_back(param.grad());
    }
  const std::vector<double> squared = detail::squared_norms(grads, "clip_gradients");
  std::vector<double> norms;
  std::vector<std::pair<Tensor<T>, T>> scaled;
  for (size_t i = 0; i < params.size(); ++i) {
    const T norm = T(std::sqrt(squared[i]));
    norms.push_back(double(norm));
    const T coef = T(clip) / (norm + T(1e-6));
    if (coef < T(1)) scaled.emplace_back(params[i], coef);
  }
  detail::scale_gradients(std::move(scaled), "clip_gradients");
  return norms;
}

// torch.nn.utils.clip_grad_norm_ (norm_type 2): total = ‖(‖g_i‖₂)_i‖₂ over the parameters with
// gradients; every gradient is multiplied by min(1, max_norm / (total + 1e-6)). Returns total.
// A non-finite total is returned as is (torch's error_if_nonfinite = False) and scales by NaN.
template <class T>
double clip_grad_norm(const std::vector<Tensor<T>>& params, double max_norm) {
  HG_CHECK(max_norm >= 0, "clip_grad_norm", "expected a non-negative max_norm, got ", max_norm);
  std::vector<Tensor<T>> with_grad, grads;
  for (const auto& p : params)
    if (p.grad().defined()) {
      with_grad.push_back(p);
      grads.push_back(p.grad());
    }
  double sum = 0;
  for (double squared : detail::squared_norms(grads, "clip_grad_norm")) {
    const T norm = T(std::sqrt(squared));
    sum += double(norm) * double(norm);
  }
  const T total = T(std::sqrt(sum));
  const T coef = std::min(T(max_norm) / (total + T(1e-6)), T(1));
  if (!(coef == T(1))) {
    std::vector<std::pair<Tensor<T>, T>> scaled;
    for (const auto& p : with_grad) scaled.emplace_back(p, coef);
    detail::scale_gradients(std::move(scaled), "clip_grad_norm");
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
