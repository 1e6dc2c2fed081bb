// The resampling kernel (include/histograd/cuda/interpolate.hpp): one thread per output element
// (p, o, c), reading its taps' inputs down the resampled axis.
#include "check.cuh"
#include "histograd/cuda/interpolate.hpp"

namespace histograd::cuda {
namespace {

template <class T>
__global__ void resample_axis_kernel(const T* __restrict__ in, T* __restrict__ out, int64_t planes, int64_t in_size,
                                     int64_t out_size, int64_t width, const int64_t* __restrict__ index,
                                     const int64_t* __restrict__ count, const T* __restrict__ weight, int64_t max_taps,
                                     bool fuse_pair) {
  const int64_t total = planes * out_size * width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % width, o = (e / width) % out_size, p = e / (width * out_size);
    const T* src = in + p * in_size * width + c;
    const int64_t* idx = index + o * max_taps;
    const T* w = weight + o * max_taps;
    const int64_t n = count[o];
    T acc = T(0);
    if (n > 0) {
      const int64_t first = fuse_pair && n >= 2 ? 2 : 1;
      acc = first == 2 ? fma(src[idx[0] * width], w[0], src[idx[1] * width] * w[1]) : src[idx[0] * width] * w[0];
      for (int64_t j = first; j < n; ++j) acc = fma(src[idx[j] * width], w[j], acc);
    }
    out[e] = acc;
  }
}

}  // namespace

template <class T>
void resample_axis(const T* in, T* out, int64_t planes, int64_t in_size, int64_t out_size, int64_t width,
                   const int64_t* index, const int64_t* count, const T* weight, int64_t max_taps, bool fuse_pair,
                   void* stream) {
  const int64_t total = planes * out_size * width;
  if (total == 0) return;
  const int64_t blocks = (total + 255) / 256;
  resample_axis_kernel<T><<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), 256, 0,
                            stream_or_current(stream)>>>(in, out, planes, in_size, out_size, width, index, count,
                                                         weight, max_taps, fuse_pair);
  HG_CUDA_CHECK_LAUNCH("cuda::resample_axis");
}

template void resample_axis<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                   const int64_t*, const float*, int64_t, bool, void*);
template void resample_axis<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                    const int64_t*, const double*, int64_t, bool, void*);

}  // namespace histograd::cuda
