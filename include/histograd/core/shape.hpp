// Shapes and strides: element counts, contiguous strides, negative-dim wrapping and
// NumPy/PyTorch broadcasting. Shapes are std::vector<int64_t>, row-major like PyTorch.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "error.hpp"

namespace histograd {

using Shape = std::vector<int64_t>;

inline int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

inline Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t running = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = running;
    running *= shape[i];
  }
  return strides;
}

inline std::string to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

inline std::ostream& operator<<(std::ostream& out, const Shape& shape) { return out << to_string(shape); }

// Wraps a possibly negative dim into [0, ndim); throws naming the op otherwise.
inline int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t lo = ndim > 0 ? -ndim : -1, hi = ndim > 0 ? ndim - 1 : 0;
  HG_CHECK(dim >= lo && dim <= hi, op, "dim ", dim, " out of range for a tensor of ", ndim,
           " dims (expected a dim in [", lo, ", ", hi, "])");
  return dim < 0 ? dim + (ndim > 0 ? ndim : 1) : dim;
}

// PyTorch broadcasting: align trailing dims; each pair must be equal or contain a 1.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    HG_CHECK(da == db || da == 1 || db == 1, op, "shapes ", to_string(a), " and ", to_string(b),
             " cannot be broadcast together (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Strides that read a tensor of `shape`/`strides` as if it had `target` shape (0 on
// broadcast dims). `target` must be a broadcast of `shape`.
inline Shape broadcast_strides(const Shape& shape, const Shape& strides, const Shape& target) {
  Shape out(target.size(), 0);
  size_t lead = target.size() - shape.size();
  for (size_t i = 0; i < shape.size(); ++i)
    out[lead + i] = (shape[i] == 1 && target[lead + i] != 1) ? 0 : strides[i];
  return out;
}

}  // namespace histograd
