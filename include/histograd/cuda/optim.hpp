// The optimizer step and gradient clipping on the GPU (cuda/optim.cu): each runs over every
// parameter tensor in a few launches (per-tensor pointers and coefficients passed as one kernel
// argument, as cuda/ema.hpp does), with the per-element math of optim/update_rules.hpp.
// Plain C++ over raw device pointers; optim/optimizer.hpp and optim/clip.hpp call these for
// CUDA tensors. T ∈ {float, double}.
#pragma once
#include <cstdint>

#include "../optim/update_rules.hpp"

namespace histograd::cuda {

template <class T>
struct AdamWTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  int64_t size;
  optim::AdamWCoefficients<T> coefficients;
};

template <class T>
struct SGDTensor {
  T* param;
  const T* grad;
  T* momentum_buffer;  // may be null when coefficients.use_momentum is false
  int64_t size;
  optim::SGDCoefficients<T> coefficients;
};

template <class T>
struct ScaleTensor {
  T* data;
  int64_t size;
  T factor;
};

// One optimizer step over `count` tensors (sizes ≥ 0). stream: a cudaStream_t, nullptr for the
// current one.
template <class T>
void adamw_step(const AdamWTensor<T>* tensors, int64_t count, void* stream = nullptr);
template <class T>
void sgd_step(const SGDTensor<T>* tensors, int64_t count, void* stream = nullptr);

// squared_norms[i] = Σ data[i][k]², accumulated in double in a fixed order (the same for any
// grid), written to host memory; waits for the stream.
template <class T>
void squared_norms(const T* const* data, const int64_t* sizes, int64_t count, double* squared_norms,
                   void* stream = nullptr);

// data[i][k] *= factor[i] (in T, as the CPU's g *= coef).
template <class T>
void scale(const ScaleTensor<T>* tensors, int64_t count, void* stream = nullptr);

}  // namespace histograd::cuda
