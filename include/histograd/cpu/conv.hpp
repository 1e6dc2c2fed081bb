// CPU kernels for conv2d as im2col + GEMM (Chellapilla et al. 2006, the layout Caffe made
// standard); the products go through cpu/gemm.hpp. Column matrices are built one tile of output
// pixels at a time, so the scratch stays ~1 MB whatever the image size. Every product runs
// on a fixed work item (sample, group, pixel tile or channel block) whose boundaries never
// depend on the thread count, so results are bitwise the same with 1 or 16 threads.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/dtype.hpp"
#include "buffer.hpp"
#include "gemm.hpp"
#include "parallel.hpp"

namespace histograd::cpu {

// Shapes and hyper-parameters of one conv2d, in PyTorch's terms.
struct Conv2dShape {
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0, groups = 1;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;

  int64_t group_in() const { return in_channels / groups; }
  int64_t group_out() const { return out_channels / groups; }
  int64_t patch() const { return group_in() * kernel_h * kernel_w; }  // rows of the column matrix
  int64_t pixels() const { return out_h * out_w; }                    // its columns
  // Output pixels per column tile: about 256K column elements (1 MB in float), at least 32.
  int64_t tile() const { return std::max<int64_t>(1, std::min(pixels(), std::max<int64_t>(32, (1 << 18) / patch()))); }
  int64_t tiles() const { return (pixels() + tile() - 1) / tile(); }
};

namespace conv_detail {
// Visits the output pixels [p0, p1) as runs within one output row: f(oh, ow_begin, ow_end, j)
// where j is the run's first column in the tile.
template <class F>
void for_each_row_run(const Conv2dShape& s, int64_t p0, int64_t p1, F&& f) {
  for (int64_t p = p0; p < p1;) {
    const int64_t oh = p / s.out_w, ow0 = p % s.out_w, ow1 = std::min(s.out_w, ow0 + (p1 - p));
    f(oh, ow0, ow1, p - p0);
    p += ow1 - ow0;
  }
}
}  // namespace conv_detail

// col[k, j] = input pixel under kernel tap k for output pixel p0 + j (0 in the padding), where
// k = (c, ki, kj) over the group's channels and `image` points at the group's first channel.
template <class T>
void im2col(const Conv2dShape& s, const T* image, int64_t p0, int64_t p1, T* col) {
  const int64_t width = p1 - p0, taps = s.kernel_h * s.kernel_w;
  for (int64_t k = 0; k < s.patch(); ++k) {
    const int64_t c = k / taps, ki = k / s.kernel_w % s.kernel_h, kj = k % s.kernel_w;
    const T* plane = image + c * s.in_h * s.in_w;
    T* dst = col + k * width;
    const int64_t row_shift = ki * s.dilation_h - s.pad_h, col_shift = kj * s.dilation_w - s.pad_w;
    conv_detail::for_each_row_run(s, p0, p1, [&](int64_t oh, int64_t ow0, int64_t ow1, int64_t j) {
      const int64_t ih = oh * s.stride_h + row_shift;
      if (ih < 0 || ih >= s.in_h) {
        std::fill(dst + j, dst + j + (ow1 - ow0), T(0));
        return;
      }
      const T* src = plane + ih * s.in_w;
      for (int64_t ow = ow0; ow < ow1; ++ow, ++j) {
        const int64_t iw = ow * s.stride_w + col_shift;
        dst[j] = (iw >= 0 && iw < s.in_w) ? src[iw] : T(0);
      }
    });
  }
}

// The adjoint of im2col: adds col[k, j] back onto the input pixel it was read from.
template <class T>
void col2im(const Conv2dShape& s, const T* col, int64_t p0, int64_t p1, T* image) {
  const int64_t width = p1 - p0, taps = s.kernel_h * s.kernel_w;
  for (int64_t k = 0; k < s.patch(); ++k) {
    const int64_t c = k / taps, ki = k / s.kernel_w % s.kernel_h, kj = k % s.kernel_w;
    T* plane = image + c * s.in_h * s.in_w;
    const T* src = col + k * width;
    const int64_t row_shift = ki * s.dilation_h - s.pad_h, col_shift = kj * s.dilation_w - s.pad_w;
    conv_detail::for_each_row_run(s, p0, p1, [&](int64_t oh, int64_t ow0, int64_t ow1, int64_t j) {
      const int64_t ih = oh * s.stride_h + row_shift;
      if (ih < 0 || ih >= s.in_h) return;
      T* dst = plane + ih * s.in_w;
      for (int64_t ow = ow0; ow < ow1; ++ow, ++j) {
        const int64_t iw = ow * s.stride_w + col_shift;
        if (iw >= 0 && iw < s.in_w) dst[iw] += src[j];
      }
    });
  }
}

// y[n, g-block] (+ bias) = W_g [Og, K] · col [K, tile], one work item per (sample, group, tile).
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y) {
  const int64_t K = s.patch(), P = s.pixels(), Og = s.group_out(), tile = s.tile(), tiles = s.tiles();
  parallel_for(s.batch * s.groups * tiles, Og * K * tile, [&](int64_t begin, int64_t end) {
    [[maybe_unused]] EigenSerialScope serial;
    AlignedBuffer<T> col(static_cast<size_t>(K * tile));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / (s.groups * tiles), g = item / tiles % s.groups, t = item % tiles;
      const int64_t p0 = t * tile, p1 = std::min(P, p0 + tile);
      im2col(s, x + (n * s.in_channels + g * s.group_in()) * s.in_h * s.in_w, p0, p1, col.data());
      const int64_t cols = p1 - p0;
      T* out = y + (n * s.out_channels + g * Og) * P + p0;
      gemm_serial(Og, cols, K, T(1), weight + g * Og * K, MatrixLayout{false, K}, col.data(), MatrixLayout{false, cols},
                  out, P, false);
      if (bias)
        for (int64_t o = 0; o < Og; ++o)
          for (int64_t p = 0; p < cols; ++p) out[o * P + p] += bias[g * Og + o];
    }
  });
}

// dx = col2im(W_g^T · dy): one item per (sample, group), whose input channels no other item
// touches; its tiles run in order, so overlapping windows add up the same way every time.
template <class T>
void conv2d_backward_input(const Conv2dShape& s, const T* weight, const T* grad_out, T* grad_in) {
  const int64_t K = s.patch(), P = s.pixels(), Og = s.group_out(), tile = s.tile(), tiles = s.tiles();
  std::fill(grad_in, grad_in + s.batch * s.in_channels * s.in_h * s.in_w, T(0));
  parallel_for(s.batch * s.groups, Og * K * P, [&](int64_t begin, int64_t end) {
    [[maybe_unused]] EigenSerialScope serial;
    AlignedBuffer<T> col(static_cast<size_t>(K * tile));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / s.groups, g = item % s.groups;
      T* image = grad_in + (n * s.in_channels + g * s.group_in()) * s.in_h * s.in_w;
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t p0 = t * tile, p1 = std::min(P, p0 + tile), cols = p1 - p0;
        // col [K, cols] = W_g^T (W_g read column-major) · dy [Og, cols]
        gemm_serial(K, cols, Og, T(1), weight + g * Og * K, MatrixLayout{true, K},
                    grad_out + (n * s.out_channels + g * Og) * P + p0, MatrixLayout{false, P}, col.data(), cols, false);
        col2im(s, col.data(), p0, p1, image);
      }
    }
  });
}

// dW_g = Σ_n dy[n, g] · col[n, g]^T. The sum over the batch never crosses threads: each item
// owns a fixed block of output channels and walks every sample and tile in order (rebuilding
// the columns per block, which costs ~1/32 of the block's GEMM work).
template <class T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* grad_out, T* grad_weight) {
  const int64_t K = s.patch(), P = s.pixels(), Og = s.group_out(), tile = s.tile(), tiles = s.tiles();
  const int64_t block = 32, blocks = (Og + block - 1) / block;
  parallel_for(s.groups * blocks, std::min(block, Og) * K * P * s.batch, [&](int64_t begin, int64_t end) {
    [[maybe_unused]] EigenSerialScope serial;
    AlignedBuffer<T> col(static_cast<size_t>(K * tile));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / blocks, r0 = item % blocks * block, rows = std::min(Og, r0 + block) - r0;
      T* dw = grad_weight + (g * Og + r0) * K;
      std::fill(dw, dw + rows * K, T(0));
      for (int64_t n = 0; n < s.batch; ++n)
        for (int64_t t = 0; t < tiles; ++t) {
          const int64_t p0 = t * tile, p1 = std::min(P, p0 + tile), cols = p1 - p0;
          im2col(s, x + (n * s.in_channels + g * s.group_in()) * s.in_h * s.in_w, p0, p1, col.data());
          // dW rows += dy [rows, cols] · col^T (col read column-major)
          gemm_serial(rows, K, cols, T(1), grad_out + (n * s.out_channels + g * Og + r0) * P + p0, MatrixLayout{false, P},
                      col.data(), MatrixLayout{true, cols}, dw, K, true);
        }
    }
  });
}

// db[o] = Σ_{n, pixel} dy[n, o, pixel], accumulated in double for float.
template <class T>
void conv2d_backward_bias(const Conv2dShape& s, const T* grad_out, T* grad_bias) {
  const int64_t P = s.pixels();
  parallel_for(s.out_channels, s.batch * P, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      accumulate_t<T> acc = 0;
      for (int64_t n = 0; n < s.batch; ++n) {
        const T* row = grad_out + (n * s.out_channels + o) * P;
        for (int64_t p = 0; p < P; ++p) acc += row[p];
      }
      grad_bias[o] = static_cast<T>(acc);
    }
  });
}

}  // namespace histograd::cpu
