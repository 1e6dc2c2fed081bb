// Hopper (sm_90a) attention backward for cuda/attention.cu, included after attention_hopper.cuh
// (it reuses its swizzled tiles, descriptors and cp.async loader). FlashAttention-2's backward
// (Dao 2023, Algorithm 2: one CTA per key block, dK and dV in registers, dQ through fp32 atomics)
// laid out for warpgroup MMAs as FlashAttention-3 describes (Shah et al. 2024, §3 and Appendix
// B): everything computed transposed so a warpgroup's 64 keys are the MMA rows, S^T = K Q^T and
// dP^T = V dO^T with both operands from shared memory, P^T and dS^T as register A operands of
// dV += P^T dO and dK += dS^T Q, and dS^T through shared memory for dQ = dS K.
#pragma once

__device__ __forceinline__ void cp_async4_shared(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0) : "memory");
}

// x, with the compiler no longer knowing its value: a descriptor base passed through this inside
// the loop is rebuilt there with one add per k-step, instead of every k-step's descriptor being
// hoisted out of the loop into registers of its own (64 registers; it spilled at D = 128).
__device__ __forceinline__ uint64_t opaque(uint64_t x) {
  asm volatile("" : "+l"(x));
  return x;
}

template <int D>
struct HopperBackwardTiles {
  // 128 keys per CTA (64 per warpgroup), 64 queries per step: dK and dV hold D accumulator
  // registers per thread, S^T and dP^T 32 each (128 queries at D = 64 spilled).
  static constexpr int kBlockN = 128, kBlockM = 64, kStages = 2;
  static constexpr uint32_t kTileKV = kBlockN * D * 2, kTileQ = kBlockM * D * 2, kTileDs = kBlockN * kBlockM * 2;
  static constexpr uint32_t kStats = 2 * kStages * kBlockM * 4;  // lse and delta per stage
  static constexpr size_t kSmemBytes = 2 * kTileKV + 2 * kStages * kTileQ + kTileDs + kStats + 1024;
};

// Block (key block kblock, head bh). Warpgroup wg owns keys n0 + 64 wg .. +63; warp wl of it keys
// n0 + 64 wg + 16 wl .. +15, in the wgmma accumulator layout (rows = keys, columns = queries).
template <class T, int D>
__global__ void __launch_bounds__(kHopperThreads, 1)
    attention_backward_hopper(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                              const float* delta, float* dq_accum, T* dk, T* dv, Params p, int num_k_blocks) {
#if defined(HG_ATTENTION_HOPPER)
  static_assert(D == 64 || D == 128, "the Hopper backward covers head dims 64 and 128");
  using Tiles = HopperBackwardTiles<D>;
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  constexpr int BM = Tiles::kBlockM, BN = Tiles::kBlockN, kStages = Tiles::kStages;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = shared_address(smem_raw), base = (raw + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  const uint32_t Ks = base, Vs = Ks + Tiles::kTileKV, Qs = Vs + Tiles::kTileKV,
                 dOs = Qs + kStages * Tiles::kTileQ, dSt = dOs + kStages * Tiles::kTileQ;
  unsigned char* const dst_ptr = smem + (dSt - base);
  const uint32_t stats_s = dSt + Tiles::kTileDs;  // [stage][lse BM, delta BM], lse natural log
  const float* const stats = reinterpret_cast<const float*>(dst_ptr + Tiles::kTileDs);

  const int kblock = static_cast<int>(blockIdx.x % num_k_blocks);
  const int64_t bh = blockIdx.x / num_k_blocks, b = bh / p.heads, h = bh % p.heads;
  const int tid = threadIdx.x, warp = tid / 32, wg = warp / 4, wl = warp % 4, lane = tid % 32, g = lane / 4,
            t = lane % 4;
  const int64_t Nq = p.query_len, Nk = p.key_len, n0 = static_cast<int64_t>(kblock) * BN;
  const T* qbase = q + bh * Nq * D;
  const T* dobase = dout + bh * Nq * D;
  const float scale_log2 = p.scale * kLog2e;

  load_tile_swizzled<D, BN, kHopperThreads>(Ks, k + bh * Nk * D, n0, Nk, tid);
  load_tile_swizzled<D, BN, kHopperThreads>(Vs, v + bh * Nk * D, n0, Nk, tid);

  // Causal: queries before n0 see none of these keys (n0 is a multiple of BM).
  const int q_begin = p.causal ? static_cast<int>(n0 / BM) : 0;
  const int num_q_blocks = static_cast<int>((Nq + BM - 1) / BM);
  auto load_queries = [&](int qi) {
    // The thread index laundered: the per-thread chunk addresses are recomputed each step
    // rather than held in registers across the loop (they were what spilled at D = 128).
    const int ltid = static_cast<int>(opaque(static_cast<uint64_t>(tid)));
    const int stage = (qi - q_begin) % kStages;
    const int64_t m0 = static_cast<int64_t>(qi) * BM;
    load_tile_swizzled<D, BM, kHopperThreads>(Qs + stage * Tiles::kTileQ, qbase, m0, Nq, ltid);
    load_tile_swizzled<D, BM, kHopperThreads>(dOs + stage * Tiles::kTileQ, dobase, m0, Nq, ltid);
    // lse and D through cp.async as well (plain loads here stalled the loading warps for a global
    // round trip every step). Rows past Nq get lse = D = 0: their Q and dO rows are zero-filled,
    // so P = 1 there meets dO = 0 in dV and dS = 1 * (0 - 0) = 0 in dK, and their dQ is not stored.
    for (int i = ltid; i < 2 * BM; i += kHopperThreads) {
      const int r = i % BM;
      const bool valid = m0 + r < Nq;
      cp_async4_shared(stats_s + (stage * 2 * BM + i) * 4, (i < BM ? lse : delta) + bh * Nq + (valid ? m0 + r : 0),
                       valid);
    }
  };
  if (q_begin < num_q_blocks) load_queries(q_begin);
  cp_async_commit();  // G0: K, V and the first query block

  float dva[D / 2], dka[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dva[i] = dka[i] = 0.0f;

  const int64_t key_row0 = n0 + 64 * wg + 16 * wl + g;  // this thread's keys: key_row0 and key_row0 + 8
  const uint32_t k_rows = Ks + 64 * wg * 128, v_rows = Vs + 64 * wg * 128;  // this warpgroup's 64 keys
  constexpr bool kDqByKeys = D == 64;         // how the warpgroups share dQ = dS K (below)
  constexpr int DQ = kDqByKeys ? D : D / 2;  // dQ columns per warpgroup, starting at dq_d
  const int dq_d = kDqByKeys ? 0 : DQ * wg;
  // Keys past Nk were zero-filled: their scores are 0, not -inf, so the last key block masks.
  const bool edge_keys = n0 + BN > Nk;

  for (int qi = q_begin; qi < num_q_blocks; ++qi) {
    const int stage = (qi - q_begin) % kStages;
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();  // block qi is in; every warp is done with qi - 1's stage and with dS^T

    const uint32_t q_tile = Qs + stage * Tiles::kTileQ, do_tile = dOs + stage * Tiles::kTileQ;
    const float* lse_b = stats + stage * 2 * BM;
    const float* delta_b = lse_b + BM;
    const int64_t m0 = static_cast<int64_t>(qi) * BM;

    // S^T = K Q^T and dP^T = V dO^T (64 keys x BM queries each, k-steps of 16 along D), issued
    // back to back; P^T is formed while dP^T is still in the tensor cores. The first k-step
    // overwrites (scale_d 0), so the accumulators need no zeroing (zeroing them between the
    // fence and the MMAs made ptxas serialise the two products).
    float st[BM / 2], dpt[BM / 2];
    const uint64_t k_desc = opaque(smem_descriptor(k_rows, 16, 1024)), v_desc = opaque(smem_descriptor(v_rows, 16, 1024)),
                   q_desc = opaque(smem_descriptor(q_tile, 16, 1024)), do_desc = opaque(smem_descriptor(do_tile, 16, 1024));
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)  // k-step ks: column block ks / 4, 32 bytes per k-step inside it
      wgmma::ss<kBf16, BM, 0, 0>(st, k_desc + ((ks / 4) * (BN * 128) + (ks % 4) * 32) / 16,
                                 q_desc + ((ks / 4) * (BM * 128) + (ks % 4) * 32) / 16, ks > 0);
    wgmma::commit();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
      wgmma::ss<kBf16, BM, 0, 0>(dpt, v_desc + ((ks / 4) * (BN * 128) + (ks % 4) * 32) / 16,
                                 do_desc + ((ks / 4) * (BM * 128) + (ks % 4) * 32) / 16, ks > 0);
    wgmma::commit();
    // The next block's loads are issued while the tensor cores work (into the other stage, whose
    // last readers finished before the barrier above).
    if (qi + 1 < num_q_blocks) load_queries(qi + 1);
    cp_async_commit();
    wgmma::wait<1>();

    // P^T = exp2(S^T scale log2e + bias log2e - lse log2e); element 4i + c is key row
    // key_row0 + 8 (c / 2), query column m0 + 8i + 2t + (c & 1). The bias pass is separate so
    // the common case keeps score_bias's registers out of the way.
#pragma unroll
    for (int i = 0; i < BM / 8; ++i) {
      const float2 l = *reinterpret_cast<const float2*>(lse_b + 8 * i + 2 * t);
      const float l0 = l.x * kLog2e, l1 = l.y * kLog2e;
#pragma unroll
      for (int c = 0; c < 4; ++c) st[4 * i + c] = fmaf(st[4 * i + c], scale_log2, -((c & 1) ? l1 : l0));
    }
    if (p.mask != nullptr || p.key_padding != nullptr || edge_keys || (p.causal && n0 + 64 * wg + 63 > m0)) {
#pragma unroll
      for (int i = 0; i < BM / 8; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int64_t row = m0 + 8 * i + 2 * t + (c & 1), key = key_row0 + 8 * (c / 2);
          if (key >= Nk) st[4 * i + c] = -kInf;
          else if (row < Nq) st[4 * i + c] += score_bias(p, b, h, row, key) * kLog2e;
        }
    }
#pragma unroll
    for (int i = 0; i < BM / 2; ++i) st[i] = exp2f(st[i]);
    wgmma::wait<0>();
    // dS^T = P^T (dP^T - D), then both as bf16/fp16 pairs: the A operands of dV += P^T dO and
    // dK += dS^T Q (k-step ks = queries 16ks..+15 = accumulator chunks 2ks, 2ks + 1).
    uint32_t pa[BM / 16][4], dsa[BM / 16][4];
#pragma unroll
    for (int i = 0; i < BM / 8; ++i) {
      const float2 d2 = *reinterpret_cast<const float2*>(delta_b + 8 * i + 2 * t);
      dpt[4 * i + 0] = st[4 * i + 0] * (dpt[4 * i + 0] - d2.x);
      dpt[4 * i + 1] = st[4 * i + 1] * (dpt[4 * i + 1] - d2.y);
      dpt[4 * i + 2] = st[4 * i + 2] * (dpt[4 * i + 2] - d2.x);
      dpt[4 * i + 3] = st[4 * i + 3] * (dpt[4 * i + 3] - d2.y);
    }
#pragma unroll
    for (int ks = 0; ks < BM / 16; ++ks)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        pa[ks][j] = pack2<T>(st[8 * ks + 2 * j], st[8 * ks + 2 * j + 1]);
        dsa[ks][j] = pack2<T>(dpt[8 * ks + 2 * j], dpt[8 * ks + 2 * j + 1]);
      }

    // dO and Q are [query][d] tiles: MN-major B operands (N = d) as V is in the forward's P V;
    // k-step ks = 16 query rows = 2048 bytes.
    const uint64_t do_mn = opaque(smem_descriptor(do_tile, BM * 128, 1024)),
                   q_mn = opaque(smem_descriptor(q_tile, BM * 128, 1024));
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < BM / 16; ++ks) wgmma::rs<kBf16, D, 1>(dva, pa[ks], do_mn + ks * 128, 1);
#pragma unroll
    for (int ks = 0; ks < BM / 16; ++ks) wgmma::rs<kBf16, D, 1>(dka, dsa[ks], q_mn + ks * 128, 1);
    wgmma::commit();

    // dS^T into shared memory as a [key][query] tile in the swizzled layout (pair j of k-step ks
    // is query chunk 2ks + j / 2, key row +8 (j % 2)): conflict-free 4-byte writes.
#pragma unroll
    for (int ks = 0; ks < BM / 16; ++ks)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = 64 * wg + 16 * wl + g + 8 * (j % 2), chunk = 2 * ks + j / 2;
        *reinterpret_cast<uint32_t*>(dst_ptr + swizzled_offset<BN>(key, chunk) + 4 * t) = dsa[ks][j];
      }
    fence_proxy_async();
    if constexpr (kDqByKeys)  // this warpgroup reads back only its own keys' rows
      asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");
    else
      __syncthreads();  // all 128 keys' dS^T are in

    // dQ[:, dq_d..+DQ] = dS K: A = dS read MN-major out of dS^T (M = query contiguous, one
    // 64-query swizzle block), B = K read MN-major (N = d contiguous, whole 64-column blocks);
    // k-steps of 16 keys, 2048 bytes each. D = 128: over all 128 keys, columns split between
    // the warpgroups. D = 64: each warpgroup over its own 64 keys, all columns (both add into
    // dq; splitting 64 columns would need B to start mid swizzle row, a layout nothing checks).
    float dqa[DQ / 2];
    constexpr int kDqSteps = kDqByKeys ? 4 : BN / 16;
    const uint32_t key_off = kDqByKeys ? 64 * wg * 128 : 0;
    const uint64_t ds_desc = opaque(smem_descriptor(dSt + key_off, BN * 128, 1024)),
                   kc_desc = opaque(smem_descriptor(Ks + key_off + (dq_d / 64) * (BN * 128), BN * 128, 1024));
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < kDqSteps; ++ks) wgmma::ss<kBf16, DQ, 1, 1>(dqa, ds_desc + ks * 128, kc_desc + ks * 128, ks > 0);
    wgmma::commit();
    wgmma::wait<0>();
    // Four adjacent columns per 16-byte atomic: lanes t and t ^ 1 swap halves, the even lane
    // then adds row g's columns 8i + 2t .. +3, the odd lane row g + 8's columns 8i + 2t - 2 .. +1.
    const bool odd = t & 1;
    const int64_t row = m0 + 16 * wl + g + (odd ? 8 : 0);
    float* dst = dq_accum + (bh * Nq + row) * D + dq_d + 2 * (t & ~1);
#pragma unroll
    for (int i = 0; i < DQ / 8; ++i) {
      const float s0 = odd ? dqa[4 * i + 0] : dqa[4 * i + 2], s1 = odd ? dqa[4 * i + 1] : dqa[4 * i + 3];
      const float r0 = __shfl_xor_sync(0xffffffffu, s0, 1), r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
      const float4 add = odd ? make_float4(r0, r1, dqa[4 * i + 2], dqa[4 * i + 3])
                             : make_float4(dqa[4 * i + 0], dqa[4 * i + 1], r0, r1);
      if (row < Nq)
        atomicAdd(reinterpret_cast<float4*>(dst + 8 * i),
                  make_float4(add.x * p.scale, add.y * p.scale, add.z * p.scale, add.w * p.scale));
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t key = key_row0 + 8 * r;
    if (key >= Nk) continue;
    T* dkrow = dk + (bh * Nk + key) * D + 2 * t;
    T* dvrow = dv + (bh * Nk + key) * D + 2 * t;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      *reinterpret_cast<uint32_t*>(dkrow + 8 * i) = pack2<T>(dka[4 * i + 2 * r] * p.scale, dka[4 * i + 2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dvrow + 8 * i) = pack2<T>(dva[4 * i + 2 * r], dva[4 * i + 2 * r + 1]);
    }
  }
#endif
}
