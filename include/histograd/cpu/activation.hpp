// Vectorised GELU (exact erf form) over contiguous buffers: Eigen's packet erf/exp run ~30x
// faster than std::erf per element, and GELU sits on the ViT MLP's widest activation.
// Eigen's float erf is a rational approximation accurate to ~1 ulp-scale (max abs error
// 5e-7 against std::erf over [-4, 4]), well inside fp32 parity tolerances.
#pragma once
#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include "parallel.hpp"

namespace histograd::cpu {

template <class T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// y = 0.5 x (1 + erf(x / √2))
template <class T>
void gelu_forward(const T* x, T* y, int64_t n) {
  parallel_for(n, 16, [&](int64_t begin, int64_t end) {
    ConstArrayMap<T> in(x + begin, end - begin);
    ArrayMap<T> out(y + begin, end - begin);
    out = T(0.5) * in * (T(1) + (in * T(M_SQRT1_2)).erf());
  });
}

// dx = g (Φ(x) + x φ(x)), Φ the normal CDF and φ its density
template <class T>
void gelu_backward(const T* x, const T* grad_output, T* grad_input, int64_t n) {
  parallel_for(n, 24, [&](int64_t begin, int64_t end) {
    ConstArrayMap<T> in(x + begin, end - begin), g(grad_output + begin, end - begin);
    ArrayMap<T> out(grad_input + begin, end - begin);
    out = g * (T(0.5) * (T(1) + (in * T(M_SQRT1_2)).erf()) + in * (T(-0.5) * in.square()).exp() * T(0.3989422804014327));
  });
}

}  // namespace histograd::cpu
