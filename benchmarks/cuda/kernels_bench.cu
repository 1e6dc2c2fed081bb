// Bandwidth of our memory-bound kernels (layer norm, softmax cross-entropy, EMA) against the
// card's measured device-to-device copy bandwidth, in one run. Each line prints ms per call,
// achieved GB/s over the minimum bytes the kernel must move, and that as % of the copy bandwidth;
// torch_kernels.py prints the same lines for PyTorch so the two can be divided.
// Byte counts (es = element size): layer norm fwd 2·N·es (read x, write y), bwd 3·N·es (read x,
// dy, write dx; Triton tutorial's convention); hard-label CE fwd N·es, bwd 2·N·es; DINO CE fwd
// 2·N·es (teacher, student), bwd 3·N·es; EMA P·(2·es_teacher + es_student).
// Layer norm and cross-entropy print the default kernels (version 2) and, suffixed " v1", the
// kernels of GPU run 1; lines suffixed " cold" are timed after an L2 flush (time_cold_ms).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "histograd/cuda/cross_entropy.hpp"
#include "histograd/cuda/ema.hpp"
#include "histograd/cuda/layer_norm.hpp"
#include "histograd/cuda/runtime.hpp"

namespace hg = histograd;

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

// Median ms per call over `reps` calls after warm-up, timed with events on the current stream.
double time_ms(const std::function<void()>& fn, int reps = 20) {
  cudaStream_t stream = static_cast<cudaStream_t>(hg::cuda::current_stream());
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  check(cudaEventDestroy(start), "cudaEventDestroy");
  check(cudaEventDestroy(stop), "cudaEventDestroy");
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// The same, but each call starts right after a 256 MiB memset: the inputs are not in L2 (50 MB on
// an H100/H200, which holds a whole 12608x768 bf16 layer norm), and the GPU is busy while the host
// enqueues the call, so the host's launch latency is not counted (as triton's do_bench does).
double time_cold_ms(const std::function<void()>& fn, int reps = 20) {
  cudaStream_t stream = static_cast<cudaStream_t>(hg::cuda::current_stream());
  const size_t flush_bytes = size_t(256) << 20;
  static void* flush = hg::cuda::allocate(flush_bytes);
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    check(cudaMemsetAsync(flush, i & 0xff, flush_bytes, stream), "cudaMemsetAsync");
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  check(cudaEventDestroy(start), "cudaEventDestroy");
  check(cudaEventDestroy(stop), "cudaEventDestroy");
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double g_copy_gbs = 0;

// Times fn under both kernel versions (2, the default, unsuffixed; then " v1") and both methods
// (per call as run 1 did; then " cold"), reporting bytes over each time.
void report(const std::string& name, double ms, double bytes);
void report_versions(const std::string& name, double bytes, void (*set_version)(int), const std::function<void()>& fn) {
  for (int version : {2, 1}) {
    set_version(version);
    const std::string tag = version == 2 ? "" : " v1";
    report(name + tag, time_ms(fn), bytes);
    report(name + tag + " cold", time_cold_ms(fn), bytes);
  }
  set_version(2);
}

void report(const std::string& name, double ms, double bytes) {
  const double gbs = bytes / (ms * 1e6);
  std::printf("RESULT %-44s %9.4f ms %8.1f GB/s %6.1f %%copy\n", name.c_str(), ms, gbs, 100.0 * gbs / g_copy_gbs);
  std::fflush(stdout);
}

template <class T> T* device_random(size_t n, unsigned seed, float scale = 1.0f) {
  std::vector<T> host(n);
  unsigned state = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    host[i] = T(scale * (static_cast<float>(state >> 8) / 16777216.0f * 2.0f - 1.0f));
  }
  T* p = static_cast<T*>(hg::cuda::allocate(n * sizeof(T)));
  hg::cuda::copy(p, host.data(), n * sizeof(T), hg::cuda::CopyKind::HostToDevice);
  return p;
}
template <class T> T* device_empty(size_t n) { return static_cast<T*>(hg::cuda::allocate(n * sizeof(T))); }
void free_all(std::vector<std::pair<void*, size_t>>& blocks) {
  hg::cuda::synchronize();
  for (auto& [p, bytes] : blocks) hg::cuda::release(p, bytes);
  blocks.clear();
}

template <class T> const char* name_of() {
  if constexpr (std::is_same_v<T, float>) return "fp32";
  else return "bf16";
}

template <class T> void bench_layer_norm(int64_t rows, int64_t cols) {
  const size_t n = size_t(rows * cols);
  T *x = device_random<T>(n, 1), *dy = device_random<T>(n, 2), *w = device_random<T>(size_t(cols), 3),
    *b = device_random<T>(size_t(cols), 4), *y = device_empty<T>(n), *dx = device_empty<T>(n),
    *dw = device_empty<T>(size_t(cols)), *db = device_empty<T>(size_t(cols));
  float *mean = device_empty<float>(size_t(rows)), *rstd = device_empty<float>(size_t(rows));
  const std::string shape = std::to_string(rows) + "x" + std::to_string(cols) + " " + name_of<T>();
  report_versions("layer_norm fwd " + shape, 2.0 * n * sizeof(T), hg::cuda::set_layer_norm_kernel_version,
                  [&] { hg::cuda::layer_norm_forward(x, w, b, y, mean, rstd, rows, cols, 1e-6); });
  report_versions("layer_norm bwd " + shape, 3.0 * n * sizeof(T), hg::cuda::set_layer_norm_kernel_version,
                  [&] { hg::cuda::layer_norm_backward(x, dy, w, mean, rstd, dx, dw, db, rows, cols); });
  std::vector<std::pair<void*, size_t>> blocks{{x, n * sizeof(T)},          {dy, n * sizeof(T)},
                                               {w, cols * sizeof(T)},       {b, cols * sizeof(T)},
                                               {y, n * sizeof(T)},          {dx, n * sizeof(T)},
                                               {dw, cols * sizeof(T)},      {db, cols * sizeof(T)},
                                               {mean, rows * sizeof(float)}, {rstd, rows * sizeof(float)}};
  free_all(blocks);
}

template <class T> void bench_hard_ce(int64_t rows, int64_t classes) {
  const size_t n = size_t(rows * classes);
  T *x = device_random<T>(n, 5, 4.0f), *dx = device_empty<T>(n), *g = device_random<T>(1, 6);
  std::vector<int64_t> labels(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) labels[size_t(r)] = (r * 7919) % classes;
  int64_t* dl = device_empty<int64_t>(size_t(rows));
  hg::cuda::copy(dl, labels.data(), size_t(rows) * 8, hg::cuda::CopyKind::HostToDevice);
  float *loss = device_empty<float>(size_t(rows)), *lse = device_empty<float>(size_t(rows));
  const std::string shape = std::to_string(rows) + "x" + std::to_string(classes) + " " + name_of<T>();
  report_versions("cross_entropy fwd " + shape, 1.0 * n * sizeof(T), hg::cuda::set_cross_entropy_kernel_version,
                  [&] { hg::cuda::cross_entropy_forward(x, dl, loss, lse, rows, classes); });
  report_versions("cross_entropy bwd " + shape, 2.0 * n * sizeof(T), hg::cuda::set_cross_entropy_kernel_version, [&] {
    hg::cuda::cross_entropy_backward(x, dl, lse, g, 0, 1.0f / float(rows), dx, rows, classes);
  });
  std::vector<std::pair<void*, size_t>> blocks{{x, n * sizeof(T)},      {dx, n * sizeof(T)},      {g, sizeof(T)},
                                               {dl, size_t(rows) * 8},  {loss, size_t(rows) * 4}, {lse, size_t(rows) * 4}};
  free_all(blocks);
}

template <class T> void bench_dino_ce(int64_t rows, int64_t classes) {
  const size_t n = size_t(rows * classes);
  T *s = device_random<T>(n, 7), *t = device_random<T>(n, 8), *c = device_random<T>(size_t(classes), 9, 0.1f),
    *ds = device_empty<T>(n), *g = device_random<T>(1, 10);
  float *loss = device_empty<float>(size_t(rows)), *ls = device_empty<float>(size_t(rows)),
        *lt = device_empty<float>(size_t(rows));
  const std::string shape = std::to_string(rows) + "x" + std::to_string(classes) + " " + name_of<T>();
  report_versions("dino_cross_entropy fwd " + shape, 2.0 * n * sizeof(T), hg::cuda::set_cross_entropy_kernel_version,
                  [&] { hg::cuda::distillation_cross_entropy_forward(s, t, c, loss, ls, lt, rows, classes, 0.1f, 0.04f); });
  report_versions("dino_cross_entropy bwd " + shape, 3.0 * n * sizeof(T), hg::cuda::set_cross_entropy_kernel_version,
                  [&] {
                    hg::cuda::distillation_cross_entropy_backward(s, t, c, ls, lt, g, 0, 1.0f / float(rows), ds, rows,
                                                                  classes, 0.1f, 0.04f);
                  });
  std::vector<std::pair<void*, size_t>> blocks{{s, n * sizeof(T)},        {t, n * sizeof(T)},       {c, classes * sizeof(T)},
                                               {ds, n * sizeof(T)},       {g, sizeof(T)},           {loss, size_t(rows) * 4},
                                               {ls, size_t(rows) * 4},    {lt, size_t(rows) * 4}};
  free_all(blocks);
}

// ViT-B/16's parameter tensors (timm vit_base_patch16_224 without the classifier): ~86M.
std::vector<int64_t> vit_b_sizes() {
  const int64_t d = 768, mlp = 3072;
  std::vector<int64_t> sizes{d * 3 * 16 * 16, d, d, 197 * d};
  for (int block = 0; block < 12; ++block)
    for (int64_t s : {d, d, 3 * d * d, 3 * d, d * d, d, d, d, mlp * d, mlp, d * mlp, d}) sizes.push_back(s);
  sizes.push_back(d);
  sizes.push_back(d);
  return sizes;
}

template <class TS> void bench_ema() {
  const std::vector<int64_t> sizes = vit_b_sizes();
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  const double bytes = double(total) * (2 * sizeof(float) + sizeof(TS));
  const std::string tag = std::string(" ViT-B ") + std::to_string(sizes.size()) + " tensors " +
                          std::to_string(total / 1000000) + "M fp32<-" + name_of<TS>();
  // Separate tensors, as a model holds them.
  std::vector<float*> teachers;
  std::vector<const TS*> students;
  std::vector<std::pair<void*, size_t>> blocks;
  for (size_t i = 0; i < sizes.size(); ++i) {
    teachers.push_back(device_random<float>(size_t(sizes[i]), unsigned(11 + i)));
    students.push_back(device_random<TS>(size_t(sizes[i]), unsigned(1000 + i)));
    blocks.push_back({teachers.back(), size_t(sizes[i]) * 4});
    blocks.push_back({const_cast<TS*>(students.back()), size_t(sizes[i]) * sizeof(TS)});
  }
  const double multi = time_ms([&] {
    hg::cuda::ema_update_multi(teachers.data(), students.data(), sizes.data(), int64_t(sizes.size()), 0.996);
  });
  report("ema multi" + tag, multi, bytes);
  free_all(blocks);
  // One flat buffer (llm.c's layout).
  float* t = device_random<float>(size_t(total), 12);
  TS* s = device_random<TS>(size_t(total), 13);
  const double flat = time_ms([&] { hg::cuda::ema_update_flat(t, s, total, 0.996); });
  report("ema flat" + tag, flat, bytes);
  blocks = {{t, size_t(total) * 4}, {s, size_t(total) * sizeof(TS)}};
  free_all(blocks);
}

}  // namespace

int main() {
  if (!hg::cuda::available()) {
    std::printf("skipped: %s\n", hg::cuda::unavailable_reason().c_str());
    return 0;
  }
  std::printf("device: %s\n", hg::cuda::device_name(0).c_str());
  {
    const size_t bytes = size_t(1) << 30;
    void* a = hg::cuda::allocate(bytes);
    void* b = hg::cuda::allocate(bytes);
    cudaStream_t stream = static_cast<cudaStream_t>(hg::cuda::current_stream());
    const double ms = time_ms([&] { check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream), "copy"); });
    g_copy_gbs = 2.0 * double(bytes) / (ms * 1e6);
    std::printf("RESULT %-44s %9.4f ms %8.1f GB/s %6.1f %%copy\n", "device-to-device copy 1 GiB (read+write)", ms,
                g_copy_gbs, 100.0);
    hg::cuda::synchronize();
    hg::cuda::release(a, bytes);
    hg::cuda::release(b, bytes);
  }
  for (int64_t cols : {768, 1024}) {
    bench_layer_norm<float>(64 * 197, cols);
    bench_layer_norm<hg::bfloat16>(64 * 197, cols);
  }
  bench_dino_ce<float>(2 * 64, 65536);
  bench_dino_ce<hg::bfloat16>(2 * 64, 65536);
  bench_hard_ce<float>(8192, 32000);
  bench_hard_ce<hg::bfloat16>(8192, 32000);
  bench_ema<float>();
  bench_ema<hg::bfloat16>();
  return 0;
}
