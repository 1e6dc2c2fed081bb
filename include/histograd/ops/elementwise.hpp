// Elementwise arithmetic, math and activations with broadcasting. Each op is its forward
// map and, right below, its derivative. Binary ops reduce their gradients back to each
// input's shape with sum_to (the adjoint of broadcasting). Definitions: MODELS.md §0.1.
// CUDA tensors take the same op's kernel through ops/device.hpp (op codes of cuda/elementwise.hpp).
// bfloat16/half (no autograd) compute each op in float and round once, as PyTorch's CPU does:
// through their operators (core/dtype.hpp), to_compute, and scalars held as float.
#pragma once
#include <cmath>
#include <type_traits>

#include "../autograd/node.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/activation.hpp"
#include "../cpu/elementwise.hpp"
#include "device.hpp"

namespace histograd {

// Scalars never drive deduction; for bfloat16/half they are float, as PyTorch applies them.
template <class T> using Scalar = std::type_identity_t<compute_t<T>>;

namespace detail {
inline void check_same_device(const Device& a, const Device& b, const char* op) { require_same_device(a, b, op); }

// The kernels a one-input op runs on CUDA: y = forward(x; s0, s1), dy/dx = derivative(x, y; s0, s1).
struct DeviceUnary {
  cuda::UnaryOp forward;
  cuda::BinaryOp derivative;
  double s0 = 0, s1 = 0;
};

// y = f(x) with dy/dx = derivative(x, y), for the one-input ops below.
template <class T, class F, class D>
Tensor<T> unary_op(const Tensor<T>& x, const char* name, F f, D derivative, DeviceUnary dev) {
  Tensor<T> y = is_cuda(x) ? cuda_unary(dev.forward, x, dev.s0, dev.s1) : cpu::map<T>(x, f);
  if (autograd::needs_grad(x))
    autograd::record(y, name, {x}, [x = x.detach(), y = y.detach(), derivative, name, dev](const Tensor<T>& g,
                                                                                          const NeedsGrad&) {
      if (is_cuda(g))
        return std::vector<Tensor<T>>{
            cuda_binary(cuda::BinaryOp::Mul, g, cuda_binary(dev.derivative, x, y, name, dev.s0, dev.s1), name)};
      Tensor<T> dydx = cpu::map<T>(x, y, derivative, name);
      return std::vector<Tensor<T>>{cpu::map<T>(g, dydx, [](T a, T b) { return a * b; }, name)};
    });
  return y;
}

// a op b on either device, for the backward closures below.
template <class T, class F>
Tensor<T> map2(cuda::BinaryOp op, const Tensor<T>& a, const Tensor<T>& b, F f, const char* name) {
  return is_cuda(a) || is_cuda(b) ? cuda_binary(op, a, b, name) : cpu::map<T>(a, b, f, name);
}
template <class T> Tensor<T> negated(const Tensor<T>& t) {
  return is_cuda(t) ? cuda_unary(cuda::UnaryOp::Neg, t) : cpu::map<T>(t, [](T v) { return -v; });
}
template <class T> Tensor<T> scaled(const Tensor<T>& t, compute_t<T> s) {
  return is_cuda(t) ? cuda_unary(cuda::UnaryOp::MulScalar, t, double(s))
                    : cpu::map<T>(t, [s](T v) { return T(to_compute(v) * s); });
}
}  // namespace detail

// ---------------------------------------------------------------- arithmetic
// add: y = a + b;  da = sum_to(g), db = sum_to(g)
template <class T> Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  detail::check_same_device(a.device(), b.device(), "add");
  Tensor<T> y = detail::map2(cuda::BinaryOp::Add, a, b, [](T x, T z) { return x + z; }, "add");
  autograd::record(y, "Add", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g, const NeedsGrad& need) {
    return std::vector<Tensor<T>>{need[0] ? sum_to(g, sa) : Tensor<T>(), need[1] ? sum_to(g, sb) : Tensor<T>()};
  });
  return y;
}

// sub: y = a - b;  da = sum_to(g), db = -sum_to(g)
template <class T> Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
  detail::check_same_device(a.device(), b.device(), "sub");
  Tensor<T> y = detail::map2(cuda::BinaryOp::Sub, a, b, [](T x, T z) { return x - z; }, "sub");
  autograd::record(y, "Sub", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g, const NeedsGrad& need) {
    return std::vector<Tensor<T>>{need[0] ? sum_to(g, sa) : Tensor<T>(),
                                  need[1] ? detail::negated(sum_to(g, sb)) : Tensor<T>()};
  });
  return y;
}

// mul: y = a * b;  da = sum_to(g * b), db = sum_to(g * a)
template <class T> Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  detail::check_same_device(a.device(), b.device(), "mul");
  Tensor<T> y = detail::map2(cuda::BinaryOp::Mul, a, b, [](T x, T z) { return x * z; }, "mul");
  if (autograd::needs_grad(a, b))
    autograd::record(y, "Mul", {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, const NeedsGrad& need) {
      auto times = [](T x, T z) { return x * z; };
      return std::vector<Tensor<T>>{need[0] ? sum_to(detail::map2(cuda::BinaryOp::Mul, g, b, times, "mul"), a.shape()) : Tensor<T>(),
                                    need[1] ? sum_to(detail::map2(cuda::BinaryOp::Mul, g, a, times, "mul"), b.shape()) : Tensor<T>()};
    });
  return y;
}

// div: y = a / b;  da = sum_to(g / b), db = sum_to(-g * a / b²)
template <class T> Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
  detail::check_same_device(a.device(), b.device(), "div");
  Tensor<T> y = detail::map2(cuda::BinaryOp::Div, a, b, [](T x, T z) { return x / z; }, "div");
  if (autograd::needs_grad(a, b))
    autograd::record(y, "Div", {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, const NeedsGrad& need) {
      Tensor<T> ga, gb;
      if (need[0]) ga = sum_to(detail::map2(cuda::BinaryOp::Div, g, b, [](T x, T z) { return x / z; }, "div"), a.shape());
      if (need[1]) {
        Tensor<T> a_over_b2 = detail::map2(cuda::BinaryOp::DivGradB, a, b, [](T x, T z) { return -x / (z * z); }, "div");
        gb = sum_to(detail::map2(cuda::BinaryOp::Mul, g, a_over_b2, [](T x, T z) { return x * z; }, "div"), b.shape());
      }
      return std::vector<Tensor<T>>{ga, gb};
    });
  return y;
}

// Scalar forms: y = a + s, a * s, s - a, s / a, ... (s is a constant: no gradient).
// PyTorch rounds an added scalar to a bfloat16/half tensor's type first, but not a multiplier.
template <class T> Tensor<T> add(const Tensor<T>& a, Scalar<T> s) {
  Tensor<T> y = detail::is_cuda(a) ? detail::cuda_unary(cuda::UnaryOp::AddScalar, a, double(s))
                                   : cpu::map<T>(a, [s = to_compute(T(s))](T x) { return T(to_compute(x) + s); });
  autograd::record(y, "AddScalar", {a}, [](const Tensor<T>& g, const NeedsGrad&) { return std::vector<Tensor<T>>{g}; });
  return y;
}
template <class T> Tensor<T> mul(const Tensor<T>& a, Scalar<T> s) {
  Tensor<T> y = detail::scaled(a, s);
  autograd::record(y, "MulScalar", {a}, [s](const Tensor<T>& g, const NeedsGrad&) {
    return std::vector<Tensor<T>>{detail::scaled(g, s)};
  });
  return y;
}
// rsub: y = s - a; rdiv: y = s / a, dy/da = -y / a. For bfloat16/half, PyTorch's s / a is
// a.reciprocal() * s: two roundings.
template <class T> Tensor<T> rsub(const Tensor<T>& a, Scalar<T> s) { return add(mul(a, Scalar<T>(-1)), s); }
template <class T> Tensor<T> rdiv(const Tensor<T>& a, Scalar<T> s) {
  const Scalar<T> numerator = is_reduced_float<T> ? Scalar<T>(1) : s;
  Tensor<T> y = detail::unary_op(a, "RDiv", [numerator](T x) { return T(numerator / to_compute(x)); },
                                 [](T x, T y) { return -y / x; },
                                 {cuda::UnaryOp::RDivScalar, cuda::BinaryOp::RDivGrad, double(numerator)});
  if constexpr (is_reduced_float<T>) return mul(y, s);
  else return y;
}
template <class T> Tensor<T> neg(const Tensor<T>& a) { return mul(a, Scalar<T>(-1)); }

template <class T> Tensor<T> operator+(const Tensor<T>& a, const Tensor<T>& b) { return add(a, b); }
template <class T> Tensor<T> operator-(const Tensor<T>& a, const Tensor<T>& b) { return sub(a, b); }
template <class T> Tensor<T> operator*(const Tensor<T>& a, const Tensor<T>& b) { return mul(a, b); }
template <class T> Tensor<T> operator/(const Tensor<T>& a, const Tensor<T>& b) { return div(a, b); }
template <class T> Tensor<T> operator+(const Tensor<T>& a, Scalar<T> s) { return add(a, s); }
template <class T> Tensor<T> operator+(Scalar<T> s, const Tensor<T>& a) { return add(a, s); }
template <class T> Tensor<T> operator-(const Tensor<T>& a, Scalar<T> s) { return add(a, -s); }
template <class T> Tensor<T> operator-(Scalar<T> s, const Tensor<T>& a) { return rsub(a, s); }
template <class T> Tensor<T> operator*(const Tensor<T>& a, Scalar<T> s) { return mul(a, s); }
template <class T> Tensor<T> operator*(Scalar<T> s, const Tensor<T>& a) { return mul(a, s); }
template <class T> Tensor<T> operator/(const Tensor<T>& a, Scalar<T> s) {
  if constexpr (is_reduced_float<T>)  // PyTorch divides these in float rather than multiplying by 1/s
    if (!detail::is_cuda(a)) return cpu::map<T>(a, [s](T x) { return T(to_compute(x) / s); });
  return mul(a, Scalar<T>(1) / s);
}
template <class T> Tensor<T> operator/(Scalar<T> s, const Tensor<T>& a) { return rdiv(a, s); }
template <class T> Tensor<T> operator-(const Tensor<T>& a) { return neg(a); }

// pow: y = x^p;  dy/dx = p x^(p-1)
template <class T> Tensor<T> pow(const Tensor<T>& x, Scalar<T> p) {
  return detail::unary_op(x, "Pow", [p](T v) { return std::pow(v, p); },
                          [p](T v, T) { return p == T(0) ? T(0) : p * std::pow(v, p - T(1)); },
                          {cuda::UnaryOp::PowScalar, cuda::BinaryOp::PowScalarGrad, double(p)});
}
// pow: y = a^b;  da = g b a^(b-1), db = g y log(a)
template <class T> Tensor<T> pow(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> y = detail::map2(cuda::BinaryOp::Pow, a, b, [](T x, T z) { return std::pow(x, z); }, "pow");
  if (autograd::needs_grad(a, b))
    autograd::record(y, "PowTensor", {a, b}, [a = a.detach(), b = b.detach(), y = y.detach()](const Tensor<T>& g,
                                                                                            const NeedsGrad& need) {
      Tensor<T> ga, gb;
      if (need[0])
        ga = sum_to(mul(g, detail::map2(cuda::BinaryOp::PowGradA, a, b, [](T x, T z) { return z == T(0) ? T(0) : z * std::pow(x, z - T(1)); }, "pow")),
                    a.shape());
      if (need[1]) gb = sum_to(mul(g, detail::map2(cuda::BinaryOp::PowGradB, y, a, [](T yv, T x) { return x == T(0) ? T(0) : yv * std::log(x); }, "pow")), b.shape());
      return std::vector<Tensor<T>>{ga, gb};
    });
  return y;
}

// ---------------------------------------------------------------- math
template <class T> Tensor<T> exp(const Tensor<T>& x) {  // dy/dx = y
  return detail::unary_op(x, "Exp", [](T v) { return T(std::exp(to_compute(v))); }, [](T, T y) { return y; }, {cuda::UnaryOp::Exp, cuda::BinaryOp::ExpGrad});
}
template <class T> Tensor<T> log(const Tensor<T>& x) {  // dy/dx = 1/x
  return detail::unary_op(x, "Log", [](T v) { return T(std::log(to_compute(v))); }, [](T v, T) { return T(1) / v; }, {cuda::UnaryOp::Log, cuda::BinaryOp::LogGrad});
}
template <class T> Tensor<T> sqrt(const Tensor<T>& x) {  // dy/dx = 1/(2y)
  return detail::unary_op(x, "Sqrt", [](T v) { return T(std::sqrt(to_compute(v))); }, [](T, T y) { return T(0.5) / y; }, {cuda::UnaryOp::Sqrt, cuda::BinaryOp::SqrtGrad});
}
template <class T> Tensor<T> rsqrt(const Tensor<T>& x) {  // y = x^-1/2, dy/dx = -y³/2
  return detail::unary_op(x, "Rsqrt", [](T v) { return T(1) / std::sqrt(v); }, [](T, T y) { return T(-0.5) * y * y * y; },
                          {cuda::UnaryOp::Rsqrt, cuda::BinaryOp::RsqrtGrad});
}
template <class T> Tensor<T> abs(const Tensor<T>& x) {  // dy/dx = sign(x), 0 at 0 as in PyTorch
  return detail::unary_op(x, "Abs", [](T v) { return std::abs(v); }, [](T v, T) { return T((v > 0) - (v < 0)); },
                          {cuda::UnaryOp::Abs, cuda::BinaryOp::AbsGrad});
}
template <class T> Tensor<T> square(const Tensor<T>& x) {  // dy/dx = 2x
  return detail::unary_op(x, "Square", [](T v) { return v * v; }, [](T v, T) { return T(2) * v; }, {cuda::UnaryOp::Square, cuda::BinaryOp::SquareGrad});
}
template <class T> Tensor<T> sin(const Tensor<T>& x) {
  return detail::unary_op(x, "Sin", [](T v) { return std::sin(v); }, [](T v, T) { return std::cos(v); }, {cuda::UnaryOp::Sin, cuda::BinaryOp::SinGrad});
}
template <class T> Tensor<T> cos(const Tensor<T>& x) {
  return detail::unary_op(x, "Cos", [](T v) { return std::cos(v); }, [](T v, T) { return -std::sin(v); }, {cuda::UnaryOp::Cos, cuda::BinaryOp::CosGrad});
}
// clamp: y = min(max(x, lo), hi); the gradient passes where lo <= x <= hi (PyTorch's rule).
template <class T>
Tensor<T> clamp(const Tensor<T>& x, Scalar<T> lo = -std::numeric_limits<T>::infinity(),
                Scalar<T> hi = std::numeric_limits<T>::infinity()) {
  HG_CHECK(!(lo > hi), "clamp", "min ", lo, " is greater than max ", hi);
  return detail::unary_op(x, "Clamp", [lo, hi](T v) { return std::min(std::max(v, lo), hi); },
                          [lo, hi](T v, T) { return T(v >= lo && v <= hi); },
                          {cuda::UnaryOp::Clamp, cuda::BinaryOp::ClampGrad, double(lo), double(hi)});
}
template <class T> Tensor<T> clamp_min(const Tensor<T>& x, Scalar<T> lo) { return clamp(x, lo); }

// maximum/minimum: elementwise, ties split the gradient evenly (as PyTorch does).
template <class T> Tensor<T> maximum(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> y = detail::map2(cuda::BinaryOp::Maximum, a, b, [](T x, T z) { return std::max(x, z); }, "maximum");
  if (autograd::needs_grad(a, b))
    autograd::record(y, "Maximum", {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, const NeedsGrad& need) {
      Tensor<T> share_a = detail::map2(cuda::BinaryOp::MaxShare, a, b, [](T x, T z) { return x > z ? T(1) : x == z ? T(0.5) : T(0); }, "maximum");
      return std::vector<Tensor<T>>{need[0] ? sum_to(mul(g, share_a), a.shape()) : Tensor<T>(),
                                    need[1] ? sum_to(mul(g, rsub(share_a, T(1))), b.shape()) : Tensor<T>()};
    });
  return y;
}
template <class T> Tensor<T> minimum(const Tensor<T>& a, const Tensor<T>& b) { return neg(maximum(neg(a), neg(b))); }

// ---------------------------------------------------------------- activations (MODELS.md §0.1)
template <class T> Tensor<T> relu(const Tensor<T>& x) {
  // As torch.relu: NaN and -0 pass through (v < 0 ? 0 : v), and so does the gradient at a NaN.
  return detail::unary_op(x, "Relu", [](T v) { return v < T(0) ? T(0) : v; }, [](T v, T) { return T(!(v <= T(0))); }, {cuda::UnaryOp::Relu, cuda::BinaryOp::ReluGrad});
}
template <class T> inline T sigmoid_scalar(T v) { return T(1) / (T(1) + std::exp(-v)); }
template <class T> Tensor<T> sigmoid(const Tensor<T>& x) {  // dy/dx = y (1 - y)
  return detail::unary_op(x, "Sigmoid", [](T v) { return sigmoid_scalar(v); }, [](T, T y) { return y * (T(1) - y); },
                          {cuda::UnaryOp::Sigmoid, cuda::BinaryOp::SigmoidGrad});
}
template <class T> Tensor<T> tanh(const Tensor<T>& x) {  // dy/dx = 1 - y²
  return detail::unary_op(x, "Tanh", [](T v) { return std::tanh(v); }, [](T, T y) { return T(1) - y * y; }, {cuda::UnaryOp::Tanh, cuda::BinaryOp::TanhGrad});
}
// GELU, exact erf form: y = x Φ(x);  dy/dx = Φ(x) + x φ(x)   (vectorised in cpu/activation.hpp)
template <class T> Tensor<T> gelu(const Tensor<T>& x) {
  if (detail::is_cuda(x)) {
    Tensor<T> y = detail::cuda_unary(cuda::UnaryOp::Gelu, x);
    autograd::record(y, "Gelu", {x}, [x = x.detach()](const Tensor<T>& g, const NeedsGrad&) {
      return std::vector<Tensor<T>>{detail::cuda_binary(cuda::BinaryOp::GeluBackward, g, x, "gelu")};
    });
    return y;
  }
  if constexpr (is_reduced_float<T>) {  // in float with std::erf (Eigen's erf is too coarse in the tails), rounded once
    return cpu::map<T>(x, [](T v) {
      const float f = to_compute(v);
      return T(f * 0.5f * (1.0f + std::erf(f * static_cast<float>(M_SQRT1_2))));
    });
  } else {
    Tensor<T> input = x.detach().contiguous(), y(x.shape());
    cpu::gelu_forward(input.data(), y.data(), y.numel());
    autograd::record(y, "Gelu", {x}, [input](const Tensor<T>& g, const NeedsGrad&) {
      Tensor<T> grad_output = g.contiguous(), grad_input(g.shape());
      cpu::gelu_backward(input.data(), grad_output.data(), grad_input.data(), grad_input.numel());
      return std::vector<Tensor<T>>{grad_input};
    });
    return y;
  }
}
// QuickGELU (OpenAI CLIP): y = x σ(1.702x);  dy/dx = s + 1.702 x s (1 - s)
template <class T> Tensor<T> quick_gelu(const Tensor<T>& x) {
  return detail::unary_op(x, "QuickGelu", [](T v) { return v * sigmoid_scalar(T(1.702) * v); }, [](T v, T) {
    T s = sigmoid_scalar(T(1.702) * v);
    return s + T(1.702) * v * s * (T(1) - s);
  }, {cuda::UnaryOp::QuickGelu, cuda::BinaryOp::QuickGeluGrad});
}
// SiLU: y = x σ(x);  dy/dx = s (1 + x (1 - s))
template <class T> Tensor<T> silu(const Tensor<T>& x) {
  return detail::unary_op(x, "Silu", [](T v) { return v * sigmoid_scalar(v); }, [](T v, T) {
    T s = sigmoid_scalar(v);
    return s * (T(1) + v * (T(1) - s));
  }, {cuda::UnaryOp::Silu, cuda::BinaryOp::SiluGrad});
}

// ---------------------------------------------------------------- comparisons and selection
namespace detail {
template <class T, class F>
Tensor<bool> compare_op(cuda::CompareOp op, const Tensor<T>& a, const Tensor<T>& b, F f, const char* name) {
  return is_cuda(a) || is_cuda(b) ? cuda_compare(op, a, b, 0.0, name) : cpu::map<bool>(a, b, f, name);
}
template <class T, class F>
Tensor<bool> compare_op(cuda::CompareOp op, const Tensor<T>& a, T s, F f, const char* name) {
  return is_cuda(a) ? cuda_compare(op, a, Tensor<T>(), double(s), name) : cpu::map<bool>(a, f);
}
}  // namespace detail
template <class T> Tensor<bool> gt(const Tensor<T>& a, const Tensor<T>& b) { return detail::compare_op(cuda::CompareOp::Gt, a, b, [](T x, T z) { return x > z; }, "gt"); }
template <class T> Tensor<bool> lt(const Tensor<T>& a, const Tensor<T>& b) { return detail::compare_op(cuda::CompareOp::Lt, a, b, [](T x, T z) { return x < z; }, "lt"); }
template <class T> Tensor<bool> ge(const Tensor<T>& a, const Tensor<T>& b) { return detail::compare_op(cuda::CompareOp::Ge, a, b, [](T x, T z) { return x >= z; }, "ge"); }
template <class T> Tensor<bool> le(const Tensor<T>& a, const Tensor<T>& b) { return detail::compare_op(cuda::CompareOp::Le, a, b, [](T x, T z) { return x <= z; }, "le"); }
template <class T> Tensor<bool> eq(const Tensor<T>& a, const Tensor<T>& b) { return detail::compare_op(cuda::CompareOp::Eq, a, b, [](T x, T z) { return x == z; }, "eq"); }
template <class T> Tensor<bool> gt(const Tensor<T>& a, Scalar<T> s) { return detail::compare_op(cuda::CompareOp::Gt, a, T(s), [s](T x) { return x > s; }, "gt"); }
template <class T> Tensor<bool> lt(const Tensor<T>& a, Scalar<T> s) { return detail::compare_op(cuda::CompareOp::Lt, a, T(s), [s](T x) { return x < s; }, "lt"); }
template <class T> Tensor<bool> eq(const Tensor<T>& a, Scalar<T> s) { return detail::compare_op(cuda::CompareOp::Eq, a, T(s), [s](T x) { return x == s; }, "eq"); }

// where: y = cond ? a : b (broadcast);  da = sum_to(cond ? g : 0), db = sum_to(cond ? 0 : g)
template <class T> Tensor<T> where(const Tensor<bool>& cond, const Tensor<T>& a, const Tensor<T>& b) {
  const bool device = detail::is_cuda(cond) || detail::is_cuda(a) || detail::is_cuda(b);
  Tensor<T> y = device ? detail::cuda_where(cond, a, 0.0, b, 0.0, "where")
                       : cpu::map<T>(cond, a, b, [](bool c, T x, T z) { return c ? x : z; }, "where");
  autograd::record(y, "Where", {a, b}, [cond, sa = a.shape(), sb = b.shape()](const Tensor<T>& g, const NeedsGrad& need) {
    if (detail::is_cuda(g))
      return std::vector<Tensor<T>>{need[0] ? sum_to(detail::cuda_where(cond, g, 0.0, Tensor<T>(), 0.0, "where"), sa) : Tensor<T>(),
                                    need[1] ? sum_to(detail::cuda_where(cond, Tensor<T>(), 0.0, g, 0.0, "where"), sb) : Tensor<T>()};
    Tensor<T> zero = scalar_tensor<T>(T(0));
    auto pick = [](bool c, T x, T z) { return c ? x : z; };
    return std::vector<Tensor<T>>{need[0] ? sum_to(cpu::map<T>(cond, g, zero, pick, "where"), sa) : Tensor<T>(),
                                  need[1] ? sum_to(cpu::map<T>(cond, zero, g, pick, "where"), sb) : Tensor<T>()};
  });
  return y;
}
// masked_fill: y = mask ? value : x (mask broadcasts to x);  dx = mask ? 0 : g
template <class T> Tensor<T> masked_fill(const Tensor<T>& x, const Tensor<bool>& mask, Scalar<T> value) {
  HG_CHECK(broadcast_shapes(mask.shape(), x.shape(), "masked_fill") == x.shape(), "masked_fill", "mask of shape ",
           to_string(mask.shape()), " does not broadcast to the input's shape ", to_string(x.shape()));
  const bool device = detail::is_cuda(x) || detail::is_cuda(mask);
  Tensor<T> y = device ? detail::cuda_where(mask, Tensor<T>(), double(value), x, 0.0, "masked_fill")
                       : cpu::map<T>(mask, x, [value](bool m, T v) { return m ? value : v; }, "masked_fill");
  autograd::record(y, "MaskedFill", {x}, [mask](const Tensor<T>& g, const NeedsGrad&) {
    if (detail::is_cuda(g)) return std::vector<Tensor<T>>{detail::cuda_where(mask, Tensor<T>(), 0.0, g, 0.0, "masked_fill")};
    return std::vector<Tensor<T>>{cpu::map<T>(mask, g, [](bool m, T v) { return m ? T(0) : v; }, "masked_fill")};
  });
  return y;
}

}  // namespace histograd
