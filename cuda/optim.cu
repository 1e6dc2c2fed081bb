// Optimizer steps and gradient clipping over all parameters in a few launches. As in ema.cu,
// a table of up to kTensorsPerLaunch tensors travels as one __grid_constant__ argument, each
// tensor is cut into kChunk-element chunks and a persistent grid walks the chunks, so a ViT's
// ~150 parameters (4 tiny bias vectors and 60 M-element matrices alike) take one launch. The
// element math is optim/update_rules.hpp's, shared with the CPU optimizers.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "check.cuh"
#include "common.cuh"
#include "histograd/core/error.hpp"
#include "histograd/cuda/optim.hpp"

namespace histograd::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int64_t kChunk = 65536;
constexpr int kTensorsPerLaunch = 192;

// Tensor i owns chunks [chunk_begin[i], chunk_begin[i + 1]); chunk_base numbers the first chunk
// of this launch among all the call's chunks (squared_norms writes one partial per chunk).
template <class Entry>
struct Table {
  Entry entry[kTensorsPerLaunch];
  int chunk_begin[kTensorsPerLaunch + 1];
  int count;
  int chunk_base;
};
static_assert(sizeof(Table<AdamWTensor<double>>) + 16 <= 32764, "kernel arguments are limited to 32764 bytes");

// The tensor owning chunk c: the last i with chunk_begin[i] <= c.
__device__ __forceinline__ int owner_of(const int* chunk_begin, int count, int c) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (chunk_begin[mid] <= c) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Calls fn(entry, k) for every element k of every tensor, a chunk per block iteration.
template <class Entry, class Fn>
__device__ __forceinline__ void for_each_element(const Table<Entry>& table, Fn&& fn) {
  const int chunks = table.chunk_begin[table.count];
  for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int i = owner_of(table.chunk_begin, table.count, c);
    const Entry& e = table.entry[i];
    const int64_t begin = int64_t(c - table.chunk_begin[i]) * kChunk;
    const int64_t end = e.size - begin < kChunk ? e.size : begin + kChunk;
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) fn(e, k);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const __grid_constant__ Table<AdamWTensor<T>> table) {
  for_each_element(table, [](const AdamWTensor<T>& e, int64_t k) {
    T p = e.param[k], m = e.exp_avg[k], v = e.exp_avg_sq[k];
    optim::adamw_update(p, m, v, e.grad[k], e.coefficients);
    e.param[k] = p;
    e.exp_avg[k] = m;
    e.exp_avg_sq[k] = v;
  });
}

template <class T>
__global__ void __launch_bounds__(kThreads) sgd_kernel(const __grid_constant__ Table<SGDTensor<T>> table) {
  for_each_element(table, [](const SGDTensor<T>& e, int64_t k) {
    T p = e.param[k], b = e.coefficients.use_momentum ? e.momentum_buffer[k] : T(0);
    optim::sgd_update(p, b, e.grad[k], e.coefficients);
    e.param[k] = p;
    if (e.coefficients.use_momentum) e.momentum_buffer[k] = b;
  });
}

template <class T>
__global__ void __launch_bounds__(kThreads) scale_kernel(const __grid_constant__ Table<ScaleTensor<T>> table) {
  for_each_element(table, [](const ScaleTensor<T>& e, int64_t k) { e.data[k] *= e.factor; });
}

template <class T>
struct NormTensor {
  const T* data;
  int64_t size;
};

// partials[chunk_base + c] = Σ x² over chunk c: per-thread strided sums, then a fixed tree.
template <class T>
__global__ void __launch_bounds__(kThreads) squared_norm_kernel(const __grid_constant__ Table<NormTensor<T>> table,
                                                                double* partials) {
  __shared__ double sums[kThreads];
  const int chunks = table.chunk_begin[table.count];
  for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int i = owner_of(table.chunk_begin, table.count, c);
    const NormTensor<T>& e = table.entry[i];
    const int64_t begin = int64_t(c - table.chunk_begin[i]) * kChunk;
    const int64_t end = e.size - begin < kChunk ? e.size : begin + kChunk;
    double sum = 0;
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) sum += double(e.data[k]) * double(e.data[k]);
    sums[threadIdx.x] = sum;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
      if (int(threadIdx.x) < half) sums[threadIdx.x] += sums[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) partials[table.chunk_base + c] = sums[0];
    __syncthreads();  // sums[] is reused by the block's next chunk
  }
}

unsigned max_blocks() { return static_cast<unsigned>(sm_count()) * (2048 / kThreads); }

// Packs entries into tables of at most kTensorsPerLaunch non-empty tensors and calls
// launch(table, grid) for each. Returns the number of chunks of all tables together.
template <class Entry, class Launch>
int64_t for_each_table(const char* op, const Entry* entries, int64_t count, Launch&& launch) {
  HG_CHECK(count >= 0, op, "expected a non-negative tensor count, got ", count);
  const unsigned blocks = max_blocks();
  Table<Entry> table{};
  int64_t total_chunks = 0;
  auto flush = [&] {
    if (table.count == 0) return;
    const int chunks = table.chunk_begin[table.count];
    launch(table, std::min<unsigned>(static_cast<unsigned>(chunks), blocks));
    HG_CUDA_CHECK_LAUNCH(op);
    total_chunks += chunks;
    table.count = 0;
    table.chunk_begin[0] = 0;
  };
  for (int64_t i = 0; i < count; ++i) {
    const Entry& e = entries[i];
    HG_CHECK(e.size >= 0, op, "expected non-negative sizes, got ", e.size, " for tensor ", i);
    if (e.size == 0) continue;
    const int64_t chunks = (e.size + kChunk - 1) / kChunk;
    HG_CHECK(chunks < INT_MAX / 4, op, "tensor ", i, " is too large (", e.size, " elements)");
    if (table.count == kTensorsPerLaunch || table.chunk_begin[table.count] + chunks > INT_MAX / 4) flush();
    HG_CHECK(total_chunks + table.chunk_begin[table.count] + chunks < INT_MAX, op, "too many elements in all (tensor ", i,
             ")");
    table.chunk_base = static_cast<int>(total_chunks);
    table.entry[table.count] = e;
    table.chunk_begin[table.count + 1] = table.chunk_begin[table.count] + static_cast<int>(chunks);
    ++table.count;
  }
  flush();
  return total_chunks;
}

template <class T>
void check_pointers(const char* op, bool all_present, int64_t i, int64_t size) {
  HG_CHECK(all_present || size == 0, op, "got a null pointer for tensor ", i, " of ", size, " elements");
}

}  // namespace

template <class T>
void adamw_step(const AdamWTensor<T>* tensors, int64_t count, void* stream) {
  for (int64_t i = 0; i < count; ++i)
    check_pointers<T>("cuda::adamw_step", tensors[i].param && tensors[i].grad && tensors[i].exp_avg && tensors[i].exp_avg_sq,
                      i, tensors[i].size);
  const cudaStream_t s = stream_or_current(stream);
  for_each_table("cuda::adamw_step", tensors, count, [&](const Table<AdamWTensor<T>>& table, unsigned grid) {
    adamw_kernel<T><<<grid, kThreads, 0, s>>>(table);
  });
}

template <class T>
void sgd_step(const SGDTensor<T>* tensors, int64_t count, void* stream) {
  for (int64_t i = 0; i < count; ++i)
    check_pointers<T>("cuda::sgd_step",
                      tensors[i].param && tensors[i].grad &&
                          (tensors[i].momentum_buffer || !tensors[i].coefficients.use_momentum),
                      i, tensors[i].size);
  const cudaStream_t s = stream_or_current(stream);
  for_each_table("cuda::sgd_step", tensors, count, [&](const Table<SGDTensor<T>>& table, unsigned grid) {
    sgd_kernel<T><<<grid, kThreads, 0, s>>>(table);
  });
}

template <class T>
void scale(const ScaleTensor<T>* tensors, int64_t count, void* stream) {
  for (int64_t i = 0; i < count; ++i) check_pointers<T>("cuda::scale", tensors[i].data != nullptr, i, tensors[i].size);
  const cudaStream_t s = stream_or_current(stream);
  for_each_table("cuda::scale", tensors, count, [&](const Table<ScaleTensor<T>>& table, unsigned grid) {
    scale_kernel<T><<<grid, kThreads, 0, s>>>(table);
  });
}

template <class T>
void squared_norms(const T* const* data, const int64_t* sizes, int64_t count, double* squared_norms, void* stream) {
  const char* op = "cuda::squared_norms";
  std::vector<NormTensor<T>> entries(static_cast<size_t>(std::max<int64_t>(count, 0)));
  int64_t all_chunks = 0;
  for (int64_t i = 0; i < count; ++i) {
    check_pointers<T>(op, data[i] != nullptr, i, sizes[i]);
    entries[size_t(i)] = {data[i], sizes[i]};
    if (sizes[i] > 0) all_chunks += (sizes[i] + kChunk - 1) / kChunk;
  }
  for (int64_t i = 0; i < count; ++i) squared_norms[i] = 0;
  if (all_chunks == 0) return;
  const cudaStream_t s = stream_or_current(stream);
  const size_t bytes = static_cast<size_t>(all_chunks) * sizeof(double);
  auto* partials = static_cast<double*>(allocate(bytes));
  std::vector<double> host(static_cast<size_t>(all_chunks));
  try {
    for_each_table(op, entries.data(), count, [&](const Table<NormTensor<T>>& table, unsigned grid) {
      squared_norm_kernel<T><<<grid, kThreads, 0, s>>>(table, partials);
    });
    HG_CUDA_CHECK(cudaMemcpyAsync(host.data(), partials, bytes, cudaMemcpyDeviceToHost, s));
    HG_CUDA_CHECK(cudaStreamSynchronize(s));
  } catch (...) {
    release(partials, bytes);
    throw;
  }
  release(partials, bytes);
  // Chunks were numbered in tensor order, so tensor i's partials follow tensor i-1's.
  size_t next = 0;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t c = 0, chunks = sizes[i] > 0 ? (sizes[i] + kChunk - 1) / kChunk : 0; c < chunks; ++c)
      squared_norms[i] += host[next++];
}

#define HG_OPTIM_INSTANTIATE(T)                                                                         \
  template void adamw_step<T>(const AdamWTensor<T>*, int64_t, void*);                                   \
  template void sgd_step<T>(const SGDTensor<T>*, int64_t, void*);                                       \
  template void scale<T>(const ScaleTensor<T>*, int64_t, void*);                                        \
  template void squared_norms<T>(const T* const*, const int64_t*, int64_t, double*, void*);
HG_OPTIM_INSTANTIATE(float)
HG_OPTIM_INSTANTIATE(double)
#undef HG_OPTIM_INSTANTIATE

}  // namespace histograd::cuda
