// Fused softmax cross-entropy over [rows, classes] logits, for class-index and probability
// targets. The forward keeps only each row's log-sum-exp; the backward rebuilds softmax from
// it in one pass instead of storing a [rows, classes] matrix (as Liger's and llm.c's kernels
// do). Eigen's vectorised exp does the rows; sums go by 256-element chunks summed in T and
// accumulated in double for float, so they keep their digits at SIMD speed.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../core/dtype.hpp"
#include "parallel.hpp"

namespace histograd::cpu {


namespace loss_detail {
template <class T> using Row = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T> using ConstRow = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Σ over [0, n) of chunk_sum(begin, length), one 256-element chunk at a time.
template <class T, class ChunkSum>
accumulate_t<T> chunked_sum(int64_t n, ChunkSum chunk_sum) {
  constexpr int64_t chunk = 256;
  accumulate_t<T> total = 0;
  for (int64_t begin = 0; begin < n; begin += chunk) total += chunk_sum(begin, std::min(chunk, n - begin));
  return total;
}
}  // namespace loss_detail

// log Σ_c exp(row[c]), shifted by the row max so no exp overflows (NaN propagates).
template <class T>
accumulate_t<T> row_logsumexp(const T* row, int64_t classes) {
  using loss_detail::ConstRow;
  if (classes == 0) return -std::numeric_limits<accumulate_t<T>>::infinity();
  const T m = ConstRow<T>(row, classes).template maxCoeff<Eigen::PropagateNaN>();
  if (std::isinf(m) || std::isnan(m)) return static_cast<accumulate_t<T>>(m);
  const accumulate_t<T> total = loss_detail::chunked_sum<T>(classes, [&](int64_t begin, int64_t length) {
    return (ConstRow<T>(row + begin, length) - m).exp().sum();
  });
  return static_cast<accumulate_t<T>>(m) + std::log(total);
}

// loss[r] = (1-ε)(lse - s_t) + ε(lse - mean_c s_c), i.e. (1-ε)·nll + ε·mean_c(-log p_c);
// 0 where target == ignore_index. Saves lse[r] for the backward.
template <class T>
void cross_entropy_forward(const T* logits, const int64_t* target, int64_t rows, int64_t classes, int64_t ignore_index,
                           double smoothing, T* loss, T* lse) {
  parallel_for(rows, classes, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* s = logits + r * classes;
      if (target[r] == ignore_index) {
        loss[r] = T(0);
        lse[r] = T(0);
        continue;
      }
      const accumulate_t<T> log_total = row_logsumexp(s, classes);
      accumulate_t<T> value = (1.0 - smoothing) * (log_total - s[target[r]]);
      if (smoothing != 0.0) {
        const accumulate_t<T> sum_logits = loss_detail::chunked_sum<T>(
            classes, [&](int64_t begin, int64_t length) { return loss_detail::ConstRow<T>(s + begin, length).sum(); });
        value += smoothing * (log_total - sum_logits / static_cast<accumulate_t<T>>(classes));
      }
      loss[r] = static_cast<T>(value);
      lse[r] = static_cast<T>(log_total);
    }
  });
}

// dlogits[r, c] = scale_r (p_c - ε/C - (1-ε)[c == t_r]), 0 on ignored rows;
// scale_r = row_scale[r * scale_stride] (stride 0 broadcasts one scale).
template <class T>
void cross_entropy_backward(const T* logits, const int64_t* target, const T* lse, int64_t rows, int64_t classes,
                            int64_t ignore_index, double smoothing, const T* row_scale, int64_t scale_stride,
                            T* dlogits) {
  const T uniform = static_cast<T>(smoothing / static_cast<double>(classes)), hit = static_cast<T>(1.0 - smoothing);
  parallel_for(rows, classes, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* s = logits + r * classes;
      T* d = dlogits + r * classes;
      if (target[r] == ignore_index) {
        std::fill(d, d + classes, T(0));
        continue;
      }
      const T scale = row_scale[r * scale_stride], log_total = lse[r];
      loss_detail::Row<T>(d, classes) = scale * ((loss_detail::ConstRow<T>(s, classes) - log_total).exp() - uniform);
      d[target[r]] -= scale * hit;
    }
  });
}

// Probability targets, smoothed to t' = (1-ε)t + ε/C: loss[r] = -Σ_c t'_c (s_c - lse).
template <class T>
void soft_cross_entropy_forward(const T* logits, const T* target, int64_t rows, int64_t classes, double smoothing,
                                T* loss, T* lse) {
  const T uniform = static_cast<T>(smoothing / static_cast<double>(classes)), keep = static_cast<T>(1.0 - smoothing);
  parallel_for(rows, classes, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T *s = logits + r * classes, *t = target + r * classes;
      const accumulate_t<T> log_total = row_logsumexp(s, classes);
      const T shift = static_cast<T>(log_total);
      // Σ t'(s - lse): every term has one sign when t' >= 0, so nothing cancels.
      const accumulate_t<T> value = loss_detail::chunked_sum<T>(classes, [&](int64_t at, int64_t length) {
        using loss_detail::ConstRow;
        return ((keep * ConstRow<T>(t + at, length) + uniform) * (ConstRow<T>(s + at, length) - shift)).sum();
      });
      loss[r] = static_cast<T>(-value);
      lse[r] = shift;
    }
  });
}

// dlogits = scale_r ((Σ_c t'_c) p - t')  (targets need not sum to one);
// dtarget = -scale_r (1-ε) log p.  Either output may be null.
template <class T>
void soft_cross_entropy_backward(const T* logits, const T* target, const T* lse, int64_t rows, int64_t classes,
                                 double smoothing, const T* row_scale, int64_t scale_stride, T* dlogits, T* dtarget) {
  const T uniform = static_cast<T>(smoothing / static_cast<double>(classes)), keep = static_cast<T>(1.0 - smoothing);
  parallel_for(rows, classes, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T *s = logits + r * classes, *t = target + r * classes;
      const T scale = row_scale[r * scale_stride], log_total = lse[r];
      using loss_detail::ConstRow;
      using loss_detail::Row;
      if (dlogits) {
        const T mass = static_cast<T>(loss_detail::chunked_sum<T>(classes, [&](int64_t at, int64_t length) {
          return (keep * ConstRow<T>(t + at, length) + uniform).sum();
        }));
        Row<T>(dlogits + r * classes, classes) =
            scale * (mass * (ConstRow<T>(s, classes) - log_total).exp() - (keep * ConstRow<T>(t, classes) + uniform));
      }
      if (dtarget) Row<T>(dtarget + r * classes, classes) = (-scale * keep) * (ConstRow<T>(s, classes) - log_total);
    }
  });
}

}  // namespace histograd::cpu
