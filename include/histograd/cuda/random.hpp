// Random draws on the GPU (cuda/random.cu) from the Philox4x32-10 counter scheme of
// core/random.hpp: element i of a draw that reserved blocks from `start` is lane i % 4 of the
// block at counter start + i / 4 under key `seed`, so a CUDA draw reproduces the CPU draw of the
// same Generator state (uniform bits exactly; normals up to the device's log/sin/cos ulps).
#pragma once
#include <cstdint>

namespace histograd::cuda {

enum class RandomKind { Uniform, Normal };

// out[i] for i < n; T ∈ {float, double}.
template <class T>
void philox_fill(RandomKind kind, T* out, int64_t n, uint64_t seed, uint64_t start, void* stream = nullptr);
// keep[i] = u_i >= p, out[i] = keep[i] ? x[i] * scale : 0 over contiguous x (ops' dropout).
template <class T>
void dropout(const T* x, int64_t n, double p, T scale, uint64_t seed, uint64_t start, T* out, bool* keep,
             void* stream = nullptr);
// grad_input[i] = keep[i] ? grad_output[i] * scale : 0 over contiguous buffers.
template <class T>
void dropout_backward(const T* grad_output, const bool* keep, int64_t n, T scale, T* grad_input,
                      void* stream = nullptr);

}  // namespace histograd::cuda
