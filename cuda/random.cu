// Philox draws on the GPU behind include/histograd/cuda/random.hpp. Each thread computes whole
// Philox blocks with core/random.hpp's own Philox4x32::block and uniform_from_bits, and the
// Box-Muller of Generator::normals written again in the same order (u1 = 1 - u, radius, angle),
// so element i matches the CPU draw of the same (seed, start).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "histograd/core/random.hpp"
#include "histograd/cuda/random.hpp"
#include "strided.cuh"

namespace histograd::cuda {
namespace {

__device__ __forceinline__ void uniforms4(uint64_t seed, uint64_t counter, double (&u)[4]) {
  const auto bits = Philox4x32::block(counter, 0, seed);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) u[lane] = uniform_from_bits(bits[lane]);
}

template <class T>
__global__ void philox_kernel(RandomKind kind, T* out, int64_t n, uint64_t seed, uint64_t start) {
  const int64_t blocks = (n + 3) / 4, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks; b += step) {
    double v[4];
    uniforms4(seed, start + static_cast<uint64_t>(b), v);
    if (kind == RandomKind::Normal) {
      const double u0 = v[0], u1 = v[1], u2 = v[2], u3 = v[3];
      const double r0 = ::sqrt(-2.0 * ::log(1.0 - u0)), a0 = 2.0 * M_PI * u1;
      const double r1 = ::sqrt(-2.0 * ::log(1.0 - u2)), a1 = 2.0 * M_PI * u3;
      v[0] = r0 * ::cos(a0);
      v[1] = r0 * ::sin(a0);
      v[2] = r1 * ::cos(a1);
      v[3] = r1 * ::sin(a1);
    }
    for (int64_t lane = 0; lane < 4 && 4 * b + lane < n; ++lane) out[4 * b + lane] = static_cast<T>(v[lane]);
  }
}

template <class T>
__global__ void dropout_kernel(const T* x, int64_t n, double p, T scale, uint64_t seed, uint64_t start, T* out,
                               bool* keep) {
  const int64_t blocks = (n + 3) / 4, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks; b += step) {
    double u[4];
    uniforms4(seed, start + static_cast<uint64_t>(b), u);
    for (int64_t lane = 0; lane < 4 && 4 * b + lane < n; ++lane) {
      const int64_t i = 4 * b + lane;
      const bool k = u[lane] >= p;
      keep[i] = k;
      out[i] = k ? x[i] * scale : T(0);
    }
  }
}

template <class T>
__global__ void dropout_backward_kernel(const T* g, const bool* keep, int64_t n, T scale, T* grad_input) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    grad_input[i] = keep[i] ? g[i] * scale : T(0);
}

}  // namespace

template <class T>
void philox_fill(RandomKind kind, T* out, int64_t n, uint64_t seed, uint64_t start, void* stream) {
  if (n <= 0) return;
  philox_kernel<T><<<detail::grid_for((n + 3) / 4), detail::kThreads, 0, stream_or_current(stream)>>>(kind, out, n,
                                                                                                     seed, start);
  HG_CUDA_CHECK_LAUNCH("cuda::philox_fill");
}

template <class T>
void dropout(const T* x, int64_t n, double p, T scale, uint64_t seed, uint64_t start, T* out, bool* keep,
             void* stream) {
  if (n <= 0) return;
  dropout_kernel<T><<<detail::grid_for((n + 3) / 4), detail::kThreads, 0, stream_or_current(stream)>>>(
      x, n, p, scale, seed, start, out, keep);
  HG_CUDA_CHECK_LAUNCH("cuda::dropout");
}

template <class T>
void dropout_backward(const T* grad_output, const bool* keep, int64_t n, T scale, T* grad_input, void* stream) {
  if (n <= 0) return;
  dropout_backward_kernel<T><<<detail::grid_for(n), detail::kThreads, 0, stream_or_current(stream)>>>(
      grad_output, keep, n, scale, grad_input);
  HG_CUDA_CHECK_LAUNCH("cuda::dropout_backward");
}

#define HG_INSTANTIATE(T)                                                                                     \
  template void philox_fill<T>(RandomKind, T*, int64_t, uint64_t, uint64_t, void*);                          \
  template void dropout<T>(const T*, int64_t, double, T, uint64_t, uint64_t, T*, bool*, void*);               \
  template void dropout_backward<T>(const T*, const bool*, int64_t, T, T*, void*);
HG_INSTANTIATE(float)
HG_INSTANTIATE(double)
#undef HG_INSTANTIATE

}  // namespace histograd::cuda
