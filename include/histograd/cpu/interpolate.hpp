// CPU kernels for separable resampling: per-output tap lists (source indices and weights) for
// PyTorch's two bicubic modes and its two bilinear ones, one pass along the width and one along
// the height, and their adjoints. The tap formulas are those of aten's UpSampleKernel.cpp
// (HelperInterpCubic, HelperInterpLinear: triangle filter, support 1·scale), as
// written out in MODELS.md §0.2: (A) Keys cubic A = -0.75 with clamped taps, (B) the antialias
// filter (Keys a = -0.5, support 2·scale, weights renormalised). Arithmetic stays in T with
// PyTorch's rounding points, fused multiply-adds included, so float taps equal PyTorch's bit
// for bit, as do mode (A) outputs; mode (B) outputs agree to an ulp or two.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "parallel.hpp"

namespace histograd::cpu {

// Output o reads in[index[o·max_taps + j]] with weight[o·max_taps + j] for j < count[o].
// fuse_pair: the sum starts as fma(x0, w0, x1·w1) instead of x0·w0 (see the passes below).
template <class T>
struct ResampleTaps {
  int64_t in_size = 0, out_size = 0, max_taps = 0;
  std::vector<int64_t> index, count;
  std::vector<T> weight;
  bool fuse_pair = false;

  ResampleTaps(int64_t in, int64_t out, int64_t taps, bool fuse)
      : in_size(in), out_size(out), max_taps(taps), index(static_cast<size_t>(out * taps), 0),
        count(static_cast<size_t>(out), 0), weight(static_cast<size_t>(out * taps), T(0)), fuse_pair(fuse) {}
};

// Keys (1981) cubic convolution kernel, in PyTorch's Horner form:
// |x| <= 1: ((A+2)|x| - (A+3))x² + 1;   1 < |x| < 2: ((A|x| - 5A)|x| + 8A)|x| - 4A.
// PyTorch's x86 wheels are compiled with FMA contraction: the std::fma calls fuse exactly where
// its compiler did (found by comparing float taps bit for bit with torch 2.x on AVX-512), and
// `fuse_last` is where its two bicubic paths differ. The unfused last step goes through a
// volatile so that our own -march=native builds cannot contract it either.
template <class T> T keys_cubic_near(T x, T A, bool fuse_last) {
  const T inner = std::fma(A + T(2), x, -(A + T(3))) * x;
  if (fuse_last) return std::fma(inner, x, T(1));
  volatile T product = inner * x;
  return product + T(1);
}
template <class T> T keys_cubic_far(T x, T A, bool fuse_last) {
  const T inner = std::fma(std::fma(A, x, -T(5) * A), x, T(8) * A);
  if (fuse_last) return std::fma(inner, x, -T(4) * A);
  volatile T product = inner * x;
  return product - T(4) * A;
}

// Source pixels per destination pixel: (in-1)/(out-1) with align_corners; otherwise 1/scale
// when the caller's scale factor is given (DINO passes (w0 + 0.1)/M), else in/out.
template <class T>
T resample_ratio(int64_t in, int64_t out, bool align_corners, std::optional<double> scale) {
  if (align_corners) return out > 1 ? static_cast<T>(in - 1) / static_cast<T>(out - 1) : T(0);
  if (scale && *scale > 0) return static_cast<T>(1.0 / *scale);
  return static_cast<T>(in) / static_cast<T>(out);
}

// Mode (A), F.interpolate(mode='bicubic', antialias=False): src = ratio·(i + 0.5) - 0.5 (or
// ratio·i with align_corners), never clamped; i0 = min(floor(src), in-1), t = clamp(src - i0, 0, 1);
// taps i0-1 .. i0+2 clamped into [0, in-1] (edge replicate), weights w(t+1), w(t), w(1-t), w(2-t).
template <class T>
ResampleTaps<T> bicubic_taps(int64_t in, int64_t out, bool align_corners, std::optional<double> scale) {
  ResampleTaps<T> taps(in, out, 4, true);
  const T ratio = resample_ratio<T>(in, out, align_corners, scale), A = T(-0.75);
  for (int64_t i = 0; i < out; ++i) {
    const T src = align_corners ? ratio * static_cast<T>(i) : std::fma(ratio, static_cast<T>(i) + T(0.5), T(-0.5));
    const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), in - 1);
    const T t = std::clamp(src - static_cast<T>(i0), T(0), T(1));
    const T w[4] = {keys_cubic_far(T(t + T(1)), A, false), keys_cubic_near(t, A, false),
                    keys_cubic_near(T(T(1) - t), A, false), keys_cubic_far(T(T(2) - t), A, false)};
    for (int64_t j = 0; j < 4; ++j) {
      taps.index[i * 4 + j] = std::clamp<int64_t>(i0 - 1 + j, 0, in - 1);
      taps.weight[i * 4 + j] = w[j];
    }
    taps.count[i] = 4;
  }
  return taps;
}

// Mode (B), antialias=True (aten _compute_indices_min_size_weights_aa): center = ratio·(i + 0.5);
// when shrinking the filter stretches by the ratio (support half_width·ratio, argument scaled by
// 1/ratio); taps are the whole in-range window [xmin, xmin + xsize), weights divided by their sum.
// align_corners only changes the ratio here, as in PyTorch. half_width: bicubic 2, bilinear 1.
template <class T, class Filter>
ResampleTaps<T> antialias_taps(int64_t in, int64_t out, bool align_corners, std::optional<double> scale, T half_width,
                               Filter filter) {
  const T ratio = resample_ratio<T>(in, out, align_corners, scale);
  const T support = ratio >= T(1) ? half_width * ratio : half_width;
  const T invscale = ratio >= T(1) ? static_cast<T>(1.0 / static_cast<double>(ratio)) : T(1);
  const int64_t max_taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  ResampleTaps<T> taps(in, out, max_taps, false);
  for (int64_t i = 0; i < out; ++i) {
    // The + 0.5 terms are double in PyTorch; keeping them so reproduces its rounding.
    const T center = static_cast<T>(static_cast<double>(ratio) * (static_cast<double>(i) + 0.5));
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(static_cast<double>(center - support) + 0.5), 0);
    const int64_t xend = std::min<int64_t>(static_cast<int64_t>(static_cast<double>(center + support) + 0.5), in);
    const int64_t xsize = std::clamp<int64_t>(xend - xmin, 0, max_taps);
    T* w = taps.weight.data() + i * max_taps;
    T total = 0;
    for (int64_t j = 0; j < xsize; ++j) {
      const double distance = static_cast<double>(static_cast<T>(j + xmin) - center) + 0.5;
      w[j] = filter(static_cast<T>(distance * static_cast<double>(invscale)));
      total += w[j];
      taps.index[i * max_taps + j] = xmin + j;
    }
    if (total != T(0))
      for (int64_t j = 0; j < xsize; ++j) w[j] /= total;
    taps.count[i] = xsize;
  }
  return taps;
}

// The bicubic antialias filter: Keys with a = -0.5 (aten HelperInterpCubic::aa_filter).
template <class T>
ResampleTaps<T> bicubic_antialias_taps(int64_t in, int64_t out, bool align_corners, std::optional<double> scale) {
  return antialias_taps<T>(in, out, align_corners, scale, T(2), [](T x) {
    x = std::abs(x);
    return x < T(1) ? keys_cubic_near(x, T(-0.5), true) : x < T(2) ? keys_cubic_far(x, T(-0.5), true) : T(0);
  });
}

// The bilinear antialias filter: the triangle max(0, 1 - |x|) (aten HelperInterpLinear::aa_filter),
// what torchvision's Resize applies to float tensors.
template <class T>
ResampleTaps<T> bilinear_antialias_taps(int64_t in, int64_t out, bool align_corners, std::optional<double> scale) {
  return antialias_taps<T>(in, out, align_corners, scale, T(1), [](T x) {
    x = std::abs(x);
    return x < T(1) ? T(1) - x : T(0);
  });
}

// Plain bilinear, F.interpolate(mode='bilinear', antialias=False) (aten compute_indices_weights_linear):
// src = ratio·(i + 0.5) - 0.5 clamped at 0 (ratio·i with align_corners); i0 = min(floor(src), in-1),
// t = clamp(src - i0, 0, 1); taps i0 and i0+1 (i0 alone at the last pixel) with weights 1-t, t.
template <class T>
ResampleTaps<T> bilinear_taps(int64_t in, int64_t out, bool align_corners, std::optional<double> scale) {
  ResampleTaps<T> taps(in, out, 2, true);
  const T ratio = resample_ratio<T>(in, out, align_corners, scale);
  for (int64_t i = 0; i < out; ++i) {
    const T src = align_corners ? ratio * static_cast<T>(i)
                                : std::max(std::fma(ratio, static_cast<T>(i) + T(0.5), T(-0.5)), T(0));
    const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), in - 1);
    const T t = std::clamp(src - static_cast<T>(i0), T(0), T(1));
    taps.index[i * 2] = i0;
    taps.index[i * 2 + 1] = i0 < in - 1 ? i0 + 1 : i0;
    taps.weight[i * 2] = T(1) - t;
    taps.weight[i * 2 + 1] = t;
    taps.count[i] = 2;
  }
  return taps;
}

// The sums add one fused tap at a time, starting from x0·w0, or for mode (A) from
// fma(x0, w0, x1·w1): that is what GCC makes of PyTorch's loops (its 4-tap one is unrolled),
// so mode (A) float outputs equal PyTorch's bit for bit and mode (B) ones agree to an ulp or
// two (its compiler vectorises part of that loop, rounding some products separately).

// Width pass: out[r, o] = Σ_j w[o, j] · in[r, index[o, j]] for each of `rows` rows.
template <class T>
void resample_rows(const ResampleTaps<T>& taps, const T* in, int64_t rows, T* out) {
  const int64_t n_in = taps.in_size, n_out = taps.out_size, m = taps.max_taps;
  parallel_for(rows, n_out * m, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* src = in + r * n_in;
      T* dst = out + r * n_out;
      for (int64_t o = 0; o < n_out; ++o) {
        const int64_t* idx = taps.index.data() + o * m;
        const T* w = taps.weight.data() + o * m;
        const int64_t n = taps.count[o];
        const int64_t first = taps.fuse_pair && n >= 2 ? 2 : 1;
        T acc = n == 0 ? T(0) : first == 2 ? std::fma(src[idx[0]], w[0], src[idx[1]] * w[1]) : src[idx[0]] * w[0];
        for (int64_t j = first; j < n; ++j) acc = std::fma(src[idx[j]], w[j], acc);
        dst[o] = acc;
      }
    }
  });
}

// Height pass over `planes` planes of `width` columns: out[p, o, :] = Σ_j w[o, j] · in[p, index[o, j], :].
template <class T>
void resample_columns(const ResampleTaps<T>& taps, const T* in, int64_t planes, int64_t width, T* out) {
  const int64_t n_in = taps.in_size, n_out = taps.out_size, m = taps.max_taps;
  parallel_for(planes, n_out * m * width, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      for (int64_t o = 0; o < n_out; ++o) {
        const int64_t* idx = taps.index.data() + o * m;
        const T* w = taps.weight.data() + o * m;
        T* dst = out + (p * n_out + o) * width;
        const T* src = in + p * n_in * width;
        const int64_t n = taps.count[o];
        const int64_t first = taps.fuse_pair && n >= 2 ? 2 : 1;
        const T* row0 = src + idx[0] * width;
        if (n == 0)
          std::fill(dst, dst + width, T(0));
        else if (first == 2)
          for (int64_t c = 0, row1 = idx[1] * width; c < width; ++c)
            dst[c] = std::fma(row0[c], w[0], src[row1 + c] * w[1]);
        else
          for (int64_t c = 0; c < width; ++c) dst[c] = row0[c] * w[0];
        for (int64_t j = first; j < n; ++j) {
          const T* row = src + idx[j] * width;
          for (int64_t c = 0; c < width; ++c) dst[c] = std::fma(row[c], w[j], dst[c]);
        }
      }
  });
}

// Adjoint of resample_rows: grad_in[r, index[o, j]] += w[o, j] · grad_out[r, o].
template <class T>
void resample_rows_backward(const ResampleTaps<T>& taps, const T* grad_out, int64_t rows, T* grad_in) {
  const int64_t n_in = taps.in_size, n_out = taps.out_size, m = taps.max_taps;
  parallel_for(rows, n_out * m, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* g = grad_out + r * n_out;
      T* dst = grad_in + r * n_in;
      std::fill(dst, dst + n_in, T(0));
      for (int64_t o = 0; o < n_out; ++o)
        for (int64_t j = 0; j < taps.count[o]; ++j) dst[taps.index[o * m + j]] += taps.weight[o * m + j] * g[o];
    }
  });
}

// Adjoint of resample_columns: grad_in[p, index[o, j], :] += w[o, j] · grad_out[p, o, :].
template <class T>
void resample_columns_backward(const ResampleTaps<T>& taps, const T* grad_out, int64_t planes, int64_t width,
                               T* grad_in) {
  const int64_t n_in = taps.in_size, n_out = taps.out_size, m = taps.max_taps;
  parallel_for(planes, n_out * m * width, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* dst = grad_in + p * n_in * width;
      std::fill(dst, dst + n_in * width, T(0));
      for (int64_t o = 0; o < n_out; ++o) {
        const T* g = grad_out + (p * n_out + o) * width;
        for (int64_t j = 0; j < taps.count[o]; ++j) {
          T* row = dst + taps.index[o * m + j] * width;
          const T wj = taps.weight[o * m + j];
          for (int64_t c = 0; c < width; ++c) row[c] += wj * g[c];
        }
      }
    }
  });
}

}  // namespace histograd::cpu
