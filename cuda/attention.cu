// Attention kernels behind include/histograd/cuda/attention.hpp.
//  - *_reference: one warp per query (or key) row, fp32 math, plain loads. Slow and simple; the
//    fp32 path, the fallback for odd head dims, and the second opinion the tests check.
//  - *_flash: FlashAttention-2 (Dao 2023, Algorithm 1 forward, Algorithm 2 backward) on
//    mma.sync m16n8k16 tensor cores (bf16/fp16 in, fp32 accumulate), cp.async double buffering.
//    The score tile's accumulator layout equals the A-operand layout of the next mma, so P and
//    dS go from registers straight into the following product (no shared-memory round trip).
//  - *_hopper (attention_hopper.cuh, attention_hopper_bwd.cuh): the sm_90a forward (head dim 128
//    only: v1 is faster at 64) and backward (64 and 128) on warpgroup MMAs (wgmma), chosen by
//    AttentionKernel::flash where the device is sm_90 and the library holds sm_90a code
//    (HISTOGRAD_ATTENTION_BWD=v1 in the environment keeps the backward on flash_v1's kernel, a
//    bypass should the Hopper one misbehave).
//  - dilated_gather/scatter: LongNet's index mapping (MODELS.md §14.2).
// Fragment layouts are PTX ISA §9.7.14.5.8 (m16n8k16) and §9.7.14.5.15 (ldmatrix).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "check.cuh"
#include "histograd/core/dtype.hpp"
#include "histograd/core/error.hpp"
#include "histograd/cuda/attention.hpp"
#include "attention_wgmma.cuh"
#include "common.cuh"

namespace histograd::cuda {
namespace {

constexpr float kInf = INFINITY;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Everything a kernel needs to know about the problem besides the pointers.
struct Params {
  int64_t batch, heads, query_len, key_len;
  int head_dim;
  float scale;
  bool causal;
  const float* mask;
  int64_t mask_sb, mask_sh, mask_sq, mask_sk;
  const uint8_t* key_padding;
};

// The additive term of score (b, h, i, j): -inf when hidden (causal, padding, mask), else the mask.
__device__ __forceinline__ float score_bias(const Params& p, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (p.causal && j > i) return -kInf;
  if (p.key_padding && p.key_padding[b * p.key_len + j]) return -kInf;
  if (p.mask) return p.mask[b * p.mask_sb + h * p.mask_sh + i * p.mask_sq + j * p.mask_sk];
  return 0.0f;
}

// ------------------------------------------------------------------------------------------
// Reference kernels: lane l holds elements l, l + 32, ... of a row (head dim <= 32 * kChunks).
constexpr int kChunks = 8;
constexpr int kReferenceThreads = 128;

template <class T>
__device__ __forceinline__ void load_row(float (&r)[kChunks], const T* row, int D, int lane) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = lane + 32 * c;
    r[c] = d < D ? to_float(row[d]) : 0.0f;
  }
}

template <class T>
__device__ __forceinline__ float dot_row(const float (&r)[kChunks], const T* row, int D, int lane) {
  float acc = 0.0f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = lane + 32 * c;
    if (d < D) acc += r[c] * to_float(row[d]);
  }
  return warp_sum(acc);
}

// One warp per query row (b, h, i): online softmax over the keys in order.
template <class T>
__global__ void attention_forward_reference(const T* q, const T* k, const T* v, T* out, float* lse, Params p) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.batch * p.heads * p.query_len) return;  // whole warps leave together
  const int D = p.head_dim;
  const int64_t i = row % p.query_len, bh = row / p.query_len, b = bh / p.heads, h = bh % p.heads;
  const T* kb = k + bh * p.key_len * D;
  const T* vb = v + bh * p.key_len * D;
  float qr[kChunks], o[kChunks];
  load_row(qr, q + row * D, D, lane);
  for (int c = 0; c < kChunks; ++c) o[c] = 0.0f;
  float m = -kInf, l = 0.0f;
  for (int64_t j = 0; j < p.key_len; ++j) {
    const float bias = score_bias(p, b, h, i, j);
    if (bias == -kInf) continue;  // the same on every lane
    const float s = dot_row(qr, kb + j * D, D, lane) * p.scale + bias;
    if (s == -kInf) continue;
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new), pj = expf(s - m_new);  // alpha = 0 while m = -inf
    l = l * alpha + pj;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < D) o[c] = o[c] * alpha + pj * to_float(vb[j * D + d]);
    }
    m = m_new;
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = lane + 32 * c;
    if (d < D) out[row * D + d] = from_float<T>(l > 0.0f ? o[c] / l : 0.0f);
  }
  if (lane == 0) lse[row] = l > 0.0f ? m + logf(l) : kInf;
}

// D_i = sum_d dout[i, d] * out[i, d], one warp per row (shared by both backward paths).
template <class T>
__global__ void attention_backward_preprocess(const T* out, const T* dout, float* delta, int64_t rows, int D) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float acc = 0.0f;
  for (int d = lane; d < D; d += 32) acc += to_float(dout[row * D + d]) * to_float(out[row * D + d]);
  acc = warp_sum(acc);
  if (lane == 0) delta[row] = acc;
}

// dq_i = scale * sum_j P_ij (dP_ij - D_i) k_j with P_ij = exp(s_ij - lse_i), dP_ij = dout_i . v_j.
template <class T>
__global__ void attention_backward_dq_reference(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                                                const float* delta, T* dq, Params p) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.batch * p.heads * p.query_len) return;
  const int D = p.head_dim;
  const int64_t i = row % p.query_len, bh = row / p.query_len, b = bh / p.heads, h = bh % p.heads;
  const T* kb = k + bh * p.key_len * D;
  const T* vb = v + bh * p.key_len * D;
  float qr[kChunks], dor[kChunks], acc[kChunks];
  load_row(qr, q + row * D, D, lane);
  load_row(dor, dout + row * D, D, lane);
  for (int c = 0; c < kChunks; ++c) acc[c] = 0.0f;
  const float lse_i = lse[row], delta_i = delta[row];
  for (int64_t j = 0; j < p.key_len; ++j) {
    const float bias = score_bias(p, b, h, i, j);
    if (bias == -kInf) continue;
    const float prob = expf(dot_row(qr, kb + j * D, D, lane) * p.scale + bias - lse_i);
    if (prob == 0.0f) continue;
    const float ds = prob * (dot_row(dor, vb + j * D, D, lane) - delta_i);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < D) acc[c] += ds * to_float(kb[j * D + d]);
    }
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = lane + 32 * c;
    if (d < D) dq[row * D + d] = from_float<T>(acc[c] * p.scale);
  }
}

// One warp per key row j: dv_j = sum_i P_ij dout_i, dk_j = scale * sum_i P_ij (dP_ij - D_i) q_i.
template <class T>
__global__ void attention_backward_dkdv_reference(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                                                  const float* delta, T* dk, T* dv, Params p) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.batch * p.heads * p.key_len) return;
  const int D = p.head_dim;
  const int64_t j = row % p.key_len, bh = row / p.key_len, b = bh / p.heads, h = bh % p.heads;
  const T* qb = q + bh * p.query_len * D;
  const T* dob = dout + bh * p.query_len * D;
  float kr[kChunks], vr[kChunks], dka[kChunks], dva[kChunks];
  load_row(kr, k + row * D, D, lane);
  load_row(vr, v + row * D, D, lane);
  for (int c = 0; c < kChunks; ++c) dka[c] = dva[c] = 0.0f;
  for (int64_t i = 0; i < p.query_len; ++i) {
    const float bias = score_bias(p, b, h, i, j);
    if (bias == -kInf) continue;
    const float prob = expf(dot_row(kr, qb + i * D, D, lane) * p.scale + bias - lse[bh * p.query_len + i]);
    if (prob == 0.0f) continue;
    const float ds = prob * (dot_row(vr, dob + i * D, D, lane) - delta[bh * p.query_len + i]);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < D) {
        dva[c] += prob * to_float(dob[i * D + d]);
        dka[c] += ds * to_float(qb[i * D + d]);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = lane + 32 * c;
    if (d < D) {
      dk[row * D + d] = from_float<T>(dka[c] * p.scale);
      dv[row * D + d] = from_float<T>(dva[c]);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Tensor-core building blocks (sm_80+). Shared-memory rows are padded by 8 elements (16 bytes),
// which makes both the 32-bit fragment loads and ldmatrix's eight 16-byte rows conflict-free.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared without passing through registers; valid = false writes zeros.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}
// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i. Lane l receives
// row l/4, columns 2(l%4), 2(l%4)+1 of each matrix (with .trans: of each matrix transposed).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p))
               : "memory");
}

// c += a b for a 16x16 A (row major) and 16x8 B (column major), fp32 accumulators.
// With g = lane/4, t = lane%4: a = {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)},
// b = {(k 2t.., n g), (k 2t+8.., n g)}, c = {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats as one 32-bit register of T pairs, the lower column in the low half.
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t u;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&u, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&u, &v, 4);
  }
  return u;
}

// The accumulators of score n-tiles 2s and 2s+1 (16 x 16) as the A operand of the next mma.
template <class T, int Tiles>
__device__ __forceinline__ void accumulator_as_a(uint32_t (&a)[4], const float (&c)[Tiles][4], int s) {
  a[0] = pack2<T>(c[2 * s][0], c[2 * s][1]);
  a[1] = pack2<T>(c[2 * s][2], c[2 * s][3]);
  a[2] = pack2<T>(c[2 * s + 1][0], c[2 * s + 1][1]);
  a[3] = pack2<T>(c[2 * s + 1][2], c[2 * s + 1][3]);
}

// Rows [row0, row0 + Rows) of a [rows_total, D] matrix into shared memory (row stride D + 8),
// rows past the end zero-filled so they contribute nothing (scores there are also masked).
template <int D, int Rows, int Threads, class T>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t row0, int64_t rows_total, int tid) {
  constexpr int kChunksPerRow = D / 8;
  for (int c = tid; c < Rows * kChunksPerRow; c += Threads) {
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const bool valid = row0 + r < rows_total;
    cp_async16(dst + r * (D + 8) + col, src + (valid ? row0 + r : 0) * D + col, valid);
  }
}

// 16 rows (a warp's share) times 16-column k-step ks of a padded tile as the A operand.
template <int Stride, class T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* tile, int ks, int lane) {
  ldmatrix_x4(a, tile + (lane % 8 + 8 * ((lane / 8) & 1)) * Stride + ks * 16 + 8 * (lane / 16));
}
// B = tile^T for n-tile nt (tile rows nt*8..+7) over k-steps 2kk and 2kk+1 (tile cols kk*32..+31):
// {b0, b1} of k-step 2kk in r[0], r[1]; of k-step 2kk+1 in r[2], r[3].
template <int Stride, class T>
__device__ __forceinline__ void load_b_transposed_tile(uint32_t (&r)[4], const T* tile, int nt, int kk, int lane) {
  ldmatrix_x4(r, tile + (nt * 8 + lane % 8) * Stride + kk * 32 + 8 * (lane / 8));
}
// B = tile (k = tile row, n = tile col) for k-step ks and n-tiles 2dn, 2dn+1 (cols dn*16..+15):
// {b0, b1} of n-tile 2dn in r[0], r[1]; of n-tile 2dn+1 in r[2], r[3].
template <int Stride, class T>
__device__ __forceinline__ void load_b_tile(uint32_t (&r)[4], const T* tile, int ks, int dn, int lane) {
  ldmatrix_x4_trans(r, tile + (ks * 16 + lane % 8 + 8 * ((lane / 8) & 1)) * Stride + dn * 16 + 8 * (lane / 16));
}

constexpr int kFlashThreads = 128;  // 4 warps, 16 rows each

template <int D>
struct ForwardTiles {
  static constexpr int kBlockM = 64, kBlockN = 64, kStride = D + 8;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBlockM + 4 * kBlockN) * kStride * 2;
};

// Block (query block qb, head bh): warp w owns query rows m0 + 16w .. +15 for the whole loop.
template <class T, int D>
__global__ void __launch_bounds__(kFlashThreads) attention_forward_flash(const T* q, const T* k, const T* v, T* out,
                                                                         float* lse, Params p, int num_q_blocks) {
  using Tiles = ForwardTiles<D>;
  constexpr int BM = Tiles::kBlockM, BN = Tiles::kBlockN, S = Tiles::kStride;
  extern __shared__ __align__(16) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = Qs + BM * S;      // two buffers of BN * S
  T* Vs = Ks + 2 * BN * S;  // two buffers of BN * S

  const int qb = static_cast<int>(blockIdx.x % num_q_blocks);
  const int64_t bh = blockIdx.x / num_q_blocks, b = bh / p.heads, h = bh % p.heads;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int64_t Nq = p.query_len, Nk = p.key_len, m0 = static_cast<int64_t>(qb) * BM;
  const T* qbase = q + bh * Nq * D;
  const T* kbase = k + bh * Nk * D;
  const T* vbase = v + bh * Nk * D;
  // Causal: no row of this block sees a key past its last row m0 + BM - 1.
  const int64_t key_end = p.causal ? min(Nk, m0 + BM) : Nk;
  const int num_k_blocks = static_cast<int>((key_end + BN - 1) / BN);

  load_tile<D, BM, kFlashThreads>(Qs, qbase, m0, Nq, tid);
  cp_async_commit();
  if (num_k_blocks > 0) {
    load_tile<D, BN, kFlashThreads>(Ks, kbase, 0, Nk, tid);
    load_tile<D, BN, kFlashThreads>(Vs, vbase, 0, Nk, tid);
  }
  cp_async_commit();

  uint32_t qf[D / 16][4];
  float o[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;
  float m_run[2] = {-kInf, -kInf}, l_run[2] = {0.0f, 0.0f};  // rows g and g + 8; l is this thread's part
  const float scale_log2 = p.scale * kLog2e;                 // softmax in base 2: exp2 is one instruction
  const int64_t warp_row0 = m0 + 16 * warp;

  for (int kb = 0; kb < num_k_blocks; ++kb) {
    const int buf = kb & 1;
    if (kb + 1 < num_k_blocks) {  // prefetch the next K, V block into the other buffer
      load_tile<D, BN, kFlashThreads>(Ks + (buf ^ 1) * BN * S, kbase, static_cast<int64_t>(kb + 1) * BN, Nk, tid);
      load_tile<D, BN, kFlashThreads>(Vs + (buf ^ 1) * BN * S, vbase, static_cast<int64_t>(kb + 1) * BN, Nk, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kb == 0) {
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) load_a<S>(qf[ks], Qs + 16 * warp * S, ks, lane);
    }
    const T* Kb = Ks + buf * BN * S;
    const T* Vb = Vs + buf * BN * S;

    float s[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 32; ++kk) {
        uint32_t r[4];
        load_b_transposed_tile<S>(r, Kb, nt, kk, lane);
        mma16816<T>(s[nt], qf[2 * kk], r[0], r[1]);
        mma16816<T>(s[nt], qf[2 * kk + 1], r[2], r[3]);
      }
    }

    // Scores to the log2 domain; masking is one warp-uniform branch around the whole block, so the
    // unrolled score_bias copies stay out of the hot path (as in attention_hopper.cuh).
    const int64_t n0 = static_cast<int64_t>(kb) * BN;
    if (p.mask != nullptr || p.key_padding != nullptr || n0 + BN > Nk || (p.causal && n0 + BN - 1 > warp_row0)) {
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int64_t row = warp_row0 + g + 8 * (c / 2), col = n0 + nt * 8 + 2 * t + (c & 1);
          float x = s[nt][c] * scale_log2;
          if (col >= Nk) x = -kInf;  // zero-filled padding of the last key block
          else if (row < Nq) x += score_bias(p, b, h, row, col) * kLog2e;
          s[nt][c] = x;
        }
    } else {
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[nt][c] *= scale_log2;
    }

    // Online softmax: the quad (4 lanes) sharing g holds a row; reduce over it with shuffles.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = m_run[r];
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_use = mx == -kInf ? 0.0f : mx;   // a row with nothing visible yet: exp2(-inf) = 0
      const float alpha = exp2f(m_run[r] - m_use);  // 0 while m_run = -inf
      m_run[r] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        s[nt][2 * r] = exp2f(s[nt][2 * r] - m_use);
        s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - m_use);
        sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      l_run[r] = l_run[r] * alpha + sum;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        o[dn][2 * r] *= alpha;
        o[dn][2 * r + 1] *= alpha;
      }
    }

    // O += P V with P straight from the score registers.
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) {
      uint32_t a[4];
      accumulator_as_a<T>(a, s, ks);
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        uint32_t r[4];
        load_b_tile<S>(r, Vb, ks, dn, lane);
        mma16816<T>(o[2 * dn], a, r[0], r[1]);
        mma16816<T>(o[2 * dn + 1], a, r[2], r[3]);
      }
    }
    __syncthreads();  // every warp is done with this buffer before the next prefetch overwrites it
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int64_t row = warp_row0 + g + 8 * r;
    if (row >= Nq) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* orow = out + (bh * Nq + row) * D;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<uint32_t*>(orow + dn * 8 + 2 * t) = pack2<T>(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
    if (t == 0) lse[bh * Nq + row] = l > 0.0f ? (m_run[r] + log2f(l)) * kLn2 : kInf;
  }
}

template <int D>
struct BackwardTiles {
  static constexpr int kBlockM = D <= 64 ? 64 : 32;  // queries per step (registers bound it at D = 128)
  static constexpr int kBlockN = 64;                 // keys per block, 16 per warp
  static constexpr int kStride = D + 8, kDsStride = kBlockM + 8;
  static constexpr size_t kSmemBytes = 4 * kBlockM * sizeof(float) +
                                       (static_cast<size_t>(2 * kBlockN + 4 * kBlockM) * kStride +
                                        static_cast<size_t>(kBlockN) * kDsStride) * 2;
};

// Block (key block, head bh): warp w owns keys n0 + 16w .. +15 and accumulates their dK, dV in
// registers over all query blocks (no atomics). Per query block, computed transposed so the
// warp's keys are the mma rows: S^T = K Q^T, P^T = exp(S^T - lse), dV += P^T dO,
// dP^T = V dO^T, dS^T = P^T (dP^T - D), dK += dS^T Q; then dS^T goes through shared memory and
// dQ += dS K is added to the fp32 accumulator with atomics (blocks of other key blocks race
// there, so the order of the fp32 additions, and dq's last bit, may change from run to run).
template <class T, int D>
__global__ void __launch_bounds__(kFlashThreads)
    attention_backward_flash(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta,
                             float* dq_accum, T* dk, T* dv, Params p, int num_k_blocks) {
  using Tiles = BackwardTiles<D>;
  constexpr int BM = Tiles::kBlockM, BN = Tiles::kBlockN, S = Tiles::kStride, SD = Tiles::kDsStride;
  extern __shared__ __align__(16) unsigned char smem[];
  float* lse_s = reinterpret_cast<float*>(smem);  // [2][BM], log2 domain
  float* delta_s = lse_s + 2 * BM;                // [2][BM]
  T* Ks = reinterpret_cast<T*>(delta_s + 2 * BM);
  T* Vs = Ks + BN * S;
  T* Qs = Vs + BN * S;        // two buffers of BM * S
  T* dOs = Qs + 2 * BM * S;   // two buffers of BM * S
  T* dSt = dOs + 2 * BM * S;  // [BN][BM + 8]: dS^T of the current step

  const int kblock = static_cast<int>(blockIdx.x % num_k_blocks);
  const int64_t bh = blockIdx.x / num_k_blocks, b = bh / p.heads, h = bh % p.heads;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int64_t Nq = p.query_len, Nk = p.key_len, n0 = static_cast<int64_t>(kblock) * BN;
  const T* qbase = q + bh * Nq * D;
  const T* dobase = dout + bh * Nq * D;
  const float scale_log2 = p.scale * kLog2e;

  load_tile<D, BN, kFlashThreads>(Ks, k + bh * Nk * D, n0, Nk, tid);
  load_tile<D, BN, kFlashThreads>(Vs, v + bh * Nk * D, n0, Nk, tid);
  cp_async_commit();

  // Causal: queries before n0 see none of these keys.
  const int q_begin = p.causal ? static_cast<int>(n0 / BM) : 0;
  const int num_q_blocks = static_cast<int>((Nq + BM - 1) / BM);
  auto load_queries = [&](int qi, int buf) {
    const int64_t m0 = static_cast<int64_t>(qi) * BM;
    load_tile<D, BM, kFlashThreads>(Qs + buf * BM * S, qbase, m0, Nq, tid);
    load_tile<D, BM, kFlashThreads>(dOs + buf * BM * S, dobase, m0, Nq, tid);
    for (int i = tid; i < BM; i += kFlashThreads) {  // past Nq: P = exp2(-inf) = 0, D = 0
      const bool valid = m0 + i < Nq;
      lse_s[buf * BM + i] = valid ? lse[bh * Nq + m0 + i] * kLog2e : kInf;
      delta_s[buf * BM + i] = valid ? delta[bh * Nq + m0 + i] : 0.0f;
    }
  };
  if (q_begin < num_q_blocks) load_queries(q_begin, 0);
  cp_async_commit();

  float dka[D / 8][4], dva[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int c = 0; c < 4; ++c) dka[dn][c] = dva[dn][c] = 0.0f;

  const T* Kw = Ks + 16 * warp * S;  // this warp's 16 keys
  const T* Vw = Vs + 16 * warp * S;
  for (int qi = q_begin; qi < num_q_blocks; ++qi) {
    const int buf = (qi - q_begin) & 1;
    if (qi + 1 < num_q_blocks) {
      load_queries(qi + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* Qb = Qs + buf * BM * S;
    const T* dOb = dOs + buf * BM * S;
    const float* lse_b = lse_s + buf * BM;
    const float* delta_b = delta_s + buf * BM;
    const int64_t m0 = static_cast<int64_t>(qi) * BM;

    // S^T = K Q^T (16 keys x BM queries), then P^T = exp(S^T - lse) in place.
    float st[BM / 8][4], dpt[BM / 8][4];
#pragma unroll
    for (int nt = 0; nt < BM / 8; ++nt) st[nt][0] = st[nt][1] = st[nt][2] = st[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 32; ++kk) {
      uint32_t a0[4], a1[4];
      load_a<S>(a0, Kw, 2 * kk, lane);
      load_a<S>(a1, Kw, 2 * kk + 1, lane);
#pragma unroll
      for (int nt = 0; nt < BM / 8; ++nt) {
        uint32_t r[4];
        load_b_transposed_tile<S>(r, Qb, nt, kk, lane);
        mma16816<T>(st[nt], a0, r[0], r[1]);
        mma16816<T>(st[nt], a1, r[2], r[3]);
      }
    }
#pragma unroll
    for (int nt = 0; nt < BM / 8; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int qcol = nt * 8 + 2 * t + (c & 1);
        const int64_t key = n0 + 16 * warp + g + 8 * (c / 2), row = m0 + qcol;
        float prob = 0.0f;  // keys past Nk were zero-filled: their score is 0, not -inf
        if (key < Nk && row < Nq)
          prob = exp2f(st[nt][c] * scale_log2 + score_bias(p, b, h, row, key) * kLog2e - lse_b[qcol]);
        st[nt][c] = prob;
      }
    }

    // dP^T = V dO^T, then dS^T = P^T (dP^T - D) in place.
#pragma unroll
    for (int nt = 0; nt < BM / 8; ++nt) dpt[nt][0] = dpt[nt][1] = dpt[nt][2] = dpt[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 32; ++kk) {
      uint32_t a0[4], a1[4];
      load_a<S>(a0, Vw, 2 * kk, lane);
      load_a<S>(a1, Vw, 2 * kk + 1, lane);
#pragma unroll
      for (int nt = 0; nt < BM / 8; ++nt) {
        uint32_t r[4];
        load_b_transposed_tile<S>(r, dOb, nt, kk, lane);
        mma16816<T>(dpt[nt], a0, r[0], r[1]);
        mma16816<T>(dpt[nt], a1, r[2], r[3]);
      }
    }
#pragma unroll
    for (int nt = 0; nt < BM / 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) dpt[nt][c] = st[nt][c] * (dpt[nt][c] - delta_b[nt * 8 + 2 * t + (c & 1)]);

    // dV += P^T dO and dK += dS^T Q (k = the BM queries).
#pragma unroll
    for (int ks = 0; ks < BM / 16; ++ks) {
      uint32_t pa[4], dsa[4];
      accumulator_as_a<T>(pa, st, ks);
      accumulator_as_a<T>(dsa, dpt, ks);
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        uint32_t r[4];
        load_b_tile<S>(r, dOb, ks, dn, lane);
        mma16816<T>(dva[2 * dn], pa, r[0], r[1]);
        mma16816<T>(dva[2 * dn + 1], pa, r[2], r[3]);
        load_b_tile<S>(r, Qb, ks, dn, lane);
        mma16816<T>(dka[2 * dn], dsa, r[0], r[1]);
        mma16816<T>(dka[2 * dn + 1], dsa, r[2], r[3]);
      }
    }

    // dS^T to shared memory as [key][query], for dQ = dS K across all four warps' keys.
#pragma unroll
    for (int nt = 0; nt < BM / 8; ++nt) {
      *reinterpret_cast<uint32_t*>(dSt + (16 * warp + g) * SD + nt * 8 + 2 * t) = pack2<T>(dpt[nt][0], dpt[nt][1]);
      *reinterpret_cast<uint32_t*>(dSt + (16 * warp + g + 8) * SD + nt * 8 + 2 * t) =
          pack2<T>(dpt[nt][2], dpt[nt][3]);
    }
    __syncthreads();

    // dQ rows: warp w takes m-tile w / WPM and head-dim columns [d0, d0 + DW).
    constexpr int WPM = 4 / (BM / 16), DW = D / WPM;
    const int mt = warp / WPM, d0 = (warp % WPM) * DW;
    float dqa[DW / 8][4];
#pragma unroll
    for (int dn = 0; dn < DW / 8; ++dn) dqa[dn][0] = dqa[dn][1] = dqa[dn][2] = dqa[dn][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) {
      // A = dS (m = query, k = key) read transposed out of dS^T: matrices (keys +0/+8) x (queries +0/+8).
      uint32_t a[4];
      ldmatrix_x4_trans(a, dSt + (ks * 16 + lane % 8 + 8 * ((lane / 8) >> 1)) * SD + mt * 16 + 8 * ((lane / 8) & 1));
#pragma unroll
      for (int dn = 0; dn < DW / 16; ++dn) {
        uint32_t r[4];
        load_b_tile<S>(r, Ks + d0, ks, dn, lane);
        mma16816<T>(dqa[2 * dn], a, r[0], r[1]);
        mma16816<T>(dqa[2 * dn + 1], a, r[2], r[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row = m0 + mt * 16 + g + 8 * r;
      if (row >= Nq) continue;
      float* dst = dq_accum + (bh * Nq + row) * D + d0 + 2 * t;
#pragma unroll
      for (int dn = 0; dn < DW / 8; ++dn) {
        atomicAdd(dst + dn * 8, dqa[dn][2 * r] * p.scale);
        atomicAdd(dst + dn * 8 + 1, dqa[dn][2 * r + 1] * p.scale);
      }
    }
    __syncthreads();  // Qs/dOs of this buffer and dSt are rewritten next step
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t key = n0 + 16 * warp + g + 8 * r;
    if (key >= Nk) continue;
    T* dkrow = dk + (bh * Nk + key) * D;
    T* dvrow = dv + (bh * Nk + key) * D;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      *reinterpret_cast<uint32_t*>(dkrow + dn * 8 + 2 * t) =
          pack2<T>(dka[dn][2 * r] * p.scale, dka[dn][2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dvrow + dn * 8 + 2 * t) = pack2<T>(dva[dn][2 * r], dva[dn][2 * r + 1]);
    }
  }
}

#include "attention_hopper.cuh"
#include "attention_hopper_bwd.cuh"

template <class T>
__global__ void convert_from_float(const float* src, T* dst, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = from_float<T>(src[i]);
}

// ------------------------------------------------------------------------------------------
// LongNet dilated gather/scatter, one thread per element (the formula is in attention.hpp).
struct DilatedIndex {
  int64_t B, N, H, D, w, r, S, G, kept, sb, sn, sh;
};

template <class T>
__global__ void dilated_gather_kernel(const T* sparse, T* dense, DilatedIndex x) {
  const int64_t total = x.B * x.S * x.H * x.kept * x.D;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = idx % x.D, l = (idx / x.D) % x.kept, h = (idx / (x.D * x.kept)) % x.H;
    const int64_t bs = idx / (x.D * x.kept * x.H), b = bs / x.S, s = bs % x.S;
    const int64_t pos = l * x.r + h / x.G, n = s * x.w + pos;
    dense[idx] = (pos < x.w && n < x.N) ? sparse[b * x.sb + n * x.sn + h * x.sh + d] : from_float<T>(0.0f);
  }
}

template <class T>
__global__ void dilated_scatter_kernel(const T* dense, T* sparse, DilatedIndex x, float fill) {
  const int64_t total = x.B * x.N * x.H * x.D;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = idx % x.D, h = (idx / x.D) % x.H, n = (idx / (x.D * x.H)) % x.N, b = idx / (x.D * x.H * x.N);
    const int64_t s = n / x.w, pos = n % x.w, offset = h / x.G;
    const bool kept = pos >= offset && (pos - offset) % x.r == 0;
    const int64_t l = (pos - offset) / x.r;
    sparse[b * x.sb + n * x.sn + h * x.sh + d] =
        kept ? dense[(((b * x.S + s) * x.H + h) * x.kept + l) * x.D + d] : from_float<T>(fill);
  }
}

// ------------------------------------------------------------------------------------------
// Host side.
unsigned grid_for(int64_t threads_needed, int block) {
  const int64_t blocks = (threads_needed + block - 1) / block;
  return static_cast<unsigned>(blocks < 65536 * 16 ? blocks : 65536 * 16);  // grid-stride loops cover the rest
}

unsigned rows_grid(int64_t rows, const char* op) {
  const int64_t blocks = (rows * 32 + kReferenceThreads - 1) / kReferenceThreads;
  HG_CHECK(blocks < (int64_t{1} << 31), op, "expected fewer than 2^31 thread blocks, got ", blocks);
  return static_cast<unsigned>(blocks);
}

Params make_params(const AttentionShape& s, const AttentionOptions& o) {
  Params p{};
  p.batch = s.batch, p.heads = s.heads, p.query_len = s.query_len, p.key_len = s.key_len;
  p.head_dim = static_cast<int>(s.head_dim);
  p.scale = o.scale != 0.0f ? o.scale : 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  p.causal = o.causal;
  p.mask = o.mask;
  p.mask_sb = o.mask_stride_b, p.mask_sh = o.mask_stride_h, p.mask_sq = o.mask_stride_q, p.mask_sk = o.mask_stride_k;
  p.key_padding = o.key_padding;
  return p;
}

void check_shape(const AttentionShape& s, const char* op) {
  HG_CHECK(s.batch >= 0 && s.heads >= 0 && s.query_len >= 0 && s.key_len >= 0, op,
           "expected non-negative sizes, got batch ", s.batch, ", heads ", s.heads, ", query_len ", s.query_len,
           ", key_len ", s.key_len);
  HG_CHECK(s.head_dim >= 1 && s.head_dim <= 32 * kChunks, op, "expected head_dim in [1, ", 32 * kChunks, "], got ",
           s.head_dim);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class T>
bool flash_applies(const AttentionShape& s, std::initializer_list<const void*> pointers) {
  if constexpr (std::is_same_v<T, float>) {
    return false;
  } else {
    const bool dim_ok = s.head_dim == 32 || s.head_dim == 64 || s.head_dim == 96 || s.head_dim == 128;
    bool ok = dim_ok;
    for (const void* ptr : pointers) ok = ok && aligned16(ptr);
    return ok;
  }
}

template <class T>
bool use_flash(const AttentionShape& s, const AttentionOptions& o, std::initializer_list<const void*> pointers,
               const char* op) {
  const bool applies = flash_applies<T>(s, pointers);
  if (o.kernel == AttentionKernel::flash || o.kernel == AttentionKernel::flash_v1)
    HG_CHECK(applies, op,
             "expected bf16/fp16 with head_dim 32, 64, 96 or 128 and 16-byte aligned pointers for the flash kernel, "
             "got ",
             dtype_name<T>(), " with head_dim ", s.head_dim);
  return o.kernel != AttentionKernel::reference && applies;
}

template <class DT, int D>
void launch_forward_flash(const DT* q, const DT* k, const DT* v, DT* out, float* lse, const Params& p,
                          cudaStream_t stream) {
  using Tiles = ForwardTiles<D>;
  const int64_t num_q_blocks = (p.query_len + Tiles::kBlockM - 1) / Tiles::kBlockM;
  const int64_t blocks = num_q_blocks * p.batch * p.heads;
  HG_CHECK(blocks < (int64_t{1} << 31), "attention_forward", "expected fewer than 2^31 thread blocks, got ", blocks);
  auto kernel = attention_forward_flash<DT, D>;
  HG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(Tiles::kSmemBytes)));
  kernel<<<static_cast<unsigned>(blocks), kFlashThreads, Tiles::kSmemBytes, stream>>>(q, k, v, out, lse, p,
                                                                                      static_cast<int>(num_q_blocks));
  HG_CUDA_CHECK_LAUNCH("attention_forward_flash");
}

// Per device: 0 not asked yet, 1 no, 2 yes. The marker kernel's static shared memory says
// whether the code loaded for this device was compiled for sm_90a (no launch, no sync, so it is
// safe during stream capture).
bool hopper_compiled_for_current_device() {
  static std::atomic<int> cache[64] = {};
  int device = 0;
  HG_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= 64) return false;
  if (cache[device].load(std::memory_order_relaxed) == 0) {
    cudaDeviceProp prop{};
    HG_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    cudaFuncAttributes marker{}, twin{};
    HG_CUDA_CHECK(cudaFuncGetAttributes(&marker, hopper_marker));
    HG_CUDA_CHECK(cudaFuncGetAttributes(&twin, hopper_marker_twin));
    const bool yes = prop.major == 9 && prop.minor == 0 && marker.sharedSizeBytes >= twin.sharedSizeBytes + 1024;
    cache[device].store(yes ? 2 : 1, std::memory_order_relaxed);
  }
  return cache[device].load(std::memory_order_relaxed) == 2;
}

template <class DT, int D>
void launch_forward_hopper(const DT* q, const DT* k, const DT* v, DT* out, float* lse, const Params& p,
                           cudaStream_t stream) {
  using Tiles = HopperForwardTiles<D>;
  const int64_t num_q_blocks = (p.query_len + Tiles::kBlockM - 1) / Tiles::kBlockM;
  const int64_t blocks = num_q_blocks * p.batch * p.heads;
  HG_CHECK(blocks < (int64_t{1} << 31), "attention_forward", "expected fewer than 2^31 thread blocks, got ", blocks);
  auto kernel = attention_forward_hopper<DT, D>;
  HG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(Tiles::kSmemBytes)));
  kernel<<<static_cast<unsigned>(blocks), kHopperThreads, Tiles::kSmemBytes, stream>>>(
      q, k, v, out, lse, p, static_cast<int>(num_q_blocks));
  HG_CUDA_CHECK_LAUNCH("attention_forward_hopper");
}

template <class DT, int D>
void launch_backward_flash(const DT* q, const DT* k, const DT* v, const DT* dout, const float* lse,
                           const float* delta, float* dq_accum, DT* dk, DT* dv, const Params& p,
                           cudaStream_t stream) {
  using Tiles = BackwardTiles<D>;
  const int64_t num_k_blocks = (p.key_len + Tiles::kBlockN - 1) / Tiles::kBlockN;
  const int64_t blocks = num_k_blocks * p.batch * p.heads;
  HG_CHECK(blocks < (int64_t{1} << 31), "attention_backward", "expected fewer than 2^31 thread blocks, got ", blocks);
  auto kernel = attention_backward_flash<DT, D>;
  HG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(Tiles::kSmemBytes)));
  kernel<<<static_cast<unsigned>(blocks), kFlashThreads, Tiles::kSmemBytes, stream>>>(
      q, k, v, dout, lse, delta, dq_accum, dk, dv, p, static_cast<int>(num_k_blocks));
  HG_CUDA_CHECK_LAUNCH("attention_backward_flash");
}

template <class DT, int D>
void launch_backward_hopper(const DT* q, const DT* k, const DT* v, const DT* dout, const float* lse,
                            const float* delta, float* dq_accum, DT* dk, DT* dv, const Params& p,
                            cudaStream_t stream) {
  using Tiles = HopperBackwardTiles<D>;
  const int64_t num_k_blocks = (p.key_len + Tiles::kBlockN - 1) / Tiles::kBlockN;
  const int64_t blocks = num_k_blocks * p.batch * p.heads;
  HG_CHECK(blocks < (int64_t{1} << 31), "attention_backward", "expected fewer than 2^31 thread blocks, got ", blocks);
  auto kernel = attention_backward_hopper<DT, D>;
  HG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(Tiles::kSmemBytes)));
  kernel<<<static_cast<unsigned>(blocks), kHopperThreads, Tiles::kSmemBytes, stream>>>(
      q, k, v, dout, lse, delta, dq_accum, dk, dv, p, static_cast<int>(num_k_blocks));
  HG_CUDA_CHECK_LAUNCH("attention_backward_hopper");
}

// HISTOGRAD_ATTENTION_BWD=v1 sends flash's backward to flash_v1's kernel (read once).
bool hopper_backward_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("HISTOGRAD_ATTENTION_BWD");
    return env == nullptr || std::strcmp(env, "v1") != 0;
  }();
  return enabled && hopper_compiled_for_current_device();
}

int64_t round_up4(int64_t n) { return (n + 3) / 4 * 4; }

}  // namespace

template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, float* logsumexp, const AttentionShape& shape,
                       const AttentionOptions& options, void* stream) {
  const char* op = "attention_forward";
  check_shape(shape, op);
  const int64_t rows = shape.batch * shape.heads * shape.query_len;
  const bool flash = use_flash<T>(shape, options, {q, k, v, out}, op);
  if (rows == 0) return;
  using DT = typename Native<T>::type;
  const DT *dq = reinterpret_cast<const DT*>(q), *dk = reinterpret_cast<const DT*>(k),
           *dv = reinterpret_cast<const DT*>(v);
  DT* dout = reinterpret_cast<DT*>(out);
  const Params p = make_params(shape, options);
  cudaStream_t s = stream_or_current(stream);
  if constexpr (!std::is_same_v<T, float>) {
    // The Hopper forward only at D128: at D64 it measured slower than v1 at every length on an
    // H200 (GPU run 3: 42/87/93 against 57/114/121 TFLOP/s at N 197/1024/4096; RESULTS.md).
    if (flash && options.kernel != AttentionKernel::flash_v1 && shape.head_dim == 128 &&
        hopper_compiled_for_current_device())
      return launch_forward_hopper<DT, 128>(dq, dk, dv, dout, logsumexp, p, s);
    if (flash) {
      switch (shape.head_dim) {
        case 32: return launch_forward_flash<DT, 32>(dq, dk, dv, dout, logsumexp, p, s);
        case 64: return launch_forward_flash<DT, 64>(dq, dk, dv, dout, logsumexp, p, s);
        case 96: return launch_forward_flash<DT, 96>(dq, dk, dv, dout, logsumexp, p, s);
        case 128: return launch_forward_flash<DT, 128>(dq, dk, dv, dout, logsumexp, p, s);
        default: break;
      }
    }
  }
  attention_forward_reference<DT><<<rows_grid(rows, op), kReferenceThreads, 0, s>>>(dq, dk, dv, dout, logsumexp, p);
  HG_CUDA_CHECK_LAUNCH("attention_forward_reference");
}

bool attention_hopper_available() { return hopper_compiled_for_current_device(); }
bool attention_hopper_backward_available() { return hopper_backward_enabled(); }

size_t attention_backward_workspace_bytes(const AttentionShape& shape) {
  const int64_t rows = shape.batch * shape.heads * shape.query_len;
  return static_cast<size_t>(round_up4(rows) + rows * shape.head_dim) * sizeof(float);
}

template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const T* dout, const float* logsumexp,
                        T* dq, T* dk, T* dv, void* workspace, const AttentionShape& shape,
                        const AttentionOptions& options, void* stream) {
  const char* op = "attention_backward";
  check_shape(shape, op);
  HG_CHECK(workspace != nullptr && aligned16(workspace), op,
           "expected a 16-byte aligned workspace of attention_backward_workspace_bytes(shape) bytes, got ", workspace);
  const bool flash = use_flash<T>(shape, options, {q, k, v, out, dout, dq, dk, dv}, op);
  using DT = typename Native<T>::type;
  const DT *q_ = reinterpret_cast<const DT*>(q), *k_ = reinterpret_cast<const DT*>(k),
           *v_ = reinterpret_cast<const DT*>(v), *o_ = reinterpret_cast<const DT*>(out),
           *do_ = reinterpret_cast<const DT*>(dout);
  DT *dq_ = reinterpret_cast<DT*>(dq), *dk_ = reinterpret_cast<DT*>(dk), *dv_ = reinterpret_cast<DT*>(dv);
  const Params p = make_params(shape, options);
  cudaStream_t s = stream_or_current(stream);
  const int64_t q_rows = shape.batch * shape.heads * shape.query_len;
  const int64_t k_rows = shape.batch * shape.heads * shape.key_len;
  float* delta = static_cast<float*>(workspace);
  float* dq_accum = delta + round_up4(q_rows);
  if (q_rows > 0) {
    attention_backward_preprocess<DT><<<rows_grid(q_rows, op), kReferenceThreads, 0, s>>>(o_, do_, delta, q_rows,
                                                                                          p.head_dim);
    HG_CUDA_CHECK_LAUNCH("attention_backward_preprocess");
  }
  if constexpr (!std::is_same_v<T, float>) {
    if (flash && k_rows > 0) {
      if (q_rows > 0)
        HG_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, static_cast<size_t>(q_rows * shape.head_dim) * sizeof(float), s));
      const bool hopper = options.kernel != AttentionKernel::flash_v1 &&
                          (shape.head_dim == 64 || shape.head_dim == 128) && hopper_backward_enabled();
      switch (hopper ? -shape.head_dim : shape.head_dim) {
        case -64: launch_backward_hopper<DT, 64>(q_, k_, v_, do_, logsumexp, delta, dq_accum, dk_, dv_, p, s); break;
        case -128: launch_backward_hopper<DT, 128>(q_, k_, v_, do_, logsumexp, delta, dq_accum, dk_, dv_, p, s); break;
        case 32: launch_backward_flash<DT, 32>(q_, k_, v_, do_, logsumexp, delta, dq_accum, dk_, dv_, p, s); break;
        case 64: launch_backward_flash<DT, 64>(q_, k_, v_, do_, logsumexp, delta, dq_accum, dk_, dv_, p, s); break;
        case 96: launch_backward_flash<DT, 96>(q_, k_, v_, do_, logsumexp, delta, dq_accum, dk_, dv_, p, s); break;
        case 128: launch_backward_flash<DT, 128>(q_, k_, v_, do_, logsumexp, delta, dq_accum, dk_, dv_, p, s); break;
        default: fail(op, "unreachable head_dim ", shape.head_dim);
      }
      if (q_rows > 0) {
        const int64_t n = q_rows * shape.head_dim;
        convert_from_float<DT><<<grid_for(n, 256), 256, 0, s>>>(dq_accum, dq_, n);
        HG_CUDA_CHECK_LAUNCH("attention_backward convert dq");
      }
      return;
    }
  }
  // Reference path (also flash with key_len 0: dq = 0 comes from the dq kernel's empty loop).
  if (q_rows > 0) {
    attention_backward_dq_reference<DT>
        <<<rows_grid(q_rows, op), kReferenceThreads, 0, s>>>(q_, k_, v_, do_, logsumexp, delta, dq_, p);
    HG_CUDA_CHECK_LAUNCH("attention_backward_dq_reference");
  }
  if (k_rows > 0) {
    attention_backward_dkdv_reference<DT>
        <<<rows_grid(k_rows, op), kReferenceThreads, 0, s>>>(q_, k_, v_, do_, logsumexp, delta, dk_, dv_, p);
    HG_CUDA_CHECK_LAUNCH("attention_backward_dkdv_reference");
  }
}

namespace {
DilatedIndex dilated_index(const DilatedShape& s, const char* op) {
  HG_CHECK(s.batch >= 0 && s.seq_len >= 0 && s.heads >= 1 && s.head_dim >= 1, op,
           "expected batch, seq_len >= 0 and heads, head_dim >= 1, got batch ", s.batch, ", seq_len ", s.seq_len,
           ", heads ", s.heads, ", head_dim ", s.head_dim);
  HG_CHECK(s.segment >= 1 && s.dilation >= 1, op, "expected segment >= 1 and dilation >= 1, got segment ", s.segment,
           " and dilation ", s.dilation);
  DilatedIndex x{};
  x.B = s.batch, x.N = s.seq_len, x.H = s.heads, x.D = s.head_dim;
  x.w = s.eff_segment() > 0 ? s.eff_segment() : 1;
  x.r = s.dilation;
  x.S = s.segments();
  x.G = (s.heads + s.dilation - 1) / s.dilation;
  x.kept = s.kept();
  x.sb = s.stride_b, x.sn = s.stride_n, x.sh = s.stride_h;
  return x;
}
}  // namespace

template <class T>
void dilated_gather(const T* sparse, T* dense, const DilatedShape& shape, void* stream) {
  const DilatedIndex x = dilated_index(shape, "dilated_gather");
  const int64_t total = x.B * x.S * x.H * x.kept * x.D;
  if (total == 0) return;
  using DT = typename Native<T>::type;
  dilated_gather_kernel<DT><<<grid_for(total, 256), 256, 0, stream_or_current(stream)>>>(
      reinterpret_cast<const DT*>(sparse), reinterpret_cast<DT*>(dense), x);
  HG_CUDA_CHECK_LAUNCH("dilated_gather");
}

template <class T>
void dilated_scatter(const T* dense, T* sparse, const DilatedShape& shape, float fill, void* stream) {
  const DilatedIndex x = dilated_index(shape, "dilated_scatter");
  const int64_t total = x.B * x.N * x.H * x.D;
  if (total == 0) return;
  using DT = typename Native<T>::type;
  dilated_scatter_kernel<DT><<<grid_for(total, 256), 256, 0, stream_or_current(stream)>>>(
      reinterpret_cast<const DT*>(dense), reinterpret_cast<DT*>(sparse), x, fill);
  HG_CUDA_CHECK_LAUNCH("dilated_scatter");
}

#define HG_ATTENTION_INSTANTIATE(T)                                                                                 \
  template void attention_forward<T>(const T*, const T*, const T*, T*, float*, const AttentionShape&,              \
                                     const AttentionOptions&, void*);                                              \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const float*, T*, T*, T*,  \
                                      void*, const AttentionShape&, const AttentionOptions&, void*);               \
  template void dilated_gather<T>(const T*, T*, const DilatedShape&, void*);                                       \
  template void dilated_scatter<T>(const T*, T*, const DilatedShape&, float, void*);
HG_ATTENTION_INSTANTIATE(float)
HG_ATTENTION_INSTANTIATE(bfloat16)
HG_ATTENTION_INSTANTIATE(histograd::half)
#undef HG_ATTENTION_INSTANTIATE

}  // namespace histograd::cuda
