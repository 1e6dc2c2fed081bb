// Softmax kernels (include/histograd/cuda/softmax.hpp): one block per lane of [outer, n, inner],
// threads striding over the n elements; block-wide max and sum through warp shuffles and one
// shared slot per warp. Simple on purpose: a lane is read three times, all from L2 for the rows
// a ViT has (n <= a few thousand).
#include <cmath>
#include <limits>

#include "check.cuh"
#include "histograd/cuda/softmax.hpp"

namespace histograd::cuda {
namespace {

constexpr int kMaxThreads = 256;

template <class T> __device__ T max_of(T a, T b) { return a > b ? a : b; }

// Reduces `value` over the block (sum or max); every thread gets the result. `scratch` holds 32
// entries; the leading __syncthreads lets back-to-back calls reuse it.
template <class T, bool IsMax>
__device__ T block_reduce(T value, T* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const T other = __shfl_down_sync(0xffffffffu, value, offset);
    value = IsMax ? max_of(value, other) : value + other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = (blockDim.x + 31) / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < warps ? scratch[lane] : (IsMax ? -std::numeric_limits<T>::infinity() : T(0));
    for (int offset = 16; offset > 0; offset /= 2) {
      const T other = __shfl_down_sync(0xffffffffu, value, offset);
      value = IsMax ? max_of(value, other) : value + other;
    }
    if (lane == 0) scratch[0] = value;
  }
  __syncthreads();
  return scratch[0];
}

template <class T>
__global__ void softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t lanes, int64_t n,
                                       int64_t inner, bool log) {
  __shared__ T scratch[32];
  const T minus_inf = -std::numeric_limits<T>::infinity();
  for (int64_t lane = blockIdx.x; lane < lanes; lane += gridDim.x) {
    const int64_t base = (lane / inner) * n * inner + lane % inner;
    T m = minus_inf;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = max_of(m, x[base + j * inner]);
    m = block_reduce<T, true>(m, scratch);
    T sum = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const T v = x[base + j * inner];
      sum += v == minus_inf ? T(0) : exp(v - m);
    }
    sum = block_reduce<T, false>(sum, scratch);
    const T log_sum = std::log(sum), inverse = T(1) / sum;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const T v = x[base + j * inner];
      y[base + j * inner] = log ? (v - m) - log_sum : (v == minus_inf ? T(0) : exp(v - m)) * inverse;
    }
  }
}

template <class T>
__global__ void softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ dx,
                                        int64_t lanes, int64_t n, int64_t inner, bool log) {
  __shared__ T scratch[32];
  for (int64_t lane = blockIdx.x; lane < lanes; lane += gridDim.x) {
    const int64_t base = (lane / inner) * n * inner + lane % inner;
    T dot = 0;  // Σ g (log) or Σ g y (softmax)
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const int64_t at = base + j * inner;
      dot += log ? g[at] : g[at] * y[at];
    }
    dot = block_reduce<T, false>(dot, scratch);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const int64_t at = base + j * inner;
      dx[at] = log ? g[at] - exp(y[at]) * dot : y[at] * (g[at] - dot);
    }
  }
}

void launch_shape(int64_t lanes, int64_t n, unsigned& blocks, unsigned& threads) {
  threads = n <= 32 ? 32u : n <= 128 ? 128u : static_cast<unsigned>(kMaxThreads);
  blocks = static_cast<unsigned>(lanes < (int64_t(1) << 20) ? lanes : (int64_t(1) << 20));
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log, void* stream) {
  const int64_t lanes = outer * inner;
  if (lanes == 0 || n == 0) return;
  unsigned blocks = 0, threads = 0;
  launch_shape(lanes, n, blocks, threads);
  softmax_forward_kernel<T><<<blocks, threads, 0, stream_or_current(stream)>>>(x, y, lanes, n, inner, log);
  HG_CUDA_CHECK_LAUNCH("cuda::softmax_forward");
}

template <class T>
void softmax_backward(const T* y, const T* grad_output, T* grad_input, int64_t outer, int64_t n, int64_t inner,
                      bool log, void* stream) {
  const int64_t lanes = outer * inner;
  if (lanes == 0 || n == 0) return;
  unsigned blocks = 0, threads = 0;
  launch_shape(lanes, n, blocks, threads);
  softmax_backward_kernel<T><<<blocks, threads, 0, stream_or_current(stream)>>>(y, grad_output, grad_input, lanes, n,
                                                                               inner, log);
  HG_CUDA_CHECK_LAUNCH("cuda::softmax_backward");
}

template void softmax_forward<float>(const float*, float*, int64_t, int64_t, int64_t, bool, void*);
template void softmax_forward<double>(const double*, double*, int64_t, int64_t, int64_t, bool, void*);
template void softmax_backward<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, bool, void*);
template void softmax_backward<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, bool, void*);

}  // namespace histograd::cuda
