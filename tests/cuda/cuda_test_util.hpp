// Shared by the CUDA suites: skip with a printed reason when no GPU is present (CI has none),
// move host data to and from the device, poison outputs so unwritten elements show, and the
// relative error against a float64 reference that every GPU check uses.
#pragma once
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "histograd/core/dtype.hpp"
#include "histograd/cuda/runtime.hpp"
#include "test_util.hpp"

// Ends the current test case early, with a message, when there is no usable device.
#define HG_REQUIRE_GPU()                                                              \
  do {                                                                                \
    if (!::histograd::cuda::available()) {                                            \
      MESSAGE("skipped: no usable CUDA device (" << ::histograd::cuda::unavailable_reason() << ")"); \
      return;                                                                         \
    }                                                                                 \
  } while (0)

namespace histograd::test {

// A device buffer of n elements that frees itself; the bytes start poisoned (all ones: NaN for
// float, bf16 and half) so an element a kernel forgot to write fails every comparison.
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DeviceBuffer(size_t n) : count(n) {
    ptr = static_cast<T*>(cuda::allocate(std::max<size_t>(n, 1) * sizeof(T)));
    poison();
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cuda::release(ptr, std::max<size_t>(count, 1) * sizeof(T)); }
  void poison() { cuda::fill_bytes(ptr, 0xff, count * sizeof(T)); }
  void upload(const std::vector<T>& host) {
    cuda::copy(ptr, host.data(), host.size() * sizeof(T), cuda::CopyKind::HostToDevice);
  }
  std::vector<T> download() const {
    std::vector<T> host(count);
    cuda::copy(host.data(), ptr, count * sizeof(T), cuda::CopyKind::DeviceToHost);
    return host;
  }
};

template <class T> double to_double(T v) {
  if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, half>) return static_cast<double>(static_cast<float>(v));
  else return static_cast<double>(v);
}
template <class T> T from_double(double v) {
  if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, half>) return T(static_cast<float>(v));
  else return static_cast<T>(v);
}

// ||got - ref|| / ||ref|| over all elements; +inf when any element is NaN or inf, so a poisoned
// (unwritten) or overflowed element never passes.
template <class T>
double relative_error(const std::vector<double>& reference, const std::vector<T>& got) {
  REQUIRE(reference.size() == got.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = to_double(got[i]);
    if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
    diff += (g - reference[i]) * (g - reference[i]);
    norm += reference[i] * reference[i];
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

// Fresh normal draws (never zeros) rounded to T, and the same values as doubles for the reference.
template <class T>
std::vector<T> random_values(size_t n, uint64_t seed, double scale = 1.0) {
  std::vector<double> d = random_input({static_cast<int64_t>(n)}, seed).to_vector();
  std::vector<T> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = from_double<T>(d[i] * scale);
  return out;
}
template <class T>
std::vector<double> as_doubles(const std::vector<T>& values) {
  std::vector<double> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = to_double(values[i]);
  return out;
}

}  // namespace histograd::test
