// Copies, dtype conversions, fills and arange behind include/histograd/cuda/copy.hpp, all on the
// strided walker of strided.cuh so any view (permuted, sliced, broadcast) reads and writes in place.
#include <cuda_runtime.h>

#include <cstdint>

#include "histograd/cuda/copy.hpp"
#include "strided.cuh"

namespace histograd::cuda {
namespace {

template <class From, class To> struct ConvertFn {
  To* out;
  const From* in;
  __device__ void operator()(const int64_t (&off)[2]) const { out[off[0]] = detail::convert<To>(in[off[1]]); }
};

template <class T> struct FillFn {
  T* out;
  T value;
  __device__ void operator()(const int64_t (&off)[1]) const { out[off[0]] = value; }
};

// Rounded multiply and add, so nvcc cannot fuse them into an FMA the host never does.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
template <class T> __device__ __forceinline__ T mul_rn(T a, T b) { return a * b; }
template <class T> __device__ __forceinline__ T add_rn(T a, T b) { return a + b; }

template <class T>
__global__ void arange_kernel(T* out, int64_t n, T start, T step) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = add_rn(start, mul_rn(static_cast<T>(i), step));
}

}  // namespace

template <class From, class To>
void convert(const Shape& shape, To* out, const Shape& out_strides, const From* in, const Shape& in_strides,
             void* stream) {
  detail::launch_strided<2>("cuda::convert", shape, {&out_strides, &in_strides}, ConvertFn<From, To>{out, in},
                            stream);
}

template <class T>
void fill(const Shape& shape, T* out, const Shape& out_strides, T value, void* stream) {
  detail::launch_strided<1>("cuda::fill", shape, {&out_strides}, FillFn<T>{out, value}, stream);
}

template <class T>
void arange(T* out, int64_t n, T start, T step, void* stream) {
  if (n <= 0) return;
  arange_kernel<T><<<detail::grid_for(n), detail::kThreads, 0, stream_or_current(stream)>>>(out, n, start, step);
  HG_CUDA_CHECK_LAUNCH("cuda::arange");
}

#define HG_CONVERT(From, To) \
  template void convert<From, To>(const Shape&, To*, const Shape&, const From*, const Shape&, void*);
#define HG_CONVERT_FROM(From)                                                                         \
  HG_CONVERT(From, float) HG_CONVERT(From, double) HG_CONVERT(From, bfloat16) HG_CONVERT(From, half) \
  HG_CONVERT(From, int64_t) HG_CONVERT(From, int32_t) HG_CONVERT(From, uint8_t) HG_CONVERT(From, bool)
HG_CONVERT_FROM(float)
HG_CONVERT_FROM(double)
HG_CONVERT_FROM(bfloat16)
HG_CONVERT_FROM(half)
HG_CONVERT_FROM(int64_t)
HG_CONVERT_FROM(int32_t)
HG_CONVERT_FROM(uint8_t)
HG_CONVERT_FROM(bool)
#undef HG_CONVERT_FROM
#undef HG_CONVERT

#define HG_FILL(T) template void fill<T>(const Shape&, T*, const Shape&, T, void*);
HG_FILL(float)
HG_FILL(double)
HG_FILL(bfloat16)
HG_FILL(half)
HG_FILL(int64_t)
HG_FILL(int32_t)
HG_FILL(uint8_t)
HG_FILL(bool)
#undef HG_FILL

template void arange<float>(float*, int64_t, float, float, void*);
template void arange<double>(double*, int64_t, double, double, void*);
template void arange<int64_t>(int64_t*, int64_t, int64_t, int64_t, void*);
template void arange<int32_t>(int32_t*, int64_t, int32_t, int32_t, void*);

}  // namespace histograd::cuda
