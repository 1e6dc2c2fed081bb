// scaled_dot_product_attention with torch.nn.functional.scaled_dot_product_attention's
// semantics: softmax(q k^T * scale + mask) v over the last two dims, batch dims broadcast.
// The work is the tiled online-softmax kernel of cpu/attention.hpp (FlashAttention-2), which
// never forms the [L, S] matrix; the backward recomputes it tile by tile from the logsumexp.
// CUDA tensors go to cuda/attention.hpp (the same algorithm on the GPU, float32).
// Under autocast (core/autocast.hpp) float attention runs in bf16: q, k, v, the mask and
// grad_output rounded to bf16 (the bf16 kernels on CUDA), out and the gradients rounded too.
#pragma once
#include <cmath>
#include <concepts>
#include <limits>
#include <optional>

#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/attention.hpp"
#include "../cpu/elementwise.hpp"
#include "../cuda/attention.hpp"
#include "matmul.hpp"
#include "reduce.hpp"

namespace histograd {

namespace detail {

// t as the kernel reads it, viewed with shape `target` (t broadcast): in place when its columns
// are adjacent and its rows do not overlap, as for q/k/v permuted from [B, N, H, D]; else a copy.
template <class T>
Tensor<T> attention_layout(const Tensor<T>& t, const Shape& target, bool need_unit_columns = true) {
  Tensor<T> x = t.detach();
  const int64_t rows = x.size(-2), cols = x.size(-1);
  if (need_unit_columns && ((cols > 1 && x.stride(-1) != 1) || (rows > 1 && x.stride(-2) < cols))) x = x.contiguous();
  return x.expand(target);
}

// The [batch, rows, cols] operand over a tensor laid out by attention_layout (which must outlive it).
template <class T>
cpu::AttentionOperand<T> attention_operand(const Tensor<T>& t, const Shape& batch_shape) {
  cpu::AttentionOperand<T> op;
  op.data = t.data() - t.storage_offset();  // data() refuses device tensors
  op.row_stride = t.stride(-2);
  op.col_stride = t.stride(-1);
  Shape batch_strides(t.strides().begin(), t.strides().begin() + static_cast<std::ptrdiff_t>(batch_shape.size()));
  for_each_offset(batch_shape, batch_strides, t.storage_offset(), [&](int64_t off) { op.batch_offsets.push_back(off); });
  return op;
}

// The op on CUDA tensors (float32): cuda/attention.hpp's kernels over [batch, 1, L, E] with the
// broadcast batch dims flattened. q, k, v (often strided views of one qkv product) and the mask
// are made contiguous on the device first; gradients come back in those shapes and are summed
// to each input's. No dropout and no mask gradient here (the kernels have neither).
#ifdef HISTOGRAD_WITH_CUDA
// The kernels in C: float, or bfloat16 under autocast (operands converted, out and gradients
// converted back to float; a gradient summed over broadcast dims is rounded to bf16 again).
template <class C>
Tensor<float> cuda_attention_in(const Tensor<float>& q, const Tensor<float>& k, const Tensor<float>& v,
                                const Tensor<float>& attn_mask, bool is_causal, double scale, const Shape& batch_shape) {
  constexpr bool autocast = std::same_as<C, bfloat16>;
  const int64_t L = q.size(-2), S = k.size(-2), E = q.size(-1), batch = numel_of(batch_shape);
  auto with_batch = [&batch_shape](int64_t rows, int64_t cols) {
    Shape s = batch_shape;
    s.push_back(rows);
    s.push_back(cols);
    return s;
  };
  auto as_c = [](const Tensor<float>& t) {
    if constexpr (autocast) return t.template to<C>();
    else return t.contiguous();
  };
  const Tensor<C> qd = as_c(q.detach().expand(with_batch(L, E))), kd = as_c(k.detach().expand(with_batch(S, E))),
                  vd = as_c(v.detach().expand(with_batch(S, E)));
  Tensor<float> maskd;
  if (attn_mask.defined()) {
    maskd = attn_mask.detach().expand(with_batch(L, S)).contiguous();
    if (autocast) maskd = round_to_bf16(maskd);
  }
  Tensor<C> out_c(with_batch(L, E), q.device());
  Tensor<float> logsumexp(Shape{batch, L}, q.device());
  cuda::set_device(q.device().index);
  cuda::AttentionShape shape;
  shape.batch = batch, shape.heads = 1, shape.query_len = L, shape.key_len = S, shape.head_dim = E;
  cuda::AttentionOptions options;
  options.scale = static_cast<float>(scale);
  options.causal = is_causal;
  if (maskd.defined()) {
    options.mask = maskd.device_data();
    options.mask_stride_b = L * S, options.mask_stride_h = 0, options.mask_stride_q = S, options.mask_stride_k = 1;
  }
  if (out_c.numel() > 0)
    cuda::attention_forward<C>(qd.device_data(), kd.device_data(), vd.device_data(), out_c.device_data(),
                               logsumexp.device_data(), shape, options);
  Tensor<float> out;
  if constexpr (autocast) out = out_c.template to<float>();
  else out = out_c;
  if (autograd::needs_grad(q, k, v))
    autograd::record(out, "ScaledDotProductAttention", {q, k, v, attn_mask},
                     [qd, kd, vd, maskd, out_c = out_c.detach(), logsumexp, shape, options, as_c,
                      input_shapes = std::vector<Shape>{q.shape(), k.shape(), v.shape()}](const Tensor<float>& g,
                                                                                        const NeedsGrad& need) {
      const Tensor<C> dout = as_c(g);
      Tensor<C> dq(qd.shape(), qd.device()), dk(kd.shape(), kd.device()), dv(vd.shape(), vd.device());
      const size_t bytes = cuda::attention_backward_workspace_bytes(shape);
      Tensor<float> workspace(Shape{static_cast<int64_t>(bytes / sizeof(float)) + 4}, qd.device());
      if (out_c.numel() > 0)
        cuda::attention_backward<C>(qd.device_data(), kd.device_data(), vd.device_data(), out_c.device_data(),
                                    dout.device_data(), logsumexp.device_data(), dq.device_data(), dk.device_data(),
                                    dv.device_data(), workspace.device_data(), shape, options);
      const Tensor<C>* computed[3] = {&dq, &dk, &dv};
      std::vector<Tensor<float>> grads(4);
      for (size_t i = 0; i < 3; ++i) {
        if (!need[i]) continue;
        Tensor<float> full;
        if constexpr (autocast) full = computed[i]->template to<float>();
        else full = *computed[i];
        grads[i] = sum_to(full, input_shapes[i]);
        if (autocast && full.shape() != input_shapes[i]) grads[i] = round_to_bf16(grads[i]);
      }
      return grads;
    });
  return out;
}
#endif

template <class T>
Tensor<T> cuda_scaled_dot_product_attention(const Tensor<T>& q, [[maybe_unused]] const Tensor<T>& k, const Tensor<T>& v,
                                            const Tensor<T>& attn_mask, double dropout_p, [[maybe_unused]] bool is_causal,
                                            double scale, [[maybe_unused]] const Shape& batch_shape,
                                            [[maybe_unused]] bool autocast) {
  const char* op = "scaled_dot_product_attention";
  HG_CHECK((std::same_as<T, float>), op, "no CUDA kernel for ", dtype_name<T>(), " tensors (float32 only)");
  HG_CHECK(dropout_p == 0, op, "dropout_p > 0 is not supported on CUDA (got ", dropout_p, "); pass 0");
  HG_CHECK(v.size(-1) == q.size(-1), op, "on CUDA expected value's last dim to equal query's ", q.size(-1), ", got ",
           v.size(-1));
  HG_CHECK(!attn_mask.defined() || !attn_mask.requires_grad(), op, "no attn_mask gradient on CUDA; detach the mask");
  HG_CHECK(scale != 0, op, "expected a non-zero scale on CUDA");
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::same_as<T, float>) {
    if (autocast) return cuda_attention_in<bfloat16>(q, k, v, attn_mask, is_causal, scale, batch_shape);
    return cuda_attention_in<float>(q, k, v, attn_mask, is_causal, scale, batch_shape);
  }
#endif
  fail(op, "histograd was built without CUDA");
}

// The op with the tile sizes exposed, so tests can force many partial tiles on small inputs.
template <class T>
Tensor<T> scaled_dot_product_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                       const Tensor<T>& attn_mask, double dropout_p, bool is_causal,
                                       std::optional<double> scale, Generator* gen, cpu::AttentionTiles tiles) {
  const char* op = "scaled_dot_product_attention";
  HG_CHECK(q.defined() && k.defined() && v.defined(), op, "expected defined query, key and value tensors");
  HG_CHECK(q.dim() >= 2 && k.dim() >= 2 && v.dim() >= 2, op,
           "expected query [..., L, E], key [..., S, E] and value [..., S, Ev] with at least 2 dims, got shapes ",
           to_string(q.shape()), ", ", to_string(k.shape()), " and ", to_string(v.shape()));
  HG_CHECK(k.device() == q.device() && v.device() == q.device() &&
               (!attn_mask.defined() || attn_mask.device() == q.device()),
           op, "expected query, key, value and attn_mask on one device, got query on ", q.device().str(), ", key on ",
           k.device().str(), ", value on ", v.device().str(),
           attn_mask.defined() ? ", attn_mask on " + attn_mask.device().str() : std::string());
  const int64_t L = q.size(-2), S = k.size(-2), E = q.size(-1), Ev = v.size(-1);
  HG_CHECK(k.size(-1) == E, op, "expected key's last dim to equal query's embedding size ", E, ", got query of shape ",
           to_string(q.shape()), " and key of shape ", to_string(k.shape()));
  HG_CHECK(v.size(-2) == S, op, "expected value's sequence length to equal key's ", S, ", got key of shape ",
           to_string(k.shape()), " and value of shape ", to_string(v.shape()));
  HG_CHECK(dropout_p >= 0 && dropout_p <= 1, op, "expected dropout_p in [0, 1], got ", dropout_p);
  auto batch_of = [](const Tensor<T>& t) { return Shape(t.shape().begin(), t.shape().end() - 2); };
  Shape batch_shape;
  try {
    batch_shape = broadcast_shapes(broadcast_shapes(batch_of(q), batch_of(k), op), batch_of(v), op);
  } catch (const Error&) {
    fail(op, "expected the batch dims (all but the last two) of query, key and value to broadcast together, got shapes ",
         to_string(q.shape()), ", ", to_string(k.shape()), " and ", to_string(v.shape()));
  }
  auto with_batch = [&batch_shape](int64_t rows, int64_t cols) {
    Shape s = batch_shape;
    s.push_back(rows);
    s.push_back(cols);
    return s;
  };
  const Shape scores_shape = with_batch(L, S);
  if (attn_mask.defined()) {  // the mask may not grow the output, so it broadcasts *to* [..., L, S]
    bool fits = attn_mask.dim() <= static_cast<int64_t>(scores_shape.size());
    for (int64_t i = 0, lead = static_cast<int64_t>(scores_shape.size()) - attn_mask.dim(); fits && i < attn_mask.dim(); ++i)
      fits = attn_mask.shape()[i] == 1 || attn_mask.shape()[i] == scores_shape[lead + i];
    HG_CHECK(fits, op, "expected attn_mask broadcastable to ", to_string(scores_shape), " ([..., L, S]), got shape ",
             to_string(attn_mask.shape()));
  }

  const bool autocast = autocast_applies<T>();
  if (q.device().is_cuda())
    return cuda_scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal,
                                             scale ? *scale : 1.0 / std::sqrt(static_cast<double>(E)), batch_shape,
                                             autocast);

  cpu::AttentionProblem<T> problem;
  problem.batch = numel_of(batch_shape);
  problem.query_len = L, problem.key_len = S, problem.head_dim = E, problem.value_dim = Ev;
  problem.scale = static_cast<T>(scale ? *scale : 1.0 / std::sqrt(static_cast<double>(E)));
  problem.causal = is_causal;
  problem.tiles = tiles;
  // Detached, so the layout changes stay out of the graph; the closure keeps them alive.
  auto rounded = [autocast](const Tensor<T>& t) { return autocast ? round_to_bf16(t.detach()) : t; };
  const Tensor<T> qd = attention_layout(rounded(q), with_batch(L, E)), kd = attention_layout(rounded(k), with_batch(S, E)),
                  vd = attention_layout(rounded(v), with_batch(S, Ev));
  const Tensor<T> maskd =
      attn_mask.defined() ? attention_layout(rounded(attn_mask), scores_shape, false) : Tensor<T>();
  problem.query = attention_operand(qd, batch_shape);
  problem.key = attention_operand(kd, batch_shape);
  problem.value = attention_operand(vd, batch_shape);
  if (maskd.defined()) problem.mask = attention_operand(maskd, batch_shape);
  if (dropout_p > 0) {
    Generator& generator = gen ? *gen : default_generator();
    problem.dropout_p = dropout_p;
    problem.dropout_seed = generator.seed();
    problem.dropout_offset = generator.reserve(static_cast<uint64_t>((problem.batch * L * S + 3) / 4));
  }

  Tensor<T> out(with_batch(L, Ev)), logsumexp(Shape{problem.batch, L});
  cpu::attention_forward(problem, out.data(), logsumexp.data());
  if (autocast) out = round_to_bf16(out);  // the backward then reads the bf16 output, as torch's bf16 kernels do

  // dQ, dK, dV, dMask from cpu::attention_backward over the broadcast batch, then summed back
  // to each input's shape. dMask needs the full [..., L, S] buffer, made only when asked for.
  if (autograd::needs_grad(q, k, v, attn_mask)) {
    std::vector<Shape> input_shapes{q.shape(), k.shape(), v.shape(), attn_mask.defined() ? attn_mask.shape() : Shape{}};
    std::vector<Shape> full_shapes{qd.shape(), kd.shape(), vd.shape(), scores_shape};
    // problem's operands point into qd, kd, vd and maskd: the closure holds them for that.
    autograd::record(out, "ScaledDotProductAttention", {q, k, v, attn_mask},
                     [problem, qd, kd, vd, maskd, out = out.detach(), logsumexp, batch_shape, input_shapes,
                      full_shapes, rounded, autocast](const Tensor<T>& g, const NeedsGrad& need) {
      std::vector<Tensor<T>> grads(4);
      for (size_t i = 0; i < 4; ++i)
        if (need[i]) grads[i] = zeros<T>(full_shapes[i]);
      auto data_or_null = [](Tensor<T>& t) { return t.defined() ? t.data() : nullptr; };
      const Tensor<T> grad_out = attention_layout(rounded(g), g.shape());
      cpu::attention_backward(problem, attention_operand(out, batch_shape), logsumexp.data(),
                              attention_operand(grad_out, batch_shape), data_or_null(grads[0]),
                              data_or_null(grads[1]), data_or_null(grads[2]), data_or_null(grads[3]));
      for (size_t i = 0; i < 4; ++i)  // sum over the batch dims each input was broadcast along
        if (need[i]) grads[i] = autocast ? round_to_bf16(sum_to(grads[i], input_shapes[i])) : sum_to(grads[i], input_shapes[i]);
      return grads;
    });
  }
  return out;
}

}  // namespace detail

// scaled_dot_product_attention(q [..., L, E], k [..., S, E], v [..., S, Ev]) -> [..., L, Ev]
//   = dropout(softmax(q k^T * scale + attn_mask)) v,  scale = 1/sqrt(E) unless given.
// attn_mask is additive (may hold -inf) and broadcasts to [..., L, S]; is_causal hides key j
// from query i when j > i (top-left aligned, as PyTorch), and may be combined with a mask
// (PyTorch refuses the pair; the meaning of both at once is unambiguous, so we allow it).
// dropout_p > 0 drops probabilities with Philox draws from `gen` (the default generator when
// null), as F.scaled_dot_product_attention does: pass 0 outside training. A query row that sees
// no key at all (every score -inf) yields 0, not PyTorch's NaN; see cpu::attention_forward.
template <class T>
Tensor<T> scaled_dot_product_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                       const Tensor<T>& attn_mask = Tensor<T>(), double dropout_p = 0.0,
                                       bool is_causal = false, std::optional<double> scale = std::nullopt,
                                       Generator* gen = nullptr) {
  return detail::scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, gen,
                                              cpu::AttentionTiles{});
}

// Boolean mask, as PyTorch: true = the query may attend to the key, false = hidden (-inf).
// A template on the mask's type, so that a braced {} mask still picks the additive overload.
template <class T, class Bool>
  requires std::same_as<Bool, bool>
Tensor<T> scaled_dot_product_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                       const Tensor<Bool>& attn_mask, double dropout_p = 0.0, bool is_causal = false,
                                       std::optional<double> scale = std::nullopt, Generator* gen = nullptr) {
  HG_CHECK(attn_mask.defined(), "scaled_dot_product_attention", "the boolean attn_mask is undefined");
  Tensor<T> additive = cpu::map<T>(attn_mask, [](bool keep) { return keep ? T(0) : -std::numeric_limits<T>::infinity(); });
  return scaled_dot_product_attention(q, k, v, additive, dropout_p, is_causal, scale, gen);
}

}  // namespace histograd
