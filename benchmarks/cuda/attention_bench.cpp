// Attention forward and backward through histograd::cuda (the flash kernel), bf16 and fp16, head
// dims 64 and 128, at ViT-B/16's 197 tokens (batch 64, 12 heads) and at 1024 and 4096 tokens
// (16k tokens per batch, 12 heads), non-causal plus causal at the long lengths. FLOPs follow the
// FlashAttention benchmarks: 4*B*H*N^2*D forward, 2.5x that backward, halved when causal.
// torch_attention.py prints the same RESULT lines for F.scaled_dot_product_attention.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "histograd/core/dtype.hpp"
#include "histograd/core/error.hpp"
#include "histograd/cuda/attention.hpp"
#include "histograd/cuda/runtime.hpp"

namespace {

namespace hc = histograd::cuda;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw histograd::Error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Median of `reps` event-timed runs after `warmup` untimed ones, in milliseconds.
template <class F>
double time_ms(F&& f, int warmup = 5, int reps = 25) {
  cudaStream_t stream = static_cast<cudaStream_t>(hc::current_stream());
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    f();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Deterministic values in [-1, 1) rounded to T, uploaded.
template <class T>
T* random_device(size_t n, uint32_t seed) {
  std::vector<T> host(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    host[i] = T(static_cast<float>(x >> 8) / 8388608.0f - 1.0f);
  }
  void* p = hc::allocate(n * sizeof(T));
  hc::copy(p, host.data(), n * sizeof(T), hc::CopyKind::HostToDevice);
  return static_cast<T*>(p);
}

template <class T>
void bench(const char* tag, int64_t B, int64_t H, int64_t N, int64_t D, bool causal, hc::AttentionKernel kernel) {
  const size_t n = static_cast<size_t>(B * H * N * D);
  T *q = random_device<T>(n, 1), *k = random_device<T>(n, 2), *v = random_device<T>(n, 3),
    *dout = random_device<T>(n, 4);
  T* out = static_cast<T*>(hc::allocate(n * sizeof(T)));
  T* dq = static_cast<T*>(hc::allocate(n * sizeof(T)));
  T* dk = static_cast<T*>(hc::allocate(n * sizeof(T)));
  T* dv = static_cast<T*>(hc::allocate(n * sizeof(T)));
  float* lse = static_cast<float*>(hc::allocate(static_cast<size_t>(B * H * N) * sizeof(float)));
  const hc::AttentionShape shape{B, H, N, N, D};
  const size_t ws_bytes = hc::attention_backward_workspace_bytes(shape);
  void* ws = hc::allocate(ws_bytes);
  hc::AttentionOptions options;
  options.causal = causal;
  options.kernel = kernel;

  const double fwd_ms = time_ms([&] { hc::attention_forward(q, k, v, out, lse, shape, options); });
  const double bwd_ms =
      time_ms([&] { hc::attention_backward(q, k, v, out, dout, lse, dq, dk, dv, ws, shape, options); });
  const double flops = 4.0 * B * H * N * N * D * (causal ? 0.5 : 1.0);
  char name[96];
  std::snprintf(name, sizeof name, "attention %s D%lld N%lld B%lld H%lld%s", tag, static_cast<long long>(D),
                static_cast<long long>(N), static_cast<long long>(B), static_cast<long long>(H),
                causal ? " causal" : "");
  // "histograd" is the default kernel (flash: the Hopper forward and backward where available, see
  // the header line); "histograd_v1" lines run flash_v1's kernels for comparison.
  const char* who = kernel == hc::AttentionKernel::flash_v1 ? "histograd_v1" : "histograd";
  std::printf("RESULT %s %-44s fwd %8.4f ms %7.1f TFLOP/s  bwd %8.4f ms %7.1f TFLOP/s\n", who, name, fwd_ms,
              flops / (fwd_ms * 1e9), bwd_ms, 2.5 * flops / (bwd_ms * 1e9));
  std::fflush(stdout);
  for (void* p : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(dout),
                  static_cast<void*>(out), static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv)})
    hc::release(p, n * sizeof(T));
  hc::release(lse, static_cast<size_t>(B * H * N) * sizeof(float));
  hc::release(ws, ws_bytes);
}

}  // namespace

int main() {
  if (!hc::available()) {
    std::printf("skipped: no usable CUDA device (%s)\n", hc::unavailable_reason().c_str());
    return 0;
  }
  std::printf(
      "device: %s (bf16 dense tensor peak of an H100/H200 SXM: 989 TFLOP/s); flash forward: %s, backward: %s\n",
      hc::device_name(0).c_str(), hc::attention_hopper_available() ? "hopper (wgmma)" : "v1 (mma.sync)",
      hc::attention_hopper_backward_available() ? "hopper (wgmma)" : "v1 (mma.sync)");
  struct Shape {
    int64_t B, H, N;
    bool causal;
  };
  const Shape shapes[] = {{64, 12, 197, false}, {16, 12, 1024, false}, {4, 12, 4096, false},
                          {16, 12, 1024, true},  {4, 12, 4096, true}};
  // HG_ATTENTION_CASE="N,D" runs that one non-causal bf16 case with the default kernel only: the
  // shape scripts/gpu_check.sh profiles under ncu.
  long long only_n = 0, only_d = 0;
  if (const char* only = std::getenv("HG_ATTENTION_CASE"))
    if (std::sscanf(only, "%lld,%lld", &only_n, &only_d) != 2) only_n = only_d = 0;
  try {
    for (int64_t D : {64, 128})
      for (const Shape& s : shapes) {
        if (only_n > 0) {
          if (s.N == only_n && D == only_d && !s.causal)
            bench<histograd::bfloat16>("bf16", s.B, s.H, s.N, D, false, hc::AttentionKernel::flash);
          continue;
        }
        for (hc::AttentionKernel kernel : {hc::AttentionKernel::flash, hc::AttentionKernel::flash_v1}) {
          bench<histograd::bfloat16>("bf16", s.B, s.H, s.N, D, s.causal, kernel);
          bench<histograd::half>("fp16", s.B, s.H, s.N, D, s.causal, kernel);
        }
      }
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}
