// Tensor<T>: a strided view (shape, strides, offset) over shared reference-counted storage,
// with the autograd fields of a graph vertex. Copying a Tensor copies the handle, not the
// data, exactly like PyTorch. View ops (reshape, permute, slice, expand, ...) return tensors
// sharing storage; contiguous()/clone() copy. Definitions of the autograd- and view-related
// members live in autograd/engine.hpp and ops/views.hpp, included at the bottom.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "device.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "shape.hpp"
#include "storage.hpp"

namespace histograd {

template <class T> class Tensor;
template <class T> struct Node;

template <class T>
struct TensorImpl {
  std::shared_ptr<Storage<T>> storage;
  Shape shape, strides;
  int64_t offset = 0;
  bool requires_grad = false;
  bool retains_grad = false;
  std::shared_ptr<TensorImpl<T>> grad;  // accumulated .grad() of a leaf (or a retained non-leaf)
  std::shared_ptr<Node<T>> grad_fn;     // null for leaves
};

template <class T>
class Tensor {
 public:
  using value_type = T;

  Tensor() = default;
  // A new contiguous tensor with uninitialised contents (factories fill it).
  explicit Tensor(const Shape& shape, Device device = kCPU) {
    for (int64_t s : shape) HG_CHECK(s >= 0, "Tensor", "negative size in shape ", to_string(shape));
    impl_ = std::make_shared<TensorImpl<T>>();
    impl_->storage = std::make_shared<Storage<T>>(numel_of(shape), device);
    impl_->shape = shape;
    impl_->strides = contiguous_strides(shape);
  }
  // A view over existing storage.
  Tensor(std::shared_ptr<Storage<T>> storage, Shape shape, Shape strides, int64_t offset) {
    impl_ = std::make_shared<TensorImpl<T>>();
    impl_->storage = std::move(storage);
    impl_->shape = std::move(shape);
    impl_->strides = std::move(strides);
    impl_->offset = offset;
  }
  explicit Tensor(std::shared_ptr<TensorImpl<T>> impl) : impl_(std::move(impl)) {}

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return checked()->shape; }
  const Shape& sizes() const { return shape(); }
  int64_t size(int64_t dim) const { return shape()[wrap_dim(dim, this->dim(), "size")]; }
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t numel() const { return numel_of(shape()); }
  const Shape& strides() const { return checked()->strides; }
  int64_t stride(int64_t dim) const { return strides()[wrap_dim(dim, this->dim(), "stride")]; }
  int64_t storage_offset() const { return checked()->offset; }
  Device device() const { return checked()->storage->device(); }
  bool is_contiguous() const {
    int64_t expected = 1;
    for (int64_t d = dim() - 1; d >= 0; --d) {
      if (shape()[d] == 1) continue;
      if (strides()[d] != expected) return false;
      expected *= shape()[d];
    }
    return true;
  }
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  const std::shared_ptr<TensorImpl<T>>& impl() const { return impl_; }
  const std::shared_ptr<Storage<T>>& storage() const { return checked()->storage; }

  // ---- element access ----
  // Host pointer to the first element. Every CPU kernel reads through here, so a CUDA tensor
  // that reaches an op without a CUDA path stops with a clear Error instead of a host read of
  // device memory. Kernel launchers take device_data().
  T* data() { return host_checked()->storage->data() + impl_->offset; }
  const T* data() const { return host_checked()->storage->data() + impl_->offset; }
  // The first element's address on whatever device holds it (for CUDA launchers).
  T* device_data() const { return checked()->storage->data() + impl_->offset; }
  // The one element's value; a device tensor's is copied back (which waits for its stream).
  T item() const {
    HG_CHECK(numel() == 1, "item", "expected a tensor with one element, got shape ", to_string(shape()));
    if (!checked()->storage->device().is_cpu()) return to_vector()[0];
    return *data();
  }
  // Bounds-checked element reference, one index per dim (negative indices wrap).
  T& at(std::initializer_list<int64_t> index) { return data()[element_offset(index)]; }
  const T& at(std::initializer_list<int64_t> index) const { return data()[element_offset(index)]; }
  std::vector<T> to_vector() const;

  // ---- autograd (autograd/engine.hpp) ----
  bool requires_grad() const { return defined() && impl_->requires_grad; }
  Tensor& requires_grad_(bool on = true) {
    HG_CHECK(is_leaf() || on, "requires_grad_", "only a leaf's requires_grad can be switched off; call detach()");
    if constexpr (!is_floating<T>) HG_CHECK(!on, "requires_grad_", "only floating-point tensors can require grad, got ", dtype_name<T>());
    checked()->requires_grad = on;
    return *this;
  }
  bool is_leaf() const { return checked()->grad_fn == nullptr; }
  Tensor grad() const { return impl_ && impl_->grad ? Tensor(impl_->grad) : Tensor(); }
  void set_grad(const Tensor& grad) { checked()->grad = grad.impl_; }
  void zero_grad() { if (impl_) impl_->grad.reset(); }
  void retain_grad() { checked()->retains_grad = true; }
  Tensor detach() const { return Tensor(storage(), shape(), strides(), storage_offset()); }
  std::string grad_fn_name() const;
  void backward(const Tensor& grad_output = Tensor(), bool retain_graph = false) const;

  // ---- views and copies (ops/views.hpp) ----
  Tensor reshape(Shape shape) const;
  Tensor view(Shape shape) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor permute(Shape order) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor mT() const { return transpose(-2, -1); }
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const { return slice(dim, start, start + length); }
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(Shape shape) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor contiguous() const;
  Tensor clone() const;
  template <class U> Tensor<U> to() const;
  // A copy on `device` (this tensor itself when it is already there), contiguous, detached
  // from autograd; .cpu() and .cuda(i) are shorthands.
  Tensor to(Device device) const;
  Tensor cpu() const { return to(kCPU); }
  Tensor cuda(int index = 0) const { return to(Device::cuda(index)); }

  // ---- in-place writes, for optimizers and initialisers (not recorded by autograd) ----
  Tensor& fill_(T value);
  Tensor& zero_() { return fill_(T(0)); }
  Tensor& copy_(const Tensor& source);

 private:
  TensorImpl<T>* checked() const {
    HG_CHECK(impl_ != nullptr, "Tensor", "operation on an undefined tensor (default-constructed or empty result)");
    return impl_.get();
  }
  TensorImpl<T>* host_checked() const {
    TensorImpl<T>* impl = checked();
    HG_CHECK(impl->storage->device().is_cpu(), "Tensor", "host access to a ", impl->storage->device().str(),
             " tensor: this op has no CUDA kernel yet; move the tensor with .cpu() first");
    return impl;
  }
  int64_t element_offset(std::initializer_list<int64_t> index) const {
    HG_CHECK(static_cast<int64_t>(index.size()) == dim(), "at", "expected ", dim(), " indices, got ", index.size());
    int64_t off = 0, d = 0;
    for (int64_t i : index) {
      int64_t n = shape()[d];
      HG_CHECK(i >= -n && i < n, "at", "index ", i, " out of range for dim ", d, " of size ", n);
      off += (i < 0 ? i + n : i) * strides()[d];
      ++d;
    }
    return off;
  }
  std::shared_ptr<TensorImpl<T>> impl_;
};

// Calls f(offset) for every element of a strided layout, in row-major order.
template <class F>
void for_each_offset(const Shape& shape, const Shape& strides, int64_t base, F&& f) {
  int64_t n = numel_of(shape);
  if (n == 0) return;
  int64_t ndim = static_cast<int64_t>(shape.size());
  if (ndim == 0) { f(base); return; }
  Shape index(ndim, 0);
  int64_t inner = shape[ndim - 1], inner_stride = strides[ndim - 1], offset = base;
  for (int64_t done = 0; done < n; done += inner) {
    for (int64_t k = 0; k < inner; ++k) f(offset + k * inner_stride);
    for (int64_t d = ndim - 2; d >= 0; --d) {  // advance the outer multi-index
      offset += strides[d];
      if (++index[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      index[d] = 0;
    }
  }
}

template <class T>
Tensor<T> Tensor<T>::to(Device device) const {
  const Device from = this->device();
  if (from == device) return *this;
#ifdef HISTOGRAD_WITH_CUDA
  const size_t bytes = static_cast<size_t>(numel()) * sizeof(T);
  if (from.is_cpu()) {  // host -> device: make the host side contiguous, then one copy
    Tensor<T> host = contiguous(), out(shape(), device);
    cuda::set_device(device.index);
    cuda::copy(out.device_data(), host.data(), bytes, cuda::CopyKind::HostToDevice);
    return out;
  }
  // From a device: copy the storage span this view covers, then lay it out on the target.
  int64_t low = 0, high = 0;
  for (int64_t d = 0; d < dim(); ++d) (strides()[d] < 0 ? low : high) += (shape()[d] - 1) * strides()[d];
  const int64_t span = numel() == 0 ? 0 : high - low + 1;
  Tensor<T> staged(Shape{span}, device.is_cpu() ? kCPU : device);
  cuda::set_device(from.index);
  cuda::copy(staged.device_data(), device_data() + low, static_cast<size_t>(span) * sizeof(T),
             device.is_cpu() ? cuda::CopyKind::DeviceToHost : cuda::CopyKind::DeviceToDevice);
  Tensor<T> view(staged.storage(), shape(), strides(), -low);
  if (device.is_cpu()) return view.contiguous();
  HG_CHECK(view.is_contiguous(), "Tensor::to", "a strided view copied between CUDA devices must be contiguous first");
  return view;
#else
  fail("Tensor::to", "cannot move a ", from.str(), " tensor to ", device.str(),
       ": histograd was built without CUDA (link histograd::cuda)");
#endif
}

template <class T>
std::vector<T> Tensor<T>::to_vector() const {
  if (!device().is_cpu()) return cpu().to_vector();
  std::vector<T> out;
  out.reserve(static_cast<size_t>(numel()));
  const T* base = storage()->data();
  for_each_offset(shape(), strides(), storage_offset(), [&](int64_t off) { out.push_back(base[off]); });
  return out;
}

// PyTorch-style printing: tensor([[...], ...], requires_grad=True); long dims are elided.
template <class T>
std::ostream& operator<<(std::ostream& out, const Tensor<T>& t) {
  if (!t.defined()) return out << "tensor(undefined)";
  std::vector<T> values = t.to_vector();
  const Shape& shape = t.shape();
  auto print_value = [&](T v) {
    if constexpr (is_floating<T>) {
      std::ostringstream s;
      s.setf(std::ios::fixed);
      s.precision(4);
      s << static_cast<double>(v);
      out << s.str();
    } else {
      out << +v;
    }
  };
  std::vector<int64_t> block(shape.size() + 1, 1);
  for (size_t d = shape.size(); d-- > 0;) block[d] = block[d + 1] * shape[d];
  auto rec = [&](auto&& self, size_t d, int64_t base) -> void {
    if (d == shape.size()) { print_value(values[static_cast<size_t>(base)]); return; }
    out << "[";
    int64_t n = shape[d];
    for (int64_t i = 0; i < n; ++i) {
      if (n > 8 && i == 3) { out << "..., "; i = n - 3; }
      self(self, d + 1, base + i * block[d + 1]);
      if (i + 1 < n) out << (d + 1 == shape.size() ? ", " : ",\n" + std::string(d + 8, ' '));
    }
    out << "]";
  };
  out << "tensor(";
  rec(rec, 0, 0);
  if (t.requires_grad()) out << ", requires_grad=True";
  return out << ")";
}

}  // namespace histograd

#include "../autograd/engine.hpp"
#include "../ops/views.hpp"
