// The loop under every elementwise op and copy: walk N operands that share one shape but
// have their own strides (0 on broadcast dims). Dims that are contiguous in every operand
// are merged first, so a contiguous or simply-broadcast op becomes one long inner loop the
// compiler can vectorise; rows of the inner loop are split across threads.
#pragma once
#include <array>
#include <cstdint>

#include "../core/shape.hpp"
#include "parallel.hpp"

namespace histograd::cpu {

template <size_t N>
using Offsets = std::array<int64_t, N>;

// Drops size-1 dims and merges dim d into d+1 when every operand steps through them as one.
template <size_t N>
void coalesce_dims(Shape& shape, std::array<Shape, N>& strides) {
  Shape new_shape;
  std::array<Shape, N> new_strides;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool mergeable = !new_shape.empty();
    for (size_t k = 0; k < N && mergeable; ++k)
      mergeable = new_strides[k].back() == strides[k][d] * shape[d];
    if (mergeable) {
      new_shape.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) new_strides[k].back() = strides[k][d];
    } else {
      new_shape.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) new_strides[k].push_back(strides[k][d]);
    }
  }
  shape = std::move(new_shape);
  strides = std::move(new_strides);
}

// kernel(offsets, count, inner_strides): process `count` elements starting at `offsets`
// (one per operand, in elements), stepping by inner_strides.
template <size_t N, class Kernel>
void strided_loop(Shape shape, std::array<Shape, N> strides, Kernel&& kernel) {
  if (numel_of(shape) == 0) return;
  coalesce_dims(shape, strides);
  const int64_t ndim = static_cast<int64_t>(shape.size());
  if (ndim == 0) {
    kernel(Offsets<N>{}, int64_t(1), Offsets<N>{});
    return;
  }
  const int64_t inner = shape[ndim - 1];
  Offsets<N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = strides[k][ndim - 1];
  const int64_t rows = numel_of(shape) / inner;
  parallel_for(rows, inner, [&](int64_t row_begin, int64_t row_end) {
    Shape index(static_cast<size_t>(ndim), 0);
    Offsets<N> offsets{};
    int64_t rest = row_begin;
    for (int64_t d = ndim - 2; d >= 0; --d) {  // decompose the first row into a multi-index
      index[d] = rest % shape[d];
      rest /= shape[d];
      for (size_t k = 0; k < N; ++k) offsets[k] += index[d] * strides[k][d];
    }
    for (int64_t row = row_begin; row < row_end; ++row) {
      kernel(offsets, inner, inner_strides);
      for (int64_t d = ndim - 2; d >= 0; --d) {
        for (size_t k = 0; k < N; ++k) offsets[k] += strides[k][d];
        if (++index[d] < shape[d]) break;
        for (size_t k = 0; k < N; ++k) offsets[k] -= strides[k][d] * shape[d];
        index[d] = 0;
      }
    }
  });
}

}  // namespace histograd::cpu
