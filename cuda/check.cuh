// Error checking for the CUDA translation units: every runtime, cuBLAS and cuDNN call and every
// kernel launch goes through one of these, so a failure becomes histograd::Error naming the
// call and the library's reason rather than a silently wrong result several ops later.
#pragma once
#include <cuda_runtime.h>

#include "histograd/core/error.hpp"
#include "histograd/cuda/runtime.hpp"

#define HG_CUDA_CHECK(call)                                                                            \
  do {                                                                                                 \
    cudaError_t hg_status_ = (call);                                                                   \
    if (hg_status_ != cudaSuccess)                                                                     \
      throw ::histograd::Error(std::string(#call) + ": CUDA error " + cudaGetErrorName(hg_status_) + \
                               " (" + cudaGetErrorString(hg_status_) + ")");                           \
  } while (0)

// After a <<<...>>> launch: configuration errors show at once, faults at the next sync.
#define HG_CUDA_CHECK_LAUNCH(kernel_name) HG_CUDA_CHECK_NAMED(cudaGetLastError(), kernel_name)
#define HG_CUDA_CHECK_NAMED(call, name)                                                              \
  do {                                                                                               \
    cudaError_t hg_status_ = (call);                                                                 \
    if (hg_status_ != cudaSuccess)                                                                   \
      throw ::histograd::Error(std::string(name) + ": CUDA error " + cudaGetErrorName(hg_status_) + \
                               " (" + cudaGetErrorString(hg_status_) + ")");                         \
  } while (0)

namespace histograd::cuda {
// The stream a launcher was given, or histograd's current stream when it was given nullptr.
inline cudaStream_t stream_or_current(void* stream) {
  return static_cast<cudaStream_t>(stream ? stream : current_stream());
}
}  // namespace histograd::cuda
