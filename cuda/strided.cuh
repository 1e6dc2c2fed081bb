// Shared by the generic kernels (elementwise, copy, reduce, random): N operands walked over one
// shape with their own strides, the element-type bridge for bfloat16/half (loaded to float,
// rounded once on store, bit-exact with core/dtype.hpp's conversions), and the launch shape.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <type_traits>

#include "check.cuh"
#include "histograd/core/dtype.hpp"
#include "histograd/core/shape.hpp"
#include "histograd/cuda/elementwise.hpp"

namespace histograd::cuda::detail {

// ---------------------------------------------------------------- element types
template <class T> struct Compute { using type = T; };
template <> struct Compute<bfloat16> { using type = float; };
template <> struct Compute<half> { using type = float; };
template <class T> using compute_t = typename Compute<T>::type;

__device__ __forceinline__ float bits_to_float(uint32_t u) { return __uint_as_float(u); }

// Same rounding as bfloat16(float) in core/dtype.hpp: nearest, ties to even, NaN -> 0x7fc0.
__device__ __forceinline__ uint16_t float_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
// IEEE nearest-even (as half(float) in core/dtype.hpp); NaN keeps its sign and becomes quiet
// with the payload dropped, as the host conversion does.
__device__ __forceinline__ uint16_t float_to_half_bits(float f) {
  if (isnan(f)) return static_cast<uint16_t>(((__float_as_uint(f) >> 16) & 0x8000u) | 0x7e00u);
  return __half_as_ushort(__float2half_rn(f));
}
__device__ __forceinline__ float half_bits_to_float(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// load/store between a storage type and its compute type.
template <class T> __device__ __forceinline__ compute_t<T> load(const T& v) { return v; }
template <> __device__ __forceinline__ float load<bfloat16>(const bfloat16& v) {
  return bits_to_float(static_cast<uint32_t>(v.bits) << 16);
}
template <> __device__ __forceinline__ float load<half>(const half& v) { return half_bits_to_float(v.bits); }

template <class T> __device__ __forceinline__ T store(compute_t<T> v) { return v; }
template <> __device__ __forceinline__ bfloat16 store<bfloat16>(float v) {
  bfloat16 out;
  out.bits = float_to_bf16_bits(v);
  return out;
}
template <> __device__ __forceinline__ half store<half>(float v) {
  half out;
  out.bits = float_to_half_bits(v);
  return out;
}

// static_cast<To>(from) as the CPU's Tensor::to<To>() does, with 16-bit floats going through float.
template <class To, class From> __device__ __forceinline__ To convert(const From& v) {
  constexpr bool from16 = std::is_same_v<From, bfloat16> || std::is_same_v<From, half>;
  constexpr bool to16 = std::is_same_v<To, bfloat16> || std::is_same_v<To, half>;
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (to16) {
    if constexpr (from16) return store<To>(load<From>(v));
    else return store<To>(static_cast<float>(v));
  } else if constexpr (from16) {
    return static_cast<To>(load<From>(v));
  } else {
    return static_cast<To>(v);
  }
}

// ---------------------------------------------------------------- strided layout
template <int N> struct Layout {
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[N][kMaxDims] = {};
};

// Drops size-1 dims and merges neighbours every operand steps through as one, so a contiguous
// or simply broadcast op becomes one flat dim; errors past kMaxDims.
template <int N>
Layout<N> make_layout(const Shape& shape, const std::array<const Shape*, N>& strides, const char* name) {
  Layout<N> layout;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = layout.ndim > 0;
    for (int k = 0; k < N && merge; ++k)
      merge = layout.stride[k][layout.ndim - 1] == (*strides[k])[d] * shape[d];
    if (merge) {
      layout.size[layout.ndim - 1] *= shape[d];
      for (int k = 0; k < N; ++k) layout.stride[k][layout.ndim - 1] = (*strides[k])[d];
      continue;
    }
    if (layout.ndim == kMaxDims)
      throw Error(std::string(name) + ": more than " + std::to_string(kMaxDims) +
                  " non-mergeable dims in shape " + to_string(shape) + " (make the operands contiguous first)");
    layout.size[layout.ndim] = shape[d];
    for (int k = 0; k < N; ++k) layout.stride[k][layout.ndim] = (*strides[k])[d];
    ++layout.ndim;
  }
  return layout;
}

// Element offsets of linear index i (row-major over layout.size) for each operand.
template <int N>
__device__ __forceinline__ void offsets_of(const Layout<N>& layout, int64_t i, int64_t (&off)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
  if (layout.ndim <= 1) {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = layout.ndim == 0 ? 0 : i * layout.stride[k][0];
    return;
  }
  for (int d = layout.ndim - 1; d >= 0; --d) {
    const int64_t index = i % layout.size[d];
    i /= layout.size[d];
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += index * layout.stride[k][d];
  }
}

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, int64_t(1) << 16));  // grid-stride beyond
}

// f(off) for every element, off[k] the element offset of operand k.
template <int N, class F>
__global__ void strided_kernel(Layout<N> layout, int64_t n, F f) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[N];
    offsets_of(layout, i, off);
    f(off);
  }
}

template <int N, class F>
void launch_strided(const char* name, const Shape& shape, const std::array<const Shape*, N>& strides, F f,
                    void* stream) {
  for (int k = 0; k < N; ++k)
    if (strides[k]->size() != shape.size())
      throw Error(std::string(name) + ": operand " + std::to_string(k) + " has " +
                  std::to_string(strides[k]->size()) + " strides for a shape of " + std::to_string(shape.size()) +
                  " dims");
  const int64_t n = numel_of(shape);
  if (n == 0) return;
  const Layout<N> layout = make_layout<N>(shape, strides, name);
  strided_kernel<N, F><<<grid_for(n), kThreads, 0, stream_or_current(stream)>>>(layout, n, f);
  HG_CUDA_CHECK_LAUNCH(name);
}

}  // namespace histograd::cuda::detail
