// Tensor factories, named as in PyTorch: empty/zeros/ones/full, arange, rand/randn (Philox,
// deterministic across thread counts), from_vector (copies) and from_blob (wraps, no copy).
// Each takes an optional Device; on a CUDA device the fill, arange and Philox draws run there
// (cuda/copy.cu, cuda/random.cu) and give the same values as on the CPU.
#pragma once
#include <cmath>
#include <functional>
#include <vector>

#include "../cpu/parallel.hpp"
#include "random.hpp"
#include "tensor.hpp"  // before ops/device.hpp: tensor.hpp's tail pulls in ops/views.hpp, which needs device.hpp's helpers declared after Tensor
#include "../ops/device.hpp"

namespace histograd {

template <class T> Tensor<T> empty(const Shape& shape, Device device = kCPU) { return Tensor<T>(shape, device); }

template <class T> Tensor<T> full(const Shape& shape, T value, Device device = kCPU) {
  Tensor<T> out(shape, device);
  if (detail::is_cuda(out)) {
    detail::cuda_fill(out, value);
    return out;
  }
  T* p = out.data();
  std::fill(p, p + out.numel(), value);
  return out;
}
template <class T> Tensor<T> zeros(const Shape& shape, Device device = kCPU) { return full<T>(shape, T(0), device); }
template <class T> Tensor<T> ones(const Shape& shape, Device device = kCPU) { return full<T>(shape, T(1), device); }
template <class T> Tensor<T> scalar_tensor(T value, Device device = kCPU) { return full<T>(Shape{}, value, device); }
template <class T> Tensor<T> zeros_like(const Tensor<T>& t) { return zeros<T>(t.shape(), t.device()); }
template <class T> Tensor<T> ones_like(const Tensor<T>& t) { return ones<T>(t.shape(), t.device()); }
template <class T> Tensor<T> full_like(const Tensor<T>& t, T value) { return full<T>(t.shape(), value, t.device()); }

// [start, end) in steps of `step`, like torch.arange.
template <class T> Tensor<T> arange(T start, T end, T step = T(1), Device device = kCPU) {
  HG_CHECK(step != T(0), "arange", "step must be non-zero");
  double count = std::ceil((static_cast<double>(end) - static_cast<double>(start)) / static_cast<double>(step));
  Tensor<T> out(Shape{std::max<int64_t>(0, static_cast<int64_t>(count))}, device);
  if (detail::is_cuda(out)) {
#ifdef HISTOGRAD_WITH_CUDA
    if constexpr (detail::one_of<T, float, double, int64_t, int32_t>) {
      cuda::arange<T>(out.device_data(), out.numel(), start, step);
      return out;
    }
#endif
    detail::no_cuda_kernel("arange", dtype_name<T>());
  }
  for (int64_t i = 0; i < out.numel(); ++i) out.data()[i] = static_cast<T>(start + static_cast<T>(i) * step);
  return out;
}
template <class T> Tensor<T> arange(T end, Device device = kCPU) { return arange<T>(T(0), end, T(1), device); }

namespace detail {
// Fills out[i] from Philox block i/4, lane i%4, so element i never depends on the split (nor
// on the device: the CUDA kernel reads the same blocks).
template <class T, class Draw>
Tensor<T> random_fill(const Shape& shape, Generator& gen, Device device, [[maybe_unused]] cuda::RandomKind kind,
                      Draw draw) {
  Tensor<T> out(shape, device);
  const int64_t n = out.numel(), blocks = (n + 3) / 4;
  const uint64_t start = gen.reserve(static_cast<uint64_t>(blocks));
  if (is_cuda(out)) {
#ifdef HISTOGRAD_WITH_CUDA
    if constexpr (cuda_reduce_type<T>) {
      cuda::philox_fill<T>(kind, out.device_data(), n, gen.seed(), start);
      return out;
    }
#endif
    no_cuda_kernel("rand", dtype_name<T>());
  }
  T* p = out.data();
  cpu::parallel_for(blocks, 64, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      auto values = draw(start, static_cast<uint64_t>(b));
      for (int64_t lane = 0; lane < 4 && 4 * b + lane < n; ++lane) p[4 * b + lane] = static_cast<T>(values[lane]);
    }
  });
  return out;
}
}  // namespace detail

template <class T> Tensor<T> rand(const Shape& shape, Generator& gen = default_generator(), Device device = kCPU) {
  return detail::random_fill<T>(shape, gen, device, cuda::RandomKind::Uniform,
                                [&](uint64_t s, uint64_t b) { return gen.uniforms(s, b); });
}
template <class T> Tensor<T> randn(const Shape& shape, Generator& gen = default_generator(), Device device = kCPU) {
  return detail::random_fill<T>(shape, gen, device, cuda::RandomKind::Normal,
                                [&](uint64_t s, uint64_t b) { return gen.normals(s, b); });
}
template <class T> Tensor<T> rand(const Shape& shape, Device device, Generator& gen = default_generator()) {
  return rand<T>(shape, gen, device);
}
template <class T> Tensor<T> randn(const Shape& shape, Device device, Generator& gen = default_generator()) {
  return randn<T>(shape, gen, device);
}
template <class T> Tensor<T> randn_like(const Tensor<T>& t, Generator& gen = default_generator()) {
  return randn<T>(t.shape(), gen, t.device());
}
template <class T> Tensor<T> rand_like(const Tensor<T>& t, Generator& gen = default_generator()) {
  return rand<T>(t.shape(), gen, t.device());
}
// Integers uniform in [low, high). On a CUDA device they are drawn on the host and copied over.
template <class T>
Tensor<T> randint(int64_t low, int64_t high, const Shape& shape, Generator& gen = default_generator(),
                  Device device = kCPU) {
  if (!device.is_cpu()) return randint<T>(low, high, shape, gen).to(device);
  HG_CHECK(high > low, "randint", "expected high > low, got [", low, ", ", high, ")");
  Tensor<double> u = rand<double>(shape, gen);
  Tensor<T> out(shape);
  for (int64_t i = 0; i < out.numel(); ++i)
    out.data()[i] = static_cast<T>(low + std::min<int64_t>(high - low - 1, static_cast<int64_t>(u.data()[i] * double(high - low))));
  return out;
}

// Copies `values` into a new tensor of `shape` (1-D of the vector's length by default).
template <class T> Tensor<T> from_vector(const std::vector<T>& values, Shape shape = {}, Device device = kCPU) {
  if (!device.is_cpu()) return from_vector<T>(values, std::move(shape)).to(device);
  if (shape.empty() && values.size() != 1) shape = {static_cast<int64_t>(values.size())};
  HG_CHECK(numel_of(shape) == static_cast<int64_t>(values.size()), "from_vector", "shape ", to_string(shape), " needs ",
           numel_of(shape), " values, got ", values.size());
  Tensor<T> out(shape);
  std::copy(values.begin(), values.end(), out.data());
  return out;
}
template <class T> Tensor<T> tensor(std::initializer_list<T> values, Shape shape = {}, Device device = kCPU) {
  return from_vector<T>(std::vector<T>(values), std::move(shape), device);
}

// Wraps external memory without copying. The caller keeps it alive (or passes `release`,
// called when the last tensor sharing it goes away). Strides default to contiguous.
template <class T>
Tensor<T> from_blob(T* data, const Shape& shape, Shape strides = {}, std::function<void(T*)> release = nullptr) {
  HG_CHECK(data != nullptr || numel_of(shape) == 0, "from_blob", "null data pointer for shape ", to_string(shape));
  if (strides.empty()) strides = contiguous_strides(shape);
  HG_CHECK(strides.size() == shape.size(), "from_blob", "strides ", to_string(strides), " do not match shape ",
           to_string(shape));
  int64_t extent = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    HG_CHECK(strides[i] >= 0, "from_blob", "negative stride in ", to_string(strides));
    if (shape[i] > 0) extent += (shape[i] - 1) * strides[i];
  }
  if (numel_of(shape) == 0) extent = 0;
  auto storage = std::make_shared<Storage<T>>(data, extent, std::move(release));
  return Tensor<T>(storage, shape, strides, 0);
}

}  // namespace histograd
