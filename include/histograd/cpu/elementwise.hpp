// Elementwise maps over one, two or three broadcast operands into a new contiguous tensor.
// The inner loop has a unit-stride branch (the common case after coalescing) so the
// compiler vectorises it; other strides fall back to the general branch.
#pragma once
#include <array>
#include <type_traits>

#include "../core/tensor.hpp"
#include "strided_loop.hpp"

namespace histograd::cpu {

// out[i] = f(a[i]) into an existing tensor `out` of a's shape (any strides).
template <class Out, class A, class F>
void map_into(Tensor<Out>& out, const Tensor<A>& a, F f) {
  Out* po = out.data();  // data() refuses device tensors: these loops run on the host
  const A* pa = a.data();
  strided_loop<2>(out.shape(), {out.strides(), broadcast_strides(a.shape(), a.strides(), out.shape())},
                  [&](const Offsets<2>& off, int64_t n, const Offsets<2>& st) {
                    Out* o = po + off[0];
                    const A* x = pa + off[1];
                    if (st[0] == 1 && st[1] == 1)
                      for (int64_t k = 0; k < n; ++k) o[k] = f(x[k]);
                    else
                      for (int64_t k = 0; k < n; ++k) o[k * st[0]] = f(x[k * st[1]]);
                  });
}

template <class Out, class A, class F>
Tensor<Out> map(const Tensor<A>& a, F f) {
  Tensor<Out> out(a.shape());
  map_into(out, a, f);
  return out;
}

// out = f(a, b) with broadcasting; `op` names the caller in shape errors.
template <class Out, class A, class B, class F>
Tensor<Out> map(const Tensor<A>& a, const Tensor<B>& b, F f, const char* op) {
  Tensor<Out> out(broadcast_shapes(a.shape(), b.shape(), op));
  Out* po = out.data();
  const A* pa = a.data();
  const B* pb = b.data();
  strided_loop<3>(out.shape(),
                  {out.strides(), broadcast_strides(a.shape(), a.strides(), out.shape()),
                   broadcast_strides(b.shape(), b.strides(), out.shape())},
                  [&](const Offsets<3>& off, int64_t n, const Offsets<3>& st) {
                    Out* o = po + off[0];
                    const A* x = pa + off[1];
                    const B* y = pb + off[2];
                    if (st[1] == 1 && st[2] == 1)
                      for (int64_t k = 0; k < n; ++k) o[k] = f(x[k], y[k]);
                    else if (st[1] == 1 && st[2] == 0)
                      for (int64_t k = 0; k < n; ++k) o[k] = f(x[k], y[0]);
                    else if (st[1] == 0 && st[2] == 1)
                      for (int64_t k = 0; k < n; ++k) o[k] = f(x[0], y[k]);
                    else
                      for (int64_t k = 0; k < n; ++k) o[k] = f(x[k * st[1]], y[k * st[2]]);
                  });
  return out;
}

template <class Out, class A, class B, class C, class F>
Tensor<Out> map(const Tensor<A>& a, const Tensor<B>& b, const Tensor<C>& c, F f, const char* op) {
  Tensor<Out> out(broadcast_shapes(broadcast_shapes(a.shape(), b.shape(), op), c.shape(), op));
  Out* po = out.data();
  const A* pa = a.data();
  const B* pb = b.data();
  const C* pc = c.data();
  strided_loop<4>(out.shape(),
                  {out.strides(), broadcast_strides(a.shape(), a.strides(), out.shape()),
                   broadcast_strides(b.shape(), b.strides(), out.shape()),
                   broadcast_strides(c.shape(), c.strides(), out.shape())},
                  [&](const Offsets<4>& off, int64_t n, const Offsets<4>& st) {
                    for (int64_t k = 0; k < n; ++k)
                      po[off[0] + k] = f(pa[off[1] + k * st[1]], pb[off[2] + k * st[2]], pc[off[3] + k * st[3]]);
                  });
  return out;
}

}  // namespace histograd::cpu
