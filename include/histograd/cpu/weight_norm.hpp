// Weight normalisation of a [rows, cols] matrix, row by row (torch._weight_norm with dim 0, as
// nn.utils.weight_norm applies it to a Linear): w = v · g / ||v||. One sweep per row each way,
// where the composed version makes five full-size temporaries; the DINO head's last layer is
// 65536 x 256 and is re-normalised every forward.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../core/dtype.hpp"
#include "parallel.hpp"

namespace histograd::cpu {

// Row sums in double for float, like the reductions the composed version ran through: the DINO
// parity step feeds these into AdamW's first update, which magnifies any rounding difference.

// w[r, :] = v[r, :] · g[r] / n[r], n[r] = ||v[r, :]||₂ (no eps, as torch); writes n.
template <class T>
void weight_norm_forward(const T* v, const T* g, int64_t rows, int64_t cols, T* w, T* norms) {
  parallel_for(rows, 3 * cols, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* vr = v + r * cols;
      accumulate_t<T> squares = 0;
      for (int64_t c = 0; c < cols; ++c) squares += accumulate_t<T>(vr[c]) * vr[c];
      const T norm = static_cast<T>(std::sqrt(squares)), scale = g[r] / norm;
      norms[r] = norm;
      T* wr = w + r * cols;
      for (int64_t c = 0; c < cols; ++c) wr[c] = vr[c] * scale;
    }
  });
}

// With d = Σ_c dw·v over a row:  dv = (g/n) (dw - v · d/n²),  dg = d/n. dv or dg may be null.
template <class T>
void weight_norm_backward(const T* dw, const T* v, const T* g, const T* norms, int64_t rows, int64_t cols, T* dv,
                          T* dg) {
  parallel_for(rows, 4 * cols, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T *dwr = dw + r * cols, *vr = v + r * cols;
      accumulate_t<T> sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += accumulate_t<T>(dwr[c]) * vr[c];
      const T dot = static_cast<T>(sum), norm = norms[r];
      if (dg) dg[r] = dot / norm;
      if (!dv) continue;
      const T scale = g[r] / norm, projection = dot / (norm * norm);
      T* dvr = dv + r * cols;
      for (int64_t c = 0; c < cols; ++c) dvr[c] = scale * (dwr[c] - projection * vr[c]);
    }
  });
}

}  // namespace histograd::cpu
