// Copies, conversions and fills on the GPU (cuda/copy.cu): a strided source read into a
// strided destination of the same shape (contiguous(), clone(), copy_ with broadcasting,
// Tensor::to<U>() on the device), constant fills and arange. Conversions are static_cast, with
// bfloat16/half rounded to nearest-even exactly as core/dtype.hpp does on the host.
#pragma once
#include <cstdint>

#include "../core/dtype.hpp"
#include "../core/shape.hpp"

namespace histograd::cuda {

// out[i] = static_cast<To>(in[i]) over `shape`; in_strides may hold 0 (broadcast).
// From, To ∈ {float, double, bfloat16, half, int64_t, int32_t, uint8_t, bool}.
template <class From, class To>
void convert(const Shape& shape, To* out, const Shape& out_strides, const From* in, const Shape& in_strides,
             void* stream = nullptr);
// out[i] = value over a strided destination.
template <class T>
void fill(const Shape& shape, T* out, const Shape& out_strides, T value, void* stream = nullptr);
// out[i] = start + T(i) * step for i < n, rounded as the host's arange (no fused multiply-add).
template <class T>
void arange(T* out, int64_t n, T start, T step, void* stream = nullptr);

}  // namespace histograd::cuda
