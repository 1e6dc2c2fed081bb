// softmax and log_softmax along any dim (negative dims wrap), as torch.softmax/log_softmax.
// Forward and backward kernels are in cpu/softmax.hpp; both save only the output y.
//   softmax:     y = exp(x - max) / Σ exp(x - max);  dx = y (g - Σ g y)
//   log_softmax: y = x - max - log Σ exp(x - max);   dx = g - exp(y) Σ g
// CUDA tensors run cuda/softmax.hpp's kernels on the same [outer, n, inner] split (any dim).
#pragma once
#include <type_traits>

#include "../autograd/node.hpp"
#include "../core/tensor.hpp"
#include "../cpu/softmax.hpp"
#include "../cuda/softmax.hpp"

namespace histograd {

namespace detail {
struct DimSplit {
  int64_t outer = 1, n = 1, inner = 1;  // shape seen as [outer, n, inner] around the dim
};
inline DimSplit split_at_dim(const Shape& shape, int64_t dim) {
  DimSplit s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (d < dim) s.outer *= shape[d];
    else if (d == dim) s.n = shape[d];
    else s.inner *= shape[d];
  }
  return s;
}

// The same op on a CUDA tensor (float or double): the kernels read contiguous [outer, n, inner].
template <class T>
Tensor<T> cuda_softmax_op(const Tensor<T>& x, [[maybe_unused]] DimSplit s, [[maybe_unused]] bool log, const char* name) {
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    cuda::set_device(x.device().index);
    Tensor<T> xc = x.detach().contiguous(), y(x.shape(), x.device());
    cuda::softmax_forward(xc.device_data(), y.device_data(), s.outer, s.n, s.inner, log);
    if (autograd::needs_grad(x))
      autograd::record(y, name, {x}, [y = y.detach(), s, log](const Tensor<T>& g, const NeedsGrad&) {
        Tensor<T> gc = g.contiguous(), dx(y.shape(), y.device());
        cuda::softmax_backward(y.device_data(), gc.device_data(), dx.device_data(), s.outer, s.n, s.inner, log);
        return std::vector<Tensor<T>>{dx};
      });
    return y;
  }
#endif
  fail(name, "no CUDA kernel for ", dtype_name<T>(), " tensors on ", x.device().str(), " (float and double only)");
}

template <class T>
Tensor<T> softmax_op(const Tensor<T>& x, int64_t dim, bool log, const char* op, const char* name) {
  const DimSplit s = split_at_dim(x.shape(), wrap_dim(dim, x.dim(), op));
  if (x.device().is_cuda()) return cuda_softmax_op(x, s, log, name);
  Tensor<T> xc = x.detach().contiguous(), y(x.shape());
  cpu::softmax_forward(xc.data(), y.data(), s.outer, s.n, s.inner, log);
  if (autograd::needs_grad(x))
    autograd::record(y, name, {x}, [y = y.detach(), s, log](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> gc = g.contiguous(), dx(y.shape());
      cpu::softmax_backward(y.data(), gc.data(), dx.data(), s.outer, s.n, s.inner, log);
      return std::vector<Tensor<T>>{dx};
    });
  return y;
}
}  // namespace detail

template <class T> Tensor<T> softmax(const Tensor<T>& x, int64_t dim) {
  return detail::softmax_op(x, dim, false, "softmax", "Softmax");
}
template <class T> Tensor<T> log_softmax(const Tensor<T>& x, int64_t dim) {
  return detail::softmax_op(x, dim, true, "log_softmax", "LogSoftmax");
}

}  // namespace histograd
