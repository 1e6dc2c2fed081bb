// View ops (sharing storage) and copies, with their backward beside each forward:
// reshape/view/flatten, permute/transpose, slice/select, expand, (un)squeeze,
// contiguous/clone, and the in-place writes fill_/copy_ used outside autograd. Copies of CUDA
// tensors run cuda/copy.cu's strided kernel; copy_ also moves data between devices.
#pragma once
#include <numeric>
#include <optional>

#include "../autograd/node.hpp"
#include "../core/tensor.hpp"
#include "../cpu/elementwise.hpp"
#include "device.hpp"

// device.hpp includes core/tensor.hpp, whose tail includes this file: when device.hpp is the
// first header a program includes, its helpers are not declared yet at this point, so the three
// used below are declared here (defined in device.hpp).
namespace histograd::detail {
template <class T> bool is_cuda(const Tensor<T>& t);
template <class From, class To> void cuda_convert_into(Tensor<To>& out, const Tensor<From>& in, const char* name);
template <class T> void cuda_fill(Tensor<T>& out, T value);
}  // namespace histograd::detail

namespace histograd {

template <class T> Tensor<T> sum_to(const Tensor<T>& x, const Shape& shape);  // ops/reduce.hpp

namespace detail {

// Resolves one -1 in a requested shape and checks the element count.
inline Shape infer_shape(Shape shape, int64_t numel, const char* op) {
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      HG_CHECK(infer_at < 0, op, "only one dimension can be -1, got ", to_string(shape));
      infer_at = static_cast<int64_t>(i);
    } else {
      HG_CHECK(shape[i] >= 0, op, "invalid size ", shape[i], " in shape ", to_string(shape));
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    HG_CHECK(known != 0 && numel % known == 0, op, "shape ", to_string(shape), " is invalid for input of size ", numel);
    shape[static_cast<size_t>(infer_at)] = numel / known;
  }
  HG_CHECK(numel_of(shape) == numel, op, "shape ", to_string(shape), " is invalid for input of size ", numel);
  return shape;
}

// Strides for viewing (shape, strides) as new_shape without a copy, if the memory layout
// allows it: each group of old dims that is contiguous in memory must map onto whole new dims.
inline std::optional<Shape> view_strides(const Shape& shape, const Shape& strides, const Shape& new_shape) {
  if (numel_of(shape) == 0 || shape.empty()) return contiguous_strides(new_shape);
  Shape out(new_shape.size(), 1);
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_stride = strides.back(), chunk_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    chunk_numel *= shape[d];
    bool chunk_ends = d == 0 || (shape[d - 1] != 1 && strides[d - 1] != chunk_numel * chunk_stride);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < chunk_numel || new_shape[view_d] == 1)) {
      out[view_d] = view_numel * chunk_stride;
      view_numel *= new_shape[view_d];
      --view_d;
    }
    if (view_numel != chunk_numel) return std::nullopt;
    if (d > 0) {
      chunk_stride = strides[d - 1];
      chunk_numel = view_numel = 1;
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

template <class T>
Tensor<T> make_view(const Tensor<T>& base, Shape shape, Shape strides, int64_t offset) {
  return Tensor<T>(base.storage(), std::move(shape), std::move(strides), offset);
}

}  // namespace detail

template <class T>
Tensor<T> Tensor<T>::view(Shape new_shape) const {
  new_shape = detail::infer_shape(std::move(new_shape), numel(), "view");
  auto strides_for_view = detail::view_strides(shape(), strides(), new_shape);
  HG_CHECK(strides_for_view.has_value(), "view", "cannot view a tensor of shape ", to_string(shape()), " with strides ",
           to_string(strides()), " as ", to_string(new_shape), "; use reshape() (which copies)");
  Tensor out = detail::make_view(*this, new_shape, *strides_for_view, storage_offset());
  autograd::record(out, "View", {*this}, [in_shape = shape()](const Tensor& g, const NeedsGrad&) {
    return std::vector<Tensor>{g.reshape(in_shape)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::reshape(Shape new_shape) const {
  new_shape = detail::infer_shape(std::move(new_shape), numel(), "reshape");
  if (detail::view_strides(shape(), strides(), new_shape)) return view(new_shape);
  return contiguous().view(new_shape);
}

template <class T>
Tensor<T> Tensor<T>::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim(start_dim, dim(), "flatten");
  end_dim = wrap_dim(end_dim, dim(), "flatten");
  HG_CHECK(start_dim <= end_dim, "flatten", "start_dim ", start_dim, " must not come after end_dim ", end_dim);
  Shape new_shape(shape().begin(), shape().begin() + start_dim);
  new_shape.push_back(std::accumulate(shape().begin() + start_dim, shape().begin() + end_dim + 1, int64_t(1),
                                      std::multiplies<int64_t>()));
  new_shape.insert(new_shape.end(), shape().begin() + end_dim + 1, shape().end());
  return reshape(new_shape);
}

template <class T>
Tensor<T> Tensor<T>::permute(Shape order) const {
  HG_CHECK(static_cast<int64_t>(order.size()) == dim(), "permute", "expected ", dim(), " dims in the order, got ",
           to_string(order));
  Shape new_shape(order.size()), new_strides(order.size()), inverse(order.size(), -1);
  for (size_t i = 0; i < order.size(); ++i) {
    int64_t d = wrap_dim(order[i], dim(), "permute");
    HG_CHECK(inverse[d] < 0, "permute", "dim ", d, " repeated in order ", to_string(order));
    inverse[d] = static_cast<int64_t>(i);
    new_shape[i] = shape()[d];
    new_strides[i] = strides()[d];
  }
  Tensor out = detail::make_view(*this, new_shape, new_strides, storage_offset());
  autograd::record(out, "Permute", {*this}, [inverse](const Tensor& g, const NeedsGrad&) {
    return std::vector<Tensor>{g.permute(inverse)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::transpose(int64_t dim0, int64_t dim1) const {
  Shape order(static_cast<size_t>(dim()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[wrap_dim(dim0, dim(), "transpose")], order[wrap_dim(dim1, dim(), "transpose")]);
  return permute(order);
}

template <class T>
Tensor<T> Tensor<T>::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  HG_CHECK(step > 0, "slice", "step must be positive, got ", step);
  int64_t n = shape()[d];
  auto clamp_index = [n](int64_t i) { return std::clamp(i < 0 ? i + n : i, int64_t(0), n); };
  start = clamp_index(start);
  end = std::max(clamp_index(end), start);
  Shape new_shape = shape(), new_strides = strides();
  new_shape[d] = (end - start + step - 1) / step;
  new_strides[d] *= step;
  Tensor out = detail::make_view(*this, new_shape, new_strides, storage_offset() + start * strides()[d]);
  autograd::record(out, "Slice", {*this}, [in_shape = shape(), d, start, end, step](const Tensor& g, const NeedsGrad&) {
    Tensor grad_in(in_shape, g.device());
    grad_in.zero_();
    grad_in.slice(d, start, end, step).copy_(g);
    return std::vector<Tensor>{grad_in};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  int64_t n = shape()[d];
  HG_CHECK(index >= -n && index < n, "select", "index ", index, " out of range for dim ", d, " of size ", n);
  if (index < 0) index += n;
  return slice(d, index, index + 1).squeeze(d);
}

template <class T>
Tensor<T> Tensor<T>::expand(Shape new_shape) const {
  HG_CHECK(new_shape.size() >= shape().size(), "expand", "cannot expand shape ", to_string(shape()), " to fewer dims ",
           to_string(new_shape));
  size_t lead = new_shape.size() - shape().size();
  Shape new_strides(new_shape.size(), 0);
  for (size_t i = 0; i < new_shape.size(); ++i) {
    if (i < lead) {
      HG_CHECK(new_shape[i] >= 0, "expand", "invalid size -1 for a new leading dim in ", to_string(new_shape));
      continue;
    }
    int64_t have = shape()[i - lead];
    if (new_shape[i] == -1) new_shape[i] = have;
    HG_CHECK(have == new_shape[i] || have == 1, "expand", "cannot expand shape ", to_string(shape()), " to ",
             to_string(new_shape), " (dim ", i, ": ", have, " vs ", new_shape[i], ")");
    new_strides[i] = have == new_shape[i] ? strides()[i - lead] : 0;
  }
  Tensor out = detail::make_view(*this, new_shape, new_strides, storage_offset());
  autograd::record(out, "Expand", {*this}, [in_shape = shape()](const Tensor& g, const NeedsGrad&) {
    return std::vector<Tensor>{sum_to(g, in_shape)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape new_shape = shape(), new_strides = strides();
  int64_t stride = d < dim() ? strides()[d] * shape()[d] : 1;
  new_shape.insert(new_shape.begin() + d, 1);
  new_strides.insert(new_strides.begin() + d, stride);
  Tensor out = detail::make_view(*this, new_shape, new_strides, storage_offset());
  autograd::record(out, "Unsqueeze", {*this}, [in_shape = shape()](const Tensor& g, const NeedsGrad&) {
    return std::vector<Tensor>{g.reshape(in_shape)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[d] != 1) return *this;
  Shape new_shape = shape(), new_strides = strides();
  new_shape.erase(new_shape.begin() + d);
  new_strides.erase(new_strides.begin() + d);
  Tensor out = detail::make_view(*this, new_shape, new_strides, storage_offset());
  autograd::record(out, "Squeeze", {*this}, [in_shape = shape()](const Tensor& g, const NeedsGrad&) {
    return std::vector<Tensor>{g.reshape(in_shape)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::squeeze() const {
  Shape new_shape;
  for (int64_t s : shape())
    if (s != 1) new_shape.push_back(s);
  return reshape(new_shape);
}

template <class T>
Tensor<T> Tensor<T>::clone() const {
  Tensor out(shape(), device());
  if (detail::is_cuda(out)) detail::cuda_convert_into(out, *this, "clone");
  else cpu::map_into(out, *this, [](T v) { return v; });
  autograd::record(out, "Clone", {*this}, [](const Tensor& g, const NeedsGrad&) { return std::vector<Tensor>{g}; });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

template <class T>
template <class U>
Tensor<U> Tensor<T>::to() const {
  Tensor<U> out(shape(), device());
  if (detail::is_cuda(out)) detail::cuda_convert_into(out, *this, "to");
  else cpu::map_into(out, *this, [](T v) { return static_cast<U>(to_compute(v)); });  // 16-bit floats via float
  return out;
}

template <class T>
Tensor<T>& Tensor<T>::fill_(T value) {
  HG_CHECK(!(requires_grad() && GradMode::is_enabled()), "fill_",
           "in-place write to a tensor that requires grad; wrap it in NoGradGuard or detach() it");
  if (detail::is_cuda(*this)) {
    detail::cuda_fill(*this, value);
  } else {
    Tensor<T> scalar(Shape{});
    *scalar.data() = value;
    cpu::map_into(*this, scalar, [](T v) { return v; });
  }
  storage()->bump_version();
  return *this;
}

template <class T>
Tensor<T>& Tensor<T>::copy_(const Tensor<T>& source) {
  HG_CHECK(!(requires_grad() && GradMode::is_enabled()), "copy_",
           "in-place write to a tensor that requires grad; wrap it in NoGradGuard or detach() it");
  HG_CHECK(broadcast_shapes(source.shape(), shape(), "copy_") == shape(), "copy_", "cannot copy a tensor of shape ",
           to_string(source.shape()), " into one of shape ", to_string(shape()));
  // A source overlapping the destination is read fully first, so the copy is never torn; one on
  // another device is brought here first.
  Tensor<T> from = source.device() != device() ? source.detach().to(device())
                   : source.storage() == storage() ? source.detach().clone() : source;
  if (detail::is_cuda(*this)) detail::cuda_convert_into(*this, from, "copy_");
  else cpu::map_into(*this, from, [](T v) { return v; });
  storage()->bump_version();
  return *this;
}

}  // namespace histograd
