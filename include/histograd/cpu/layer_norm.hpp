// Layer norm over the last dim (Ba, Kiros & Hinton 2016; PyTorch's biased variance), on rows of
// a contiguous [rows, cols] matrix. The arithmetic that does not depend on how a row is reduced
// (moments from sums, the input gradient of one element) is in small host+device functions a
// CUDA kernel can share; the CPU reduces rows with Eigen's vectorised sums. Statistics come from
// one pass of shifted sums: with d = x - x[0], E[d²] - E[d]² does not cancel for rows far from 0.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/dtype.hpp"
#include "buffer.hpp"
#include "../core/host_device.hpp"
#include "parallel.hpp"


namespace histograd::cpu {

// Sums across blocks of a row (and across rows for dw, db) run in double for float inputs, so
// long rows and big batches do not drift. (A CUDA kernel would pick Acc = float.)

// centered_mean = E[d] and rstd = 1/sqrt(E[d²] - E[d]² + eps), from Σd and Σd² over n elements.
template <class Acc>
HG_HOST_DEVICE inline void layer_norm_moments(Acc sum, Acc sum_squares, int64_t n, double eps, Acc& centered_mean,
                                              Acc& rstd) {
  const Acc count = Acc(n > 0 ? n : 1);
  centered_mean = sum / count;
  const Acc variance = sum_squares / count - centered_mean * centered_mean;
  rstd = Acc(1) / std::sqrt((variance > Acc(0) ? variance : Acc(0)) + Acc(eps));  // rounding can dip below 0
}

// dx of one element: rstd * (dy*w - mean(dy*w) - xhat * mean(dy*w * xhat)).
template <class T>
HG_HOST_DEVICE inline T layer_norm_input_grad(T dy, T w, T xhat, T rstd, T mean_dyw, T mean_dyw_xhat) {
  return rstd * (dy * w - mean_dyw - xhat * mean_dyw_xhat);
}

namespace layer_norm_detail {
template <class T> using ConstRow = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
constexpr int64_t kBlock = 256;

// Σ over [0, n) of block_sum(start, length), blocks of 256 summed vectorised in T, then in Acc.
template <class T, class BlockSum>
accumulate_t<T> blocked_sum(int64_t n, BlockSum&& block_sum) {
  accumulate_t<T> total = 0;
  for (int64_t start = 0; start < n; start += kBlock) total += block_sum(start, std::min(kBlock, n - start));
  return total;
}
}  // namespace layer_norm_detail

// One row: y = ((x - shift) - centered_mean) * rstd * w + b, with shift = x[0] (x - shift is
// exact when the row's values are close together). Returns mean and rstd for the backward.
template <class T>
void layer_norm_row_forward(const T* x, const T* w, const T* b, T* y, int64_t n, double eps, T& mean, T& rstd) {
  using Acc = accumulate_t<T>;
  using layer_norm_detail::ConstRow;
  const T shift = n > 0 ? x[0] : T(0);
  const Acc sum = layer_norm_detail::blocked_sum<T>(n, [&](int64_t s, int64_t len) { return (ConstRow<T>(x + s, len) - shift).sum(); });
  const Acc sum_squares = layer_norm_detail::blocked_sum<T>(n, [&](int64_t s, int64_t len) {
    return (ConstRow<T>(x + s, len) - shift).square().sum();
  });
  Acc centered_mean, row_rstd;
  layer_norm_moments(sum, sum_squares, n, eps, centered_mean, row_rstd);
  const T cm = static_cast<T>(centered_mean), r = static_cast<T>(row_rstd);
  for (int64_t k = 0; k < n; ++k) y[k] = ((x[k] - shift) - cm) * r * w[k] + b[k];
  mean = static_cast<T>(Acc(shift) + centered_mean);
  rstd = r;
}

// One row's dx (when dx is non-null), and dy*xhat and dy added into dw_acc and db_acc (when non-null).
template <class T>
void layer_norm_row_backward(const T* x, const T* dy, const T* w, T mean, T rstd, T* dx, T* dw_acc, T* db_acc,
                             int64_t n) {
  using Acc = accumulate_t<T>;
  using layer_norm_detail::ConstRow;
  if (dw_acc)
    for (int64_t k = 0; k < n; ++k) dw_acc[k] += dy[k] * ((x[k] - mean) * rstd);
  if (db_acc)
    for (int64_t k = 0; k < n; ++k) db_acc[k] += dy[k];
  if (!dx || n == 0) return;
  const Acc sum_dyw = layer_norm_detail::blocked_sum<T>(n, [&](int64_t s, int64_t len) {
    return (ConstRow<T>(dy + s, len) * ConstRow<T>(w + s, len)).sum();
  });
  const Acc sum_dyw_xhat = layer_norm_detail::blocked_sum<T>(n, [&](int64_t s, int64_t len) {
    return (ConstRow<T>(dy + s, len) * ConstRow<T>(w + s, len) * ((ConstRow<T>(x + s, len) - mean) * rstd)).sum();
  });
  const T mean_dyw = static_cast<T>(sum_dyw / Acc(n)), mean_dyw_xhat = static_cast<T>(sum_dyw_xhat / Acc(n));
  for (int64_t k = 0; k < n; ++k)
    dx[k] = layer_norm_input_grad(dy[k], w[k], (x[k] - mean) * rstd, rstd, mean_dyw, mean_dyw_xhat);
}

// Rows in parallel; saves mean and rstd per row for the backward. w and b must be non-null.
template <class T>
void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows, int64_t cols,
                        double eps) {
  parallel_for(rows, cols, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      layer_norm_row_forward(x + r * cols, w, b, y + r * cols, cols, eps, mean[r], rstd[r]);
  });
}

// dx, dw and db, each null when not wanted; w must be non-null. The weight and bias gradients
// sum over fixed chunks of 32 rows, then over the chunks in order (in Acc), so the bits never
// depend on the thread count.
template <class T>
void layer_norm_backward(const T* x, const T* dy, const T* w, const T* mean, const T* rstd, T* dx, T* dw, T* db,
                         int64_t rows, int64_t cols) {
  using Acc = accumulate_t<T>;
  constexpr int64_t chunk_rows = 32;
  const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  AlignedBuffer<T> partial_dw(dw ? static_cast<size_t>(chunks * cols) : 0, T(0));
  AlignedBuffer<T> partial_db(db ? static_cast<size_t>(chunks * cols) : 0, T(0));
  parallel_for(chunks, chunk_rows * cols, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      T* dw_acc = dw ? partial_dw.data() + c * cols : nullptr;
      T* db_acc = db ? partial_db.data() + c * cols : nullptr;
      for (int64_t r = c * chunk_rows; r < std::min(rows, (c + 1) * chunk_rows); ++r)
        layer_norm_row_backward(x + r * cols, dy + r * cols, w, mean[r], rstd[r], dx ? dx + r * cols : nullptr,
                                dw_acc, db_acc, cols);
    }
  });
  auto reduce_chunks = [&](const AlignedBuffer<T>& partial, T* out) {
    std::vector<Acc> total(static_cast<size_t>(cols), Acc(0));
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t k = 0; k < cols; ++k) total[static_cast<size_t>(k)] += partial[static_cast<size_t>(c * cols + k)];
    for (int64_t k = 0; k < cols; ++k) out[k] = static_cast<T>(total[static_cast<size_t>(k)]);
  };
  if (dw) reduce_chunks(partial_dw, dw);
  if (db) reduce_chunks(partial_db, db);
}

}  // namespace histograd::cpu
