// Losses with torch.nn.functional's semantics: cross_entropy with class-index targets
// (ignore_index, label_smoothing), cross_entropy with probability targets (DINO's H(t, s),
// with a gradient to the targets too), and mse_loss. Cross-entropy is fused: one
// log-softmax per row forward, and backward = (softmax - smoothed one-hot) * g / count
// (kernels in cpu/loss.hpp; reference: aten/src/ATen/native/LossNLL.cpp).
// On CUDA: hard labels run cuda/cross_entropy.hpp's fused kernels (float32, no label smoothing);
// probability targets are composed of log_softmax and device reductions (autograd differentiates).
#pragma once
#include <type_traits>

#include "../cuda/cross_entropy.hpp"
#include "../cuda/indexing.hpp"
#include "softmax.hpp"
#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/loss.hpp"
#include "elementwise.hpp"
#include "reduce.hpp"

namespace histograd {

enum class Reduction { None, Mean, Sum };

namespace detail {
// Logits [N, C, d1, ...] (or [N, C], or unbatched [C]) as contiguous rows [N·d1·..., C]:
// the class dim moves last, so each row is one prediction.
template <class T> Tensor<T> class_rows(const Tensor<T>& logits) {
  const int64_t classes = logits.dim() == 1 ? logits.size(0) : logits.size(1);
  if (logits.dim() <= 2) return logits.detach().contiguous().reshape({-1, classes});
  Shape order{0};
  for (int64_t d = 2; d < logits.dim(); ++d) order.push_back(d);
  order.push_back(1);
  return logits.detach().permute(order).contiguous().reshape({-1, classes});
}

// The inverse of class_rows: rows [M, C] back to the layout of `shape`.
template <class T> Tensor<T> rows_to_class_layout(const Tensor<T>& rows, const Shape& shape) {
  if (shape.size() <= 2) return rows.reshape(shape);
  Shape moved{shape[0]}, inverse{0, static_cast<int64_t>(shape.size()) - 1};
  for (size_t d = 2; d < shape.size(); ++d) {
    moved.push_back(shape[d]);
    inverse.push_back(static_cast<int64_t>(d) - 1);
  }
  moved.push_back(shape[1]);
  return rows.reshape(moved).permute(inverse).contiguous();
}

// The loss's shape for reduction None: the logits' shape without the class dim.
inline Shape without_class_dim(const Shape& logits_shape) {
  Shape out = logits_shape;
  out.erase(out.begin() + (logits_shape.size() == 1 ? 0 : 1));
  return out;
}

template <class T> T accumulate_losses(const Tensor<T>& losses) {
  accumulate_t<T> total = 0;
  for (int64_t r = 0; r < losses.numel(); ++r) total += losses.data()[r];
  return static_cast<T>(total);
}

inline void check_cross_entropy_args(const Shape& logits_shape, double label_smoothing) {
  HG_CHECK(!logits_shape.empty(), "cross_entropy", "expected logits of shape [N, C], [N, C, d1, ...] or [C], got a 0-d tensor");
  HG_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, "cross_entropy", "label_smoothing must be in [0, 1], got ",
           label_smoothing);
}
}  // namespace detail

namespace detail {
// Hard-label cross_entropy on CUDA logits. The labels (host or device) are checked and counted on
// the device with one small read-back, so a bad label is an Error, as on the CPU.
template <class T>
Tensor<T> cuda_cross_entropy([[maybe_unused]] const Tensor<T>& logits, [[maybe_unused]] const Tensor<int64_t>& target,
                             [[maybe_unused]] int64_t ignore_index, double label_smoothing,
                             [[maybe_unused]] Reduction reduction, [[maybe_unused]] const Shape& loss_shape,
                             [[maybe_unused]] int64_t classes) {
  HG_CHECK((std::is_same_v<T, float>), "cross_entropy", "no CUDA kernel for ", dtype_name<T>(), " logits (float32 only)");
  HG_CHECK(label_smoothing == 0.0, "cross_entropy", "label_smoothing is not supported on CUDA, got ", label_smoothing);
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    cuda::set_device(logits.device().index);
    const Tensor<int64_t> labels = target.to(logits.device()).contiguous();
    const int64_t rows_count = labels.numel();
    const cuda::IndexCheck counts = cuda::check_index(labels.device_data(), rows_count, classes, ignore_index);
    HG_CHECK(counts.bad == 0, "cross_entropy", "target ", counts.bad_value, " out of range for ", classes, " classes");
    const int64_t count = counts.valid;
    Tensor<T> rows = class_rows(logits);
    Tensor<float> losses(loss_shape, logits.device()), lse(Shape{rows_count}, logits.device());
    cuda::cross_entropy_forward<float>(rows.device_data(), labels.device_data(), losses.device_data(),
                                       lse.device_data(), rows_count, classes, ignore_index);
    Tensor<T> out = losses;
    if (reduction == Reduction::Sum) out = sum(losses.detach());
    if (reduction == Reduction::Mean) out = sum(losses.detach()) / static_cast<T>(count);
    if (autograd::needs_grad(logits))
      autograd::record(out, "CrossEntropy", {logits}, [rows, labels, lse, shape = logits.shape(), ignore_index,
                                                       reduction, count](const Tensor<T>& g, const NeedsGrad&) {
        const Tensor<T> gc = g.contiguous();
        Tensor<T> drows(rows.shape(), rows.device());
        const float scale = reduction == Reduction::Mean ? 1.0f / static_cast<float>(count) : 1.0f;
        cuda::cross_entropy_backward<float>(rows.device_data(), labels.device_data(), lse.device_data(),
                                            gc.device_data(), reduction == Reduction::None ? 1 : 0, scale,
                                            drows.device_data(), rows.size(0), rows.size(1), ignore_index);
        return std::vector<Tensor<T>>{rows_to_class_layout(drows, shape)};
      });
    return out;
  }
#endif
  fail("cross_entropy", "histograd was built without CUDA");
}

// Probability-target cross_entropy on CUDA: -Σ_c t'_c log_softmax(logits)_c per prediction from
// device ops, so both gradients (logits and targets) come from the ops' own backward.
template <class T>
Tensor<T> cuda_soft_cross_entropy(const Tensor<T>& logits, const Tensor<T>& target_probs, double label_smoothing,
                                  Reduction reduction) {
  HG_CHECK(target_probs.device() == logits.device(), "cross_entropy", "expected target probabilities on ",
           logits.device().str(), ", got ", target_probs.device().str());
  const int64_t class_dim = logits.dim() == 1 ? 0 : 1, classes = logits.size(class_dim);
  Tensor<T> targets = target_probs;
  if (label_smoothing != 0.0)
    targets = target_probs * static_cast<T>(1.0 - label_smoothing) + static_cast<T>(label_smoothing / double(classes));
  Tensor<T> losses = -sum(targets * log_softmax(logits, class_dim), {class_dim});
  if (reduction == Reduction::Sum) return sum(losses);
  if (reduction == Reduction::Mean) return mean(losses);
  return losses;
}
}  // namespace detail

// cross_entropy with class indices: per row loss = (1-ε)(-log p_t) + ε mean_c(-log p_c), 0
// where target == ignore_index; Mean divides by the number of non-ignored targets (NaN when
// there are none, as in torch).  dlogits = (p - (1-ε) onehot(t) - ε/C) * g / count
template <class T>
Tensor<T> cross_entropy(const Tensor<T>& logits, const Tensor<int64_t>& target, int64_t ignore_index = -100,
                        double label_smoothing = 0.0, Reduction reduction = Reduction::Mean) {
  detail::check_cross_entropy_args(logits.shape(), label_smoothing);
  const Shape loss_shape = detail::without_class_dim(logits.shape());
  HG_CHECK(target.shape() == loss_shape, "cross_entropy", "expected target of shape ", to_string(loss_shape),
           " for logits of shape ", to_string(logits.shape()), ", got ", to_string(target.shape()));
  const int64_t classes = logits.dim() == 1 ? logits.size(0) : logits.size(1);
  if (logits.device().is_cuda())
    return detail::cuda_cross_entropy(logits, target, ignore_index, label_smoothing, reduction, loss_shape, classes);
  Tensor<int64_t> labels = target.contiguous();
  int64_t count = 0;
  for (int64_t r = 0; r < labels.numel(); ++r) {
    const int64_t t = labels.data()[r];
    if (t == ignore_index) continue;
    HG_CHECK(t >= 0 && t < classes, "cross_entropy", "target ", t, " out of range for ", classes, " classes");
    ++count;
  }
  Tensor<T> rows = detail::class_rows(logits), losses(loss_shape), lse(Shape{rows.size(0)});
  cpu::cross_entropy_forward(rows.data(), labels.data(), rows.size(0), classes, ignore_index, label_smoothing,
                             losses.data(), lse.data());
  Tensor<T> out = losses;
  if (reduction == Reduction::Sum) out = scalar_tensor<T>(detail::accumulate_losses(losses));
  if (reduction == Reduction::Mean) out = scalar_tensor<T>(detail::accumulate_losses(losses) / static_cast<T>(count));
  if (autograd::needs_grad(logits))
    autograd::record(out, "CrossEntropy", {logits}, [rows, labels, lse, shape = logits.shape(), ignore_index,
                                                     label_smoothing, reduction, count](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> gc = g.contiguous(), scale = gc;
      if (reduction == Reduction::Mean) scale = scalar_tensor<T>(gc.item() / static_cast<T>(count));
      Tensor<T> drows(rows.shape());
      cpu::cross_entropy_backward(rows.data(), labels.data(), lse.data(), rows.size(0), rows.size(1), ignore_index,
                                  label_smoothing, scale.data(), reduction == Reduction::None ? 1 : 0, drows.data());
      return std::vector<Tensor<T>>{detail::rows_to_class_layout(drows, shape)};
    });
  return out;
}

// cross_entropy with probability targets of the logits' shape (DINO's H(t, s)): per row
// loss = -Σ_c t'_c log_softmax(s)_c with t' = (1-ε)t + ε/C; Mean divides by the row count.
// dlogits = (Σt' · p - t') g,  dtarget = -(1-ε) log p · g
template <class T>
Tensor<T> cross_entropy(const Tensor<T>& logits, const Tensor<T>& target_probs, double label_smoothing = 0.0,
                        Reduction reduction = Reduction::Mean) {
  detail::check_cross_entropy_args(logits.shape(), label_smoothing);
  HG_CHECK(target_probs.shape() == logits.shape(), "cross_entropy", "expected target probabilities of the logits' shape ",
           to_string(logits.shape()), ", got ", to_string(target_probs.shape()));
  if (logits.device().is_cuda() || target_probs.device().is_cuda())
    return detail::cuda_soft_cross_entropy(logits, target_probs, label_smoothing, reduction);
  Tensor<T> rows = detail::class_rows(logits), target_rows = detail::class_rows(target_probs);
  const int64_t count = rows.size(0), classes = rows.size(1);
  Tensor<T> losses(detail::without_class_dim(logits.shape())), lse(Shape{count});
  cpu::soft_cross_entropy_forward(rows.data(), target_rows.data(), count, classes, label_smoothing, losses.data(),
                                  lse.data());
  Tensor<T> out = losses;
  if (reduction == Reduction::Sum) out = scalar_tensor<T>(detail::accumulate_losses(losses));
  if (reduction == Reduction::Mean) out = scalar_tensor<T>(detail::accumulate_losses(losses) / static_cast<T>(count));
  if (autograd::needs_grad(logits, target_probs))
    autograd::record(out, "SoftCrossEntropy", {logits, target_probs},
                     [rows, target_rows, lse, shape = logits.shape(), label_smoothing, reduction](const Tensor<T>& g,
                                                                                                  const NeedsGrad& need) {
      Tensor<T> gc = g.contiguous(), scale = gc;
      if (reduction == Reduction::Mean) scale = scalar_tensor<T>(gc.item() / static_cast<T>(rows.size(0)));
      Tensor<T> dlogits, dtarget;
      if (need[0]) dlogits = Tensor<T>(rows.shape());
      if (need[1]) dtarget = Tensor<T>(rows.shape());
      cpu::soft_cross_entropy_backward(rows.data(), target_rows.data(), lse.data(), rows.size(0), rows.size(1),
                                       label_smoothing, scale.data(), reduction == Reduction::None ? 1 : 0,
                                       need[0] ? dlogits.data() : nullptr, need[1] ? dtarget.data() : nullptr);
      return std::vector<Tensor<T>>{need[0] ? detail::rows_to_class_layout(dlogits, shape) : Tensor<T>(),
                                    need[1] ? detail::rows_to_class_layout(dtarget, shape) : Tensor<T>()};
    });
  return out;
}

// mse_loss: (a - b)² reduced. Unlike torch, which broadcasts with a warning, mismatched
// shapes are an error: broadcasting here is almost always a bug.  da = 2(a - b) g / n
template <class T> Tensor<T> mse_loss(const Tensor<T>& input, const Tensor<T>& target, Reduction reduction = Reduction::Mean) {
  HG_CHECK(input.shape() == target.shape(), "mse_loss", "expected input and target of the same shape, got ",
           to_string(input.shape()), " and ", to_string(target.shape()));
  Tensor<T> squared = square(sub(input, target));
  if (reduction == Reduction::None) return squared;
  if (reduction == Reduction::Sum) return sum(squared);
  return mean(squared);
}

}  // namespace histograd
