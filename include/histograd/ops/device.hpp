// The ops' bridge to the CUDA kernels: each helper allocates the output on the inputs' device,
// lines the operands up (broadcast strides over the output shape) and calls one launcher of
// include/histograd/cuda/. Ops keep their CPU code and branch here on is_cuda(x), so each grows
// by a line. Without HISTOGRAD_WITH_CUDA no CUDA tensor can exist (Storage refuses), is_cuda is
// false and these bodies reduce to an unreachable Error.
#pragma once
#include <string>
#include <type_traits>
#include <vector>

#include "../core/tensor.hpp"
#include "../cuda/copy.hpp"
#include "../cuda/elementwise.hpp"
#include "../cuda/random.hpp"
#include "../cuda/reduce.hpp"
#include "../cuda/runtime.hpp"

namespace histograd::detail {

template <class T, class... U> constexpr bool one_of = (std::is_same_v<T, U> || ...);
// The element types each family of kernels is instantiated for (cuda/*.cu).
template <class T> constexpr bool cuda_math_type = one_of<T, float, double, bfloat16, half>;
template <class T> constexpr bool cuda_reduce_type = one_of<T, float, double>;
template <class T> constexpr bool cuda_copy_type = one_of<T, float, double, bfloat16, half, int64_t, int32_t, uint8_t, bool>;

template <class T> bool is_cuda([[maybe_unused]] const Tensor<T>& t) {
#ifdef HISTOGRAD_WITH_CUDA
  return t.defined() && t.device().is_cuda();
#else
  return false;
#endif
}

[[noreturn]] inline void no_cuda_kernel(const char* op, [[maybe_unused]] std::string_view dtype) {
#ifdef HISTOGRAD_WITH_CUDA
  fail(op, "no CUDA kernel for ", dtype, " tensors; move the tensor with .cpu() first");
#else
  fail(op, "histograd was built without CUDA (link histograd::cuda)");
#endif
}

inline void require_same_device(const Device& a, const Device& b, const char* op) {
  HG_CHECK(a == b, op, "expected both tensors on the same device, got ", a.str(), " and ", b.str());
}

// For launchers over many tensors at once (optimizers, clipping, EMA): checks that `tensors` sit
// on one device, makes it current and runs launch(); where the launchers have no instantiation
// for T (has_kernels false) or the build has no CUDA, the no-kernel Error naming `op`.
template <bool has_kernels, class T, class Launch>
void launch_on_device(const std::vector<Tensor<T>>& tensors, const char* op, [[maybe_unused]] Launch&& launch) {
  if (tensors.empty()) return;
  for (const auto& t : tensors) require_same_device(tensors.front().device(), t.device(), op);
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (has_kernels) {
    cuda::set_device(tensors.front().device().index);
    launch();
    return;
  }
#endif
  no_cuda_kernel(op, dtype_name<T>());
}

// y = op(x) (elementwise, same shape and device as x).
template <class T>
Tensor<T> cuda_unary([[maybe_unused]] cuda::UnaryOp op, [[maybe_unused]] const Tensor<T>& x, [[maybe_unused]] double s0 = 0,
                     [[maybe_unused]] double s1 = 0) {
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (cuda_math_type<T>) {
    Tensor<T> y(x.shape(), x.device());
    cuda::unary<T>(op, y.shape(), y.device_data(), y.strides(), x.device_data(), x.strides(), s0, s1);
    return y;
  }
#endif
  no_cuda_kernel("elementwise", dtype_name<T>());
}

// y = a op b with broadcasting; `name` labels shape and device errors.
template <class T>
Tensor<T> cuda_binary([[maybe_unused]] cuda::BinaryOp op, const Tensor<T>& a, const Tensor<T>& b, const char* name,
                      [[maybe_unused]] double s0 = 0, [[maybe_unused]] double s1 = 0) {
  require_same_device(a.device(), b.device(), name);
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (cuda_math_type<T>) {
    Tensor<T> y(broadcast_shapes(a.shape(), b.shape(), name), a.device());
    cuda::binary<T>(op, y.shape(), y.device_data(), y.strides(), a.device_data(),
                    broadcast_strides(a.shape(), a.strides(), y.shape()), b.device_data(),
                    broadcast_strides(b.shape(), b.strides(), y.shape()), s0, s1);
    return y;
  }
#endif
  no_cuda_kernel(name, dtype_name<T>());
}

// a op b (b a tensor, or the scalar b_value when b is undefined), as a bool tensor.
template <class T>
Tensor<bool> cuda_compare([[maybe_unused]] cuda::CompareOp op, const Tensor<T>& a, const Tensor<T>& b,
                          [[maybe_unused]] double b_value, const char* name) {
  if (b.defined()) require_same_device(a.device(), b.device(), name);
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (cuda_math_type<T>) {
    Tensor<bool> y(b.defined() ? broadcast_shapes(a.shape(), b.shape(), name) : a.shape(), a.device());
    const Shape b_strides = b.defined() ? broadcast_strides(b.shape(), b.strides(), y.shape()) : y.strides();
    cuda::compare<T>(op, y.shape(), y.device_data(), y.strides(), a.device_data(),
                     broadcast_strides(a.shape(), a.strides(), y.shape()), b.defined() ? b.device_data() : nullptr,
                     b_strides, b_value);
    return y;
  }
#endif
  no_cuda_kernel(name, dtype_name<T>());
}

// cond ? a : b, where an undefined a (b) reads the constant a_value (b_value).
template <class T>
Tensor<T> cuda_where(const Tensor<bool>& cond, const Tensor<T>& a, [[maybe_unused]] double a_value,
                     const Tensor<T>& b, [[maybe_unused]] double b_value, const char* name) {
  Shape shape = cond.shape();
  for (const Tensor<T>* t : {&a, &b})
    if (t->defined()) {
      require_same_device(cond.device(), t->device(), name);
      shape = broadcast_shapes(shape, t->shape(), name);
    }
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (cuda_math_type<T>) {
    Tensor<T> y(shape, cond.device());
    auto strides_of = [&](const auto& t) { return t.defined() ? broadcast_strides(t.shape(), t.strides(), shape) : y.strides(); };
    cuda::where<T>(shape, y.device_data(), y.strides(), cond.device_data(), strides_of(cond),
                   a.defined() ? a.device_data() : nullptr, strides_of(a), a_value,
                   b.defined() ? b.device_data() : nullptr, strides_of(b), b_value);
    return y;
  }
#endif
  no_cuda_kernel(name, dtype_name<T>());
}

// out[i] = static_cast<To>(in[i]), in broadcast to out's shape; both on out's device.
template <class From, class To>
void cuda_convert_into([[maybe_unused]] Tensor<To>& out, [[maybe_unused]] const Tensor<From>& in, const char* name) {
  require_same_device(out.device(), in.device(), name);
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (cuda_copy_type<From> && cuda_copy_type<To>) {
    cuda::convert<From, To>(out.shape(), out.device_data(), out.strides(), in.device_data(),
                            broadcast_strides(in.shape(), in.strides(), out.shape()));
    return;
  }
#endif
  no_cuda_kernel(name, dtype_name<From>());
}

template <class T>
void cuda_fill([[maybe_unused]] Tensor<T>& out, [[maybe_unused]] T value) {
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (cuda_copy_type<T>) {
    cuda::fill<T>(out.shape(), out.device_data(), out.strides(), value);
    return;
  }
#endif
  no_cuda_kernel("fill_", dtype_name<T>());
}

}  // namespace histograd::detail
