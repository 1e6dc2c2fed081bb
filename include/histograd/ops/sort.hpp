// sort, argsort and topk along one dim, as torch.sort (stable) / torch.topk. Values are
// differentiable: each output element is one input element, so the backward puts g back
// at the indices it came from (no two outputs share an index, so nothing accumulates).
// CUDA tensors run cuda/sort.hpp's rank sort, which gives exactly the CPU's order.
#pragma once
#include <type_traits>

#include "../cuda/sort.hpp"
#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/indexing.hpp"
#include "../cpu/sort.hpp"
#include "indexing.hpp"
#include "reduce.hpp"

namespace histograd {

namespace detail {
template <class T>
ValuesIndices<T> cuda_select_along(const Tensor<T>& x, [[maybe_unused]] int64_t outer, [[maybe_unused]] int64_t n,
                                   [[maybe_unused]] int64_t inner, [[maybe_unused]] int64_t k,
                                   [[maybe_unused]] bool descending, [[maybe_unused]] bool sorted,
                                   [[maybe_unused]] const Shape& out_shape, const char* name) {
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int64_t>) {
    cuda::set_device(x.device().index);
    Tensor<T> values(out_shape, x.device()), xc = x.detach().contiguous();
    Tensor<int64_t> indices(out_shape, x.device());
    cuda::select_along<T>(xc.device_data(), outer, n, inner, k, descending, sorted, values.device_data(),
                          indices.device_data());
    if (autograd::needs_grad(x))
      autograd::record(values, name, {x}, [in_shape = x.shape(), indices, outer, n, k, inner](const Tensor<T>& g,
                                                                                              const NeedsGrad&) {
        Tensor<T> gc = g.contiguous(), dx = cuda_zeros<T>(in_shape, g.device());
        const Shape walk{outer, k, inner}, dense{k * inner, inner, 1}, indexed{n * inner, inner, 1};
        cuda_scatter_add(index_walk(walk, 1, dense, indexed, dense), gc, indices, dx, "sort");
        return std::vector<Tensor<T>>{dx};
      });
    return {values, indices};
  }
#endif
  fail(name, "no CUDA kernel for ", dtype_name<T>(), " tensors on ", x.device().str());
}

// The first k of each lane along `dim` in the requested order, and the scatter-back gradient.
template <class T>
ValuesIndices<T> select_along(const Tensor<T>& x, int64_t dim, int64_t k, bool descending, bool sorted,
                              const char* op, const char* name) {
  dim = wrap_dim(dim, x.dim(), op);
  const Shape shape = x.dim() == 0 ? Shape{1} : x.shape();
  const int64_t n = shape[dim], outer = prod_dims(shape, 0, dim);
  const int64_t inner = prod_dims(shape, dim + 1, static_cast<int64_t>(shape.size()));
  HG_CHECK(k >= 0 && k <= n, op, "k ", k, " out of range for dim ", dim, " of size ", n);
  Shape out_shape = x.shape();
  if (x.dim() > 0) out_shape[dim] = k;
  if (x.device().is_cuda()) return cuda_select_along(x, outer, n, inner, k, descending, sorted, out_shape, name);
  Tensor<T> values(out_shape), xc = x.detach().contiguous();
  Tensor<int64_t> indices(out_shape);
  cpu::select_along(xc.data(), outer, n, inner, k, descending, sorted, values.data(), indices.data());
  if (autograd::needs_grad(x))
    autograd::record(values, name, {x}, [in_shape = x.shape(), indices, outer, n, k, inner](const Tensor<T>& g,
                                                                                            const NeedsGrad&) {
      const Shape walk{outer, k, inner};
      Tensor<T> gc = g.contiguous(), dx = zeros<T>(in_shape);
      cpu::scatter_add_along(gc.data(), cpu::axis_layout(walk, Shape{k * inner, inner, 1}, 1), indices.data(),
                             cpu::IndexSteps{k * inner, inner, 1}, dx.data(),
                             cpu::axis_layout(walk, Shape{n * inner, inner, 1}, 1), outer, k, inner);
      return std::vector<Tensor<T>>{dx};
    });
  return {values, indices};
}
}  // namespace detail

// sort: values in ascending (or descending) order along dim, ties in input order, NaN last
// (first when descending); indices[j] = where values[j] came from.  dx[indices[j]] = g[j]
template <class T> ValuesIndices<T> sort(const Tensor<T>& x, int64_t dim = -1, bool descending = false) {
  dim = wrap_dim(dim, x.dim(), "sort");
  const int64_t n = x.dim() == 0 ? 1 : x.size(dim);
  return detail::select_along(x, dim, n, descending, true, "sort", "Sort");
}

template <class T> Tensor<int64_t> argsort(const Tensor<T>& x, int64_t dim = -1, bool descending = false) {
  NoGradGuard no_grad;
  return sort(x, dim, descending).indices;
}

// topk: the k largest (or smallest) along dim, best first when sorted, else in input order;
// equal values are taken in input order.  dx[indices[j]] = g[j]
template <class T>
ValuesIndices<T> topk(const Tensor<T>& x, int64_t k, int64_t dim = -1, bool largest = true, bool sorted = true) {
  return detail::select_along(x, dim, k, largest, sorted, "topk", "Topk");
}

}  // namespace histograd
