// Matrix products: matmul (torch.matmul semantics: dot, 1-D promotion, broadcast batch dims),
// bmm, and linear (x W^T + b with W [out, in] as nn.Linear, bias fused into the GEMM). Row- and
// column-major operands (contiguous tensors and their .mT() views) go to Eigen without copies.
// Backward: dA = g B^T, dB = A^T g, each summed over the batch dims its operand was broadcast on.
// CUDA tensors (float32) go to cuBLASLt (cuda/gemm.hpp): transposed views by the transpose flags,
// batch dims by one batch stride; exact fp32 unless cuda::set_allow_tf32(true).
// Under autocast (core/autocast.hpp) float products run in bf16: autocast_product below.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "../autograd/node.hpp"
#include "../core/autocast.hpp"
#include "../core/tensor.hpp"
#include "../cpu/gemm.hpp"
#include "../cuda/gemm.hpp"
#include "reduce.hpp"
#include "views.hpp"

namespace histograd {

namespace cuda {
// torch.backends.cuda.matmul.allow_tf32: off by default, so CUDA products match the CPU's to
// fp32 rounding (~1e-6); on, fp32 GEMMs round their operands to TF32 (~3e-4) for tensor-core speed.
inline std::atomic<bool>& allow_tf32_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}
inline void set_allow_tf32(bool on) { allow_tf32_flag().store(on); }
inline bool allow_tf32() { return allow_tf32_flag().load(); }
}  // namespace cuda

namespace detail {

// ---- the CUDA path ----
// A [batch, rows, cols] view as cuBLASLt reads it: row-major with row stride ld, or the transpose
// of a row-major [cols, rows] (a .mT() view); batch items one stride apart. Copies otherwise.
template <class T>
struct CudaGemmOperand {
  Tensor<T> tensor;  // keeps the (possibly copied) data alive
  bool transpose = false;
  int64_t ld = 0;
};
template <class T>
bool cuda_matrix_layout(const Tensor<T>& t, CudaGemmOperand<T>& op) {
  const int64_t rows = t.size(1), cols = t.size(2), rs = t.stride(1), cs = t.stride(2);
  if ((cols == 1 || cs == 1) && (rows == 1 || rs >= std::max<int64_t>(cols, 1))) {
    op.transpose = false;
    op.ld = rows == 1 ? std::max<int64_t>(cols, 1) : rs;
    return true;
  }
  if ((rows == 1 || rs == 1) && (cols == 1 || cs >= std::max<int64_t>(rows, 1))) {
    op.transpose = true;
    op.ld = cols == 1 ? std::max<int64_t>(rows, 1) : cs;
    return true;
  }
  return false;
}
// cuBLASLt's heuristic assumes 16-byte aligned operands unless told otherwise (cuda::gemm does not
// say), so a view starting mid-vector is copied to a fresh (aligned) block.
template <class T>
bool aligned16(const Tensor<T>& t) {
  return reinterpret_cast<std::uintptr_t>(t.device_data()) % 16 == 0;
}
template <class T>
CudaGemmOperand<T> cuda_gemm_operand(const Tensor<T>& t) {
  CudaGemmOperand<T> op;
  op.tensor = t;
  if (!cuda_matrix_layout(op.tensor, op) || !aligned16(op.tensor)) {
    op.tensor = t.clone();
    cuda_matrix_layout(op.tensor, op);
  }
  return op;
}

// t [batch..., R, C] broadcast to out_batch, as a 3-D [batch, R, C] view with one batch stride
// (a copy when its batch dims do not merge, e.g. a broadcast dim between real ones).
template <class T>
Tensor<T> as_batched(const Tensor<T>& t, const Shape& out_batch) {
  const int64_t rows = t.size(-2), cols = t.size(-1), batch = numel_of(out_batch);
  Shape full = out_batch;
  full.insert(full.end(), {rows, cols});
  Tensor<T> e = t.expand(full);
  const Shape batch_strides(e.strides().begin(), e.strides().end() - 2);
  std::optional<Shape> merged =
      batch == 1 ? std::optional<Shape>(Shape{0}) : view_strides(out_batch, batch_strides, Shape{batch});
  if (!merged) {
    e = e.contiguous();
    merged = Shape{rows * cols};
  }
  return make_view(e, {batch, rows, cols}, {(*merged)[0], e.stride(-2), e.stride(-1)}, e.storage_offset());
}

inline void check_cuda_float(bool is_float, const char* op, std::string_view dtype) {
  HG_CHECK(is_float, op, "CUDA tensors are multiplied in float32 only, got ", dtype);
}

// out [batch, M, N] (contiguous) = a [batch, M, K] · b [batch, K, N] (+ bias[N] when defined and
// batch == 1), on a's device.
template <class T>
void cuda_product_into([[maybe_unused]] const Tensor<T>& a, [[maybe_unused]] const Tensor<T>& b, Tensor<T>& out,
                       [[maybe_unused]] const Tensor<T>& bias = Tensor<T>()) {
  if (out.numel() == 0) return;
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bfloat16>) {  // bf16: autocast's products
    const int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
    cuda::set_device(a.device().index);
    if (K == 0) {  // an empty sum: zeros (plus the bias rows, added by the caller)
      cuda::fill_bytes(out.device_data(), 0, static_cast<size_t>(out.numel()) * sizeof(T));
      return;
    }
    CudaGemmOperand<T> A = cuda_gemm_operand(a), B = cuda_gemm_operand(b);
    cuda::GemmArgs args;
    args.transpose_a = A.transpose, args.transpose_b = B.transpose;
    args.m = M, args.n = N, args.k = K;
    args.lda = A.ld, args.ldb = B.ld, args.ldc = N;
    args.batch = batch, args.stride_a = A.tensor.stride(0), args.stride_b = B.tensor.stride(0), args.stride_c = M * N;
    args.math = std::is_same_v<T, float> && cuda::allow_tf32() ? cuda::GemmMath::TF32 : cuda::GemmMath::Exact;
    const T* bias_ptr = nullptr;
    Tensor<T> bias_c;
    if (bias.defined()) {
      bias_c = bias.detach().contiguous();
      if (!aligned16(bias_c)) bias_c = bias_c.clone();
      bias_ptr = bias_c.device_data();
      args.epilogue = cuda::GemmEpilogue::Bias;
    }
    cuda::gemm<T>(args, A.tensor.device_data(), B.tensor.device_data(), out.device_data(), bias_ptr);
    return;
  }
#endif
  check_cuda_float(false, "matmul", dtype_name<T>());
}

// ---- autocast (core/autocast.hpp): bf16 products on float tensors ----
// convert(t) for a convert that returns a fresh contiguous tensor of t's shape, except that the
// .mT() view of a contiguous tensor stays a transposed view, which the GEMMs read without a copy.
template <class T, class Convert>
auto keeping_transpose(const Tensor<T>& t, Convert convert) {
  if (t.dim() >= 2 && !t.is_contiguous() && t.mT().is_contiguous()) return convert(t.mT()).mT();
  return convert(t);
}

// x rounded to the nearest bfloat16 (ties to even), kept as T; no autograd.
template <class T>
Tensor<T> round_to_bf16(const Tensor<T>& x) {
  return keeping_transpose(x, [](const Tensor<T>& t) {
    if (t.device().is_cuda()) {
      Tensor<float> r = t.template to<bfloat16>().template to<float>();
      if constexpr (std::is_same_v<T, float>) return r;
      else return r.template to<T>();
    }
    return cpu::map<T>(t, [](T v) { return static_cast<T>(static_cast<float>(bfloat16(static_cast<float>(v)))); });
  });
}

// t in C for a product: converted (keeping .mT() views transposed), or t itself when already in C.
template <class C, class U>
Tensor<C> in_compute_type(const Tensor<U>& t) {
  if constexpr (std::is_same_v<C, U>) return t;
  else return keeping_transpose(t, [](const Tensor<U>& u) { return u.template to<C>(); });
}

// The CUDA twin of batched_product below: a [..., M, K] @ b [..., K, N] -> [batch..., M, N] in C,
// which is T, or bfloat16 for autocast: the 3-D operand views are laid out in T, then converted.
// b may arrive in C already (autocast's cached weights; then it is 2-D). A bias [N] (autocast's
// linear) is fused for 2-D operands.
template <class C, class T, class B = T>
Tensor<C> cuda_batched_product(const Tensor<T>& a, const Tensor<B>& b, const Tensor<T>& bias = Tensor<T>()) {
  static_assert(std::is_same_v<B, T> || std::is_same_v<B, C>);
  HG_CHECK((std::is_same_v<B, T> || b.dim() == 2), "matmul", "expected a 2-D converted operand, got ", b.dim(), " dims");
  HG_CHECK(b.device() == a.device(), "matmul", "expected both operands on one device, got ", a.device().str(), " and ",
           b.device().str());
  check_cuda_float(std::is_same_v<T, float>, "matmul", dtype_name<T>());
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  const Shape out_batch = broadcast_shapes(a_batch, b_batch, "matmul");
  const int64_t batch = numel_of(out_batch);
  Shape out_shape = out_batch;
  out_shape.insert(out_shape.end(), {M, N});
  Tensor<C> out(out_shape, a.device());
  if (out.numel() == 0) return out;
  // b [..., K, N] as [count, K, N] in C; b already in C is 2-D: one matrix read count times.
  auto b_batched = [&](const Shape& batch_shape) -> Tensor<C> {
    if constexpr (std::is_same_v<B, T>) return in_compute_type<C>(as_batched(b, batch_shape));
    else return make_view(b, {numel_of(batch_shape), K, N}, {0, b.stride(0), b.stride(1)}, b.storage_offset());
  };
  if (batch > 1 && numel_of(b_batch) == 1) {  // one right matrix: a's batch folds into its rows
    if (auto strides = view_strides(a.shape(), a.strides(), {batch * M, K})) {
      Tensor<T> a_rows = make_view(a, {1, batch * M, K}, {0, (*strides)[0], (*strides)[1]}, a.storage_offset());
      Tensor<C> out_rows = out.view({1, batch * M, N});
      if constexpr (std::is_same_v<B, T>)
        cuda_product_into(in_compute_type<C>(a_rows), in_compute_type<C>(as_batched(b.reshape({K, N}), Shape{})),
                          out_rows);
      else
        cuda_product_into(in_compute_type<C>(a_rows), b_batched(Shape{}), out_rows);
      return out;
    }
  }
  Tensor<C> out3 = out.view({batch, M, N});
  cuda_product_into(in_compute_type<C>(as_batched(a, out_batch)), b_batched(out_batch), out3,
                    bias.defined() && a.dim() == 2 && b.dim() == 2 ? in_compute_type<C>(bias) : Tensor<C>());
  return out;
}

// t's last two dims as a GEMM operand; copies only when neither of their strides is 1.
template <class T>
struct GemmOperand {
  Tensor<T> tensor;
  cpu::MatrixLayout layout;
};
template <class T>
GemmOperand<T> gemm_operand(const Tensor<T>& t) {
  const int64_t n = t.dim(), rows = t.shape()[n - 2], cols = t.shape()[n - 1];
  if (auto layout = cpu::matrix_layout(rows, cols, t.strides()[n - 2], t.strides()[n - 1])) return {t, *layout};
  return {t.contiguous(), cpu::MatrixLayout{false, std::max<int64_t>(cols, 1)}};
}

// t (detached) as a [rows, cols] matrix: a view where the strides allow it, else a copy.
template <class T>
Tensor<T> as_rows(const Tensor<T>& t, int64_t cols) {
  const int64_t rows = cols == 0 ? numel_of(Shape(t.shape().begin(), t.shape().end() - 1)) : t.numel() / cols;
  if (auto strides = view_strides(t.shape(), t.strides(), {rows, cols}))
    return make_view(t, {rows, cols}, *strides, t.storage_offset());
  return t.contiguous().reshape({rows, cols});
}

// out[M, N] (+)= a[M, K] b[K, N] for 2-D tensors; out is contiguous.
template <class T>
void mm_into(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& out, bool accumulate) {
  GemmOperand<T> A = gemm_operand(a), B = gemm_operand(b);
  cpu::gemm(a.size(0), b.size(1), a.size(1), T(1), A.tensor.data(), A.layout, B.tensor.data(), B.layout, out.data(),
            std::max<int64_t>(b.size(1), 1), accumulate);
}

// Element offsets of each broadcast batch matrix of t (its dims before the last two).
template <class T>
std::vector<int64_t> batch_offsets(const Tensor<T>& t, const Shape& out_batch) {
  Shape batch(t.shape().begin(), t.shape().end() - 2), strides(t.strides().begin(), t.strides().end() - 2);
  std::vector<int64_t> offsets;
  offsets.reserve(static_cast<size_t>(numel_of(out_batch)));
  for_each_offset(out_batch, broadcast_strides(batch, strides, out_batch), 0, [&](int64_t off) { offsets.push_back(off); });
  return offsets;
}

// a [..., M, K] @ b [..., K, N] -> contiguous [batch..., M, N], batch dims broadcast; no autograd
// (callers pass detached tensors and have checked the shapes).
template <class T>
Tensor<T> batched_product(const Tensor<T>& a, const Tensor<T>& b) {
  if (a.device().is_cuda() || b.device().is_cuda()) return cuda_batched_product<T>(a, b);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  Shape out_shape = broadcast_shapes(a_batch, b_batch, "matmul");
  const Shape out_batch = out_shape;
  const int64_t batch = numel_of(out_batch);
  out_shape.insert(out_shape.end(), {M, N});
  Tensor<T> out(out_shape);
  if (out.numel() == 0) return out;
  if (batch > 1 && numel_of(b_batch) == 1) {  // one right matrix (x @ W): a's batch folds into its rows
    if (auto strides = view_strides(a.shape(), a.strides(), {batch * M, K})) {
      Tensor<T> out_rows = out.view({batch * M, N});
      mm_into(make_view(a, {batch * M, K}, *strides, a.storage_offset()), b.reshape({K, N}), out_rows, false);
      return out;
    }
  }
  GemmOperand<T> A = gemm_operand(a), B = gemm_operand(b);
  std::vector<int64_t> a_offsets = batch_offsets(A.tensor, out_batch), b_offsets = batch_offsets(B.tensor, out_batch);
  cpu::gemm_batched(batch, M, N, K, T(1), A.tensor.data(), a_offsets.data(), A.layout, B.tensor.data(), b_offsets.data(),
                    B.layout, out.data(), M * N, N, false);
  return out;
}

template <class T>
bool autocast_applies() {
  return std::is_same_v<T, float> && Autocast::is_enabled();
}

// round_to_bf16 as an autograd op whose backward rounds the gradient as well: how autocast wraps
// an op that it runs through the fp32 kernel on bf16 operands (conv2d off the patch path).
template <class T>
Tensor<T> autocast_round(const Tensor<T>& x) {
  if (!x.defined()) return x;
  Tensor<T> y = round_to_bf16(x.detach());
  if (autograd::needs_grad(x))
    autograd::record(y, "AutocastRound", {x}, [](const Tensor<T>& g, const NeedsGrad&) {
      return std::vector<Tensor<T>>{round_to_bf16(g)};
    });
  return y;
}

// b as an autocast product reads it on the CPU: a float tensor of bf16 values (a b already in
// bfloat16, a cached weight, is widened; a float b is rounded).
template <class T, class B>
Tensor<T> rounded_operand(const Tensor<B>& b) {
  if constexpr (std::is_same_v<B, bfloat16>) return in_compute_type<T>(b);
  else return round_to_bf16(b);
}

// W's bf16 form for autocast's products (a .mT() of it stays a transposed view). Inside an autocast
// region a parameter (a leaf that requires grad) is converted once and cached for the region
// (core/autocast.hpp); anything else is converted on each call.
template <class T>
Tensor<bfloat16> autocast_weight(const Tensor<T>& weight) {
  auto convert = [&weight] { return in_compute_type<bfloat16>(weight.detach()); };
  if (!Autocast::is_enabled() || !weight.requires_grad() || !weight.is_leaf()) return convert();
  const void* key = weight.impl().get();
  if (const void* hit = Autocast::find_cached(key)) return *static_cast<const Tensor<bfloat16>*>(hit);
  auto converted = std::make_shared<const Tensor<bfloat16>>(convert());
  Autocast::cache().push_back({key, weight.impl(), converted});
  return *converted;
}

// batched_product (+ bias[N] for 2-D operands) the way autocast multiplies: operands rounded to
// bf16, fp32 accumulation, the result rounded to bf16. CUDA runs the bf16 GEMM; the CPU rounds
// around the fp32 kernels, in linear's order (bias rows first) so it matches fp32 linear exactly.
// b is float, or bfloat16 already (a weight from autocast_weight).
template <class T, class B = T>
Tensor<T> autocast_product(const Tensor<T>& a, const Tensor<B>& b, const Tensor<T>& bias = Tensor<T>()) {
  const bool fused_bias = bias.defined() && a.size(-1) > 0;  // cuBLASLt skips the epilogue when K = 0
  Tensor<T> out;
  if (a.device().is_cuda() || b.device().is_cuda()) {
    out = cuda_batched_product<bfloat16>(a, b, fused_bias ? bias : Tensor<T>()).template to<T>();
    if (!bias.defined() || fused_bias) return out;
    out = add(out, round_to_bf16(bias));
  } else if (bias.defined()) {
    const int64_t M = a.size(0), N = b.size(1);
    out = Tensor<T>({M, N});
    cpu::fill_rows(out.data(), M, N, N, round_to_bf16(bias).data());
    mm_into(round_to_bf16(a), rounded_operand<T>(b), out, true);
  } else {
    out = batched_product(round_to_bf16(a), rounded_operand<T>(b));
  }
  return round_to_bf16(out);
}

// The product shared by matmul and bmm: promote 1-D operands, multiply, squeeze them back out.
// dA = sum_to(g B^T), dB = sum_to(A^T g); with one right matrix, dB = A_rows^T g_rows in one GEMM.
// Under autocast every product is autocast_product, and a gradient summed over broadcast batch
// dims is rounded to bf16 again (as torch's bf16 reduction would be).
template <class T>
Tensor<T> product_op(const Tensor<T>& a, const Tensor<T>& b, const char* name, bool autocast) {
  auto product = [autocast](const Tensor<T>& x, const Tensor<T>& y) {
    if constexpr (std::is_same_v<T, float>)
      if (autocast) return autocast_product(x, y);
    return batched_product(x, y);
  };
  auto reduce_to = [autocast](const Tensor<T>& t, const Shape& shape) {
    return autocast && t.shape() != shape ? round_to_bf16(sum_to(t, shape)) : sum_to(t, shape);
  };
  Tensor<T> ap = a.dim() == 1 ? a.detach().unsqueeze(0) : a.detach();
  Tensor<T> bp = b.dim() == 1 ? b.detach().unsqueeze(-1) : b.detach();
  Tensor<T> product_ab = product(ap, bp);
  Shape y_shape = product_ab.shape();
  if (b.dim() == 1) y_shape.erase(y_shape.end() - 1);
  if (a.dim() == 1) y_shape.erase(y_shape.end() - 1 - (b.dim() == 1 ? 0 : 1));
  Tensor<T> y = product_ab.view(y_shape);
  if (autograd::needs_grad(a, b))
    autograd::record(y, name, {a, b}, [ap, bp, product, reduce_to, a_shape = a.shape(), b_shape = b.shape(),
                                       p_shape = product_ab.shape()](const Tensor<T>& g, const NeedsGrad& need) {
      Tensor<T> gp = g.reshape(p_shape), ga, gb;
      if (need[0]) ga = reduce_to(product(gp, bp.mT()), ap.shape()).reshape(a_shape);
      if (need[1]) {
        const int64_t K = ap.size(-1), N = bp.size(-1);
        if (numel_of(Shape(bp.shape().begin(), bp.shape().end() - 2)) == 1 && gp.dim() > 2)
          gb = product(as_rows(ap, K).mT(), as_rows(gp, N)).reshape(b_shape);
        else
          gb = reduce_to(product(ap.mT(), gp), bp.shape()).reshape(b_shape);
      }
      return std::vector<Tensor<T>>{ga, gb};
    });
  return y;
}

inline void check_batch_dims(const Shape& a, const Shape& b, const char* op) {
  const size_t na = a.size() > 2 ? a.size() - 2 : 0, nb = b.size() > 2 ? b.size() - 2 : 0, n = std::max(na, nb);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - na ? 1 : a[i - (n - na)], db = i < n - nb ? 1 : b[i - (n - nb)];
    HG_CHECK(da == db || da == 1 || db == 1, op, "batch dims of shapes ", to_string(a), " and ", to_string(b),
             " cannot be broadcast (", da, " vs ", db, ")");
  }
}

template <class T>
void check_linear_devices(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias) {
  HG_CHECK(weight.device() == x.device() && (!bias.defined() || bias.device() == x.device()), "linear",
           "expected input, weight and bias on one device, got ", x.device().str(), ", ", weight.device().str(),
           bias.defined() ? ", " + bias.device().str() : std::string());
}

// linear on CUDA: y_rows = x_rows W^T with the bias in cuBLASLt's epilogue; backward
// dx = g W, dW = g^T x (a transposed view, no copy), db = Σ rows of g.
template <class T>
Tensor<T> cuda_linear(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias) {
  check_linear_devices(x, weight, bias);
  check_cuda_float(std::is_same_v<T, float>, "linear", dtype_name<T>());
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  Tensor<T> x_rows = as_rows(x.detach(), in_features), w = weight.detach();
  const int64_t rows = x_rows.size(0);
  Tensor<T> y_rows({rows, out_features}, x.device());
  Tensor<T> y3 = y_rows.view({1, rows, out_features});
  cuda_product_into(x_rows.unsqueeze(0), w.mT().unsqueeze(0), y3, in_features > 0 ? bias : Tensor<T>());
  if (in_features == 0 && bias.defined()) y_rows = add(y_rows, bias.detach());
  Shape y_shape = x.shape();
  y_shape.back() = out_features;
  Tensor<T> y = y_rows.view(y_shape);
  if (autograd::needs_grad(x, weight, bias))
    autograd::record(y, "Linear", {x, weight, bias}, [x_rows, w, x_shape = x.shape()](const Tensor<T>& g,
                                                                                     const NeedsGrad& need) {
      const int64_t rows = x_rows.size(0), out_features = w.size(0), in_features = w.size(1);
      Tensor<T> g_rows = as_rows(g, out_features).contiguous(), gx, gw, gb;
      if (need[0]) {
        gx = Tensor<T>({rows, in_features}, g.device());
        Tensor<T> gx3 = gx.view({1, rows, in_features});
        cuda_product_into(g_rows.unsqueeze(0), w.unsqueeze(0), gx3);
        gx = gx.view(x_shape);
      }
      if (need[1]) {
        gw = Tensor<T>({out_features, in_features}, g.device());
        Tensor<T> gw3 = gw.view({1, out_features, in_features});
        cuda_product_into(g_rows.mT().unsqueeze(0), x_rows.unsqueeze(0), gw3);
      }
      if (need[2]) gb = sum(g_rows, {0});
      return std::vector<Tensor<T>>{gx, gw, gb};
    });
  return y;
}

// linear under autocast, on either device: every product an autocast_product (the bias added in
// fp32 before the output's rounding), db = bf16(Σ rows of bf16(g)). W is read in its bf16 form
// (autocast_weight: converted once per region for a parameter), which backward keeps, as torch
// saves the cast weight. The closure rounds even when backward() runs after the guard is gone.
template <class T>
Tensor<T> autocast_linear(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias) {
  check_linear_devices(x, weight, bias);
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  Tensor<T> x_rows = as_rows(x.detach(), in_features);
  Tensor<bfloat16> w = autocast_weight(weight);
  Shape y_shape = x.shape();
  y_shape.back() = out_features;
  Tensor<T> y = autocast_product(x_rows, w.mT(), bias).view(y_shape);
  if (autograd::needs_grad(x, weight, bias))
    autograd::record(y, "Linear", {x, weight, bias}, [x_rows, w, x_shape = x.shape()](const Tensor<T>& g,
                                                                                     const NeedsGrad& need) {
      Tensor<T> g_rows = as_rows(g, w.size(0)), gx, gw, gb;
      if (need[0]) gx = autocast_product(g_rows, w).view(x_shape);
      if (need[1]) gw = autocast_product(g_rows.mT(), x_rows);
      if (need[2]) gb = round_to_bf16(sum(round_to_bf16(g_rows), {0}));
      return std::vector<Tensor<T>>{gx, gw, gb};
    });
  return y;
}

}  // namespace detail

// matmul: torch.matmul. 1-D x 1-D is a dot product; a 1-D left (right) operand acts as a row
// (column) and that dim is dropped from the result; batch dims broadcast.
template <class T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
  HG_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul", "both arguments need at least 1 dim, got shapes ",
           to_string(a.shape()), " and ", to_string(b.shape()));
  const int64_t ka = a.size(-1), kb = b.dim() == 1 ? b.size(0) : b.size(-2);
  HG_CHECK(ka == kb, "matmul", "shapes ", to_string(a.shape()), " and ", to_string(b.shape()),
           " cannot be multiplied (", ka, " != ", kb, ")");
  detail::check_batch_dims(a.shape(), b.shape(), "matmul");
  return detail::product_op(a, b, "Matmul", detail::autocast_applies<T>());
}

// bmm: [B, M, K] @ [B, K, N] -> [B, M, N], no broadcasting (as torch.bmm).
template <class T>
Tensor<T> bmm(const Tensor<T>& a, const Tensor<T>& b) {
  HG_CHECK(a.dim() == 3 && b.dim() == 3, "bmm", "expected 3-D tensors, got shapes ", to_string(a.shape()), " and ",
           to_string(b.shape()));
  HG_CHECK(a.size(0) == b.size(0), "bmm", "batch sizes of shapes ", to_string(a.shape()), " and ",
           to_string(b.shape()), " differ (", a.size(0), " != ", b.size(0), ")");
  HG_CHECK(a.size(2) == b.size(1), "bmm", "shapes ", to_string(a.shape()), " and ", to_string(b.shape()),
           " cannot be multiplied (", a.size(2), " != ", b.size(1), ")");
  return detail::product_op(a, b, "Bmm", detail::autocast_applies<T>());
}

// linear: y = x W^T + b, x [..., in], W [out, in], b [out] or undefined. One GEMM over all rows of
// x, starting from the bias rows, with W^T read as a column-major map of W.
// dx = g W, dW = g_rows^T x_rows, db = sum of g's rows.
template <class T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias = Tensor<T>()) {
  HG_CHECK(weight.dim() == 2, "linear", "expected a 2-D weight [out_features, in_features], got shape ",
           to_string(weight.shape()));
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  HG_CHECK(x.dim() >= 1 && x.size(-1) == in_features, "linear", "input of shape ", to_string(x.shape()),
           " does not end in in_features = ", in_features, " of weight shape ", to_string(weight.shape()));
  HG_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == out_features), "linear", "expected a bias of shape [",
           out_features, "], got ", bias.defined() ? to_string(bias.shape()) : "undefined");
  if constexpr (std::is_same_v<T, float>)
    if (Autocast::is_enabled()) return detail::autocast_linear(x, weight, bias);
  if (x.device().is_cuda() || weight.device().is_cuda()) return detail::cuda_linear(x, weight, bias);
  Tensor<T> x_rows = detail::as_rows(x.detach(), in_features), w = weight.detach();
  const int64_t rows = x_rows.size(0);
  Tensor<T> y_rows({rows, out_features});
  if (bias.defined()) cpu::fill_rows(y_rows.data(), rows, out_features, out_features, bias.contiguous().data());
  detail::mm_into(x_rows, w.mT(), y_rows, bias.defined());
  Shape y_shape = x.shape();
  y_shape.back() = out_features;
  Tensor<T> y = y_rows.view(y_shape);
  if (autograd::needs_grad(x, weight, bias))
    autograd::record(y, "Linear", {x, weight, bias}, [x_rows, w, x_shape = x.shape()](const Tensor<T>& g,
                                                                                     const NeedsGrad& need) {
      const int64_t rows = x_rows.size(0), out_features = w.size(0), in_features = w.size(1);
      Tensor<T> g_rows = detail::as_rows(g, out_features).contiguous(), gx, gw, gb;
      if (need[0]) {
        gx = Tensor<T>({rows, in_features});
        detail::mm_into(g_rows, w, gx, false);
        gx = gx.view(x_shape);
      }
      if (need[1]) {
        gw = Tensor<T>({out_features, in_features});
        detail::mm_into(g_rows.mT(), x_rows, gw, false);
      }
      if (need[2]) {
        gb = Tensor<T>({out_features});
        cpu::sum_rows(g_rows.data(), rows, out_features, out_features, gb.data());
      }
      return std::vector<Tensor<T>>{gx, gw, gb};
    });
  return y;
}

}  // namespace histograd
