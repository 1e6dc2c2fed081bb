// EMA teacher update, teacher = m * teacher + (1 - m) * student (DINO main_dino.py, DINOv2
// ssl_meta_arch.py), in fp32 whatever the storage types. The multi-tensor form passes a table of
// up to kEmaTensorsPerLaunch (teacher, student, size) triples as one __grid_constant__ kernel
// argument (CUDA >= 12.1 allows 32 KB of arguments; ANCHORS.md B5) and splits every tensor into
// 64K-element chunks that a persistent grid walks, so a ViT's ~150 parameters take one launch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "check.cuh"
#include "common.cuh"
#include "histograd/core/error.hpp"
#include "histograd/cuda/ema.hpp"

namespace histograd::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kVW = 4;               // elements per vector: 16 bytes of an fp32 teacher
constexpr int64_t kChunk = 65536;    // elements per (tensor, chunk) work item of the multi-tensor kernel
constexpr int kBlocksPerSM = 2048 / kThreads;

template <class T> __device__ __forceinline__ bool vector_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kVW) == 0;
}

// teacher[i] = a * teacher[i] + b * student[i] for i in [0, n), threads `rank` of `stride`.
template <class TT, class TS>
__device__ __forceinline__ void ema_range(TT* __restrict__ t, const TS* __restrict__ s, int64_t n, float a, float b,
                                          int64_t rank, int64_t stride) {
  int64_t scalar_from = 0;
  if (vector_aligned(t) && vector_aligned(s)) {
    const int64_t nvec = n / kVW;
    auto tv = reinterpret_cast<Vec<TT, kVW>*>(t);
    auto sv = reinterpret_cast<const Vec<TS, kVW>*>(s);
    for (int64_t i = rank; i < nvec; i += stride) {
      Vec<TT, kVW> x = tv[i];
      const Vec<TS, kVW> y = sv[i];
#pragma unroll
      for (int j = 0; j < kVW; ++j) x.v[j] = from_float<TT>(fmaf(a, to_float(x.v[j]), b * to_float(y.v[j])));
      tv[i] = x;
    }
    scalar_from = nvec * kVW;
  }
  for (int64_t i = scalar_from + rank; i < n; i += stride) t[i] = from_float<TT>(fmaf(a, to_float(t[i]), b * to_float(s[i])));
}

template <class TT, class TS>
__global__ void __launch_bounds__(kThreads) ema_flat_kernel(TT* t, const TS* s, int64_t n, float a, float b) {
  ema_range(t, s, n, a, b, int64_t(blockIdx.x) * blockDim.x + threadIdx.x, int64_t(gridDim.x) * blockDim.x);
}

// Tensors with at least one element; tensor i owns chunks [chunk_begin[i], chunk_begin[i + 1]).
template <class TT, class TS> struct EmaTable {
  TT* teacher[kEmaTensorsPerLaunch];
  const TS* student[kEmaTensorsPerLaunch];
  int64_t size[kEmaTensorsPerLaunch];
  int chunk_begin[kEmaTensorsPerLaunch + 1];
  int count;
};
static_assert(sizeof(EmaTable<float, float>) + 16 <= 32764, "kernel arguments are limited to 32764 bytes");

template <class TT, class TS>
__global__ void __launch_bounds__(kThreads) ema_multi_kernel(const __grid_constant__ EmaTable<TT, TS> table, float a,
                                                             float b) {
  const int chunks = table.chunk_begin[table.count];
  for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
    int lo = 0, hi = table.count - 1;  // the last tensor whose first chunk is <= c
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (table.chunk_begin[mid] <= c) lo = mid;
      else hi = mid - 1;
    }
    const int64_t begin = (c - table.chunk_begin[lo]) * kChunk;
    const int64_t rest = table.size[lo] - begin, length = rest < kChunk ? rest : kChunk;
    ema_range(table.teacher[lo] + begin, table.student[lo] + begin, length, a, b, threadIdx.x, blockDim.x);
  }
}

void check_momentum(const char* op, double momentum) {
  HG_CHECK(momentum >= 0.0 && momentum <= 1.0, op, "expected momentum in [0, 1], got ", momentum);
}

}  // namespace

template <class TT, class TS>
void ema_update_flat(TT* teacher, const TS* student, int64_t n, double momentum, void* stream) {
  check_momentum("cuda::ema_update_flat", momentum);
  HG_CHECK(n >= 0, "cuda::ema_update_flat", "expected a non-negative size, got ", n);
  if (n == 0) return;
  using NT = typename Native<TT>::type;
  using NS = typename Native<TS>::type;
  const int64_t work = (n + kVW - 1) / kVW;
  const unsigned grid =
      static_cast<unsigned>(std::min<int64_t>((work + kThreads - 1) / kThreads, int64_t(sm_count()) * kBlocksPerSM));
  ema_flat_kernel<NT, NS><<<grid, kThreads, 0, stream_or_current(stream)>>>(
      reinterpret_cast<NT*>(teacher), reinterpret_cast<const NS*>(student), n, static_cast<float>(momentum),
      static_cast<float>(1.0 - momentum));
  HG_CUDA_CHECK_LAUNCH("ema_flat_kernel");
}

template <class TT, class TS>
void ema_update_multi(TT* const* teachers, const TS* const* students, const int64_t* sizes, int64_t count,
                      double momentum, void* stream) {
  const char* op = "cuda::ema_update_multi";
  check_momentum(op, momentum);
  HG_CHECK(count >= 0, op, "expected a non-negative tensor count, got ", count);
  using NT = typename Native<TT>::type;
  using NS = typename Native<TS>::type;
  const cudaStream_t s = stream_or_current(stream);
  const float a = static_cast<float>(momentum), b = static_cast<float>(1.0 - momentum);
  const int64_t max_grid = int64_t(sm_count()) * kBlocksPerSM;
  EmaTable<NT, NS> table{};
  table.count = 0;
  auto launch = [&] {
    if (table.count == 0) return;
    const int chunks = table.chunk_begin[table.count];
    ema_multi_kernel<NT, NS><<<static_cast<unsigned>(std::min<int64_t>(chunks, max_grid)), kThreads, 0, s>>>(table, a, b);
    HG_CUDA_CHECK_LAUNCH("ema_multi_kernel");
    table.count = 0;
    table.chunk_begin[0] = 0;
  };
  for (int64_t i = 0; i < count; ++i) {
    HG_CHECK(sizes[i] >= 0, op, "expected non-negative sizes, got ", sizes[i], " for tensor ", i);
    if (sizes[i] == 0) continue;
    HG_CHECK(teachers[i] && students[i], op, "got a null pointer for tensor ", i, " of ", sizes[i], " elements");
    const int64_t chunks = (sizes[i] + kChunk - 1) / kChunk;
    HG_CHECK(chunks < INT_MAX / 2, op, "tensor ", i, " is too large (", sizes[i], " elements)");
    if (table.count == kEmaTensorsPerLaunch || table.chunk_begin[table.count] + chunks > INT_MAX / 2) launch();
    table.teacher[table.count] = reinterpret_cast<NT*>(teachers[i]);
    table.student[table.count] = reinterpret_cast<const NS*>(students[i]);
    table.size[table.count] = sizes[i];
    table.chunk_begin[table.count + 1] = table.chunk_begin[table.count] + static_cast<int>(chunks);
    ++table.count;
  }
  launch();
}

#define HG_EMA_INSTANTIATE(TT, TS)                                                                           \
  template void ema_update_flat<TT, TS>(TT*, const TS*, int64_t, double, void*);                            \
  template void ema_update_multi<TT, TS>(TT* const*, const TS* const*, const int64_t*, int64_t, double, void*);
HG_EMA_INSTANTIATE(float, float)
HG_EMA_INSTANTIATE(float, bfloat16)
HG_EMA_INSTANTIATE(float, half)
HG_EMA_INSTANTIATE(bfloat16, bfloat16)
HG_EMA_INSTANTIATE(half, half)
#undef HG_EMA_INSTANTIATE

}  // namespace histograd::cuda
