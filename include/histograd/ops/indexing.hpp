// Joining and indexing: cat, stack, index_select, gather, scatter_add and embedding, with
// torch's semantics (torch.cat, torch.gather, torch.Tensor.scatter_add, F.embedding).
// The adjoint of reading through an index is adding through it: gather's backward is a
// scatter_add and scatter_add's is a gather. Indices are bounds-checked up front; negative
// indices are out of range, as in torch. CUDA tensors run cuda/indexing.hpp's kernels (strided,
// no copies; the scatter-adds use atomics); indices are checked there with one small read-back.
#pragma once
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/elementwise.hpp"
#include "../cpu/indexing.hpp"
#include "../cuda/indexing.hpp"

namespace histograd {

namespace detail {
// A contiguous copy of `index` whose every value lies in [0, size).
inline Tensor<int64_t> checked_index(const Tensor<int64_t>& index, int64_t size, int64_t dim, const char* op) {
  Tensor<int64_t> idx = index.contiguous();
  const int64_t* p = idx.data();
  for (int64_t i = 0, n = idx.numel(); i < n; ++i)
    HG_CHECK(p[i] >= 0 && p[i] < size, op, "index ", p[i], " out of range for dim ", dim, " of size ", size);
  return idx;
}

inline int64_t prod_dims(const Shape& shape, int64_t begin, int64_t end) {
  int64_t n = 1;
  for (int64_t d = begin; d < end; ++d) n *= shape[d];
  return n;
}

// gather/scatter_add: same number of dims, and the index no larger than `other` outside `dim`
// (or in every dim when `all_dims`).
inline void check_index_fits(const Shape& index, const Shape& other, int64_t dim, bool all_dims, const char* op,
                             const char* other_name) {
  HG_CHECK(index.size() == other.size(), op, "expected index with as many dims as ", other_name, " (",
           other.size(), "), got index of shape ", to_string(index), " and ", other_name, " of shape ", to_string(other));
  for (size_t d = 0; d < index.size(); ++d)
    HG_CHECK(index[d] <= other[d] || (!all_dims && static_cast<int64_t>(d) == dim), op, "index of shape ",
             to_string(index), " is larger than ", other_name, " of shape ", to_string(other), " in dim ", d);
}

// ---- the CUDA path ----
// Zeros on a CUDA device (a byte fill: 0.0 and integer 0 are all-zero bytes).
template <class T>
Tensor<T> cuda_zeros(const Shape& shape, Device device) {
  Tensor<T> t(shape, device);
#ifdef HISTOGRAD_WITH_CUDA
  cuda::set_device(device.index);
  cuda::fill_bytes(t.device_data(), 0, static_cast<size_t>(t.numel()) * sizeof(T));
#endif
  return t;
}

// `index` on `device`, contiguous, every value in [0, size) (checked on the device).
inline Tensor<int64_t> cuda_checked_index(const Tensor<int64_t>& index, [[maybe_unused]] int64_t size,
                                          [[maybe_unused]] int64_t dim, Device device, [[maybe_unused]] const char* op) {
  Tensor<int64_t> idx = index.to(device).contiguous();
#ifdef HISTOGRAD_WITH_CUDA
  cuda::set_device(device.index);
  const cuda::IndexCheck check = cuda::check_index(idx.device_data(), idx.numel(), size, size);
  HG_CHECK(check.bad == 0 && check.ignored == 0, op, "index ", check.bad ? check.bad_value : size,
           " out of range for dim ", dim, " of size ", size);
#endif
  return idx;
}

// The walk of one gather/scatter: `walk` is the shape every element visits; the dense side,
// the indexed side (whose `dim` steps per index value) and the index each give their strides.
inline cuda::IndexWalk index_walk(const Shape& walk, int64_t dim, const Shape& dense_strides,
                                  const Shape& indexed_strides, const Shape& index_strides, int64_t skip = -1) {
  HG_CHECK(walk.size() <= static_cast<size_t>(cuda::kMaxIndexDims), "index", "CUDA indexing supports up to ",
           cuda::kMaxIndexDims, " dims, got shape ", to_string(walk));
  cuda::IndexWalk w;
  w.ndim = static_cast<int>(walk.size());
  w.dim = static_cast<int>(dim);
  w.skip = skip;
  for (size_t d = 0; d < walk.size(); ++d) {
    w.shape[d] = walk[d];
    w.dense_strides[d] = dense_strides[d];
    w.indexed_strides[d] = indexed_strides[d];
    w.index_strides[d] = index_strides[d];
  }
  return w;
}

template <class T>
void cuda_gather([[maybe_unused]] const cuda::IndexWalk& walk, [[maybe_unused]] const Tensor<T>& indexed,
                 [[maybe_unused]] const Tensor<int64_t>& index, Tensor<T>& dense, const char* op) {
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int64_t>) {
    cuda::set_device(dense.device().index);
    cuda::index_gather<T>(walk, indexed.device_data(), index.device_data(), dense.device_data());
    return;
  }
#endif
  fail(op, "no CUDA kernel for ", dtype_name<T>(), " tensors on ", dense.device().str());
}

template <class T>
void cuda_scatter_add([[maybe_unused]] const cuda::IndexWalk& walk, [[maybe_unused]] const Tensor<T>& dense,
                      [[maybe_unused]] const Tensor<int64_t>& index, Tensor<T>& indexed, const char* op) {
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    cuda::set_device(indexed.device().index);
    cuda::index_scatter_add<T>(walk, dense.device_data(), index.device_data(), indexed.device_data());
    return;
  }
#endif
  fail(op, "no CUDA kernel for ", dtype_name<T>(), " tensors on ", indexed.device().str());
}

// Strides of a contiguous 1-D index read along `dim` of an `ndim`-dim walk (index_select).
inline Shape along_dim_strides(int64_t ndim, int64_t dim) {
  Shape strides(static_cast<size_t>(ndim), 0);
  strides[static_cast<size_t>(dim)] = 1;
  return strides;
}

template <class T> Tensor<T> cuda_index_select(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index) {
  Tensor<int64_t> idx = cuda_checked_index(index, x.size(dim), dim, x.device(), "index_select");
  Shape out_shape = x.shape();
  out_shape[dim] = idx.numel();
  Tensor<T> out(out_shape, x.device());
  const Shape idx_strides = along_dim_strides(x.dim(), dim);
  cuda_gather(index_walk(out_shape, dim, out.strides(), x.strides(), idx_strides), x, idx, out, "index_select");
  if (autograd::needs_grad(x))
    autograd::record(out, "IndexSelect", {x}, [in_shape = x.shape(), out_shape, idx, idx_strides, dim](
                                                  const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> dx = cuda_zeros<T>(in_shape, g.device());
      cuda_scatter_add(index_walk(out_shape, dim, g.strides(), dx.strides(), idx_strides), g, idx, dx, "index_select");
      return std::vector<Tensor<T>>{dx};
    });
  return out;
}

template <class T> Tensor<T> cuda_gather_op(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index) {
  Tensor<int64_t> idx = cuda_checked_index(index, x.size(dim), dim, x.device(), "gather");
  Tensor<T> out(idx.shape(), x.device());
  cuda_gather(index_walk(idx.shape(), dim, out.strides(), x.strides(), idx.strides()), x, idx, out, "gather");
  if (autograd::needs_grad(x))
    autograd::record(out, "Gather", {x}, [in_shape = x.shape(), idx, dim](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> dx = cuda_zeros<T>(in_shape, g.device());
      cuda_scatter_add(index_walk(idx.shape(), dim, g.strides(), dx.strides(), idx.strides()), g, idx, dx, "gather");
      return std::vector<Tensor<T>>{dx};
    });
  return out;
}

template <class T>
Tensor<T> cuda_scatter_add_op(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index, const Tensor<T>& src) {
  HG_CHECK(src.device() == x.device(), "scatter_add", "expected src on ", x.device().str(), ", got ",
           src.device().str());
  Tensor<int64_t> idx = cuda_checked_index(index, x.size(dim), dim, x.device(), "scatter_add");
  Tensor<T> out = x.detach().clone();
  cuda_scatter_add(index_walk(idx.shape(), dim, src.strides(), out.strides(), idx.strides()), src, idx, out,
                   "scatter_add");
  if (autograd::needs_grad(x, src))
    autograd::record(out, "ScatterAdd", {x, src}, [src_shape = src.shape(), idx, dim](const Tensor<T>& g,
                                                                                     const NeedsGrad& need) {
      Tensor<T> dsrc;
      if (need[1]) {
        dsrc = cuda_zeros<T>(src_shape, g.device());
        cuda_gather(index_walk(idx.shape(), dim, dsrc.strides(), g.strides(), idx.strides()), g, idx, dsrc,
                    "scatter_add");
      }
      return std::vector<Tensor<T>>{need[0] ? g : Tensor<T>(), dsrc};
    });
  return out;
}

template <class T>
Tensor<T> cuda_embedding(const Tensor<int64_t>& ids, const Tensor<T>& weight, int64_t skip) {
  [[maybe_unused]] const int64_t rows = weight.size(0);
  const int64_t width = weight.size(1);
  Tensor<int64_t> idx = ids.to(weight.device()).contiguous();
#ifdef HISTOGRAD_WITH_CUDA
  cuda::set_device(weight.device().index);
  const cuda::IndexCheck check = cuda::check_index(idx.device_data(), idx.numel(), rows, rows);
  HG_CHECK(check.bad == 0 && check.ignored == 0, "embedding", "index ", check.bad ? check.bad_value : rows,
           " out of range for ", rows, " embeddings (weight of shape ", to_string(weight.shape()), ")");
#endif
  const Shape walk{idx.numel(), width}, dense_strides{width, 1}, idx_strides{1, 0};
  Shape out_shape = ids.shape();
  out_shape.push_back(width);
  Tensor<T> out(out_shape, weight.device());
  cuda_gather(index_walk(walk, 0, dense_strides, weight.strides(), idx_strides), weight, idx, out, "embedding");
  if (autograd::needs_grad(weight))
    autograd::record(out, "Embedding", {weight}, [w_shape = weight.shape(), idx, walk, dense_strides, idx_strides,
                                                  skip](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> gc = g.contiguous(), dw = cuda_zeros<T>(w_shape, g.device());
      cuda_scatter_add(index_walk(walk, 0, dense_strides, dw.strides(), idx_strides, skip), gc, idx, dw, "embedding");
      return std::vector<Tensor<T>>{dw};
    });
  return out;
}

}  // namespace detail

// cat: joins tensors along `dim` (all other sizes equal).  d tensor_i = the slice of g it filled
template <class T> Tensor<T> cat(const std::vector<Tensor<T>>& tensors, int64_t dim = 0) {
  HG_CHECK(!tensors.empty(), "cat", "expected a non-empty list of tensors");
  const Shape& first = tensors[0].shape();
  HG_CHECK(!first.empty(), "cat", "zero-dimensional tensor (tensor 0) cannot be concatenated");
  dim = wrap_dim(dim, static_cast<int64_t>(first.size()), "cat");
  Shape out_shape = first, sizes;
  out_shape[dim] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Shape& s = tensors[i].shape();
    bool same = s.size() == first.size();
    for (size_t d = 0; same && d < s.size(); ++d) same = static_cast<int64_t>(d) == dim || s[d] == first[d];
    HG_CHECK(same, "cat", "sizes must match except in dim ", dim, ": tensor 0 has shape ", to_string(first), ", tensor ",
             i, " has shape ", to_string(s));
    HG_CHECK(tensors[i].device() == tensors[0].device(), "cat", "expected all tensors on ", tensors[0].device().str(),
             ", got tensor ", i, " on ", tensors[i].device().str());
    sizes.push_back(s[dim]);
    out_shape[dim] += s[dim];
  }
  Tensor<T> out(out_shape, tensors[0].device());
  {
    NoGradGuard no_grad;
    int64_t offset = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      out.narrow(dim, offset, sizes[i]).copy_(tensors[i].detach());
      offset += sizes[i];
    }
  }
  autograd::record(out, "Cat", tensors, [dim, sizes](const Tensor<T>& g, const NeedsGrad& need) {
    std::vector<Tensor<T>> grads(sizes.size());
    int64_t offset = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (need[i]) grads[i] = g.narrow(dim, offset, sizes[i]).contiguous();
      offset += sizes[i];
    }
    return grads;
  });
  return out;
}

// stack: joins equal-shaped tensors along a new dim `dim` (cat of unsqueezed inputs).
template <class T> Tensor<T> stack(const std::vector<Tensor<T>>& tensors, int64_t dim = 0) {
  HG_CHECK(!tensors.empty(), "stack", "expected a non-empty list of tensors");
  const Shape& first = tensors[0].shape();
  dim = wrap_dim(dim, static_cast<int64_t>(first.size()) + 1, "stack");
  std::vector<Tensor<T>> unsqueezed;
  unsqueezed.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    HG_CHECK(tensors[i].shape() == first, "stack", "expected every tensor to have shape ", to_string(first),
             " like tensor 0, got ", to_string(tensors[i].shape()), " for tensor ", i);
    unsqueezed.push_back(tensors[i].unsqueeze(dim));
  }
  return cat(unsqueezed, dim);
}

// index_select: y = x[..., index[j], ...] along dim (index 0-d or 1-D).
// dx = zeros, then dx[..., index[j], ...] += g[..., j, ...] (repeated indices accumulate)
template <class T> Tensor<T> index_select(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index) {
  HG_CHECK(x.dim() >= 1, "index_select", "expected an input with at least one dim, got a 0-d tensor");
  HG_CHECK(index.dim() <= 1, "index_select", "expected a 0-d or 1-D index, got shape ", to_string(index.shape()));
  dim = wrap_dim(dim, x.dim(), "index_select");
  if (x.device().is_cuda()) return detail::cuda_index_select(x, dim, index);
  Tensor<int64_t> idx = detail::checked_index(index, x.size(dim), dim, "index_select");
  Shape out_shape = x.shape();
  out_shape[dim] = idx.numel();
  Tensor<T> out(out_shape);
  const int64_t outer = detail::prod_dims(out_shape, 0, dim), k = idx.numel();
  const int64_t inner = detail::prod_dims(out_shape, dim + 1, x.dim());
  const cpu::IndexSteps steps{0, 1, 0};
  cpu::gather_along(x.data(), cpu::axis_layout(out_shape, x.strides(), dim), idx.data(), steps, out.data(),
                    cpu::axis_layout(out_shape, out.strides(), dim), outer, k, inner);
  autograd::record(out, "IndexSelect", {x}, [in_shape = x.shape(), out_shape, idx, dim, outer, k, inner,
                                             steps](const Tensor<T>& g, const NeedsGrad&) {
    Tensor<T> gc = g.contiguous(), dx = zeros<T>(in_shape);
    cpu::scatter_add_along(gc.data(), cpu::axis_layout(out_shape, gc.strides(), dim), idx.data(), steps, dx.data(),
                           cpu::axis_layout(out_shape, dx.strides(), dim), outer, k, inner);
    return std::vector<Tensor<T>>{dx};
  });
  return out;
}

// gather: y[i][j][k] = x[i][index[i][j][k]][k] for dim 1 (likewise for any dim); y has the
// index's shape, which may be smaller than x's outside dim.  dx = scatter_add(0, dim, index, g)
template <class T> Tensor<T> gather(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index) {
  HG_CHECK(x.dim() >= 1, "gather", "expected an input with at least one dim, got a 0-d tensor");
  dim = wrap_dim(dim, x.dim(), "gather");
  detail::check_index_fits(index.shape(), x.shape(), dim, false, "gather", "the input");
  if (x.device().is_cuda()) return detail::cuda_gather_op(x, dim, index);
  Tensor<int64_t> idx = detail::checked_index(index, x.size(dim), dim, "gather");
  const Shape& walk = idx.shape();
  const int64_t outer = detail::prod_dims(walk, 0, dim), k = walk[dim], inner = detail::prod_dims(walk, dim + 1, x.dim());
  const cpu::IndexSteps steps{k * inner, inner, 1};
  Tensor<T> out(walk);
  cpu::gather_along(x.data(), cpu::axis_layout(walk, x.strides(), dim), idx.data(), steps, out.data(),
                    cpu::axis_layout(walk, out.strides(), dim), outer, k, inner);
  autograd::record(out, "Gather", {x}, [in_shape = x.shape(), idx, dim, outer, k, inner, steps](const Tensor<T>& g,
                                                                                               const NeedsGrad&) {
    Tensor<T> gc = g.contiguous(), dx = zeros<T>(in_shape);
    cpu::scatter_add_along(gc.data(), cpu::axis_layout(idx.shape(), gc.strides(), dim), idx.data(), steps, dx.data(),
                           cpu::axis_layout(idx.shape(), dx.strides(), dim), outer, k, inner);
    return std::vector<Tensor<T>>{dx};
  });
  return out;
}

// scatter_add (out of place): y = x, then y[i][index[i][j][k]][k] += src[i][j][k] for dim 1.
// src may be larger than index (its extra elements are unused, as in torch).
// dx = g;  dsrc = gather(g, dim, index) where index reaches, 0 elsewhere
template <class T>
Tensor<T> scatter_add(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index, const Tensor<T>& src) {
  HG_CHECK(x.dim() >= 1, "scatter_add", "expected an input with at least one dim, got a 0-d tensor");
  dim = wrap_dim(dim, x.dim(), "scatter_add");
  detail::check_index_fits(index.shape(), x.shape(), dim, false, "scatter_add", "the input");
  detail::check_index_fits(index.shape(), src.shape(), dim, true, "scatter_add", "src");
  if (x.device().is_cuda()) return detail::cuda_scatter_add_op(x, dim, index, src);
  Tensor<int64_t> idx = detail::checked_index(index, x.size(dim), dim, "scatter_add");
  const Shape& walk = idx.shape();
  const int64_t outer = detail::prod_dims(walk, 0, dim), k = walk[dim], inner = detail::prod_dims(walk, dim + 1, x.dim());
  const cpu::IndexSteps steps{k * inner, inner, 1};
  Tensor<T> out(x.shape());
  cpu::map_into(out, x.detach(), [](T v) { return v; });
  cpu::scatter_add_along(src.data(), cpu::axis_layout(walk, src.strides(), dim), idx.data(), steps, out.data(),
                         cpu::axis_layout(walk, out.strides(), dim), outer, k, inner);
  autograd::record(out, "ScatterAdd", {x, src}, [src_shape = src.shape(), idx, dim, outer, k, inner,
                                                 steps](const Tensor<T>& g, const NeedsGrad& need) {
    Tensor<T> dsrc;
    if (need[1]) {
      Tensor<T> gc = g.contiguous();
      dsrc = zeros<T>(src_shape);
      cpu::gather_along(gc.data(), cpu::axis_layout(idx.shape(), gc.strides(), dim), idx.data(), steps, dsrc.data(),
                        cpu::axis_layout(idx.shape(), dsrc.strides(), dim), outer, k, inner);
    }
    return std::vector<Tensor<T>>{need[0] ? g : Tensor<T>(), dsrc};
  });
  return out;
}

// embedding: y[..., :] = weight[ids[...], :] for weight [V, D], giving ids.shape + [D].
// dweight[v] = Σ_{ids[i] == v} g[i], except the padding_idx row, which gets no gradient
// (F.embedding's padding_idx; negative values count from the end).
template <class T>
Tensor<T> embedding(const Tensor<int64_t>& ids, const Tensor<T>& weight, std::optional<int64_t> padding_idx = std::nullopt) {
  HG_CHECK(weight.dim() == 2, "embedding", "expected a weight of shape [num_embeddings, dim], got ",
           to_string(weight.shape()));
  const int64_t rows = weight.size(0), width = weight.size(1);
  int64_t skip = -1;
  if (padding_idx) {
    HG_CHECK(*padding_idx >= -rows && *padding_idx < rows, "embedding", "padding_idx ", *padding_idx,
             " out of range for ", rows, " embeddings");
    skip = *padding_idx < 0 ? *padding_idx + rows : *padding_idx;
  }
  if (weight.device().is_cuda()) return detail::cuda_embedding(ids, weight, skip);
  Tensor<int64_t> idx = ids.contiguous();
  for (int64_t i = 0, n = idx.numel(); i < n; ++i)
    HG_CHECK(idx.data()[i] >= 0 && idx.data()[i] < rows, "embedding", "index ", idx.data()[i], " out of range for ",
             rows, " embeddings (weight of shape ", to_string(weight.shape()), ")");
  const int64_t count = idx.numel();
  const Shape walk{count, width};
  const cpu::IndexSteps steps{0, 1, 0};
  Shape out_shape = ids.shape();
  out_shape.push_back(width);
  Tensor<T> out(out_shape);
  cpu::gather_along(weight.data(), cpu::axis_layout(walk, weight.strides(), 0), idx.data(), steps, out.data(),
                    cpu::axis_layout(walk, contiguous_strides(walk), 0), 1, count, width);
  autograd::record(out, "Embedding", {weight}, [w_shape = weight.shape(), idx, walk, steps, skip](const Tensor<T>& g,
                                                                                                const NeedsGrad&) {
    Tensor<T> gc = g.contiguous(), dw = zeros<T>(w_shape);
    const cpu::AxisLayout dense = cpu::axis_layout(walk, contiguous_strides(walk), 0);
    cpu::scatter_add_along(gc.data(), dense, idx.data(), steps, dw.data(), cpu::axis_layout(walk, dw.strides(), 0), 1,
                           walk[0], walk[1], skip);
    return std::vector<Tensor<T>>{dw};
  });
  return out;
}

}  // namespace histograd
