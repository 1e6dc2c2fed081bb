// Attention on the CPU as a tiled online-softmax loop (FlashAttention-2, Dao 2023: Algorithm 1
// forward, Algorithm 2 backward). Scores exist one [query block x key block] tile at a time, with
// a running row max m and sum l rescaling the output accumulator, so memory grows with L, not
// L*S. The forward keeps one logsumexp per query row; the backward recomputes P from it. Dropout
// draws Philox words keyed by the element's index, so the backward regenerates the same mask.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/random.hpp"
#include "buffer.hpp"
#include "parallel.hpp"

namespace histograd::cpu {

// Rows of queries and keys per tile. At head dim 64 in float a tile's Q, K, V, scores and
// accumulator take about 320 KB, inside a core's L2; on the project's 2-core EPYC 128 x 256 ran
// about 10% faster than 64 x 128 at L = S = 1024 and no slower at ViT's 197 tokens.
struct AttentionTiles {
  int64_t query_rows = 128;
  int64_t key_rows = 256;
};

// A [batch, rows, cols] operand read in place: matrix b starts at data + batch_offsets[b], its
// rows are row_stride apart. Columns are adjacent for q, k, v, dO (col_stride 1, which Eigen
// needs); only the additive mask may have any col_stride (0 when broadcast over keys).
template <class T>
struct AttentionOperand {
  const T* data = nullptr;
  std::vector<int64_t> batch_offsets;
  int64_t row_stride = 0, col_stride = 1;
};

template <class T>
struct AttentionProblem {
  int64_t batch = 0, query_len = 0, key_len = 0, head_dim = 0, value_dim = 0;  // B*H, L, S, E, Ev
  T scale = 1;
  bool causal = false;                       // hides key j from query i when j > i (top-left aligned)
  AttentionOperand<T> query, key, value, mask;  // mask.data == nullptr: no additive mask
  double dropout_p = 0;
  uint64_t dropout_seed = 0, dropout_offset = 0;  // Philox key and first block of this call's draw
  AttentionTiles tiles;
};

namespace attention_detail {

template <class T> using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T> using ConstTile = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T> using Tile = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Rows [row0, row0 + rows) of matrix b of an operand with `cols` columns.
template <class T>
ConstTile<T> rows_of(const AttentionOperand<T>& op, int64_t b, int64_t row0, int64_t rows, int64_t cols) {
  // A single row never steps by row_stride, and Eigen wants it at least the row's width.
  int64_t stride = rows > 1 ? op.row_stride : std::max<int64_t>(op.row_stride, cols);
  return ConstTile<T>(op.data + op.batch_offsets[b] + row0 * op.row_stride, rows, cols, Eigen::OuterStride<>(stride));
}
template <class T>
Tile<T> rows_of(T* data, int64_t row0, int64_t rows, int64_t cols) {
  return Tile<T>(data + row0 * cols, rows, cols, Eigen::OuterStride<>(cols));
}

// Element e of the flattened [batch, L, S] probabilities is kept when word e%4 of Philox block
// (offset + e/4) is >= p, the layout of Generator::uniforms. Keys of one row are consecutive
// elements, so one block serves four of them.
class DropoutMask {
 public:
  DropoutMask(double p, uint64_t seed, uint64_t offset) : p_(p), seed_(seed), offset_(offset) {
    keep_scale_ = p < 1 ? 1.0 / (1.0 - p) : 0.0;
  }
  bool active() const { return p_ > 0; }
  // row *= keep ? 1/(1-p) : 0 for the elements first_element, first_element + 1, ...
  template <class Row>
  void apply(Row&& row, uint64_t first_element) {
    using T = typename std::decay_t<Row>::Scalar;
    const T keep_scale = static_cast<T>(keep_scale_);
    for (int64_t c = 0; c < row.size(); ++c) {
      uint64_t e = first_element + static_cast<uint64_t>(c);
      if ((e >> 2) != cached_block_ || !has_block_) {
        words_ = Philox4x32::block(offset_ + (e >> 2), 0, seed_);
        cached_block_ = e >> 2;
        has_block_ = true;
      }
      row[c] *= uniform_from_bits(words_[e & 3]) >= p_ ? keep_scale : T(0);
    }
  }

 private:
  double p_, keep_scale_;
  uint64_t seed_, offset_, cached_block_ = 0;
  bool has_block_ = false;
  std::array<uint32_t, 4> words_{};
};

// row = exp(row - shift) for query i against keys j0, j0 + 1, ..., exactly 0 for keys hidden by
// a -inf mask entry or the causal rule. Eigen 3.4's vectorised exp clamps its input, so exp(-inf)
// comes out as 3e-39 (float, SSE2) instead of 0: we keep the fast exp and then zero the hidden
// keys, found from the mask and the positions (a select on the scores would not vectorise).
template <class T, class Row>
void exp_visible(const AttentionProblem<T>& p, int64_t b, int64_t i, int64_t j0, T shift, Row&& row) {
  row = (row.array() - shift).exp().matrix();
  const int64_t cols = row.size();
  if (p.mask.data) {
    const int64_t step = p.mask.col_stride;
    const T* mask_row = p.mask.data + p.mask.batch_offsets[b] + i * p.mask.row_stride + j0 * step;
    for (int64_t c = 0; c < cols; ++c)
      if (mask_row[c * step] == -std::numeric_limits<T>::infinity()) row[c] = T(0);
  }
  if (p.causal)
    for (int64_t c = std::max<int64_t>(0, i - j0 + 1); c < cols; ++c) row[c] = T(0);
}

// scores = scale * q k^T + mask, with -inf where the causal rule hides a key. The tile covers
// queries [i0, i0 + rows) and keys [j0, j0 + cols) of matrix b.
template <class T>
void attention_scores(const AttentionProblem<T>& p, int64_t b, int64_t i0, int64_t j0, const ConstTile<T>& q,
                      const ConstTile<T>& k, Tile<T>& scores) {
  scores.noalias() = p.scale * (q * k.transpose());
  const int64_t rows = scores.rows(), cols = scores.cols();
  if (p.mask.data) {
    const T* mask = p.mask.data + p.mask.batch_offsets[b];
    for (int64_t r = 0; r < rows; ++r) {
      const T* mask_row = mask + (i0 + r) * p.mask.row_stride + j0 * p.mask.col_stride;
      for (int64_t c = 0; c < cols; ++c) scores(r, c) += mask_row[c * p.mask.col_stride];
    }
  }
  if (p.causal)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = std::max<int64_t>(0, i0 + r - j0 + 1); c < cols; ++c)
        scores(r, c) = -std::numeric_limits<T>::infinity();
}

}  // namespace attention_detail

// out[b, i, :] = softmax_j(scores[b, i, :]) (dropped) v[b]; logsumexp[b, i] = log sum_j exp(scores).
// out is contiguous [batch, L, Ev], logsumexp contiguous [batch, L].
//
// A query row whose every score is -inf (fully masked, or S == 0) gets output 0 and logsumexp
// +inf, so the backward's exp(s - logsumexp) is 0 and its gradients are 0. PyTorch's math path
// gives NaN for such rows; we follow flash-attn's choice of 0, which keeps padded rows from
// poisoning a loss and is what a fused kernel can cheaply guarantee.
template <class T>
void attention_forward(const AttentionProblem<T>& p, T* out, T* logsumexp) {
  using namespace attention_detail;
  const int64_t L = p.query_len, S = p.key_len, E = p.head_dim, Ev = p.value_dim;
  const int64_t block_q = std::max<int64_t>(1, p.tiles.query_rows), block_k = std::max<int64_t>(1, p.tiles.key_rows);
  const int64_t query_blocks = (L + block_q - 1) / block_q;
  const T inf = std::numeric_limits<T>::infinity();
  parallel_for(p.batch * query_blocks, block_q * S * (E + Ev) * 2, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> score_buffer(static_cast<size_t>(block_q * block_k)), acc_buffer(static_cast<size_t>(block_q * Ev));
    AlignedBuffer<T> row_max(static_cast<size_t>(block_q)), row_sum(static_cast<size_t>(block_q));
    DropoutMask dropout(p.dropout_p, p.dropout_seed, p.dropout_offset);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / query_blocks, i0 = (item % query_blocks) * block_q, rows = std::min(block_q, L - i0);
      ConstTile<T> q = rows_of(p.query, b, i0, rows, E);
      Tile<T> acc = rows_of(acc_buffer.data(), 0, rows, Ev);
      acc.setZero();
      std::fill(row_max.begin(), row_max.end(), -inf);
      std::fill(row_sum.begin(), row_sum.end(), T(0));
      // Causal: the block's last query, i0 + rows - 1, sees no key past itself.
      const int64_t key_end = p.causal ? std::min(S, i0 + rows) : S;
      for (int64_t j0 = 0; j0 < key_end; j0 += block_k) {
        const int64_t cols = std::min(block_k, key_end - j0);
        ConstTile<T> k = rows_of(p.key, b, j0, cols, E), v = rows_of(p.value, b, j0, cols, Ev);
        Tile<T> scores = rows_of(score_buffer.data(), 0, rows, cols);
        attention_scores(p, b, i0, j0, q, k, scores);
        for (int64_t r = 0; r < rows; ++r) {
          auto row = scores.row(r);
          const T new_max = std::max(row_max[r], row.maxCoeff());
          if (new_max == -inf) {  // every key so far hidden: nothing to add (and exp(-inf + inf) is NaN)
            row.setZero();
            continue;
          }
          const T rescale = std::exp(row_max[r] - new_max);  // 0 on the first visible block
          exp_visible(p, b, i0 + r, j0, new_max, row);
          row_sum[r] = row_sum[r] * rescale + row.sum();  // the softmax denominator ignores dropout
          row_max[r] = new_max;
          acc.row(r) *= rescale;
          if (dropout.active()) dropout.apply(row, static_cast<uint64_t>((b * L + i0 + r) * S + j0));
        }
        acc.noalias() += scores * v;
      }
      for (int64_t r = 0; r < rows; ++r) {
        T* out_row = out + (b * L + i0 + r) * Ev;
        const bool visible = row_sum[r] > T(0);
        for (int64_t c = 0; c < Ev; ++c) out_row[c] = visible ? acc(r, c) / row_sum[r] : T(0);
        logsumexp[b * L + i0 + r] = visible ? row_max[r] + std::log(row_sum[r]) : inf;
      }
    }
  });
}

// Gradients of attention_forward (FlashAttention-2 Algorithm 2), with P recomputed per tile:
//   D_i = dO_i . O_i,  P = exp(scores - logsumexp),  Pd = P * dropout,
//   dV += Pd^T dO,  dPd = dO V^T,  dS = Pd * dPd - P * D  (= P * (dP - D), dP = dPd * dropout),
//   dQ += scale dS K,  dK += scale dS^T Q,  dMask = dS.
// Outputs are contiguous [batch, L, E] / [batch, S, E] / [batch, S, Ev] / [batch, L, S], zeroed
// by the caller; a null pointer skips that gradient. One thread owns a whole (batch, head), so
// every sum runs in a fixed order and the result never depends on the thread count.
template <class T>
void attention_backward(const AttentionProblem<T>& p, const AttentionOperand<T>& out, const T* logsumexp,
                        const AttentionOperand<T>& grad_out, T* grad_q, T* grad_k, T* grad_v, T* grad_mask) {
  using namespace attention_detail;
  const int64_t L = p.query_len, S = p.key_len, E = p.head_dim, Ev = p.value_dim;
  const int64_t block_q = std::max<int64_t>(1, p.tiles.query_rows), block_k = std::max<int64_t>(1, p.tiles.key_rows);
  const bool want_scores_grad = grad_q || grad_k || grad_mask;
  parallel_for(p.batch, L * S * (E + Ev) * 4, [&](int64_t begin, int64_t end) {
    const size_t tile = static_cast<size_t>(block_q * block_k);
    AlignedBuffer<T> prob_buffer(tile), dprob_buffer(tile), dropped_buffer(p.dropout_p > 0 ? tile : 0);
    AlignedBuffer<T> delta(static_cast<size_t>(L));
    DropoutMask dropout(p.dropout_p, p.dropout_seed, p.dropout_offset);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t i = 0; i < L; ++i)
        delta[i] = rows_of(grad_out, b, i, 1, Ev).row(0).dot(rows_of(out, b, i, 1, Ev).row(0));
      for (int64_t j0 = 0; j0 < S; j0 += block_k) {
        const int64_t cols = std::min(block_k, S - j0);
        ConstTile<T> k = rows_of(p.key, b, j0, cols, E), v = rows_of(p.value, b, j0, cols, Ev);
        // Causal: only queries i >= j0 see any key of this block.
        for (int64_t i0 = p.causal ? j0 : 0; i0 < L; i0 += block_q) {
          const int64_t rows = std::min(block_q, L - i0);
          ConstTile<T> q = rows_of(p.query, b, i0, rows, E), dout = rows_of(grad_out, b, i0, rows, Ev);
          Tile<T> prob = rows_of(prob_buffer.data(), 0, rows, cols);
          attention_scores(p, b, i0, j0, q, k, prob);
          for (int64_t r = 0; r < rows; ++r)  // logsumexp is +inf on fully masked rows: P = 0 there
            exp_visible(p, b, i0 + r, j0, logsumexp[b * L + i0 + r], prob.row(r));
          Tile<T> dropped = dropout.active() ? rows_of(dropped_buffer.data(), 0, rows, cols) : prob;
          if (dropout.active()) {
            dropped = prob;
            for (int64_t r = 0; r < rows; ++r)
              dropout.apply(dropped.row(r), static_cast<uint64_t>((b * L + i0 + r) * S + j0));
          }
          if (grad_v) rows_of(grad_v + b * S * Ev, j0, cols, Ev).noalias() += dropped.transpose() * dout;
          if (!want_scores_grad) continue;
          Tile<T> dscores = rows_of(dprob_buffer.data(), 0, rows, cols);
          dscores.noalias() = dout * v.transpose();
          for (int64_t r = 0; r < rows; ++r) {
            const T d = delta[i0 + r];
            dscores.row(r) = (dropped.row(r).array() * dscores.row(r).array() - d * prob.row(r).array()).matrix();
          }
          if (grad_mask)
            rows_of(grad_mask + b * L * S, i0, rows, S).middleCols(j0, cols) = dscores;
          if (grad_q) rows_of(grad_q + b * L * E, i0, rows, E).noalias() += p.scale * (dscores * k);
          if (grad_k) rows_of(grad_k + b * S * E, j0, cols, E).noalias() += p.scale * (dscores.transpose() * q);
        }
      }
    }
  });
}

}  // namespace histograd::cpu
