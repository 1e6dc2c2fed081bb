// Index kernels (include/histograd/cuda/indexing.hpp). A grid-stride loop over the walked
// elements; each thread unravels its linear position into the walked shape once and forms the
// three offsets. scatter-add uses atomicAdd (native for float and double on sm_60+).
#include "check.cuh"
#include "histograd/core/error.hpp"
#include "histograd/cuda/indexing.hpp"

namespace histograd::cuda {
namespace {

struct Offsets {
  int64_t dense, index, indexed_rest;  // indexed_rest: every dim but `dim`
};

__device__ Offsets offsets_of(const IndexWalk& w, int64_t linear) {
  Offsets o{0, 0, 0};
  for (int d = w.ndim - 1; d >= 0; --d) {
    const int64_t coord = linear % w.shape[d];
    linear /= w.shape[d];
    o.dense += coord * w.dense_strides[d];
    o.index += coord * w.index_strides[d];
    if (d != w.dim) o.indexed_rest += coord * w.indexed_strides[d];
  }
  return o;
}

template <class T>
__global__ void gather_kernel(IndexWalk w, int64_t total, const T* __restrict__ indexed,
                              const int64_t* __restrict__ index, T* __restrict__ dense) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const Offsets o = offsets_of(w, e);
    const int64_t i = index[o.index];
    dense[o.dense] = i == w.skip ? T(0) : indexed[o.indexed_rest + i * w.indexed_strides[w.dim]];
  }
}

template <class T>
__global__ void scatter_add_kernel(IndexWalk w, int64_t total, const T* __restrict__ dense,
                                   const int64_t* __restrict__ index, T* __restrict__ indexed) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const Offsets o = offsets_of(w, e);
    const int64_t i = index[o.index];
    if (i != w.skip) atomicAdd(indexed + o.indexed_rest + i * w.indexed_strides[w.dim], dense[o.dense]);
  }
}

// counts[0..2]: valid, ignored, bad; counts[3]: a bad value.
__global__ void check_kernel(const int64_t* __restrict__ index, int64_t n, int64_t size, int64_t ignore_value,
                             unsigned long long* counts) {
  unsigned long long valid = 0, ignored = 0, bad = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = index[e];
    if (v == ignore_value) {
      ++ignored;
    } else if (v >= 0 && v < size) {
      ++valid;
    } else {
      ++bad;
      counts[3] = static_cast<unsigned long long>(v);  // any one of them will do
    }
  }
  if (valid) atomicAdd(counts + 0, valid);
  if (ignored) atomicAdd(counts + 1, ignored);
  if (bad) atomicAdd(counts + 2, bad);
}

int64_t walked_elements(const IndexWalk& w) {
  HG_CHECK(w.ndim >= 0 && w.ndim <= kMaxIndexDims && (w.ndim == 0 || (w.dim >= 0 && w.dim < w.ndim)),
           "cuda::index", "expected at most ", kMaxIndexDims, " dims and dim inside them, got ", w.ndim, " dims, dim ",
           w.dim);
  int64_t total = 1;
  for (int d = 0; d < w.ndim; ++d) total *= w.shape[d];
  return total;
}

unsigned grid_for(int64_t total, unsigned threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

}  // namespace

template <class T>
void index_gather(const IndexWalk& walk, const T* indexed, const int64_t* index, T* dense, void* stream) {
  const int64_t total = walked_elements(walk);
  if (total == 0) return;
  gather_kernel<T><<<grid_for(total, 256), 256, 0, stream_or_current(stream)>>>(walk, total, indexed, index, dense);
  HG_CUDA_CHECK_LAUNCH("cuda::index_gather");
}

template <class T>
void index_scatter_add(const IndexWalk& walk, const T* dense, const int64_t* index, T* indexed, void* stream) {
  const int64_t total = walked_elements(walk);
  if (total == 0) return;
  scatter_add_kernel<T><<<grid_for(total, 256), 256, 0, stream_or_current(stream)>>>(walk, total, dense, index,
                                                                                    indexed);
  HG_CUDA_CHECK_LAUNCH("cuda::index_scatter_add");
}

IndexCheck check_index(const int64_t* index, int64_t n, int64_t size, int64_t ignore_value, void* stream) {
  IndexCheck result;
  if (n == 0) return result;
  cudaStream_t s = stream_or_current(stream);
  auto* counts = static_cast<unsigned long long*>(allocate(4 * sizeof(unsigned long long)));
  unsigned long long host[4] = {0, 0, 0, 0};
  try {
    HG_CUDA_CHECK(cudaMemsetAsync(counts, 0, 4 * sizeof(unsigned long long), s));
    check_kernel<<<grid_for(n, 256) < 1024 ? grid_for(n, 256) : 1024, 256, 0, s>>>(index, n, size, ignore_value,
                                                                                   counts);
    HG_CUDA_CHECK_LAUNCH("cuda::check_index");
    HG_CUDA_CHECK(cudaMemcpyAsync(host, counts, sizeof(host), cudaMemcpyDeviceToHost, s));
    HG_CUDA_CHECK(cudaStreamSynchronize(s));
  } catch (...) {
    release(counts, 4 * sizeof(unsigned long long));
    throw;
  }
  release(counts, 4 * sizeof(unsigned long long));
  result.valid = static_cast<int64_t>(host[0]);
  result.ignored = static_cast<int64_t>(host[1]);
  result.bad = static_cast<int64_t>(host[2]);
  result.bad_value = static_cast<int64_t>(host[3]);
  return result;
}

template void index_gather<float>(const IndexWalk&, const float*, const int64_t*, float*, void*);
template void index_gather<double>(const IndexWalk&, const double*, const int64_t*, double*, void*);
template void index_gather<int64_t>(const IndexWalk&, const int64_t*, const int64_t*, int64_t*, void*);
template void index_scatter_add<float>(const IndexWalk&, const float*, const int64_t*, float*, void*);
template void index_scatter_add<double>(const IndexWalk&, const double*, const int64_t*, double*, void*);

}  // namespace histograd::cuda
