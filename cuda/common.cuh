// Device helpers the kernel files share: the CUDA twin of each histograd element type, fp32
// conversions with round-to-nearest-even (bit-exact with core/dtype.hpp's host conversions),
// aligned vector types for 16-byte loads, a warp sum and the SM count for sizing grids.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "check.cuh"
#include "histograd/core/dtype.hpp"

namespace histograd::cuda {

// histograd's storage type -> the CUDA type with the same bits (launchers reinterpret pointers).
template <class T> struct Native { using type = T; };
template <> struct Native<bfloat16> { using type = __nv_bfloat16; };
template <> struct Native<half> { using type = __half; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// N elements loaded or stored as one aligned vector (16 bytes: N = 16 / sizeof(T)).
template <class T, int N> struct alignas(sizeof(T) * N) Vec { T v[N]; };

// The sum over the 32 lanes of a warp, every lane getting it, in a fixed butterfly order.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Streaming multiprocessors of the current device.
inline int sm_count() {
  int device = 0, count = 0;
  HG_CUDA_CHECK(cudaGetDevice(&device));
  HG_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

}  // namespace histograd::cuda
