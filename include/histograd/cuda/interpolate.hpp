// Separable resampling on the GPU (cuda/interpolate.cu), the CUDA side of cpu/interpolate.hpp's
// resample_rows/resample_columns: the taps (per output position: up to max_taps input indices
// and weights) are computed on the host by the same cpu::*_taps functions and uploaded, so
// bicubic, bilinear, antialias and DINO's +0.1 offset all run through one kernel. The backward
// is the same kernel over the transposed taps (built on the host), so it needs no atomics.
#pragma once
#include <cstdint>

namespace histograd::cuda {

// out[p, o, c] = Σ_j weight[o, j] · in[p, index[o, j], c] for j < count[o], over contiguous
// in [planes, in_size, width] and out [planes, out_size, width]. Accumulated as the CPU does:
// the first term (the first two fused, when fuse_pair and count >= 2), then one fma per tap.
// index, count and weight are device arrays ([out_size, max_taps], [out_size], [out_size, max_taps]).
template <class T>
void resample_axis(const T* in, T* out, int64_t planes, int64_t in_size, int64_t out_size, int64_t width,
                   const int64_t* index, const int64_t* count, const T* weight, int64_t max_taps, bool fuse_pair,
                   void* stream = nullptr);

}  // namespace histograd::cuda
