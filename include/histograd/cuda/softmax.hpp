// Softmax and log-softmax on the GPU (cuda/softmax.cu), the CUDA side of cpu/softmax.hpp: a
// contiguous tensor seen as [outer, n, inner], each lane (o, ·, c) normalised on its own by one
// thread block (max, then Σ exp(x - max), then the write), so any dim works without a permute.
// Math as the CPU's: y = exp(x - max) · (1/Σ), log y = x - max - log Σ; -inf inputs give exactly 0.
#pragma once
#include <cstdint>

namespace histograd::cuda {

// y = softmax(x) (log_softmax when `log`) along n; T ∈ {float, double}; sums in T.
template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log, void* stream = nullptr);

// From the forward's output y and g = dL/dy:
//   softmax:     dx = y (g - Σ g y)        log_softmax: dx = g - exp(y) Σ g
template <class T>
void softmax_backward(const T* y, const T* grad_output, T* grad_input, int64_t outer, int64_t n, int64_t inner,
                      bool log, void* stream = nullptr);

}  // namespace histograd::cuda
