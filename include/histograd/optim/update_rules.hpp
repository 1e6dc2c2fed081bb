// The per-element arithmetic of the optimizers, written once for the CPU loops (optimizer.hpp,
// clip.hpp) and the CUDA multi-tensor kernels (cuda/optim.cu), so the CPU parity tests against
// torch.optim check the very expressions the GPU runs. Coefficients are computed on the host
// in double per parameter (bias corrections depend on its own step count) and stored in T.
#pragma once
#include <cmath>

#include "../core/host_device.hpp"

namespace histograd::optim {

// AdamW (torch.optim.AdamW, decoupled decay): p *= 1 - lr·wd; m += (1-β1)(g - m);
// v = β2 v + (1-β2) g²; p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps).
template <class T>
struct AdamWCoefficients {
  T decay, neg_step_size, sqrt_correction2;  // 1 - lr·wd, -lr/(1-β1^t), sqrt(1-β2^t)
  T weight1, beta2, weight2, eps;            // 1-β1, β2, 1-β2, eps
};

template <class T>
HG_HOST_DEVICE inline void adamw_update(T& p, T& m, T& v, T g, const AdamWCoefficients<T>& c) {
  using std::sqrt;
  p *= c.decay;
  m = m + c.weight1 * (g - m);  // torch's lerp for weights < 0.5
  v = c.beta2 * v + c.weight2 * g * g;
  p = p + c.neg_step_size * m / (sqrt(v) / c.sqrt_correction2 + c.eps);
}

// SGD (torch.optim.SGD): d = g + wd p; with momentum b = d on the buffer's first step, else
// μ b + d, and d = nesterov ? d + μ b : b; p -= lr d.
template <class T>
struct SGDCoefficients {
  T lr, weight_decay, momentum;
  bool use_momentum, nesterov, first;  // first: the momentum buffer starts at this step
};

template <class T>
HG_HOST_DEVICE inline void sgd_update(T& p, T& buffer, T g, const SGDCoefficients<T>& c) {
  T d = g + c.weight_decay * p;
  if (c.use_momentum) {
    buffer = c.first ? d : c.momentum * buffer + d;
    d = c.nesterov ? d + c.momentum * buffer : buffer;
  }
  p = p + (-c.lr) * d;
}

}  // namespace histograd::optim
