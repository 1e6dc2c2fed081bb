// Reductions over dims with keepdim: sum, mean, var, logsumexp, max/min (values and
// indices), amax/amin, argmax/argmin, and sum_to (the adjoint of broadcasting, used by
// every binary op's backward). Sums accumulate in double for float inputs so results do
// not drift with the reduced length, and in float for bfloat16/half (PyTorch's CPU rule); CUDA
// tensors reduce the same rows with cuda/reduce.cu (also accumulating float sums in double).
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/parallel.hpp"
#include "device.hpp"
#include "elementwise.hpp"

namespace histograd {

namespace detail {

// The reduced dims as a sorted 0/1 mask; an empty list means "all dims".
inline std::vector<bool> reduce_mask(const Shape& dims, int64_t ndim, const char* op) {
  std::vector<bool> mask(static_cast<size_t>(ndim), dims.empty());
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, ndim, op);
    HG_CHECK(!mask[w], op, "dim ", w, " appears more than once in ", to_string(dims));
    mask[w] = true;
  }
  return mask;
}

inline Shape reduce_mask_dims(const std::vector<bool>& mask) {
  Shape dims;
  for (size_t d = 0; d < mask.size(); ++d) if (mask[d]) dims.push_back(static_cast<int64_t>(d));
  return dims;
}

inline Shape reduced_shape(const Shape& shape, const std::vector<bool>& mask, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (!mask[d]) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

// x as [outer, inner] contiguous rows with the reduced dims innermost (copying only when the
// layout demands it), on x's device.
template <class T> struct ReducedRows {
  Tensor<T> rows;
  int64_t outer = 0, inner = 1;
};
template <class T>
ReducedRows<T> reduced_rows(const Tensor<T>& x, const std::vector<bool>& mask) {
  Shape order;
  for (size_t d = 0; d < mask.size(); ++d) if (!mask[d]) order.push_back(static_cast<int64_t>(d));
  for (size_t d = 0; d < mask.size(); ++d) if (mask[d]) order.push_back(static_cast<int64_t>(d));
  ReducedRows<T> out;
  out.rows = x.detach().permute(order).contiguous();
  for (size_t d = 0; d < mask.size(); ++d) if (mask[d]) out.inner *= x.shape()[d];
  out.outer = out.inner == 0 ? numel_of(reduced_shape(x.shape(), mask, false)) : x.numel() / out.inner;
  return out;
}

// Calls row_fn(row_index, row_pointer, inner) for each row of reduced_rows(x, mask).
template <class T, class RowFn>
void for_each_reduced_row(const Tensor<T>& x, const std::vector<bool>& mask, RowFn row_fn) {
  ReducedRows<T> r = reduced_rows(x, mask);
  const T* base = r.rows.data();
  const int64_t inner = r.inner;
  cpu::parallel_for(r.outer, std::max<int64_t>(inner, 1), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) row_fn(row, base + row * inner, inner);
  });
}

// y[r] = op(row r) on the GPU, y contiguous on x's device.
template <class T>
void cuda_reduce([[maybe_unused]] cuda::ReduceOp op, [[maybe_unused]] const Tensor<T>& x,
                 [[maybe_unused]] const std::vector<bool>& mask, [[maybe_unused]] Tensor<T>& y, const char* name) {
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (cuda_reduce_type<T>) {
    ReducedRows<T> r = reduced_rows(x, mask);
    cuda::reduce_rows<T>(op, r.rows.device_data(), r.outer, r.inner, y.device_data());
    return;
  }
#endif
  no_cuda_kernel(name, dtype_name<T>());
}

// The gradient of a keepdim=false reduction, re-expanded to broadcast against the input.
template <class T>
Tensor<T> unsqueeze_reduced(const Tensor<T>& g, const Shape& in_shape, const std::vector<bool>& mask) {
  return g.reshape(reduced_shape(in_shape, mask, true));
}

}  // namespace detail

// sum: y = Σ x over dims;  dx = broadcast(g)
template <class T> Tensor<T> sum(const Tensor<T>& x, const Shape& dims = {}, bool keepdim = false) {
  auto mask = detail::reduce_mask(dims, x.dim(), "sum");
  Tensor<T> y(detail::reduced_shape(x.shape(), mask, keepdim), x.device());
  if (detail::is_cuda(x)) detail::cuda_reduce(cuda::ReduceOp::Sum, x, mask, y, "sum");
  else
    detail::for_each_reduced_row(x, mask, [&, out = y.data()](int64_t r, const T* row, int64_t n) {
      accumulate_t<T> acc = 0;
      for (int64_t k = 0; k < n; ++k) acc += static_cast<accumulate_t<T>>(row[k]);
      out[r] = static_cast<T>(acc);
    });
  autograd::record(y, "Sum", {x}, [in_shape = x.shape(), mask](const Tensor<T>& g, const NeedsGrad&) {
    return std::vector<Tensor<T>>{detail::unsqueeze_reduced(g, in_shape, mask).expand(in_shape).contiguous()};
  });
  return y;
}

// mean: y = sum / count;  dx = broadcast(g) / count
template <class T> Tensor<T> mean(const Tensor<T>& x, const Shape& dims = {}, bool keepdim = false) {
  auto mask = detail::reduce_mask(dims, x.dim(), "mean");
  int64_t count = x.numel() / std::max<int64_t>(1, numel_of(detail::reduced_shape(x.shape(), mask, false)));
  HG_CHECK(count > 0, "mean", "cannot take the mean over an empty dim of shape ", to_string(x.shape()));
  if constexpr (is_reduced_float<T>) {  // PyTorch's CPU: the float sum divided in float, rounded once
    if (!detail::is_cuda(x)) {
      Tensor<T> y(detail::reduced_shape(x.shape(), mask, keepdim));
      detail::for_each_reduced_row(x, mask, [&, out = y.data()](int64_t r, const T* row, int64_t n) {
        float acc = 0;
        for (int64_t k = 0; k < n; ++k) acc += static_cast<float>(row[k]);
        out[r] = T(acc / static_cast<float>(count));
      });
      return y;
    }
  }
  return mul(sum(x, dims, keepdim), Scalar<T>(1) / Scalar<T>(count));
}

// sum_to: sums g over the dims that broadcasting added or stretched, giving `shape`.
template <class T> Tensor<T> sum_to(const Tensor<T>& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  HG_CHECK(broadcast_shapes(shape, g.shape(), "sum_to") == g.shape(), "sum_to", "shape ", to_string(shape),
           " does not broadcast to ", to_string(g.shape()));
  Shape dims;
  size_t lead = g.shape().size() - shape.size();
  for (size_t d = 0; d < g.shape().size(); ++d)
    if (d < lead || (shape[d - lead] == 1 && g.shape()[d] != 1)) dims.push_back(static_cast<int64_t>(d));
  if (dims.empty()) return g.reshape(shape);
  return sum(g, dims, false).reshape(shape);
}

// var: y = Σ (x - mean)² / (count - correction);  dx = 2 (x - mean) g / (count - correction)
template <class T>
Tensor<T> var(const Tensor<T>& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false) {
  auto mask = detail::reduce_mask(dims, x.dim(), "var");
  int64_t count = x.numel() / std::max<int64_t>(1, numel_of(detail::reduced_shape(x.shape(), mask, false)));
  HG_CHECK(count - correction > 0, "var", "need more than ", correction, " elements per reduction, got ", count);
  Tensor<T> centered = x - mean(x, dims, true);
  return mul(sum(square(centered), dims, keepdim), T(1) / T(count - correction));
}

// logsumexp: y = m + log Σ exp(x - m) with m the row max (stable);  dx = g exp(x - y)
template <class T> Tensor<T> logsumexp(const Tensor<T>& x, const Shape& dims, bool keepdim = false) {
  auto mask = detail::reduce_mask(dims, x.dim(), "logsumexp");
  Tensor<T> y(detail::reduced_shape(x.shape(), mask, keepdim), x.device());
  if (detail::is_cuda(x)) detail::cuda_reduce(cuda::ReduceOp::LogSumExp, x, mask, y, "logsumexp");
  else
    detail::for_each_reduced_row(x, mask, [&, out = y.data()](int64_t r, const T* row, int64_t n) {
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t k = 0; k < n; ++k) m = std::max(m, row[k]);
      if (std::isinf(m)) { out[r] = m; return; }
      accumulate_t<T> acc = 0;
      for (int64_t k = 0; k < n; ++k) acc += std::exp(row[k] - m);
      out[r] = m + static_cast<T>(std::log(acc));
    });
  if (autograd::needs_grad(x))
    autograd::record(y, "Logsumexp", {x}, [x = x.detach(), y = y.detach(), mask](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> yk = detail::unsqueeze_reduced(y, x.shape(), mask), gk = detail::unsqueeze_reduced(g, x.shape(), mask);
      return std::vector<Tensor<T>>{mul(gk, exp(sub(x, yk)))};
    });
  return y;
}

// max/min over one dim: values and the index of the first extreme (as PyTorch on CPU).
template <class T> struct ValuesIndices {
  Tensor<T> values;
  Tensor<int64_t> indices;
};

namespace detail {
template <class T, class Better>
ValuesIndices<T> extreme_along(const Tensor<T>& x, int64_t dim, bool keepdim, const char* op, const char* name,
                               [[maybe_unused]] bool largest, Better better) {
  HG_CHECK(x.numel() > 0, op, "cannot reduce an empty tensor of shape ", to_string(x.shape()));
  dim = wrap_dim(dim, x.dim(), op);
  std::vector<bool> mask(static_cast<size_t>(std::max<int64_t>(x.dim(), 1)), false);
  if (x.dim() > 0) mask[dim] = true;
  Shape out_shape = reduced_shape(x.shape(), mask, keepdim);
  Tensor<T> values(out_shape, x.device());
  Tensor<int64_t> indices(out_shape, x.device());
  Tensor<T> xs = x.dim() == 0 ? x.reshape({1}) : x;
  if (is_cuda(x)) {
#ifdef HISTOGRAD_WITH_CUDA
    if constexpr (cuda_reduce_type<T>) {
      ReducedRows<T> r = reduced_rows(xs, mask);
      cuda::arg_extreme_rows<T>(largest, r.rows.device_data(), r.outer, r.inner, values.device_data(),
                                indices.device_data());
    } else {
      no_cuda_kernel(op, dtype_name<T>());
    }
#endif
  } else {
    T* pv = values.data();
    int64_t* pi = indices.data();
    for_each_reduced_row(xs, mask, [&](int64_t r, const T* row, int64_t n) {
      int64_t best = 0;
      for (int64_t k = 1; k < n; ++k)
        if (better(row[k], row[best]) || (std::isnan(row[k]) && !std::isnan(row[best]))) best = k;
      pv[r] = row[best];
      pi[r] = best;
    });
  }
  // dx: g scattered to the chosen index
  autograd::record(values, name, {x}, [in_shape = x.shape(), indices, dim, mask, op](const Tensor<T>& g, const NeedsGrad&) {
    Tensor<T> grad_in = zeros<T>(in_shape, g.device());
    Tensor<T> gc = g.contiguous();
    if (is_cuda(g)) {
#ifdef HISTOGRAD_WITH_CUDA
      if constexpr (cuda_reduce_type<T>) {
        int64_t inner = 1;
        for (int64_t d = dim + 1; d < static_cast<int64_t>(in_shape.size()); ++d) inner *= in_shape[d];
        const int64_t n = in_shape.empty() ? 1 : in_shape[dim], outer = inner == 0 ? 0 : gc.numel() / inner;
        cuda::scatter_add_rows<T>(gc.device_data(), indices.device_data(), outer, n, inner, grad_in.device_data());
        return std::vector<Tensor<T>>{grad_in};
      }
#endif
      no_cuda_kernel(op, dtype_name<T>());
    }
    const int64_t* idx = indices.data();
    int64_t inner = 1;
    for (int64_t d = dim + 1; d < static_cast<int64_t>(in_shape.size()); ++d) inner *= in_shape[d];
    int64_t n = in_shape.empty() ? 1 : in_shape[dim];
    for (int64_t r = 0; r < gc.numel(); ++r) {
      int64_t outer_i = r / inner, inner_i = r % inner;
      grad_in.data()[(outer_i * n + idx[r]) * inner + inner_i] += gc.data()[r];
    }
    return std::vector<Tensor<T>>{grad_in};
  });
  return {values, indices};
}
}  // namespace detail

template <class T> ValuesIndices<T> max(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
  return detail::extreme_along(x, dim, keepdim, "max", "Max", true, [](T a, T b) { return a > b; });
}
template <class T> ValuesIndices<T> min(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
  return detail::extreme_along(x, dim, keepdim, "min", "Min", false, [](T a, T b) { return a < b; });
}
template <class T> Tensor<int64_t> argmax(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
  NoGradGuard no_grad;
  return max(x, dim, keepdim).indices;
}
template <class T> Tensor<int64_t> argmin(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
  NoGradGuard no_grad;
  return min(x, dim, keepdim).indices;
}

// amax/amin over dims (all dims by default): ties share the gradient evenly (PyTorch's rule).
template <class T> Tensor<T> amax(const Tensor<T>& x, const Shape& dims = {}, bool keepdim = false) {
  auto mask = detail::reduce_mask(dims, x.dim(), "amax");
  HG_CHECK(x.numel() > 0, "amax", "cannot reduce an empty tensor of shape ", to_string(x.shape()));
  Tensor<T> y(detail::reduced_shape(x.shape(), mask, keepdim), x.device());
  if (detail::is_cuda(x)) detail::cuda_reduce(cuda::ReduceOp::Max, x, mask, y, "amax");
  else
    detail::for_each_reduced_row(x, mask, [&, out = y.data()](int64_t r, const T* row, int64_t n) {
      T m = row[0];
      for (int64_t k = 1; k < n; ++k) m = (row[k] > m || std::isnan(row[k])) ? row[k] : m;
      out[r] = m;
    });
  if (autograd::needs_grad(x))
    autograd::record(y, "Amax", {x}, [x = x.detach(), y = y.detach(), mask](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> yk = detail::unsqueeze_reduced(y, x.shape(), mask), gk = detail::unsqueeze_reduced(g, x.shape(), mask);
      Tensor<T> is_max = detail::map2(cuda::BinaryOp::EqualValue, x, yk, [](T a, T b) { return T(a == b); }, "amax");
      Tensor<T> ties = sum(is_max, detail::reduce_mask_dims(mask), true);
      return std::vector<Tensor<T>>{div(mul(is_max, gk), ties)};
    });
  return y;
}
template <class T> Tensor<T> amin(const Tensor<T>& x, const Shape& dims = {}, bool keepdim = false) {
  return neg(amax(neg(x), dims, keepdim));
}
// max()/min() over all elements, as in torch.max(x).
template <class T> Tensor<T> max(const Tensor<T>& x) { return amax(x); }
template <class T> Tensor<T> min(const Tensor<T>& x) { return amin(x); }

}  // namespace histograd
