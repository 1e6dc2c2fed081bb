// Packed float GEMM with an AVX-512 microkernel, in the blocked scheme of Goto & van de Geijn
// ("Anatomy of high-performance matrix multiplication", 2008) and BLIS: B is packed into kc x nr
// panels that stay in L2, each mr x kc micro-panel of A is packed once and stays in L1 while the
// kernel sweeps the B panels. Compiled in every x86 build through target attributes and chosen at
// run time; the k-blocking depends on K alone, so the rounding depends on the shape alone.
#pragma once
#include <algorithm>
#include <cstdint>

#include "buffer.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HISTOGRAD_PACKED_SGEMM 1
#define HISTOGRAD_AVX512_TARGET __attribute__((target("avx512f,avx512vl,fma")))
#endif

namespace histograd::cpu::packed {

// Rows of a micro-tile, and columns as a count of 16-float zmm vectors: 14 x 32 keeps 28
// accumulators, two B vectors and one broadcast of A in the 32 zmm registers.
inline constexpr int64_t kMr = 14;
inline constexpr int64_t kVecs = 2;
inline constexpr int64_t kNr = 16 * kVecs;
// Depth of one packed block (A micro-panel 14 x 512 floats = 28 KB in L1) and size of the packed
// B block (768 KB of a 1 MB L2); both picked by timing the ViT shapes.
inline constexpr int64_t kKc = 512;
inline constexpr int64_t kBBlockFloats = 196608;

// K split into equal blocks of at most kKc: a function of K alone, hence the same summation
// order for every tile, thread count and buffer address.
inline int64_t depth_block(int64_t K) {
  const int64_t blocks = std::max<int64_t>(1, (K + kKc - 1) / kKc);
  return (K + blocks - 1) / blocks;
}

// Columns of one packed B block at depth kc: as many whole panels as fill kBBlockFloats.
inline int64_t block_width(int64_t kc) { return std::max<int64_t>(kNr, kBBlockFloats / std::max<int64_t>(kc, 1) / kNr * kNr); }

#ifdef HISTOGRAD_PACKED_SGEMM

inline bool avx512_available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("fma");
  return ok;
}

// Packs rows [0, m) x depth [0, kc) of A (m <= kMr) as dst[p * kMr + r], zero rows past m.
HISTOGRAD_AVX512_TARGET inline void pack_a(const float* A, bool col_major, int64_t lda, int64_t m, int64_t kc, float* dst) {
  if (col_major) {
    for (int64_t p = 0; p < kc; ++p, dst += kMr) {
      const float* src = A + p * lda;
      int64_t r = 0;
      for (; r < m; ++r) dst[r] = src[r];
      for (; r < kMr; ++r) dst[r] = 0.0f;
    }
  } else {
    for (int64_t r = 0; r < m; ++r) {
      const float* src = A + r * lda;
      for (int64_t p = 0; p < kc; ++p) dst[p * kMr + r] = src[p];
    }
    for (int64_t r = m; r < kMr; ++r)
      for (int64_t p = 0; p < kc; ++p) dst[p * kMr + r] = 0.0f;
  }
}

// Packs depth [0, kc) x columns [0, n) of B as panels of kNr columns, panel j at dst + j * kc *
// kNr holding element (p, c) at p * kNr + c; columns past n are zero.
HISTOGRAD_AVX512_TARGET inline void pack_b(const float* B, bool col_major, int64_t ldb, int64_t kc, int64_t n, float* dst) {
  for (int64_t j0 = 0; j0 < n; j0 += kNr, dst += kc * kNr) {
    const int64_t w = std::min(kNr, n - j0);
    if (col_major) {
      for (int64_t c = 0; c < w; ++c) {
        const float* src = B + (j0 + c) * ldb;
        for (int64_t p = 0; p < kc; ++p) dst[p * kNr + c] = src[p];
      }
      for (int64_t c = w; c < kNr; ++c)
        for (int64_t p = 0; p < kc; ++p) dst[p * kNr + c] = 0.0f;
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = B + p * ldb + j0;
        float* d = dst + p * kNr;
        int64_t c = 0;
        for (; c < w; ++c) d[c] = src[c];
        for (; c < kNr; ++c) d[c] = 0.0f;
      }
    }
  }
}

// C[0:m, 0:n] = alpha * acc (overwrite) or += alpha * acc, acc = a_panel * b_panel over depth kc.
// Padding rows/columns of the packed panels are zero, so the kernel always runs the full 14 x 32
// tile and only the stores are cut to m x n (columns by mask).
HISTOGRAD_AVX512_TARGET inline void micro_kernel(int64_t kc, const float* a, const float* b, float* C, int64_t ldc,
                                                 int64_t m, int64_t n, float alpha, bool overwrite) {
  __m512 acc[kMr][kVecs];
#pragma GCC unroll 16
  for (int r = 0; r < kMr; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, a += kMr, b += kNr) {
    __m512 bv[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < kMr; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r]);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
  __mmask16 mask[kVecs];
  for (int v = 0; v < kVecs; ++v) {
    const int64_t left = std::clamp<int64_t>(n - 16 * v, 0, 16);
    mask[v] = static_cast<__mmask16>(left == 16 ? 0xFFFFu : (1u << left) - 1u);
  }
#pragma GCC unroll 16
  for (int r = 0; r < kMr; ++r) {
    if (r >= m) break;
    float* c = C + r * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) {
      const __m512 old = overwrite ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], c + 16 * v);
      _mm512_mask_storeu_ps(c + 16 * v, mask[v], _mm512_fmadd_ps(va, acc[r][v], old));
    }
  }
}

// C (+)= alpha A B for one serial product through the packed blocks. `a_pack` must hold kMr * kc
// floats and `b_pack` kc * round_up(min(block_width(kc), N), kNr), both 64-byte aligned.
HISTOGRAD_AVX512_TARGET inline void sgemm_avx512(int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                                                 bool a_col, int64_t lda, const float* B, bool b_col, int64_t ldb,
                                                 float* C, int64_t ldc, bool accumulate, float* a_pack,
                                                 float* b_pack) {
  const int64_t kc_max = depth_block(K), nc_max = block_width(kc_max);
  for (int64_t jc = 0; jc < N; jc += nc_max) {
    const int64_t nc = std::min(nc_max, N - jc);
    for (int64_t pc = 0; pc < K; pc += kc_max) {
      const int64_t kc = std::min(kc_max, K - pc);
      const bool overwrite = !accumulate && pc == 0;
      pack_b(B + (b_col ? jc * ldb + pc : pc * ldb + jc), b_col, ldb, kc, nc, b_pack);
      for (int64_t ic = 0; ic < M; ic += kMr) {
        const int64_t m = std::min(kMr, M - ic);
        pack_a(A + (a_col ? pc * lda + ic : ic * lda + pc), a_col, lda, m, kc, a_pack);
        for (int64_t jr = 0; jr < nc; jr += kNr)
          micro_kernel(kc, a_pack, b_pack + (jr / kNr) * kc * kNr, C + ic * ldc + jc + jr, ldc, m,
                       std::min(kNr, nc - jr), alpha, overwrite);
      }
    }
  }
}

// The packed product when this CPU has AVX-512 (false: the caller takes another path). Scratch
// lives per thread and grows once, so no product allocates after the first.
inline bool sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, bool a_col, int64_t lda,
                  const float* B, bool b_col, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (!avx512_available()) return false;
  // AlignedBuffer guarantees only Eigen's packet alignment (16 bytes without -mavx512f), so both
  // areas are placed at 64-byte boundaries inside one buffer by hand.
  thread_local AlignedBuffer<float> scratch;
  const int64_t kc = depth_block(K), nc_panels = (std::min(block_width(kc), N) + kNr - 1) / kNr;
  const int64_t a_need = (kMr * kc + 15) / 16 * 16, b_need = kc * nc_panels * kNr;
  const size_t need = static_cast<size_t>(a_need + b_need + 16);
  if (scratch.size() < need) scratch.resize(need);
  const auto base = reinterpret_cast<std::uintptr_t>(scratch.data());
  float* a_pack = scratch.data() + ((64 - base % 64) % 64) / sizeof(float);
  sgemm_avx512(M, N, K, alpha, A, a_col, lda, B, b_col, ldb, C, ldc, accumulate, a_pack, a_pack + a_need);
  return true;
}

#else

inline bool avx512_available() { return false; }
inline bool sgemm(int64_t, int64_t, int64_t, float, const float*, bool, int64_t, const float*, bool, int64_t, float*,
                  int64_t, bool) {
  return false;
}

#endif

// A split of C into `parts` bands of whole micro-tiles, by rows when C is at least as tall as it
// is wide, else by columns. Each element's sum runs the same way in whichever band it falls, so
// the split may follow the thread count without changing a bit; few big bands pack B (or A)
// fewer times than the shape-fixed tiles Eigen needs.
struct Split {
  bool by_rows = true;
  int64_t parts = 1, step = 0;
  Split(int64_t M, int64_t N, int64_t want) {
    by_rows = M >= N;
    const int64_t extent = by_rows ? M : N, unit = by_rows ? kMr : kNr;
    const int64_t units = (extent + unit - 1) / unit;
    parts = std::clamp<int64_t>(want, 1, std::max<int64_t>(units, 1));
    step = (units + parts - 1) / parts * unit;
    parts = (extent + step - 1) / step;
  }
};

// Band `part` of C (+)= alpha A B under `split`.
inline void sgemm_part(const Split& split, int64_t part, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                       bool a_col, int64_t lda, const float* B, bool b_col, int64_t ldb, float* C, int64_t ldc,
                       bool accumulate) {
  const int64_t start = part * split.step;
  if (split.by_rows)
    sgemm(std::min(split.step, M - start), N, K, alpha, A + (a_col ? start : start * lda), a_col, lda, B, b_col, ldb,
          C + start * ldc, ldc, accumulate);
  else
    sgemm(M, std::min(split.step, N - start), K, alpha, A, a_col, lda, B + (b_col ? start * ldb : start), b_col, ldb,
          C + start, ldc, accumulate);
}

}  // namespace histograd::cpu::packed
