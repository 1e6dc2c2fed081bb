// Attention on the GPU (cuda/attention.cu): FlashAttention-2 (Dao 2023, Algorithms 1 and 2) on
// tensor cores for bf16/fp16, a plain one-warp-per-row kernel as the always-correct fallback
// (fp32, odd head dims, misaligned pointers), and LongNet's dilated gather/scatter (MODELS.md
// §14.2). Launchers take raw device pointers; plain C++ (no CUDA headers), so the header-only
// core can call them when histograd::cuda is linked.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../core/dtype.hpp"

namespace histograd::cuda {

// q [B, H, Nq, D], k and v [B, H, Nk, D], out [B, H, Nq, D], all contiguous.
struct AttentionShape {
  int64_t batch = 1, heads = 1, query_len = 0, key_len = 0, head_dim = 0;
};

enum class AttentionKernel {
  automatic,  // flash when supported (bf16/fp16, head dim 32/64/96/128, 16-byte aligned), else reference
  reference,  // one warp per row, fp32 math: slow, simple, any head dim up to 256
  flash,      // the fastest tensor-core kernel for the device (Hopper wgmma forward and backward on
              // sm_90 when the library holds sm_90a code and head dim is 64 or 128, else flash_v1;
              // HISTOGRAD_ATTENTION_BWD=v1 in the environment keeps the backward on flash_v1's
              // kernel); throws Error where no tensor-core kernel applies
  flash_v1,   // FlashAttention-2 on mma.sync (sm_80+), same conditions as flash
};

struct AttentionOptions {
  float scale = 0.0f;   // 0: 1/sqrt(head_dim)
  bool causal = false;  // hides key j from query i when j > i (top-left aligned, as torch's is_causal)
  // Additive fp32 mask element (b, h, i, j) at mask[b*mask_stride_b + h*mask_stride_h +
  // i*mask_stride_q + j*mask_stride_k]; stride 0 broadcasts. May hold -inf.
  const float* mask = nullptr;
  int64_t mask_stride_b = 0, mask_stride_h = 0, mask_stride_q = 0, mask_stride_k = 0;
  // [B, Nk] bytes; nonzero = the key is padding and no query sees it.
  const uint8_t* key_padding = nullptr;
  AttentionKernel kernel = AttentionKernel::automatic;
};

// out = softmax(q k^T * scale + mask) v; logsumexp [B, H, Nq] fp32 (natural log) for the
// backward. A query row that sees no key gets out = 0 and logsumexp = +inf (as cpu/attention.hpp).
// stream: a cudaStream_t, nullptr for histograd's current stream.
template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, float* logsumexp, const AttentionShape& shape,
                       const AttentionOptions& options = {}, void* stream = nullptr);

// Whether AttentionKernel::flash runs the Hopper (wgmma) forward on the current device: an sm_90
// device and a library compiled for sm_90a (HISTOGRAD_CUDA_ARCHITECTURES holding "90a").
bool attention_hopper_available();
// Whether flash's backward runs the Hopper (wgmma) kernel: attention_hopper_available() and the
// environment variable HISTOGRAD_ATTENTION_BWD is not "v1" (read once per process).
bool attention_hopper_backward_available();

// Scratch bytes attention_backward needs (D_i = rowsum(dout * out) and an fp32 dq accumulator).
size_t attention_backward_workspace_bytes(const AttentionShape& shape);

// dq, dk, dv (same layouts as q, k, v) from the forward's out and logsumexp and dout = dL/dout.
// workspace: device memory of attention_backward_workspace_bytes(shape) bytes, 16-byte aligned.
// The flash kernel adds dq with fp32 atomics across key blocks, so dq may differ in the last bit
// from run to run; dk and dv (and everything on the reference kernel) are deterministic.
template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const T* dout, const float* logsumexp,
                        T* dq, T* dk, T* dv, void* workspace, const AttentionShape& shape,
                        const AttentionOptions& options = {}, void* stream = nullptr);

// LongNet dilated attention, one branch (segment length w, dilation r), as torchscale's
// DilatedAttention (MODELS.md §14.2). With w' = min(w, N), S = ceil(N / w') segments,
// G = ceil(H / r) and n' = ceil(w' / r) kept tokens per segment, head h reads offset o(h) = h / G:
//   dense[b*S + s, h, l, :] = sparse(b, s*w' + l*r + o(h), h, :)   when l*r + o(h) < w' and
//                                                                   s*w' + l*r + o(h) < N
//                          = 0                                     otherwise (the zero padding)
// dense is contiguous [B*S, H, n', D]; sparse(b, n, h, :) is at sparse + b*stride_b + n*stride_n
// + h*stride_h with D adjacent elements, so [B, N, H, D] and [B, H, N, D] both work.
struct DilatedShape {
  int64_t batch = 1, seq_len = 0, heads = 1, head_dim = 0;
  int64_t segment = 0, dilation = 1;          // w and r
  int64_t stride_b = 0, stride_n = 0, stride_h = 0;  // of the sparse side, in elements
  int64_t segments() const { return seq_len == 0 ? 0 : (seq_len + eff_segment() - 1) / eff_segment(); }
  int64_t eff_segment() const { return segment < seq_len ? segment : seq_len; }
  int64_t kept() const { return (eff_segment() + dilation - 1) / dilation; }
};

// Gather: dense as above from sparse. Its backward is dilated_scatter of the dense gradient
// with fill 0 (each sparse position is read at most once).
template <class T>
void dilated_gather(const T* sparse, T* dense, const DilatedShape& shape, void* stream = nullptr);

// Scatter, the adjoint: sparse(b, n, h, :) = dense[...] where position n of head h is kept,
// `fill` elsewhere (0 for outputs and gradients; torchscale fills uncovered logsumexps with
// -1e8, pass head_dim 1 for a [B, H, N] logsumexp). Its backward is dilated_gather.
template <class T>
void dilated_scatter(const T* dense, T* sparse, const DilatedShape& shape, float fill = 0.0f, void* stream = nullptr);

}  // namespace histograd::cuda
