// cuBLASLt GEMM through histograd::cuda::gemm on the ViT-B/16 training shapes and one large
// square product (the card's matrix peak): TFLOP/s, median of 20 timed runs after warm-up.
// torch_cublas_gemm.py prints the same lines for torch.matmul so the device script can take ratios.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "histograd/core/dtype.hpp"
#include "histograd/cuda/gemm.hpp"
#include "histograd/cuda/runtime.hpp"

namespace hg = histograd;

template <class T>
double median_ms(const hg::cuda::GemmArgs& args, const T* a, const T* b, T* c) {
  cudaEvent_t begin, end;
  cudaEventCreate(&begin);
  cudaEventCreate(&end);
  for (int i = 0; i < 5; ++i) hg::cuda::gemm<T>(args, a, b, c);
  std::vector<float> times;
  for (int i = 0; i < 20; ++i) {
    cudaEventRecord(begin, static_cast<cudaStream_t>(hg::cuda::current_stream()));
    hg::cuda::gemm<T>(args, a, b, c);
    cudaEventRecord(end, static_cast<cudaStream_t>(hg::cuda::current_stream()));
    cudaEventSynchronize(end);
    float ms = 0;
    cudaEventElapsedTime(&ms, begin, end);
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  cudaEventDestroy(begin);
  cudaEventDestroy(end);
  return times[times.size() / 2];
}

template <class T>
void run(const char* type, int64_t m, int64_t n, int64_t k, hg::cuda::GemmMath math) {
  // Random bytes would make NaNs; fill with small values through a host pattern instead.
  std::vector<T> host(static_cast<size_t>(std::max({m * k, k * n, m * n})));
  for (size_t i = 0; i < host.size(); ++i) host[i] = T(static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f);
  T* a = static_cast<T*>(hg::cuda::allocate(m * k * sizeof(T)));
  T* b = static_cast<T*>(hg::cuda::allocate(k * n * sizeof(T)));
  T* c = static_cast<T*>(hg::cuda::allocate(m * n * sizeof(T)));
  hg::cuda::copy(a, host.data(), m * k * sizeof(T), hg::cuda::CopyKind::HostToDevice);
  hg::cuda::copy(b, host.data(), k * n * sizeof(T), hg::cuda::CopyKind::HostToDevice);
  hg::cuda::GemmArgs args;
  args.m = m, args.n = n, args.k = k, args.transpose_b = true, args.math = math;  // x · W^T as Linear does
  const double ms = median_ms<T>(args, a, b, c);
  std::printf("RESULT gemm %s%s %ldx%ldx%ld ms=%.4f tflops=%.1f\n", type,
              math == hg::cuda::GemmMath::TF32 ? "-tf32" : "", static_cast<long>(m), static_cast<long>(n),
              static_cast<long>(k), ms, 2.0 * m * n * k / (ms * 1e-3) / 1e12);
  hg::cuda::release(a, m * k * sizeof(T));
  hg::cuda::release(b, k * n * sizeof(T));
  hg::cuda::release(c, m * n * sizeof(T));
}

int main() {
  if (!hg::cuda::available()) {
    std::printf("skipped: %s\n", hg::cuda::unavailable_reason().c_str());
    return 0;
  }
  std::printf("device: %s\n", hg::cuda::device_name().c_str());
  const int64_t tokens = 64 * 197;  // ViT-B/16, batch 64
  const int64_t shapes[][3] = {{tokens, 2304, 768}, {tokens, 3072, 768}, {tokens, 768, 3072}, {8192, 8192, 8192}};
  for (auto& s : shapes) run<hg::bfloat16>("bf16", s[0], s[1], s[2], hg::cuda::GemmMath::Exact);
  for (auto& s : shapes) run<float>("fp32", s[0], s[1], s[2], hg::cuda::GemmMath::TF32);
  run<float>("fp32", tokens, 2304, 768, hg::cuda::GemmMath::Exact);
  return 0;
}
