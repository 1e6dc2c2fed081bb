// Loops under the index ops (index_select, gather, scatter_add, embedding, and the backward
// of sort/topk). Every such op walks an index tensor seen as [outer, k, inner] around one
// dim: element (o, j, c) holding index i pairs the "indexed" tensor's element (o, i, c) with
// the "dense" tensor's element (o, j, c). Offsets come from precomputed tables, so any
// strides work and no inner loop divides or allocates.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../core/shape.hpp"
#include "parallel.hpp"

namespace histograd::cpu {

// Offsets (in elements) of the dims [begin, end) of a strided tensor, for every multi-index
// over those dims in row-major order; `shape` may be smaller than the tensor's own.
inline std::vector<int64_t> strided_offsets(const Shape& shape, const Shape& strides, int64_t begin, int64_t end) {
  std::vector<int64_t> offsets{0};
  for (int64_t d = begin; d < end; ++d) {
    std::vector<int64_t> next;
    next.reserve(offsets.size() * static_cast<size_t>(shape[d]));
    for (int64_t base : offsets)
      for (int64_t i = 0; i < shape[d]; ++i) next.push_back(base + i * strides[d]);
    offsets = std::move(next);
  }
  return offsets;
}

// Where element (o, j, c) of one operand lives: outer[o] + j * step + inner[c]. When the
// inner dims collapse to one stride, inner_stride holds it (the vectorisable common case).
struct AxisLayout {
  std::vector<int64_t> outer, inner;
  int64_t step = 0;
  int64_t inner_stride = -1;  // -1: use the inner table

  int64_t at_inner(int64_t c) const { return inner_stride >= 0 ? c * inner_stride : inner[static_cast<size_t>(c)]; }
};

// The layout of a tensor with `strides`, walked over `walk_shape` (the index's shape) around `dim`.
inline AxisLayout axis_layout(const Shape& walk_shape, const Shape& strides, int64_t dim) {
  const int64_t ndim = static_cast<int64_t>(walk_shape.size());
  AxisLayout layout;
  layout.outer = strided_offsets(walk_shape, strides, 0, dim);
  layout.step = strides[dim];
  // The inner dims collapse to one stride when, size-1 dims aside, each stride is the next
  // one's stride times its size.
  int64_t unit = -1, expected = -1;
  bool uniform = true;
  for (int64_t d = ndim - 1; d > dim && uniform; --d) {
    if (walk_shape[d] == 1) continue;
    if (unit < 0) unit = strides[d];
    else uniform = strides[d] == expected;
    expected = strides[d] * walk_shape[d];
  }
  if (uniform) layout.inner_stride = unit < 0 ? 0 : unit;
  else layout.inner = strided_offsets(walk_shape, strides, dim + 1, ndim);
  return layout;
}

// Where the index value of element (o, j, c) is read: o * outer + j * step + c * inner.
// gather uses a contiguous [outer, k, inner] index; index_select one [k] vector (0, 1, 0).
struct IndexSteps {
  int64_t outer, step, inner;
};

// dense(o, j, c) = indexed(o, index(o, j, c), c). Threads split the (o, j) rows; each output
// element is written once, so the result never depends on the split.
template <class T>
void gather_along(const T* indexed, const AxisLayout& from, const int64_t* index, IndexSteps steps, T* dense,
                  const AxisLayout& to, int64_t outer, int64_t k, int64_t inner) {
  parallel_for(outer * k, std::max<int64_t>(inner, 1), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t o = row / k, j = row % k;
      const int64_t* idx = index + o * steps.outer + j * steps.step;
      const T* src = indexed + from.outer[static_cast<size_t>(o)];
      T* dst = dense + to.outer[static_cast<size_t>(o)] + j * to.step;
      if (steps.inner == 0 && from.inner_stride == 1 && to.inner_stride == 1) {  // whole contiguous rows
        const T* row_src = src + idx[0] * from.step;
        std::copy(row_src, row_src + inner, dst);
        continue;
      }
      for (int64_t c = 0; c < inner; ++c) dst[to.at_inner(c)] = src[idx[c * steps.inner] * from.step + from.at_inner(c)];
    }
  });
}

// indexed(o, index(o, j, c), c) += dense(o, j, c), skipping index == skip (embedding's
// padding row). Repeated indices collide only within one (o, c) lane, so threads split the
// lanes (o, and blocks of c) and every lane adds its j in ascending order: deterministic.
template <class T>
void scatter_add_along(const T* dense, const AxisLayout& from, const int64_t* index, IndexSteps steps, T* indexed,
                       const AxisLayout& to, int64_t outer, int64_t k, int64_t inner, int64_t skip = -1) {
  const int64_t block = 256, blocks = (inner + block - 1) / block;
  parallel_for(outer * blocks, std::max<int64_t>(k, 1) * std::min(inner, block), [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t o = unit / blocks, c0 = (unit % blocks) * block, c1 = std::min(inner, c0 + block);
      const T* src = dense + from.outer[static_cast<size_t>(o)];
      T* dst = indexed + to.outer[static_cast<size_t>(o)];
      for (int64_t j = 0; j < k; ++j) {
        const int64_t* idx = index + o * steps.outer + j * steps.step;
        const T* src_row = src + j * from.step;
        if (steps.inner == 0) {
          if (idx[0] == skip) continue;
          T* dst_row = dst + idx[0] * to.step;
          if (from.inner_stride == 1 && to.inner_stride == 1) {
            for (int64_t c = c0; c < c1; ++c) dst_row[c] += src_row[c];
            continue;
          }
        }
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t i = idx[c * steps.inner];
          if (i != skip) dst[i * to.step + to.at_inner(c)] += src_row[from.at_inner(c)];
        }
      }
    }
  });
}

}  // namespace histograd::cpu
