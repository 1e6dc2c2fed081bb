// CPU GEMM: C[M,N] (+)= alpha * A[M,K] * B[K,N] through Eigen maps over our own buffers.
// An operand may be row-major or column-major (the layout of a transposed row-major view such
// as W.mT()), each with a leading dimension, so neither transposes nor slices of rows need a
// copy. C is always row-major. Threads split C (and a batch) into tiles fixed by the shape, each
// a serial Eigen product: no nested threading, and the same bits whatever the thread count.
// float on a CPU with AVX-512 takes our packed kernel instead (gemm_kernel.hpp), whose rounding
// depends on K alone, so it splits C into one band per thread.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "../core/dtype.hpp"
#include "gemm_kernel.hpp"
#include "parallel.hpp"

namespace histograd::cpu {

// How a matrix sits in memory: element (i, j) is at data[i * ld + j] (row-major) or at
// data[i + j * ld] (column-major).
struct MatrixLayout {
  bool col_major = false;
  int64_t ld = 0;
};

// The Eigen-mappable layout of a rows x cols matrix with the given element strides, or
// nullopt when neither stride is 1 (or rows overlap), in which case the caller copies.
inline std::optional<MatrixLayout> matrix_layout(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= std::max<int64_t>(cols, 1)))
    return MatrixLayout{false, rows == 1 ? std::max<int64_t>(cols, 1) : row_stride};
  if ((rows == 1 || row_stride == 1) && (cols == 1 || col_stride >= std::max<int64_t>(rows, 1)))
    return MatrixLayout{true, cols == 1 ? std::max<int64_t>(rows, 1) : col_stride};
  return std::nullopt;
}

namespace gemm_detail {
template <class T, int Order>
using ConstMatrixMap =
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using RowMajorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned,
                               Eigen::OuterStride<>>;

// Calls f(map) with the matrix mapped in its own storage order, so Eigen packs it straight from
// our buffer.
template <class T, class F>
void with_matrix_map(const T* data, int64_t rows, int64_t cols, MatrixLayout layout, F&& f) {
  if (layout.col_major)
    f(ConstMatrixMap<T, Eigen::ColMajor>(data, rows, cols, Eigen::OuterStride<>(layout.ld)));
  else
    f(ConstMatrixMap<T, Eigen::RowMajor>(data, rows, cols, Eigen::OuterStride<>(layout.ld)));
}

// Whether a float product takes the packed kernel: this CPU has AVX-512 and the product is no
// matrix-vector one (packing would cost as much as the product) nor empty in depth.
inline bool use_packed(int64_t M, int64_t N, int64_t K) { return M > 1 && N > 1 && K > 0 && packed::avx512_available(); }
}  // namespace gemm_detail

// Makes Eigen run serially on the calling thread for the scope's lifetime. Eigen splits a big
// product over OpenMP threads by itself, but then blocks the depth differently from its serial
// kernel, so the rounding would change with the thread count; we split the work ourselves.
class EigenSerialScope {
 public:
#ifdef _OPENMP
  EigenSerialScope() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~EigenSerialScope() { omp_set_num_threads(saved_); }
#else
  EigenSerialScope() = default;
#endif
  EigenSerialScope(const EigenSerialScope&) = delete;
  EigenSerialScope& operator=(const EigenSerialScope&) = delete;

 private:
#ifdef _OPENMP
  int saved_;
#endif
};

// One serial Eigen product, C = alpha A B or C += alpha A B; C is row-major with leading
// dimension ldc and must not overlap A or B.
template <class T>
void gemm_serial(int64_t M, int64_t N, int64_t K, T alpha, const T* A, MatrixLayout a_layout, const T* B,
                 MatrixLayout b_layout, T* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  gemm_detail::RowMajorMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {  // an empty sum: C keeps its value or becomes zero
    if (!accumulate) c.setZero();
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_detail::use_packed(M, N, K) && packed::sgemm(M, N, K, alpha, A, a_layout.col_major, a_layout.ld, B,
                                                          b_layout.col_major, b_layout.ld, C, ldc, accumulate))
      return;
  }
  gemm_detail::with_matrix_map(A, M, K, a_layout, [&](const auto& a) {
    gemm_detail::with_matrix_map(B, K, N, b_layout, [&](const auto& b) {
      if (accumulate)
        c.noalias() += alpha * a * b;
      else
        c.noalias() = alpha * a * b;
    });
  });
}

// The split of one M x N product into row_tiles x col_tiles equal tiles. It depends on the
// shape alone (never on the thread count), so every run gives the same bits. Tiles carry at
// least ~2M multiply-adds, their count is a power of two up to 16 (even shares for 2, 4, 8 or
// 16 threads), and the longer side is halved first to keep re-packing of operands small.
struct GemmTiling {
  int64_t row_tiles = 1, col_tiles = 1, tile_rows = 0, tile_cols = 0;
  GemmTiling(int64_t M, int64_t N, int64_t K) {
    const int64_t work = M * N * std::max<int64_t>(K, 1);
    const int64_t target = std::min<int64_t>(16, std::max<int64_t>(1, work >> 21));
    while (row_tiles * col_tiles < target) {
      const int64_t rows = M / row_tiles, cols = N / col_tiles;
      if (rows >= cols && rows >= 64) row_tiles *= 2;
      else if (cols >= 64) col_tiles *= 2;
      else if (rows >= 64) row_tiles *= 2;
      else break;
    }
    tile_rows = (M + row_tiles - 1) / row_tiles;
    tile_cols = (N + col_tiles - 1) / col_tiles;
  }
  int64_t count() const { return row_tiles * col_tiles; }
};

namespace gemm_detail {
// Tile t of C (+)= alpha A B under `tiling`.
template <class T>
void gemm_tile(const GemmTiling& tiling, int64_t t, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
               MatrixLayout a_layout, const T* B, MatrixLayout b_layout, T* C, int64_t ldc, bool accumulate) {
  const int64_t r0 = (t / tiling.col_tiles) * tiling.tile_rows, c0 = (t % tiling.col_tiles) * tiling.tile_cols;
  const int64_t rows = std::min(tiling.tile_rows, M - r0), cols = std::min(tiling.tile_cols, N - c0);
  if (rows <= 0 || cols <= 0) return;
  const T* a = A + (a_layout.col_major ? r0 : r0 * a_layout.ld);
  const T* b = B + (b_layout.col_major ? c0 * b_layout.ld : c0);
  gemm_serial(rows, cols, K, alpha, a, a_layout, b, b_layout, C + r0 * ldc + c0, ldc, accumulate);
}
}  // namespace gemm_detail

// C = alpha A B (accumulate = false) or C += alpha A B (accumulate = true), C row-major with
// leading dimension ldc, not overlapping A or B. Tiles of C run in parallel, each one a serial
// Eigen product.
template <class T>
void gemm(int64_t M, int64_t N, int64_t K, T alpha, const T* A, MatrixLayout a_layout, const T* B, MatrixLayout b_layout,
          T* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_detail::use_packed(M, N, K)) {
      const packed::Split split(M, N, in_parallel_region() ? 1 : max_threads());
      parallel_for(split.parts, M * N * K / split.parts, [&](int64_t begin, int64_t end) {
        for (int64_t part = begin; part < end; ++part)
          packed::sgemm_part(split, part, M, N, K, alpha, A, a_layout.col_major, a_layout.ld, B, b_layout.col_major,
                             b_layout.ld, C, ldc, accumulate);
      });
      return;
    }
  }
  const GemmTiling tiling(M, N, K);
  parallel_for(tiling.count(), tiling.tile_rows * tiling.tile_cols * std::max<int64_t>(K, 1), [&](int64_t begin, int64_t end) {
    [[maybe_unused]] EigenSerialScope serial;
    for (int64_t t = begin; t < end; ++t)
      gemm_detail::gemm_tile(tiling, t, M, N, K, alpha, A, a_layout, B, b_layout, C, ldc, accumulate);
  });
}

// batch products C_i (+)= alpha A_i B_i, where A_i = A + a_offsets[i] (likewise B) and C_i =
// C + i * c_batch_stride. Offsets may repeat (a broadcast operand is read, never copied).
// Every (matrix, tile) pair is one parallel work item, so many small products (attention
// heads) and a few big ones both fill the threads.
template <class T>
void gemm_batched(int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, const T* A, const int64_t* a_offsets,
                  MatrixLayout a_layout, const T* B, const int64_t* b_offsets, MatrixLayout b_layout, T* C,
                  int64_t c_batch_stride, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_detail::use_packed(M, N, K)) {
      const int64_t threads = in_parallel_region() ? 1 : max_threads();
      const packed::Split split(M, N, (threads + batch - 1) / std::max<int64_t>(batch, 1));
      parallel_for(batch * split.parts, M * N * K / split.parts, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t i = item / split.parts;
          packed::sgemm_part(split, item % split.parts, M, N, K, alpha, A + a_offsets[i], a_layout.col_major,
                             a_layout.ld, B + b_offsets[i], b_layout.col_major, b_layout.ld, C + i * c_batch_stride,
                             ldc, accumulate);
        }
      });
      return;
    }
  }
  const GemmTiling tiling(M, N, K);
  const int64_t tiles = tiling.count();
  parallel_for(batch * tiles, tiling.tile_rows * tiling.tile_cols * std::max<int64_t>(K, 1), [&](int64_t begin, int64_t end) {
    [[maybe_unused]] EigenSerialScope serial;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / tiles;
      gemm_detail::gemm_tile(tiling, item % tiles, M, N, K, alpha, A + a_offsets[i], a_layout, B + b_offsets[i], b_layout,
                             C + i * c_batch_stride, ldc, accumulate);
    }
  });
}

// out[j] = sum_i G[i, j] over a row-major rows x cols matrix with leading dimension ld (the
// bias gradient of a linear layer). Columns are split across threads and each column is summed
// top to bottom, so the result does not depend on the thread count; float sums in double.
template <class T>
void sum_rows(const T* G, int64_t rows, int64_t cols, int64_t ld, T* out) {
  using Acc = accumulate_t<T>;
  constexpr int64_t block = 64;
  parallel_for((cols + block - 1) / block, rows * block, [&](int64_t begin, int64_t end) {
    Acc acc[block];
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t j0 = blk * block, width = std::min(block, cols - j0);
      std::fill(acc, acc + width, Acc(0));
      for (int64_t i = 0; i < rows; ++i) {
        const T* row = G + i * ld + j0;
        for (int64_t j = 0; j < width; ++j) acc[j] += row[j];
      }
      for (int64_t j = 0; j < width; ++j) out[j0 + j] = static_cast<T>(acc[j]);
    }
  });
}

// C[i, :] = bias for every row: the initial value a fused linear layer accumulates into.
template <class T>
void fill_rows(T* C, int64_t rows, int64_t cols, int64_t ldc, const T* bias) {
  parallel_for(rows, cols, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) std::copy(bias, bias + cols, C + i * ldc);
  });
}

}  // namespace histograd::cpu
