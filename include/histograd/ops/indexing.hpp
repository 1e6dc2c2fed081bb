// Joining and indexing: cat, stack, index_select, gather, scatter_add and embedding, with
// torch's semantics (torch.cat, torch.gather, torch.Tensor.scatter_add, F.embedding).
// The adjoint of reading through an index is adding through it: gather's backward is a
// scatter_add and scatter_add's is a gather. Indices are bounds-checked up front; negative
// indices are out of range, as in torch.
#pragma once
#include <optional>
#include <vector>

#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/elementwise.hpp"
#include "../cpu/indexing.hpp"

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
  Tensor<T> out(out_shape);
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
