// Fused softmax cross-entropy (hard labels, and DINO's tempered soft targets). Forward: one block
// per row keeps an online logsumexp per thread (running max m, Σ exp(x - m), rescaled when m
// grows; Milakov & Gimelshein 2018, as llm.c's fused classifier), merged over the block in a fixed
// order, so each logit is read once. Backward: elementwise from the saved logsumexp, a 2-D grid
// (rows x slices of a row). 16-byte vectors when every pointer is aligned and the row length
// allows, else scalars.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "check.cuh"
#include "common.cuh"
#include "histograd/core/error.hpp"
#include "histograd/cuda/cross_entropy.hpp"

namespace histograd::cuda {
namespace {

constexpr int kMaxThreads = 512;
constexpr int kUnroll = 4;  // vectors loaded before the first is used, to keep loads in flight
constexpr int kBackwardThreads = 256;
constexpr float kLog2e = 1.4426950408889634f;

// e^d through the hardware exp2 (relative error ~2^-22); d = x - max is computed first so large
// logits lose no bits to the scaling.
__device__ __forceinline__ float exp_of(float d) { return exp2f(d * kLog2e); }

// The max used as the exponent base: -inf only while nothing finite was seen, when 0 keeps
// (-inf) - (-inf) from making NaN (every term is then exp(-inf) = 0 anyway). NaN logits are
// ignored by fmaxf but reach the sums through exp_of(NaN), so they propagate.
__device__ __forceinline__ float base_of(float m) { return m == -INFINITY ? 0.f : m; }

// Online logsumexp state: max m and Σ exp(x - m).
struct Lse {
  float m = -INFINITY, s = 0.f;
};
__device__ __forceinline__ Lse merge(const Lse& a, const Lse& b) {
  const float m = fmaxf(a.m, b.m), base = base_of(m);
  return {m, a.s * exp_of(a.m - base) + b.s * exp_of(b.m - base)};
}
__device__ __forceinline__ Lse shuffle_xor(const Lse& a, int offset) {
  return {__shfl_xor_sync(0xffffffffu, a.m, offset), __shfl_xor_sync(0xffffffffu, a.s, offset)};
}

// DINO state: the teacher's (max, Σ e^(u - max), Σ e^(u - max) v) and the student's (max, Σ e^(v - max)),
// u = (teacher - center)/τt and v = student/τs.
struct Distill {
  float tm = -INFINITY, tz = 0.f, tw = 0.f, sm = -INFINITY, sz = 0.f;
};
__device__ __forceinline__ Distill merge(const Distill& a, const Distill& b) {
  Distill r;
  r.tm = fmaxf(a.tm, b.tm);
  const float tb = base_of(r.tm), fa = exp_of(a.tm - tb), fb = exp_of(b.tm - tb);
  r.tz = a.tz * fa + b.tz * fb;
  r.tw = a.tw * fa + b.tw * fb;
  r.sm = fmaxf(a.sm, b.sm);
  const float sb = base_of(r.sm);
  r.sz = a.sz * exp_of(a.sm - sb) + b.sz * exp_of(b.sm - sb);
  return r;
}
__device__ __forceinline__ Distill shuffle_xor(const Distill& a, int offset) {
  Distill r;
  r.tm = __shfl_xor_sync(0xffffffffu, a.tm, offset);
  r.tz = __shfl_xor_sync(0xffffffffu, a.tz, offset);
  r.tw = __shfl_xor_sync(0xffffffffu, a.tw, offset);
  r.sm = __shfl_xor_sync(0xffffffffu, a.sm, offset);
  r.sz = __shfl_xor_sync(0xffffffffu, a.sz, offset);
  return r;
}

// Merges every thread's state (blockDim.x a multiple of 32, all threads present); all threads get
// the block's state, merged in a fixed order.
template <class S> __device__ __forceinline__ S block_merge(S v, S* scratch) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = merge(v, shuffle_xor(v, offset));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // the previous row's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  S total = scratch[0];
  for (int w = 1; w < warps; ++w) total = merge(total, scratch[w]);
  return total;
}

// Adds one vector of logits to an Lse: one rescale per vector, not per element.
template <int VW> __device__ __forceinline__ void add_values(Lse& st, const float (&x)[VW]) {
  float vmax = x[0];
#pragma unroll
  for (int j = 1; j < VW; ++j) vmax = fmaxf(vmax, x[j]);
  const float m = fmaxf(st.m, vmax), base = base_of(m);
  float s = st.s * exp_of(st.m - base);
#pragma unroll
  for (int j = 0; j < VW; ++j) s += exp_of(x[j] - base);
  st = {m, s};
}

template <class T, int VW>
__device__ __forceinline__ void load_floats(const Vec<T, VW>* p, int k, float (&out)[VW]) {
  const Vec<T, VW> a = p[k];
#pragma unroll
  for (int j = 0; j < VW; ++j) out[j] = to_float(a.v[j]);
}

template <class T, int VW, int kU = kUnroll>
__global__ void __launch_bounds__(kMaxThreads)
    cross_entropy_forward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                 float* __restrict__ loss, float* __restrict__ lse_out, int64_t rows, int classes,
                                 int64_t ignore_index) {
  using V = Vec<T, VW>;
  __shared__ Lse scratch[32];
  const int nvec = classes / VW, step = blockDim.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t label = labels[row];
    if (label == ignore_index) {  // uniform over the block
      if (threadIdx.x == 0) loss[row] = lse_out[row] = 0.f;
      continue;
    }
    const V* xr = reinterpret_cast<const V*>(logits + row * classes);
    Lse st;
    int k = threadIdx.x;
    for (; k + (kU - 1) * step < nvec; k += kU * step) {
      Vec<T, VW> raw[kU];  // all loads issued before the first is used
#pragma unroll
      for (int u = 0; u < kU; ++u) raw[u] = xr[k + u * step];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        float x[VW];
#pragma unroll
        for (int j = 0; j < VW; ++j) x[j] = to_float(raw[u].v[j]);
        add_values(st, x);
      }
    }
    for (; k < nvec; k += step) {
      float x[VW];
      load_floats(xr, k, x);
      add_values(st, x);
    }
    st = block_merge(st, scratch);
    if (threadIdx.x == 0) {
      const float lse = st.m + logf(st.s);
      const bool valid = label >= 0 && label < classes;
      loss[row] = valid ? lse - to_float(logits[row * classes + label]) : NAN;
      lse_out[row] = lse;
    }
  }
}

// grid (rows, slices): block (r, y) covers vectors y*blockDim.x + threadIdx.x, stepping gridDim.y*blockDim.x.
template <class T, int VW>
__global__ void __launch_bounds__(kBackwardThreads)
    cross_entropy_backward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                  const float* __restrict__ lse_in, const T* __restrict__ dloss, int64_t dloss_stride,
                                  float dloss_scale, T* __restrict__ dlogits, int classes, int64_t ignore_index) {
  using V = Vec<T, VW>;
  const int64_t row = blockIdx.x;
  const int nvec = classes / VW;
  const int64_t label = labels[row];
  const bool ignored = label == ignore_index;
  const float g = ignored ? 0.f : to_float(dloss[row * dloss_stride]) * dloss_scale;
  const float lse = ignored ? 0.f : lse_in[row];
  const V* xr = reinterpret_cast<const V*>(logits + row * classes);
  V* dr = reinterpret_cast<V*>(dlogits + row * classes);
  for (int k = blockIdx.y * blockDim.x + threadIdx.x; k < nvec; k += gridDim.y * blockDim.x) {
    V out;
    if (ignored) {
#pragma unroll
      for (int j = 0; j < VW; ++j) out.v[j] = from_float<T>(0.f);
    } else {
      float x[VW];
      load_floats(xr, k, x);
#pragma unroll
      for (int j = 0; j < VW; ++j) {
        const float hit = int64_t(k) * VW + j == label ? 1.f : 0.f;
        out.v[j] = from_float<T>((exp_of(x[j] - lse) - hit) * g);
      }
    }
    dr[k] = out;
  }
}

// One vector of teacher/student/center into the DINO state.
template <int VW>
__device__ __forceinline__ void add_values(Distill& st, const float (&t)[VW], const float (&s)[VW],
                                           const float (&c)[VW], float inv_tt, float inv_ts) {
  float u[VW], v[VW];
#pragma unroll
  for (int j = 0; j < VW; ++j) {
    u[j] = (t[j] - c[j]) * inv_tt;
    v[j] = s[j] * inv_ts;
  }
  float umax = u[0], vmax = v[0];
#pragma unroll
  for (int j = 1; j < VW; ++j) {
    umax = fmaxf(umax, u[j]);
    vmax = fmaxf(vmax, v[j]);
  }
  const float tm = fmaxf(st.tm, umax), tb = base_of(tm), tf = exp_of(st.tm - tb);
  float tz = st.tz * tf, tw = st.tw * tf;
  const float sm = fmaxf(st.sm, vmax), sb = base_of(sm);
  float sz = st.sz * exp_of(st.sm - sb);
#pragma unroll
  for (int j = 0; j < VW; ++j) {
    const float e = exp_of(u[j] - tb);
    tz += e;
    tw += e * v[j];
    sz += exp_of(v[j] - sb);
  }
  st.tm = tm;
  st.tz = tz;
  st.tw = tw;
  st.sm = sm;
  st.sz = sz;
}

template <class T, int VW>
__device__ __forceinline__ void load_center(const Vec<T, VW>* center, int k, float (&out)[VW]) {
  if (center) {
    load_floats(center, k, out);
  } else {
#pragma unroll
    for (int j = 0; j < VW; ++j) out[j] = 0.f;
  }
}

// loss = lse_s - Σ q v, since -Σ q (v - lse_s) with Σ q = 1, and Σ q v = tw / tz.
template <class T, int VW>
__global__ void __launch_bounds__(kMaxThreads, 1)  // the ", 1" lets ptxas go past 64 registers, not spill
    distill_forward_kernel(const T* __restrict__ student, const T* __restrict__ teacher, const T* __restrict__ center,
                           float* __restrict__ loss, float* __restrict__ student_lse, float* __restrict__ teacher_lse,
                           int64_t rows, int classes, float inv_ts, float inv_tt) {
  using V = Vec<T, VW>;
  __shared__ Distill scratch[32];
  const int nvec = classes / VW, step = blockDim.x;
  const V* cv = reinterpret_cast<const V*>(center);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const V* sr = reinterpret_cast<const V*>(student + row * classes);
    const V* tr = reinterpret_cast<const V*>(teacher + row * classes);
    Distill st;
    int k = threadIdx.x;
    constexpr int kU = kUnroll / 2;  // two streams per step already
    for (; k + (kU - 1) * step < nvec; k += kU * step) {
      V t[kU], s[kU], c[kU];  // raw vectors: converting after all loads are issued keeps registers low
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        t[u] = tr[k + u * step];
        s[u] = sr[k + u * step];
        if (cv) c[u] = cv[k + u * step];
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        float tf[VW], sf[VW], cf[VW];
#pragma unroll
        for (int j = 0; j < VW; ++j) {
          tf[j] = to_float(t[u].v[j]);
          sf[j] = to_float(s[u].v[j]);
          cf[j] = cv ? to_float(c[u].v[j]) : 0.f;
        }
        add_values(st, tf, sf, cf, inv_tt, inv_ts);
      }
    }
    for (; k < nvec; k += step) {
      float t[VW], s[VW], c[VW];
      load_floats(tr, k, t);
      load_floats(sr, k, s);
      load_center(cv, k, c);
      add_values(st, t, s, c, inv_tt, inv_ts);
    }
    st = block_merge(st, scratch);
    if (threadIdx.x == 0) {
      const float lse_s = st.sm + logf(st.sz);
      loss[row] = lse_s - st.tw / st.tz;
      student_lse[row] = lse_s;
      teacher_lse[row] = st.tm + logf(st.tz);
    }
  }
}

template <class T, int VW>
__global__ void __launch_bounds__(kBackwardThreads)
    distill_backward_kernel(const T* __restrict__ student, const T* __restrict__ teacher, const T* __restrict__ center,
                            const float* __restrict__ student_lse, const float* __restrict__ teacher_lse,
                            const T* __restrict__ dloss, int64_t dloss_stride, float dloss_scale,
                            T* __restrict__ dstudent, int classes, float inv_ts, float inv_tt) {
  using V = Vec<T, VW>;
  const int64_t row = blockIdx.x;
  const int nvec = classes / VW;
  const float g = to_float(dloss[row * dloss_stride]) * dloss_scale * inv_ts;
  const float lse_s = student_lse[row], lse_t = teacher_lse[row];
  const V* sr = reinterpret_cast<const V*>(student + row * classes);
  const V* tr = reinterpret_cast<const V*>(teacher + row * classes);
  const V* cv = reinterpret_cast<const V*>(center);
  V* dr = reinterpret_cast<V*>(dstudent + row * classes);
  for (int k = blockIdx.y * blockDim.x + threadIdx.x; k < nvec; k += gridDim.y * blockDim.x) {
    float t[VW], s[VW], c[VW];
    load_floats(tr, k, t);
    load_floats(sr, k, s);
    load_center(cv, k, c);
    V out;
#pragma unroll
    for (int j = 0; j < VW; ++j) {
      const float p = exp_of(s[j] * inv_ts - lse_s), q = exp_of((t[j] - c[j]) * inv_tt - lse_t);
      out.v[j] = from_float<T>((p - q) * g);
    }
    dr[k] = out;
  }
}

// ---- Version 2 of the DINO loss (GPU run 1: forward 57% of copy bandwidth fp32, 38% bf16). ----
// DINO has few rows (2 x batch) of 65536 prototypes: one block per row left 128 blocks for 132
// SMs. Here each row is cut into `slices` blocks that write their (teacher max, Σ e, Σ e·v,
// student max, Σ e) states, and a tiny kernel merges a row's states in slice order (fixed, so
// the result is reproducible). The backward issues all of a thread's loads before using any.
constexpr int kSplitThreads = 256;
constexpr int kSplitVectorsPerThread = 8;
constexpr int kBackwardV2Vectors = 4;

template <class T, int VW>
__global__ void __launch_bounds__(kSplitThreads)
    distill_partial_kernel(const T* __restrict__ student, const T* __restrict__ teacher, const T* __restrict__ center,
                           Distill* __restrict__ partial, int classes, int chunk, float inv_ts, float inv_tt) {
  using V = Vec<T, VW>;
  __shared__ Distill scratch[32];
  const int64_t row = blockIdx.y;
  const int nvec = classes / VW, lo = int(blockIdx.x) * chunk, hi = min(nvec, lo + chunk);
  const V* sr = reinterpret_cast<const V*>(student + row * classes);
  const V* tr = reinterpret_cast<const V*>(teacher + row * classes);
  const V* cv = reinterpret_cast<const V*>(center);
  Distill st;
  constexpr int kU = 4;
  int k = lo + int(threadIdx.x);
  for (; k + (kU - 1) * kSplitThreads < hi; k += kU * kSplitThreads) {
    V t[kU], s[kU], c[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      t[u] = tr[k + u * kSplitThreads];
      s[u] = sr[k + u * kSplitThreads];
      if (cv) c[u] = cv[k + u * kSplitThreads];
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float tf[VW], sf[VW], cf[VW];
#pragma unroll
      for (int j = 0; j < VW; ++j) {
        tf[j] = to_float(t[u].v[j]);
        sf[j] = to_float(s[u].v[j]);
        cf[j] = cv ? to_float(c[u].v[j]) : 0.f;
      }
      add_values(st, tf, sf, cf, inv_tt, inv_ts);
    }
  }
  for (; k < hi; k += kSplitThreads) {
    float t[VW], s[VW], c[VW];
    load_floats(tr, k, t);
    load_floats(sr, k, s);
    load_center(cv, k, c);
    add_values(st, t, s, c, inv_tt, inv_ts);
  }
  st = block_merge(st, scratch);
  if (threadIdx.x == 0) partial[row * gridDim.x + blockIdx.x] = st;
}

__global__ void distill_finalize_kernel(const Distill* __restrict__ partial, int slices, int64_t rows,
                                        float* __restrict__ loss, float* __restrict__ student_lse,
                                        float* __restrict__ teacher_lse) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  Distill st = partial[row * slices];
  for (int s = 1; s < slices; ++s) st = merge(st, partial[row * slices + s]);
  const float lse_s = st.sm + logf(st.sz);
  loss[row] = lse_s - st.tw / st.tz;
  student_lse[row] = lse_s;
  teacher_lse[row] = st.tm + logf(st.tz);
}

// grid (rows, slices): thread covers vectors base + u * blockDim.x, u < kBackwardV2Vectors, with
// base = blockIdx.y * blockDim.x * kBackwardV2Vectors + threadIdx.x; all loads first.
template <class T, int VW>
__global__ void __launch_bounds__(kBackwardThreads)
    distill_backward_v2_kernel(const T* __restrict__ student, const T* __restrict__ teacher,
                               const T* __restrict__ center, const float* __restrict__ student_lse,
                               const float* __restrict__ teacher_lse, const T* __restrict__ dloss,
                               int64_t dloss_stride, float dloss_scale, T* __restrict__ dstudent, int classes,
                               float inv_ts, float inv_tt) {
  using V = Vec<T, VW>;
  constexpr int kU = kBackwardV2Vectors;
  const int64_t row = blockIdx.x;
  const int nvec = classes / VW;
  const int base = int(blockIdx.y) * kBackwardThreads * kU + int(threadIdx.x);
  const V* sr = reinterpret_cast<const V*>(student + row * classes);
  const V* tr = reinterpret_cast<const V*>(teacher + row * classes);
  const V* cv = reinterpret_cast<const V*>(center);
  V* dr = reinterpret_cast<V*>(dstudent + row * classes);
  V t[kU], s[kU], c[kU];
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    const int k = base + u * kBackwardThreads;
    if (k < nvec) {
      t[u] = tr[k];
      s[u] = sr[k];
      if (cv) c[u] = cv[k];
    }
  }
  const float g = to_float(dloss[row * dloss_stride]) * dloss_scale * inv_ts;
  const float lse_s = student_lse[row], lse_t = teacher_lse[row];
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    const int k = base + u * kBackwardThreads;
    if (k < nvec) {
      V out;
#pragma unroll
      for (int j = 0; j < VW; ++j) {
        const float cj = cv ? to_float(c[u].v[j]) : 0.f;
        const float p = exp_of(to_float(s[u].v[j]) * inv_ts - lse_s),
                    q = exp_of((to_float(t[u].v[j]) - cj) * inv_tt - lse_t);
        out.v[j] = from_float<T>((p - q) * g);
      }
      dr[k] = out;
    }
  }
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// About 8 vectors per thread, a whole number of warps.
int forward_threads(int64_t nvec) {
  const int64_t want = (nvec + 7) / 8;
  return static_cast<int>(std::clamp<int64_t>((want + 31) / 32 * 32, 32, kMaxThreads));
}
unsigned forward_grid(int64_t rows) { return static_cast<unsigned>(std::min<int64_t>(rows, int64_t(1) << 30)); }
// rows x enough slices that each thread has ~4 vectors, at most 65535 (the grid's y limit).
dim3 backward_grid(int64_t rows, int64_t nvec) {
  const int64_t slices = std::clamp<int64_t>((nvec + 4 * kBackwardThreads - 1) / (4 * kBackwardThreads), 1, 65535);
  return dim3(static_cast<unsigned>(rows), static_cast<unsigned>(slices));
}

std::atomic<int> g_version{2};

// Version 2 forward when a row splits into 2 or more blocks of ~4 vectors per thread and the
// rows alone give fewer than ~16 blocks per SM; false to use the one-block-per-row kernel.
template <class N, int VW>
bool distill_forward_v2(const N* sn, const N* tn, const N* cn, float* loss, float* student_lse, float* teacher_lse,
                        int64_t rows, int classes, float inv_ts, float inv_tt, cudaStream_t stream) {
  const int64_t nvec = classes / VW;
  if (rows > 65535) return false;
  const int64_t per_block = int64_t(kSplitThreads) * kSplitVectorsPerThread;
  const int64_t slices = std::min((nvec + per_block - 1) / per_block, (16 * int64_t(sm_count()) + rows - 1) / rows);
  if (slices < 2) return false;
  const int chunk = static_cast<int>((nvec + slices - 1) / slices);
  const size_t bytes = size_t(rows) * size_t(slices) * sizeof(Distill);
  auto* partial = static_cast<Distill*>(allocate(bytes));
  try {
    distill_partial_kernel<N, VW><<<dim3(static_cast<unsigned>(slices), static_cast<unsigned>(rows)), kSplitThreads,
                                    0, stream>>>(sn, tn, cn, partial, classes, chunk, inv_ts, inv_tt);
    HG_CUDA_CHECK_LAUNCH("distill_partial_kernel");
    distill_finalize_kernel<<<static_cast<unsigned>((rows + 127) / 128), 128, 0, stream>>>(
        partial, static_cast<int>(slices), rows, loss, student_lse, teacher_lse);
    HG_CUDA_CHECK_LAUNCH("distill_finalize_kernel");
  } catch (...) {
    release(partial, bytes);
    throw;
  }
  // The allocator hands blocks out again in current-stream order; another stream must finish first.
  if (stream != static_cast<cudaStream_t>(current_stream())) HG_CUDA_CHECK(cudaStreamSynchronize(stream));
  release(partial, bytes);
  return true;
}

template <class N, int VW>
bool distill_backward_v2(const N* sn, const N* tn, const N* cn, const float* student_lse, const float* teacher_lse,
                         const N* gn, int64_t dloss_stride, float dloss_scale, N* d, int64_t rows, int classes,
                         float inv_ts, float inv_tt, cudaStream_t stream) {
  const int64_t per_block = int64_t(kBackwardThreads) * kBackwardV2Vectors;
  const int64_t slices = (classes / VW + per_block - 1) / per_block;
  if (slices > 65535 || rows >= (int64_t(1) << 31)) return false;
  distill_backward_v2_kernel<N, VW>
      <<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(slices)), kBackwardThreads, 0, stream>>>(
          sn, tn, cn, student_lse, teacher_lse, gn, dloss_stride, dloss_scale, d, classes, inv_ts, inv_tt);
  HG_CUDA_CHECK_LAUNCH("distill_backward_v2_kernel");
  return true;
}

void check_sizes(const char* op, int64_t rows, int64_t classes) {
  HG_CHECK(rows >= 0 && classes >= 0, op, "expected non-negative sizes, got rows ", rows, ", classes ", classes);
  HG_CHECK(classes <= (int64_t(1) << 30), op, "expected at most 2^30 classes, got ", classes);
  HG_CHECK(rows < (int64_t(1) << 31), op, "expected fewer than 2^31 rows, got ", rows);
}

}  // namespace

template <class T>
void cross_entropy_forward(const T* logits, const int64_t* labels, float* loss, float* logsumexp, int64_t rows,
                           int64_t classes, int64_t ignore_index, void* stream) {
  check_sizes("cuda::cross_entropy_forward", rows, classes);
  HG_CHECK(classes > 0 || rows == 0, "cuda::cross_entropy_forward", "expected at least one class, got 0");
  if (rows == 0) return;
  using N = typename Native<T>::type;
  const cudaStream_t s = stream_or_current(stream);
  const auto x = reinterpret_cast<const N*>(logits);
  const int c = static_cast<int>(classes);
  constexpr int VW = 16 / sizeof(T);
  if (c % VW == 0 && aligned16(logits) && VW == 8 && g_version.load() >= 2) {
    // 16-bit logits: 8 loads in flight per thread instead of 4 (bf16 ran at 71% in run 1, fp32 at 95%).
    cross_entropy_forward_kernel<N, VW, 8><<<forward_grid(rows), forward_threads(c / VW), 0, s>>>(
        x, labels, loss, logsumexp, rows, c, ignore_index);
  } else if (c % VW == 0 && aligned16(logits)) {
    cross_entropy_forward_kernel<N, VW><<<forward_grid(rows), forward_threads(c / VW), 0, s>>>(
        x, labels, loss, logsumexp, rows, c, ignore_index);
  } else {
    cross_entropy_forward_kernel<N, 1><<<forward_grid(rows), forward_threads(c), 0, s>>>(x, labels, loss, logsumexp,
                                                                                          rows, c, ignore_index);
  }
  HG_CUDA_CHECK_LAUNCH("cross_entropy_forward_kernel");
}

template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const float* logsumexp, const T* dloss,
                            int64_t dloss_stride, float dloss_scale, T* dlogits, int64_t rows, int64_t classes,
                            int64_t ignore_index, void* stream) {
  check_sizes("cuda::cross_entropy_backward", rows, classes);
  if (rows == 0 || classes == 0) return;
  using N = typename Native<T>::type;
  const cudaStream_t s = stream_or_current(stream);
  const auto x = reinterpret_cast<const N*>(logits);
  const auto g = reinterpret_cast<const N*>(dloss);
  const auto d = reinterpret_cast<N*>(dlogits);
  const int c = static_cast<int>(classes);
  constexpr int VW = 16 / sizeof(T);
  if (c % VW == 0 && aligned16(logits) && aligned16(dlogits)) {
    cross_entropy_backward_kernel<N, VW><<<backward_grid(rows, c / VW), kBackwardThreads, 0, s>>>(
        x, labels, logsumexp, g, dloss_stride, dloss_scale, d, c, ignore_index);
  } else {
    cross_entropy_backward_kernel<N, 1><<<backward_grid(rows, c), kBackwardThreads, 0, s>>>(
        x, labels, logsumexp, g, dloss_stride, dloss_scale, d, c, ignore_index);
  }
  HG_CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
}

template <class T>
void distillation_cross_entropy_forward(const T* student, const T* teacher, const T* center, float* loss,
                                        float* student_logsumexp, float* teacher_logsumexp, int64_t rows,
                                        int64_t classes, float student_temp, float teacher_temp, void* stream) {
  const char* op = "cuda::distillation_cross_entropy_forward";
  check_sizes(op, rows, classes);
  HG_CHECK(classes > 0 || rows == 0, op, "expected at least one class, got 0");
  HG_CHECK(student_temp > 0 && teacher_temp > 0, op, "expected positive temperatures, got student ", student_temp,
           " and teacher ", teacher_temp);
  if (rows == 0) return;
  using N = typename Native<T>::type;
  const cudaStream_t s = stream_or_current(stream);
  const auto sn = reinterpret_cast<const N*>(student), tn = reinterpret_cast<const N*>(teacher),
             cn = reinterpret_cast<const N*>(center);
  const int c = static_cast<int>(classes);
  const float inv_ts = 1.f / student_temp, inv_tt = 1.f / teacher_temp;
  constexpr int VW = 16 / sizeof(T);
  const bool vectors = c % VW == 0 && aligned16(student) && aligned16(teacher) && aligned16(center);
  if (g_version.load() >= 2 &&
      (vectors ? distill_forward_v2<N, VW>(sn, tn, cn, loss, student_logsumexp, teacher_logsumexp, rows, c, inv_ts,
                                           inv_tt, s)
               : distill_forward_v2<N, 1>(sn, tn, cn, loss, student_logsumexp, teacher_logsumexp, rows, c, inv_ts,
                                          inv_tt, s)))
    return;
  if (vectors) {
    distill_forward_kernel<N, VW><<<forward_grid(rows), forward_threads(c / VW), 0, s>>>(
        sn, tn, cn, loss, student_logsumexp, teacher_logsumexp, rows, c, inv_ts, inv_tt);
  } else {
    distill_forward_kernel<N, 1><<<forward_grid(rows), forward_threads(c), 0, s>>>(
        sn, tn, cn, loss, student_logsumexp, teacher_logsumexp, rows, c, inv_ts, inv_tt);
  }
  HG_CUDA_CHECK_LAUNCH("distill_forward_kernel");
}

template <class T>
void distillation_cross_entropy_backward(const T* student, const T* teacher, const T* center,
                                         const float* student_logsumexp, const float* teacher_logsumexp,
                                         const T* dloss, int64_t dloss_stride, float dloss_scale, T* dstudent,
                                         int64_t rows, int64_t classes, float student_temp, float teacher_temp,
                                         void* stream) {
  const char* op = "cuda::distillation_cross_entropy_backward";
  check_sizes(op, rows, classes);
  HG_CHECK(student_temp > 0 && teacher_temp > 0, op, "expected positive temperatures, got student ", student_temp,
           " and teacher ", teacher_temp);
  if (rows == 0 || classes == 0) return;
  using N = typename Native<T>::type;
  const cudaStream_t s = stream_or_current(stream);
  const auto sn = reinterpret_cast<const N*>(student), tn = reinterpret_cast<const N*>(teacher),
             cn = reinterpret_cast<const N*>(center), gn = reinterpret_cast<const N*>(dloss);
  const auto d = reinterpret_cast<N*>(dstudent);
  const int c = static_cast<int>(classes);
  const float inv_ts = 1.f / student_temp, inv_tt = 1.f / teacher_temp;
  constexpr int VW = 16 / sizeof(T);
  const bool vectors =
      c % VW == 0 && aligned16(student) && aligned16(teacher) && aligned16(center) && aligned16(dstudent);
  if (g_version.load() >= 2 &&
      (vectors ? distill_backward_v2<N, VW>(sn, tn, cn, student_logsumexp, teacher_logsumexp, gn, dloss_stride,
                                            dloss_scale, d, rows, c, inv_ts, inv_tt, s)
               : distill_backward_v2<N, 1>(sn, tn, cn, student_logsumexp, teacher_logsumexp, gn, dloss_stride,
                                           dloss_scale, d, rows, c, inv_ts, inv_tt, s)))
    return;
  if (vectors) {
    distill_backward_kernel<N, VW><<<backward_grid(rows, c / VW), kBackwardThreads, 0, s>>>(
        sn, tn, cn, student_logsumexp, teacher_logsumexp, gn, dloss_stride, dloss_scale, d, c, inv_ts, inv_tt);
  } else {
    distill_backward_kernel<N, 1><<<backward_grid(rows, c), kBackwardThreads, 0, s>>>(
        sn, tn, cn, student_logsumexp, teacher_logsumexp, gn, dloss_stride, dloss_scale, d, c, inv_ts, inv_tt);
  }
  HG_CUDA_CHECK_LAUNCH("distill_backward_kernel");
}

void set_cross_entropy_kernel_version(int version) {
  HG_CHECK(version == 1 || version == 2, "cuda::set_cross_entropy_kernel_version", "expected 1 or 2, got ", version);
  g_version.store(version);
}
int cross_entropy_kernel_version() { return g_version.load(); }

#define HG_CROSS_ENTROPY_INSTANTIATE(T)                                                                             \
  template void cross_entropy_forward<T>(const T*, const int64_t*, float*, float*, int64_t, int64_t, int64_t,       \
                                         void*);                                                                    \
  template void cross_entropy_backward<T>(const T*, const int64_t*, const float*, const T*, int64_t, float, T*,     \
                                          int64_t, int64_t, int64_t, void*);                                        \
  template void distillation_cross_entropy_forward<T>(const T*, const T*, const T*, float*, float*, float*, int64_t, \
                                                      int64_t, float, float, void*);                                \
  template void distillation_cross_entropy_backward<T>(const T*, const T*, const T*, const float*, const float*,    \
                                                       const T*, int64_t, float, T*, int64_t, int64_t, float, float, \
                                                       void*);
HG_CROSS_ENTROPY_INSTANTIATE(float)
HG_CROSS_ENTROPY_INSTANTIATE(bfloat16)
HG_CROSS_ENTROPY_INSTANTIATE(half)
#undef HG_CROSS_ENTROPY_INSTANTIATE

}  // namespace histograd::cuda
