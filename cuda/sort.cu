// Rank sort (include/histograd/cuda/sort.hpp). Pass 1: rank[e] = how many lane elements order
// strictly before e under cpu/sort.hpp's total order. Pass 2: the k best write themselves out;
// unsorted top-k places each by how many selected elements precede it in the lane. The ranks
// live in scratch from the caching allocator, released once both passes are queued.
#include <cmath>
#include <type_traits>

#include "check.cuh"
#include "histograd/cuda/sort.hpp"

namespace histograd::cuda {
namespace {

// a orders strictly before b by value: NaN counts as the largest value.
template <class T>
__device__ bool value_before(T a, T b, bool descending) {
  if (descending ? a > b : a < b) return true;
  if constexpr (std::is_floating_point_v<T>)
    return descending ? (isnan(a) && !isnan(b)) : (isnan(b) && !isnan(a));
  return false;
}

template <class T>
__global__ void rank_kernel(const T* __restrict__ x, int64_t outer, int64_t n, int64_t inner, bool descending,
                            int64_t* __restrict__ rank) {
  const int64_t total = outer * n * inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % inner, i = (e / inner) % n, o = e / (inner * n);
    const T* lane = x + o * n * inner + c;
    const T mine = lane[i * inner];
    int64_t r = 0;
    for (int64_t j = 0; j < n; ++j) {
      const T other = lane[j * inner];
      r += value_before(other, mine, descending) || (j < i && !value_before(mine, other, descending));
    }
    rank[e] = r;
  }
}

template <class T>
__global__ void place_kernel(const T* __restrict__ x, const int64_t* __restrict__ rank, int64_t outer, int64_t n,
                             int64_t inner, int64_t k, bool sorted, T* __restrict__ values,
                             int64_t* __restrict__ indices) {
  const int64_t total = outer * n * inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    if (rank[e] >= k) continue;
    const int64_t c = e % inner, i = (e / inner) % n, o = e / (inner * n);
    int64_t position = rank[e];
    if (!sorted) {
      position = 0;
      for (int64_t j = 0; j < i; ++j) position += rank[(o * n + j) * inner + c] < k;
    }
    const int64_t out = (o * k + position) * inner + c;
    values[out] = x[e];
    indices[out] = i;
  }
}

}  // namespace

template <class T>
void select_along(const T* x, int64_t outer, int64_t n, int64_t inner, int64_t k, bool descending, bool sorted,
                  T* values, int64_t* indices, void* stream) {
  const int64_t total = outer * n * inner;
  if (total == 0 || k == 0) return;
  cudaStream_t s = stream_or_current(stream);
  const size_t bytes = static_cast<size_t>(total) * sizeof(int64_t);
  auto* rank = static_cast<int64_t*>(allocate(bytes));
  const int64_t blocks = (total + 255) / 256;
  const unsigned grid = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
  try {
    rank_kernel<T><<<grid, 256, 0, s>>>(x, outer, n, inner, descending, rank);
    HG_CUDA_CHECK_LAUNCH("cuda::select_along (rank)");
    place_kernel<T><<<grid, 256, 0, s>>>(x, rank, outer, n, inner, k, sorted, values, indices);
    HG_CUDA_CHECK_LAUNCH("cuda::select_along (place)");
  } catch (...) {
    release(rank, bytes);
    throw;
  }
  release(rank, bytes);  // stream-ordered reuse: the next user of the block queues after these kernels
}

template void select_along<float>(const float*, int64_t, int64_t, int64_t, int64_t, bool, bool, float*, int64_t*,
                                  void*);
template void select_along<double>(const double*, int64_t, int64_t, int64_t, int64_t, bool, bool, double*, int64_t*,
                                   void*);
template void select_along<int64_t>(const int64_t*, int64_t, int64_t, int64_t, int64_t, bool, bool, int64_t*,
                                    int64_t*, void*);

}  // namespace histograd::cuda
