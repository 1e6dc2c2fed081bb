// Layer norm forward and backward (the math of cpu/layer_norm.hpp; kernel shape after the
// one-row-per-block designs of the Triton tutorial and Apex, ANCHORS.md B3). One block owns a
// row at a time; rows up to 8 vectors per thread stay in registers (exact two-pass statistics),
// longer rows are re-read (shifted one-pass sums, as the CPU kernel). 16-byte vectors only when
// every pointer is aligned and cols is a multiple of the vector width, else a scalar path.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "check.cuh"
#include "common.cuh"
#include "histograd/core/error.hpp"
#include "histograd/cuda/layer_norm.hpp"

namespace histograd::cuda {
namespace {

constexpr int kMaxVecsPerThread = 8;       // forward: a register-resident row has up to 8 vectors per thread
// Backward holds x and dy for two rows (this one and the prefetched next): 4 vectors of each, 2 of
// 8-element (16-bit) vectors, which stay under 128 registers without spilling.
template <int VW> constexpr int kBackwardVecsPerThread = VW >= 8 ? 2 : 4;
constexpr int kMaxThreads = 512;  // lets a thread keep 128 registers, so held rows never spill

// Sums N values over the block (blockDim.x a multiple of 32, every thread present); every thread
// gets the totals, added in the same order whatever the data, so results are reproducible.
template <int N> __device__ __forceinline__ void block_sum(float (&v)[N], float (*scratch)[N]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < N; ++k) v[k] = warp_sum(v[k]);
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < N; ++k) scratch[warp][k] = v[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < N; ++k) {
    float total = 0.f;
    for (int w = 0; w < warps; ++w) total += scratch[w][k];
    v[k] = total;
  }
}

// One row per block (grid-stride over rows). kInRegisters: the row's vectors are loaded once
// into registers (needs nvec <= blockDim.x * kMaxVecsPerThread), mean then centred variance;
// otherwise two reads of the row with sums shifted by the row's first element.
template <class T, int VW, bool kInRegisters>
__global__ void __launch_bounds__(kMaxThreads)
    layer_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                              T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                              int64_t rows, int cols, float eps) {
  using V = Vec<T, VW>;
  __shared__ float scratch[32][1];
  const int nvec = cols / VW;
  const float inv_cols = 1.f / static_cast<float>(cols);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const V* xr = reinterpret_cast<const V*>(x + row * cols);
    V* yr = reinterpret_cast<V*>(y + row * cols);
    float mean, rstd;
    V held[kInRegisters ? kMaxVecsPerThread : 1];
    if constexpr (kInRegisters) {
      float s[1] = {0.f};
#pragma unroll
      for (int i = 0; i < kMaxVecsPerThread; ++i) {
        const int k = threadIdx.x + i * blockDim.x;
        if (k < nvec) {
          held[i] = xr[k];
#pragma unroll
          for (int j = 0; j < VW; ++j) s[0] += to_float(held[i].v[j]);
        }
      }
      block_sum(s, scratch);
      mean = s[0] * inv_cols;
      float q[1] = {0.f};
#pragma unroll
      for (int i = 0; i < kMaxVecsPerThread; ++i) {
        const int k = threadIdx.x + i * blockDim.x;
        if (k < nvec)
#pragma unroll
          for (int j = 0; j < VW; ++j) {
            const float d = to_float(held[i].v[j]) - mean;
            q[0] += d * d;
          }
      }
      block_sum(q, scratch);
      rstd = rsqrtf(q[0] * inv_cols + eps);
    } else {
      // d = x - x[0] keeps E[d²] - E[d]² from cancelling on rows far from zero.
      const float shift = to_float(x[row * cols]);
      float s[1] = {0.f}, q[1] = {0.f};
      for (int k = threadIdx.x; k < nvec; k += blockDim.x) {
        const V a = xr[k];
#pragma unroll
        for (int j = 0; j < VW; ++j) {
          const float d = to_float(a.v[j]) - shift;
          s[0] += d;
          q[0] += d * d;
        }
      }
      block_sum(s, scratch);
      block_sum(q, scratch);
      const float centred = s[0] * inv_cols;
      rstd = rsqrtf(fmaxf(q[0] * inv_cols - centred * centred, 0.f) + eps);
      mean = shift + centred;
    }
    if (threadIdx.x == 0) {
      mean_out[row] = mean;
      rstd_out[row] = rstd;
    }
    auto write = [&](int k, const V& a) {
      V wv, bv, out;
      if (w) wv = reinterpret_cast<const V*>(w)[k];
      if (b) bv = reinterpret_cast<const V*>(b)[k];
#pragma unroll
      for (int j = 0; j < VW; ++j) {
        const float scale = w ? to_float(wv.v[j]) : 1.f, offset = b ? to_float(bv.v[j]) : 0.f;
        out.v[j] = from_float<T>((to_float(a.v[j]) - mean) * rstd * scale + offset);
      }
      yr[k] = out;
    };
    if constexpr (kInRegisters) {
#pragma unroll
      for (int i = 0; i < kMaxVecsPerThread; ++i) {
        const int k = threadIdx.x + i * blockDim.x;
        if (k < nvec) write(k, held[i]);
      }
    } else {
      for (int k = threadIdx.x; k < nvec; k += blockDim.x) write(k, xr[k]);
    }
  }
}

// dy*w rounded exactly once, the same in the row sums and in dx: left to the compiler, the dx
// expression contracts into fma(dy, w, -mean_dyw), which keeps the product's rounding residual.
// On a one-column row (true dx exactly 0) that residual times rstd = 1/sqrt(eps) ~ 316 was the
// 2e-5 fp32 error seen on the H200 (run 1); rounding once makes dx there exactly 0.
__device__ __forceinline__ float dy_times_w(float dy, float w) { return __fmul_rn(dy, w); }

// Adds VW consecutive fp32 values into acc[at..at+VW) (smem or global, owned by this thread);
// float4 accesses when VW is a multiple of 4 keep a warp's smem accesses conflict-free.
template <int VW> __device__ __forceinline__ void accumulate(float* acc, int at, const float (&add)[VW]) {
  if constexpr (VW % 4 == 0) {
#pragma unroll
    for (int j = 0; j < VW; j += 4) {
      float4* p = reinterpret_cast<float4*>(acc + at + j);
      float4 a = *p;
      a.x += add[j];
      a.y += add[j + 1];
      a.z += add[j + 2];
      a.w += add[j + 3];
      *p = a;
    }
  } else {
#pragma unroll
    for (int j = 0; j < VW; ++j) acc[at + j] += add[j];
  }
}

// dx for the rows [blockIdx.x * rows_per_block, +rows_per_block), and this block's partial
// Σ dy*xhat and Σ dy per column into partial[blockIdx.x] = {dw[cols], db[cols]} (when partial is
// non-null). Each thread owns the same columns for all its rows, so the partial sums need no
// atomics; they accumulate in shared memory when 2*cols floats fit (use_smem), else in place.
template <class T, int VW, bool kInRegisters>
__global__ void __launch_bounds__(kMaxThreads)
    layer_norm_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ w,
                               const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                               T* __restrict__ dx, float* __restrict__ partial, int64_t rows, int cols,
                               int64_t rows_per_block, bool use_smem) {
  using V = Vec<T, VW>;
  extern __shared__ float4 smem_acc_raw[];
  __shared__ float scratch[32][2];
  const int nvec = cols / VW;
  const float inv_cols = 1.f / static_cast<float>(cols);
  float* acc_w = nullptr;
  if (partial) acc_w = use_smem ? reinterpret_cast<float*>(smem_acc_raw) : partial + 2 * blockIdx.x * int64_t(cols);
  float* acc_b = partial ? acc_w + cols : nullptr;
  if (partial)
    for (int k = threadIdx.x; k < nvec; k += blockDim.x)
#pragma unroll
      for (int j = 0; j < VW; ++j) acc_w[k * VW + j] = acc_b[k * VW + j] = 0.f;

  const int64_t first = blockIdx.x * rows_per_block, last = min(rows, first + rows_per_block);
  // In-register path: the next row's x and dy are loaded before this row's reduction, so a
  // block keeps two rows of loads in flight (small blocks, few per SM, would otherwise wait).
  constexpr int kHeld = kInRegisters ? kBackwardVecsPerThread<VW> : 1;
  V hx[kHeld], hdy[kHeld];
  auto load_row = [&](int64_t r, V(&ax)[kHeld], V(&ady)[kHeld]) {
    const V* xr = reinterpret_cast<const V*>(x + r * cols);
    const V* dyr = reinterpret_cast<const V*>(dy + r * cols);
#pragma unroll
    for (int i = 0; i < kHeld; ++i) {
      const int k = threadIdx.x + i * blockDim.x;
      if (k < nvec) {
        ax[i] = xr[k];
        ady[i] = dyr[k];
      }
    }
  };
  if constexpr (kInRegisters)
    if (first < last) load_row(first, hx, hdy);
  for (int64_t row = first; row < last; ++row) {
    const V* xr = reinterpret_cast<const V*>(x + row * cols);
    const V* dyr = reinterpret_cast<const V*>(dy + row * cols);
    const float mean = mean_in[row], rstd = rstd_in[row];
    V nx[kHeld], ndy[kHeld];
    if constexpr (kInRegisters)
      if (row + 1 < last) load_row(row + 1, nx, ndy);
    float sums[2] = {0.f, 0.f};  // Σ dy*w, Σ dy*w*xhat
    auto visit = [&](int k, const V& a, const V& g) {
      V wv;
      if (w) wv = reinterpret_cast<const V*>(w)[k];
      float add_w[VW], add_b[VW];
#pragma unroll
      for (int j = 0; j < VW; ++j) {
        const float xhat = (to_float(a.v[j]) - mean) * rstd, gj = to_float(g.v[j]);
        const float dyw = dy_times_w(gj, w ? to_float(wv.v[j]) : 1.f);
        sums[0] += dyw;
        sums[1] += dyw * xhat;
        add_w[j] = gj * xhat;
        add_b[j] = gj;
      }
      if (partial) {
        accumulate<VW>(acc_w, k * VW, add_w);
        accumulate<VW>(acc_b, k * VW, add_b);
      }
    };
    if constexpr (kInRegisters) {
#pragma unroll
      for (int i = 0; i < kHeld; ++i) {
        const int k = threadIdx.x + i * blockDim.x;
        if (k < nvec) visit(k, hx[i], hdy[i]);
      }
    } else {
      for (int k = threadIdx.x; k < nvec; k += blockDim.x) visit(k, xr[k], dyr[k]);
    }
    if (dx) {  // uniform over the block: every thread reaches block_sum or none does
      block_sum(sums, scratch);
      const float mean_dyw = sums[0] * inv_cols, mean_dyw_xhat = sums[1] * inv_cols;
      V* dxr = reinterpret_cast<V*>(dx + row * cols);
      auto write = [&](int k, const V& a, const V& g) {
        V wv, out;
        if (w) wv = reinterpret_cast<const V*>(w)[k];
#pragma unroll
        for (int j = 0; j < VW; ++j) {
          const float xhat = (to_float(a.v[j]) - mean) * rstd;
          const float dyw = dy_times_w(to_float(g.v[j]), w ? to_float(wv.v[j]) : 1.f);
          out.v[j] = from_float<T>(rstd * (dyw - mean_dyw - xhat * mean_dyw_xhat));
        }
        dxr[k] = out;
      };
      if constexpr (kInRegisters) {
#pragma unroll
        for (int i = 0; i < kHeld; ++i) {
          const int k = threadIdx.x + i * blockDim.x;
          if (k < nvec) write(k, hx[i], hdy[i]);
        }
      } else {
        for (int k = threadIdx.x; k < nvec; k += blockDim.x) write(k, xr[k], dyr[k]);
      }
    }
    if constexpr (kInRegisters)
      if (row + 1 < last)
#pragma unroll
        for (int i = 0; i < kHeld; ++i) {
          hx[i] = nx[i];
          hdy[i] = ndy[i];
        }
  }
  if (partial && use_smem) {
    float* out = partial + 2 * blockIdx.x * int64_t(cols);
    for (int k = threadIdx.x; k < nvec; k += blockDim.x)  // own columns: no barrier needed
#pragma unroll
      for (int j = 0; j < VW; ++j) {
        out[k * VW + j] = acc_w[k * VW + j];
        out[cols + k * VW + j] = acc_b[k * VW + j];
      }
  }
}

// dw[c] (blockIdx.y == 0) or db[c] (blockIdx.y == 1) = Σ_g partial[g][blockIdx.y][c], summed in a
// fixed order: 16 strided slices per column, then the slices in order.
constexpr int kReduceCols = 32, kReduceSlices = 16;
template <class T>
__global__ void __launch_bounds__(kReduceCols* kReduceSlices)
    layer_norm_param_grad_kernel(const float* __restrict__ partial, int64_t blocks, int cols, T* __restrict__ dw,
                                 T* __restrict__ db) {
  __shared__ float slice[kReduceSlices][kReduceCols + 1];
  const int c = blockIdx.x * kReduceCols + threadIdx.x, which = blockIdx.y;
  T* out = which == 0 ? dw : db;
  if (!out) return;  // uniform over the block
  float total = 0.f;
  if (c < cols)
    for (int64_t g = threadIdx.y; g < blocks; g += kReduceSlices) total += partial[(2 * g + which) * cols + c];
  slice[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float sum = 0.f;
    for (int s = 0; s < kReduceSlices; ++s) sum += slice[s][threadIdx.x];
    out[c] = from_float<T>(sum);
  }
}

// ---- Version 2: one warp per row (rows up to 32 * 16 vectors), no block barriers per row. ----
// Run 1 on the H200 showed a per-row cost, not a streaming one: at 768 and 1024 columns (same
// 12608 rows) the extra bytes cost about the copy rate, but each call paid ~10 us (forward) and
// ~25-35 us (backward) more. Block-per-row kernels spend most of a row's life in __syncthreads
// reductions with no loads in flight, and the backward's weight/bias reduction read ~800
// partials per column with dependent loads. Here a warp keeps its row in registers, reduces
// with shuffles, and (where registers allow) has the next row's loads in flight while it
// finishes this one; lanes own the same columns for every row, so the backward's weight/bias
// sums stay in registers until one fixed-order combine per block.
constexpr int kWarpThreads = 256;  // 8 warps per block

// Registers a lane needs (32-bit words): the row's packed vectors (x; x and dy in the backward),
// again when prefetching, the backward's fp32 dw/db accumulators, and the rest.
template <int VW, int NV> constexpr int forward_regs(bool prefetch) { return (prefetch ? 8 : 4) * NV + 32; }
template <int VW, int NV> constexpr int backward_regs(bool prefetch) {  // the rest: 32 fp32, 48 16-bit (ptxas)
  return (prefetch ? 16 : 8) * NV + 2 * NV * VW + (VW == 4 ? 32 : 48);
}
// 2 blocks (16 warps) per SM when 128 registers suffice, else 1.
template <int VW, int NV> constexpr bool kForwardPrefetch = forward_regs<VW, NV>(true) <= 128;
template <int VW, int NV> constexpr bool kBackwardPrefetch =
    backward_regs<VW, NV>(true) <= 128 || (backward_regs<VW, NV>(false) > 128 && backward_regs<VW, NV>(true) <= 224);
template <int VW, int NV> constexpr int kBackwardMinBlocks = backward_regs<VW, NV>(kBackwardPrefetch<VW, NV>) <= 128 ? 2 : 1;

template <class T, int VW, int NV>
__global__ void __launch_bounds__(kWarpThreads)
    layer_norm_forward_warp_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                   T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                   int64_t rows, int cols, float eps) {
  using V = Vec<T, VW>;
  constexpr bool kPrefetch = kForwardPrefetch<VW, NV>;
  const int lane = threadIdx.x & 31, nvec = cols / VW;
  const float inv_cols = 1.f / static_cast<float>(cols);
  const int64_t stride = int64_t(gridDim.x) * (kWarpThreads / 32);
  int64_t row = int64_t(blockIdx.x) * (kWarpThreads / 32) + (threadIdx.x >> 5);
  V cur[NV], next[kPrefetch ? NV : 1];
  auto load = [&](int64_t r, V* dst) {
    const V* xr = reinterpret_cast<const V*>(x + r * cols);
#pragma unroll
    for (int i = 0; i < NV; ++i)
      if (lane + 32 * i < nvec) dst[i] = xr[lane + 32 * i];
  };
  if (row < rows) load(row, cur);
  for (; row < rows; row += stride) {
    if constexpr (kPrefetch)
      if (row + stride < rows) load(row + stride, next);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i)
      if (lane + 32 * i < nvec)
#pragma unroll
        for (int j = 0; j < VW; ++j) s += to_float(cur[i].v[j]);
    const float mean = warp_sum(s) * inv_cols;
    float q = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i)
      if (lane + 32 * i < nvec)
#pragma unroll
        for (int j = 0; j < VW; ++j) {
          const float d = to_float(cur[i].v[j]) - mean;
          q += d * d;
        }
    const float rstd = rsqrtf(warp_sum(q) * inv_cols + eps);
    if (lane == 0) {
      mean_out[row] = mean;
      rstd_out[row] = rstd;
    }
    V* yr = reinterpret_cast<V*>(y + row * cols);
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int k = lane + 32 * i;
      if (k < nvec) {
        V wv, bv, out;
        if (w) wv = reinterpret_cast<const V*>(w)[k];
        if (b) bv = reinterpret_cast<const V*>(b)[k];
#pragma unroll
        for (int j = 0; j < VW; ++j) {
          const float scale = w ? to_float(wv.v[j]) : 1.f, offset = b ? to_float(bv.v[j]) : 0.f;
          out.v[j] = from_float<T>((to_float(cur[i].v[j]) - mean) * rstd * scale + offset);
        }
        yr[k] = out;
      }
    }
    if constexpr (kPrefetch) {
#pragma unroll
      for (int i = 0; i < NV; ++i) cur[i] = next[i];
    } else if (row + stride < rows) {
      load(row + stride, cur);
    }
  }
}

// Block b owns rows [b * rows_per_block, +rows_per_block); its warp i takes every 8th of them
// from the i-th. dx per row; with partial, lane-held Σ dy*xhat and Σ dy per column, combined
// over the block's warps in warp order through shared memory (2*cols floats) and written to
// partial[b] = {dw[cols], db[cols]}.
template <class T, int VW, int NV>
__global__ void __launch_bounds__(kWarpThreads, kBackwardMinBlocks<VW, NV>)
    layer_norm_backward_warp_kernel(const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ w,
                                    const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                    T* __restrict__ dx, float* __restrict__ partial, int64_t rows, int cols,
                                    int64_t rows_per_block) {
  using V = Vec<T, VW>;
  constexpr bool kPrefetch = kBackwardPrefetch<VW, NV>;
  constexpr int kWarps = kWarpThreads / 32;
  extern __shared__ float4 combine_raw[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nvec = cols / VW;
  const float inv_cols = 1.f / static_cast<float>(cols);
  const int64_t first = int64_t(blockIdx.x) * rows_per_block, last = min(rows, first + rows_per_block);
  float aw[NV][VW], ab[NV][VW];  // this lane's Σ dy*xhat and Σ dy for its columns
#pragma unroll
  for (int i = 0; i < NV; ++i)
#pragma unroll
    for (int j = 0; j < VW; ++j) aw[i][j] = ab[i][j] = 0.f;
  V cx[NV], cg[NV], nx[kPrefetch ? NV : 1], ng[kPrefetch ? NV : 1];
  auto load = [&](int64_t r, V* ax, V* ag) {
    const V* xr = reinterpret_cast<const V*>(x + r * cols);
    const V* gr = reinterpret_cast<const V*>(dy + r * cols);
#pragma unroll
    for (int i = 0; i < NV; ++i)
      if (lane + 32 * i < nvec) {
        ax[i] = xr[lane + 32 * i];
        ag[i] = gr[lane + 32 * i];
      }
  };
  int64_t row = first + warp;
  if (row < last) load(row, cx, cg);
  for (; row < last; row += kWarps) {
    if constexpr (kPrefetch)
      if (row + kWarps < last) load(row + kWarps, nx, ng);
    const float mean = mean_in[row], rstd = rstd_in[row];
    float s_dyw = 0.f, s_dyw_xhat = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int k = lane + 32 * i;
      if (k < nvec) {
        V wv;
        if (w) wv = reinterpret_cast<const V*>(w)[k];
#pragma unroll
        for (int j = 0; j < VW; ++j) {
          const float xhat = (to_float(cx[i].v[j]) - mean) * rstd, gj = to_float(cg[i].v[j]);
          const float dyw = dy_times_w(gj, w ? to_float(wv.v[j]) : 1.f);
          s_dyw += dyw;
          s_dyw_xhat += dyw * xhat;
          aw[i][j] += gj * xhat;
          ab[i][j] += gj;
        }
      }
    }
    if (dx) {  // uniform over the grid
      const float mean_dyw = warp_sum(s_dyw) * inv_cols, mean_dyw_xhat = warp_sum(s_dyw_xhat) * inv_cols;
      V* dxr = reinterpret_cast<V*>(dx + row * cols);
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int k = lane + 32 * i;
        if (k < nvec) {
          V wv, out;
          if (w) wv = reinterpret_cast<const V*>(w)[k];
#pragma unroll
          for (int j = 0; j < VW; ++j) {
            const float xhat = (to_float(cx[i].v[j]) - mean) * rstd;
            const float dyw = dy_times_w(to_float(cg[i].v[j]), w ? to_float(wv.v[j]) : 1.f);
            out.v[j] = from_float<T>(rstd * (dyw - mean_dyw - xhat * mean_dyw_xhat));
          }
          dxr[k] = out;
        }
      }
    }
    if constexpr (kPrefetch) {
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        cx[i] = nx[i];
        cg[i] = ng[i];
      }
    } else if (row + kWarps < last) {
      load(row + kWarps, cx, cg);
    }
  }
  if (!partial) return;  // uniform over the grid
  float* sum = reinterpret_cast<float*>(combine_raw);  // {dw[cols], db[cols]}
  for (int owner = 0; owner < kWarps; ++owner) {       // fixed order: warp 0's sums, + warp 1's, ...
    if (warp == owner)
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int k = lane + 32 * i;
        if (k < nvec)
#pragma unroll
          for (int j = 0; j < VW; ++j) {
            float* pw = sum + k * VW + j;
            *pw = owner == 0 ? aw[i][j] : *pw + aw[i][j];
            pw[cols] = owner == 0 ? ab[i][j] : pw[cols] + ab[i][j];
          }
      }
    __syncthreads();
  }
  float* out = partial + 2 * int64_t(blockIdx.x) * cols;
  for (int c = threadIdx.x; c < 2 * cols; c += kWarpThreads) out[c] = sum[c];
}

// dw (blockIdx.y 0) or db (1): Σ over the partials in a fixed order, 32 columns x 32 slices per
// block, 4 independent accumulators per thread so ~4 loads are in flight, not one.
template <class T>
__global__ void __launch_bounds__(1024)
    layer_norm_param_grad_v2_kernel(const float* __restrict__ partial, int64_t blocks, int cols, T* __restrict__ dw,
                                    T* __restrict__ db) {
  __shared__ float slice[32][33];
  const int c = blockIdx.x * 32 + threadIdx.x, which = blockIdx.y;
  T* out = which == 0 ? dw : db;
  if (!out) return;  // uniform over the block
  float a[4] = {0.f, 0.f, 0.f, 0.f};
  if (c < cols) {
    int64_t g = threadIdx.y;
    for (; g + 96 < blocks; g += 128)
#pragma unroll
      for (int u = 0; u < 4; ++u) a[u] += partial[(2 * (g + 32 * u) + which) * cols + c];
    for (; g < blocks; g += 32) a[0] += partial[(2 * g + which) * cols + c];
  }
  slice[threadIdx.y][threadIdx.x] = (a[0] + a[1]) + (a[2] + a[3]);
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float total = 0.f;
    for (int s = 0; s < 32; ++s) total += slice[s][threadIdx.x];
    out[c] = from_float<T>(total);
  }
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Threads for a row of nvec vectors: about 4 vectors per thread, a whole number of warps.
int threads_for(int64_t nvec) {
  const int64_t want = (nvec + 3) / 4;
  return static_cast<int>(std::clamp<int64_t>((want + 31) / 32 * 32, 32, kMaxThreads));
}

template <class N, int VW>
void forward_launch(const N* x, const N* w, const N* b, N* y, float* mean, float* rstd, int64_t rows, int cols,
                    float eps, cudaStream_t stream) {
  const int64_t nvec = cols / VW;
  const int threads = threads_for(nvec);
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(rows, int64_t(1) << 30));
  if (nvec <= int64_t(threads) * kMaxVecsPerThread)
    layer_norm_forward_kernel<N, VW, true><<<grid, threads, 0, stream>>>(x, w, b, y, mean, rstd, rows, cols, eps);
  else
    layer_norm_forward_kernel<N, VW, false><<<grid, threads, 0, stream>>>(x, w, b, y, mean, rstd, rows, cols, eps);
  HG_CUDA_CHECK_LAUNCH("layer_norm_forward_kernel");
}

template <class N, int VW>
void backward_launch(const N* x, const N* dy, const N* w, const float* mean, const float* rstd, N* dx, N* dw, N* db,
                     int64_t rows, int cols, cudaStream_t stream) {
  const int64_t nvec = cols / VW;
  constexpr int held = kBackwardVecsPerThread<VW>;
  const int threads = static_cast<int>(std::clamp<int64_t>((nvec + held - 1) / held + 31, 32, kMaxThreads) / 32 * 32);
  const bool in_registers = nvec <= int64_t(threads) * held;
  const bool want_params = dw || db;
  // At least 16 rows per block, so the partials (2*cols floats per block) stay a small share of the
  // traffic, and no more blocks than about 32 per SM.
  const int64_t rows_per_block = std::max<int64_t>(16, (rows + 32 * sm_count() - 1) / (32 * int64_t(sm_count())));
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  const size_t acc_bytes = 2 * size_t(cols) * sizeof(float);
  const bool use_smem = want_params && acc_bytes <= 46 * 1024;  // + static scratch under the 48 KiB default
  const size_t smem = use_smem ? acc_bytes : 0;
  const size_t partial_bytes = want_params ? size_t(blocks) * acc_bytes : 0;
  float* partial = want_params ? static_cast<float*>(allocate(partial_bytes)) : nullptr;
  try {
    if (in_registers)
      layer_norm_backward_kernel<N, VW, true><<<static_cast<unsigned>(blocks), threads, smem, stream>>>(
          x, dy, w, mean, rstd, dx, partial, rows, cols, rows_per_block, use_smem);
    else
      layer_norm_backward_kernel<N, VW, false><<<static_cast<unsigned>(blocks), threads, smem, stream>>>(
          x, dy, w, mean, rstd, dx, partial, rows, cols, rows_per_block, use_smem);
    HG_CUDA_CHECK_LAUNCH("layer_norm_backward_kernel");
    if (want_params) {
      const dim3 grid(static_cast<unsigned>((cols + kReduceCols - 1) / kReduceCols), 2);
      layer_norm_param_grad_kernel<N><<<grid, dim3(kReduceCols, kReduceSlices), 0, stream>>>(partial, blocks, cols, dw,
                                                                                              db);
      HG_CUDA_CHECK_LAUNCH("layer_norm_param_grad_kernel");
    }
  } catch (...) {
    if (partial) release(partial, partial_bytes);
    throw;
  }
  if (partial) {
    // The allocator hands blocks out again in current-stream order; a caller's other stream
    // must finish with the scratch first.
    if (stream != static_cast<cudaStream_t>(current_stream())) HG_CUDA_CHECK(cudaStreamSynchronize(stream));
    release(partial, partial_bytes);
  }
}

std::atomic<int> g_version{2};

// Calls fn(std::integral_constant<int, NV>) with the smallest NV of the instantiated set that
// holds nvec vectors in 32 lanes; false when none does.
template <int... Ns, class F> bool with_nv(int64_t nvec, F&& fn) {
  bool done = false;
  ((!done && nvec <= 32 * Ns ? (fn(std::integral_constant<int, Ns>{}), done = true) : false), ...);
  return done;
}

template <class N, int VW>
bool forward_warp_launch(const N* x, const N* w, const N* b, N* y, float* mean, float* rstd, int64_t rows, int cols,
                         float eps, cudaStream_t stream) {
  return with_nv<1, 2, 3, 4, 6, 8, 12, 16>(cols / VW, [&](auto nv) {
    constexpr int NV = decltype(nv)::value;
    auto kernel = layer_norm_forward_warp_kernel<N, VW, NV>;
    static const int per_sm = [&] {
      int n = 0;
      HG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kWarpThreads, 0));
      return std::max(n, 1);
    }();
    // One wave of resident warps, each taking every stride-th row (a few rows each at ViT sizes,
    // so the prefetch has a next row).
    const int64_t blocks = std::min<int64_t>((rows + 7) / 8, int64_t(per_sm) * sm_count());
    kernel<<<static_cast<unsigned>(blocks), kWarpThreads, 0, stream>>>(x, w, b, y, mean, rstd, rows, cols, eps);
    HG_CUDA_CHECK_LAUNCH("layer_norm_forward_warp_kernel");
  });
}

template <class N, int VW>
bool backward_warp_launch(const N* x, const N* dy, const N* w, const float* mean, const float* rstd, N* dx, N* dw,
                          N* db, int64_t rows, int cols, cudaStream_t stream) {
  // 16-bit rows stop at 6 vectors per lane (1536 columns): at 8 the dw/db accumulators spill.
  auto run = [&](auto nv) {
    constexpr int NV = decltype(nv)::value;
    const bool want_params = dw || db;
    // Exactly the blocks that fit at once (launch bounds guarantee kBackwardMinBlocks per SM):
    // one partial per block, ~264 on an H200, so the partials are ~3% of the traffic at 768 columns.
    const int64_t blocks =
        std::min<int64_t>((rows + 7) / 8, int64_t(kBackwardMinBlocks<VW, NV>) * sm_count());
    const int64_t rows_per_block = (rows + blocks - 1) / blocks;
    const size_t acc_bytes = 2 * size_t(cols) * sizeof(float);
    const size_t partial_bytes = want_params ? size_t(blocks) * acc_bytes : 0;
    float* partial = want_params ? static_cast<float*>(allocate(partial_bytes)) : nullptr;
    try {
      layer_norm_backward_warp_kernel<N, VW, NV>
          <<<static_cast<unsigned>(blocks), kWarpThreads, want_params ? acc_bytes : 0, stream>>>(
              x, dy, w, mean, rstd, dx, partial, rows, cols, rows_per_block);
      HG_CUDA_CHECK_LAUNCH("layer_norm_backward_warp_kernel");
      if (want_params) {
        const dim3 grid(static_cast<unsigned>((cols + 31) / 32), 2);
        layer_norm_param_grad_v2_kernel<N><<<grid, dim3(32, 32), 0, stream>>>(partial, blocks, cols, dw, db);
        HG_CUDA_CHECK_LAUNCH("layer_norm_param_grad_v2_kernel");
      }
    } catch (...) {
      if (partial) release(partial, partial_bytes);
      throw;
    }
    if (partial) {
      if (stream != static_cast<cudaStream_t>(current_stream())) HG_CUDA_CHECK(cudaStreamSynchronize(stream));
      release(partial, partial_bytes);
    }
  };
  if constexpr (VW == 4) return with_nv<1, 2, 3, 4, 6, 8>(cols / VW, run);
  else return with_nv<1, 2, 3, 4, 6>(cols / VW, run);
}

void check_sizes(const char* op, int64_t rows, int64_t cols) {
  HG_CHECK(rows >= 0 && cols >= 0, op, "expected non-negative sizes, got rows ", rows, ", cols ", cols);
  HG_CHECK(cols <= (int64_t(1) << 30), op, "expected at most 2^30 columns, got ", cols);
}

}  // namespace

template <class T>
void layer_norm_forward(const T* x, const T* weight, const T* bias, T* y, float* mean, float* rstd, int64_t rows,
                        int64_t cols, double eps, void* stream) {
  check_sizes("cuda::layer_norm_forward", rows, cols);
  if (rows == 0 || cols == 0) return;
  using N = typename Native<T>::type;
  const cudaStream_t s = stream_or_current(stream);
  auto xn = reinterpret_cast<const N*>(x), wn = reinterpret_cast<const N*>(weight), bn = reinterpret_cast<const N*>(bias);
  auto yn = reinterpret_cast<N*>(y);
  constexpr int VW = 16 / sizeof(T);
  const int c = static_cast<int>(cols);
  const bool vectors = c % VW == 0 && aligned16(x) && aligned16(weight) && aligned16(bias) && aligned16(y);
  if (vectors && g_version.load() >= 2 &&
      forward_warp_launch<N, VW>(xn, wn, bn, yn, mean, rstd, rows, c, static_cast<float>(eps), s))
    return;
  if (vectors)
    forward_launch<N, VW>(xn, wn, bn, yn, mean, rstd, rows, c, static_cast<float>(eps), s);
  else
    forward_launch<N, 1>(xn, wn, bn, yn, mean, rstd, rows, c, static_cast<float>(eps), s);
}

template <class T>
void layer_norm_backward(const T* x, const T* dy, const T* weight, const float* mean, const float* rstd, T* dx,
                         T* dweight, T* dbias, int64_t rows, int64_t cols, void* stream) {
  check_sizes("cuda::layer_norm_backward", rows, cols);
  if (cols == 0 || (!dx && !dweight && !dbias)) return;
  using N = typename Native<T>::type;
  const cudaStream_t s = stream_or_current(stream);
  if (rows == 0) {  // the sums over no rows are zero
    if (dweight) HG_CUDA_CHECK(cudaMemsetAsync(dweight, 0, size_t(cols) * sizeof(T), s));
    if (dbias) HG_CUDA_CHECK(cudaMemsetAsync(dbias, 0, size_t(cols) * sizeof(T), s));
    return;
  }
  auto xn = reinterpret_cast<const N*>(x), dyn = reinterpret_cast<const N*>(dy), wn = reinterpret_cast<const N*>(weight);
  auto dxn = reinterpret_cast<N*>(dx), dwn = reinterpret_cast<N*>(dweight), dbn = reinterpret_cast<N*>(dbias);
  constexpr int VW = 16 / sizeof(T);
  const int c = static_cast<int>(cols);
  const bool vectors = c % VW == 0 && aligned16(x) && aligned16(dy) && aligned16(weight) && aligned16(dx);
  if (vectors && g_version.load() >= 2 && backward_warp_launch<N, VW>(xn, dyn, wn, mean, rstd, dxn, dwn, dbn, rows, c, s))
    return;
  if (vectors)
    backward_launch<N, VW>(xn, dyn, wn, mean, rstd, dxn, dwn, dbn, rows, c, s);
  else
    backward_launch<N, 1>(xn, dyn, wn, mean, rstd, dxn, dwn, dbn, rows, c, s);
}

void set_layer_norm_kernel_version(int version) {
  HG_CHECK(version == 1 || version == 2, "cuda::set_layer_norm_kernel_version", "expected 1 or 2, got ", version);
  g_version.store(version);
}
int layer_norm_kernel_version() { return g_version.load(); }

#define HG_LAYER_NORM_INSTANTIATE(T)                                                                               \
  template void layer_norm_forward<T>(const T*, const T*, const T*, T*, float*, float*, int64_t, int64_t, double, \
                                      void*);                                                                      \
  template void layer_norm_backward<T>(const T*, const T*, const T*, const float*, const float*, T*, T*, T*, int64_t, \
                                       int64_t, void*);
HG_LAYER_NORM_INSTANTIATE(float)
HG_LAYER_NORM_INSTANTIATE(bfloat16)
HG_LAYER_NORM_INSTANTIATE(half)
#undef HG_LAYER_NORM_INSTANTIATE

}  // namespace histograd::cuda
