// Row reductions behind include/histograd/cuda/reduce.hpp. Rows of at least kBlockRowFrom
// elements get a block each (threads stride the row, then warp shuffles and one shared-memory
// step combine the partials); shorter rows get a thread each. Float sums and logsumexp's
// Σ exp accumulate in double, matching ops/reduce.hpp's CPU Accum, so a long float sum agrees
// with the CPU to the last bit in almost every case rather than drifting with the length.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "histograd/cuda/reduce.hpp"
#include "strided.cuh"

namespace histograd::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kBlockRowFrom = 64;

template <class T> using Accum = std::conditional_t<std::is_same_v<T, float>, double, T>;

template <class T> __device__ __forceinline__ T m_exp(T x) { if constexpr (sizeof(T) == 4) return expf(x); else return ::exp(x); }
__device__ __forceinline__ bool is_nan(double v) { return v != v; }

// NaN-propagating max/min (amax's `row[k] > m || isnan(row[k])`).
template <class T> __device__ __forceinline__ T combine_max(T a, T b) { return is_nan(a) ? a : (is_nan(b) || b > a) ? b : a; }
template <class T> __device__ __forceinline__ T combine_min(T a, T b) { return is_nan(a) ? a : (is_nan(b) || b < a) ? b : a; }
// logsumexp's max is std::max(m, x): NaN never replaces m.
template <class T> __device__ __forceinline__ T plain_max(T a, T b) { return a < b ? b : a; }

template <class T> __device__ __forceinline__ T shfl_down(T v, int delta) { return __shfl_down_sync(0xffffffffu, v, delta); }

// Block-wide combine; every thread gets the result. `scratch` holds one value per warp.
template <class T, class F>
__device__ T block_reduce(T v, F f, T* scratch) {
  for (int delta = 16; delta > 0; delta /= 2) v = f(v, shfl_down(v, delta));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) v = f(v, scratch[w]);
  return v;
}

struct Add { template <class T> __device__ T operator()(T a, T b) const { return a + b; } };
struct MaxNan { template <class T> __device__ T operator()(T a, T b) const { return combine_max(a, b); } };
struct MinNan { template <class T> __device__ T operator()(T a, T b) const { return combine_min(a, b); } };
struct MaxPlain { template <class T> __device__ T operator()(T a, T b) const { return plain_max(a, b); } };

// One row's reduction by `threads` cooperating threads of rank `rank` (1 thread or a block).
template <class T>
__device__ T reduce_row(ReduceOp op, const T* row, int64_t length, int rank, int threads, Accum<T>* acc_scratch,
                        T* scratch) {
  const bool block = threads > 1;
  switch (op) {
    case ReduceOp::Sum: {
      Accum<T> acc = 0;
      for (int64_t k = rank; k < length; k += threads) acc += row[k];
      return static_cast<T>(block ? block_reduce(acc, Add{}, acc_scratch) : acc);
    }
    case ReduceOp::Max:
    case ReduceOp::Min: {
      const bool largest = op == ReduceOp::Max;
      T m = row[0];
      for (int64_t k = rank; k < length; k += threads) m = largest ? combine_max(m, row[k]) : combine_min(m, row[k]);
      if (!block) return m;
      return largest ? block_reduce(m, MaxNan{}, scratch) : block_reduce(m, MinNan{}, scratch);
    }
    case ReduceOp::LogSumExp: {
      T m = -INFINITY;
      for (int64_t k = rank; k < length; k += threads) m = plain_max(m, row[k]);
      if (block) m = block_reduce(m, MaxPlain{}, scratch);
      if (isinf(m)) return m;
      Accum<T> acc = 0;
      for (int64_t k = rank; k < length; k += threads) acc += m_exp(row[k] - m);
      if (block) acc = block_reduce(acc, Add{}, acc_scratch);
      return m + static_cast<T>(::log(static_cast<double>(acc)));
    }
  }
  return T(0);
}

template <class T>
__global__ void reduce_block_per_row(ReduceOp op, const T* in, int64_t rows, int64_t length, T* out) {
  __shared__ Accum<T> acc_scratch[kBlock / 32];
  __shared__ T scratch[kBlock / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T value = reduce_row(op, in + r * length, length, threadIdx.x, blockDim.x, acc_scratch, scratch);
    if (threadIdx.x == 0) out[r] = value;
  }
}

template <class T>
__global__ void reduce_thread_per_row(ReduceOp op, const T* in, int64_t rows, int64_t length, T* out) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += step)
    out[r] = reduce_row<T>(op, in + r * length, length, 0, 1, nullptr, nullptr);
}

// (value, index) pairs: the more extreme wins; NaN beats numbers; ties go to the lower index.
template <class T>
__device__ __forceinline__ void better_pair(bool largest, T& v, int64_t& i, T v2, int64_t i2) {
  if (i2 < 0) return;
  if (i < 0) { v = v2; i = i2; return; }
  const bool nan1 = is_nan(v), nan2 = is_nan(v2);
  bool take;
  if (nan1 || nan2) take = nan2 && (!nan1 || i2 < i);
  else if (v2 == v) take = i2 < i;
  else take = largest ? v2 > v : v2 < v;
  if (take) { v = v2; i = i2; }
}

template <class T>
__global__ void arg_extreme_kernel(bool largest, const T* in, int64_t rows, int64_t length, T* values,
                                   int64_t* indices) {
  __shared__ T scratch_v[kBlock / 32];
  __shared__ int64_t scratch_i[kBlock / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * length;
    T v = T(0);
    int64_t i = -1;
    for (int64_t k = threadIdx.x; k < length; k += blockDim.x) better_pair(largest, v, i, row[k], k);
    for (int delta = 16; delta > 0; delta /= 2) {
      const T v2 = shfl_down(v, delta);
      const int64_t i2 = shfl_down(i, delta);
      better_pair(largest, v, i, v2, i2);
    }
    __syncthreads();
    if (lane == 0) { scratch_v[warp] = v; scratch_i[warp] = i; }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) better_pair(largest, v, i, scratch_v[w], scratch_i[w]);
      values[r] = v;
      indices[r] = i;
    }
  }
}

template <class T>
__global__ void scatter_add_kernel(const T* source, const int64_t* indices, int64_t outer, int64_t length,
                                   int64_t inner, T* out) {
  const int64_t n = outer * inner, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < n; r += step) {
    const int64_t o = r / inner, i = r % inner, k = indices[r];
    if (k < 0 || k >= length) continue;  // indices come from arg_extreme_rows: never out of range
    out[(o * length + k) * inner + i] += source[r];
  }
}

unsigned row_grid(int64_t rows) { return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, int64_t(1) << 16)); }

}  // namespace

template <class T>
void reduce_rows(ReduceOp op, const T* in, int64_t rows, int64_t length, T* out, void* stream) {
  if (rows <= 0) return;
  if ((op == ReduceOp::Max || op == ReduceOp::Min) && length <= 0)
    throw Error("cuda::reduce_rows: max/min over an empty row");
  cudaStream_t s = stream_or_current(stream);
  if (length >= kBlockRowFrom) {
    reduce_block_per_row<T><<<row_grid(rows), kBlock, 0, s>>>(op, in, rows, length, out);
    HG_CUDA_CHECK_LAUNCH("cuda::reduce_rows (block per row)");
  } else {
    reduce_thread_per_row<T><<<detail::grid_for(rows), detail::kThreads, 0, s>>>(op, in, rows, length, out);
    HG_CUDA_CHECK_LAUNCH("cuda::reduce_rows (thread per row)");
  }
}

template <class T>
void arg_extreme_rows(bool largest, const T* in, int64_t rows, int64_t length, T* values, int64_t* indices,
                      void* stream) {
  if (rows <= 0) return;
  if (length <= 0) throw Error("cuda::arg_extreme_rows: empty rows");
  arg_extreme_kernel<T><<<row_grid(rows), kBlock, 0, stream_or_current(stream)>>>(largest, in, rows, length, values,
                                                                                   indices);
  HG_CUDA_CHECK_LAUNCH("cuda::arg_extreme_rows");
}

template <class T>
void scatter_add_rows(const T* source, const int64_t* indices, int64_t outer, int64_t length, int64_t inner, T* out,
                      void* stream) {
  const int64_t n = outer * inner;
  if (n <= 0) return;
  scatter_add_kernel<T><<<detail::grid_for(n), detail::kThreads, 0, stream_or_current(stream)>>>(
      source, indices, outer, length, inner, out);
  HG_CUDA_CHECK_LAUNCH("cuda::scatter_add_rows");
}

#define HG_INSTANTIATE(T)                                                                              \
  template void reduce_rows<T>(ReduceOp, const T*, int64_t, int64_t, T*, void*);                       \
  template void arg_extreme_rows<T>(bool, const T*, int64_t, int64_t, T*, int64_t*, void*);           \
  template void scatter_add_rows<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, T*, void*);
HG_INSTANTIATE(float)
HG_INSTANTIATE(double)
#undef HG_INSTANTIATE

}  // namespace histograd::cuda
