// Softmax and log-softmax along one dim of a contiguous tensor viewed as [outer, n, inner]:
// y = exp(x - max) / Σ exp(x - max) (the max shift makes it overflow-free). When the dim is last
// (inner == 1) each row is a few vectorised Eigen passes over L1-resident data; otherwise blocks
// of inner columns are processed together so the loads stay contiguous.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdint>
#include <type_traits>

#include "../core/dtype.hpp"
#include "parallel.hpp"

namespace histograd::cpu {

// The kernels live beside their helpers, so the short alias names below never meet other
// kernels' aliases in cpu::; the three entry points are re-exported at the end.
namespace softmax_detail {
template <class T> using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T> using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
constexpr int64_t kBlock = 256;
// Per-block scratch with a fixed capacity lives on the stack: no allocation per block.
template <class T> using Buffer = Eigen::Array<T, Eigen::Dynamic, 1, Eigen::ColMajor, kBlock, 1>;

// Σ over [0, n) of block_sum(k, length): each block of 256 sums vectorised in T, the blocks add
// in double (for float), so long rows (class logits) do not drift while short rows stay fast.
template <class T, class BlockSum>
accumulate_t<T> blocked_sum(int64_t n, BlockSum&& block_sum) {
  accumulate_t<T> total = 0;
  for (int64_t k = 0; k < n; k += kBlock) total += block_sum(k, std::min(kBlock, n - k));
  return total;
}

// Runs body(o, i0, width) over every (outer index, block of inner columns), in parallel.
template <class Body>
void for_each_column_block(int64_t outer, int64_t n, int64_t inner, Body&& body) {
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
  parallel_for(outer * blocks, n * std::min(inner, kBlock), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i0 = (item % blocks) * kBlock;
      body(item / blocks, i0, std::min(kBlock, inner - i0));
    }
  });
}
// Eigen 3.4's packet exp clamps its input near -88.7 (without AVX-512), so exp(-inf) comes out
// as ~1.9e-39 rather than 0; masked logits must give probabilities of exactly 0.
template <class T>
void zero_where_minus_infinity(const T* x, T* y, int64_t n) {
  for (int64_t k = 0; k < n; ++k)
    if (x[k] == -std::numeric_limits<T>::infinity()) y[k] = T(0);
}

// One contiguous row. A NaN anywhere makes the whole row NaN (through the sum), as in PyTorch;
// scaling by 1/Σ rather than dividing also follows PyTorch's vectorised kernel.
template <class T>
void softmax_row(const T* x, T* y, int64_t n, bool log) {
  if (n == 0) return;
  ConstArrayMap<T> xr(x, n);
  ArrayMap<T> yr(y, n);
  const T m = xr.maxCoeff();
  yr = (xr - m).exp();
  zero_where_minus_infinity(x, y, n);
  const accumulate_t<T> sum = blocked_sum<T>(n, [&](int64_t k, int64_t len) { return yr.segment(k, len).sum(); });
  if (log)
    yr = (xr - m) - static_cast<T>(std::log(sum));
  else
    yr *= static_cast<T>(1 / sum);
}

// x, y: contiguous [outer, n, inner]; log selects log-softmax.
template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (n == 0) return;
  if (inner == 1) {
    parallel_for(outer, n, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) softmax_row(x + r * n, y + r * n, n, log);
    });
    return;
  }
  for_each_column_block(outer, n, inner, [&](int64_t o, int64_t i0, int64_t width) {
    const T* xb = x + o * n * inner + i0;
    T* yb = y + o * n * inner + i0;
    Buffer<T> shift = ConstArrayMap<T>(xb, width);
    for (int64_t k = 1; k < n; ++k)
      for (int64_t i = 0; i < width; ++i) {
        const T v = xb[k * inner + i];
        if (v > shift[i] || std::isnan(v)) shift[i] = v;
      }
    Buffer<accumulate_t<T>> sum = Buffer<accumulate_t<T>>::Zero(width);
    for (int64_t k = 0; k < n; ++k) {
      ArrayMap<T> yk(yb + k * inner, width);
      yk = (ConstArrayMap<T>(xb + k * inner, width) - shift).exp();
      zero_where_minus_infinity(xb + k * inner, yb + k * inner, width);
      sum += yk.template cast<accumulate_t<T>>();
    }
    if (log) {
      const Buffer<T> log_sum = sum.log().template cast<T>();
      for (int64_t k = 0; k < n; ++k)
        ArrayMap<T>(yb + k * inner, width) = (ConstArrayMap<T>(xb + k * inner, width) - shift) - log_sum;
    } else {
      const Buffer<T> inverse = sum.inverse().template cast<T>();
      for (int64_t k = 0; k < n; ++k) ArrayMap<T>(yb + k * inner, width) *= inverse;
    }
  });
}

// softmax: dx = y (g - Σ g y);  log_softmax: dx = g - exp(y) Σ g. All contiguous [outer, n, inner].
template <class T>
void softmax_backward(const T* y, const T* g, T* dx, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (n == 0) return;
  if (inner == 1) {
    parallel_for(outer, n, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        ConstArrayMap<T> yr(y + r * n, n), gr(g + r * n, n);
        ArrayMap<T> dr(dx + r * n, n);
        if (log) {
          const T s = static_cast<T>(blocked_sum<T>(n, [&](int64_t k, int64_t len) { return gr.segment(k, len).sum(); }));
          dr = gr - yr.exp() * s;
        } else {
          const T s = static_cast<T>(blocked_sum<T>(n, [&](int64_t k, int64_t len) {
            return (gr.segment(k, len) * yr.segment(k, len)).sum();
          }));
          dr = yr * (gr - s);
        }
      }
    });
    return;
  }
  for_each_column_block(outer, n, inner, [&](int64_t o, int64_t i0, int64_t width) {
    const int64_t base = o * n * inner + i0;
    Buffer<accumulate_t<T>> sum = Buffer<accumulate_t<T>>::Zero(width);
    for (int64_t k = 0; k < n; ++k) {
      ConstArrayMap<T> gk(g + base + k * inner, width), yk(y + base + k * inner, width);
      if (log)
        sum += gk.template cast<accumulate_t<T>>();
      else
        sum += (gk * yk).template cast<accumulate_t<T>>();
    }
    const Buffer<T> s = sum.template cast<T>();
    for (int64_t k = 0; k < n; ++k) {
      ConstArrayMap<T> gk(g + base + k * inner, width), yk(y + base + k * inner, width);
      ArrayMap<T> dk(dx + base + k * inner, width);
      if (log)
        dk = gk - yk.exp() * s;
      else
        dk = yk * (gk - s);
    }
  });
}

}  // namespace softmax_detail

using softmax_detail::softmax_backward;
using softmax_detail::softmax_forward;
using softmax_detail::softmax_row;

}  // namespace histograd::cpu
