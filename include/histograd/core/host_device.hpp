// HG_HOST_DEVICE marks the small per-element math functions that the CPU kernels and the
// CUDA kernels share, so the CPU tests exercise the same arithmetic the GPU runs.
#pragma once

#ifdef __CUDACC__
#define HG_HOST_DEVICE __host__ __device__
#else
#define HG_HOST_DEVICE
#endif
