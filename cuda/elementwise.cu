// The elementwise kernels behind include/histograd/cuda/elementwise.hpp: one strided kernel per
// arity (strided.cuh) with the op picked by a switch on its code (uniform across a launch, so
// warps never diverge on it). Each case is the CPU lambda of ops/elementwise.hpp written again
// for the compute type, so CPU and GPU differ only by the device math library's last bits.
#include <cuda_runtime.h>

#include <cmath>

#include "histograd/cuda/elementwise.hpp"
#include "strided.cuh"

namespace histograd::cuda {
namespace {

using detail::compute_t;
using detail::load;
using detail::store;

// float and double overloads spelled out, so a float op never runs in double by promotion.
template <class C> __device__ __forceinline__ C m_exp(C x) { if constexpr (sizeof(C) == 4) return expf(x); else return ::exp(x); }
template <class C> __device__ __forceinline__ C m_log(C x) { if constexpr (sizeof(C) == 4) return logf(x); else return ::log(x); }
template <class C> __device__ __forceinline__ C m_sqrt(C x) { if constexpr (sizeof(C) == 4) return sqrtf(x); else return ::sqrt(x); }
template <class C> __device__ __forceinline__ C m_tanh(C x) { if constexpr (sizeof(C) == 4) return tanhf(x); else return ::tanh(x); }
template <class C> __device__ __forceinline__ C m_erf(C x) { if constexpr (sizeof(C) == 4) return erff(x); else return ::erf(x); }
template <class C> __device__ __forceinline__ C m_sin(C x) { if constexpr (sizeof(C) == 4) return sinf(x); else return ::sin(x); }
template <class C> __device__ __forceinline__ C m_cos(C x) { if constexpr (sizeof(C) == 4) return cosf(x); else return ::cos(x); }
template <class C> __device__ __forceinline__ C m_abs(C x) { if constexpr (sizeof(C) == 4) return fabsf(x); else return ::fabs(x); }
template <class C> __device__ __forceinline__ C m_pow(C x, C p) { if constexpr (sizeof(C) == 4) return powf(x, p); else return ::pow(x, p); }

template <class C> __device__ __forceinline__ C sigmoid(C v) { return C(1) / (C(1) + m_exp(-v)); }
template <class C> __device__ __forceinline__ C max_of(C a, C b) { return a < b ? b : a; }  // std::max
template <class C> __device__ __forceinline__ C min_of(C a, C b) { return b < a ? b : a; }  // std::min

template <class C>
__device__ C apply_unary(UnaryOp op, C v, C s0, C s1) {
  switch (op) {
    case UnaryOp::Identity: return v;
    case UnaryOp::Neg: return -v;
    case UnaryOp::Exp: return m_exp(v);
    case UnaryOp::Log: return m_log(v);
    case UnaryOp::Sqrt: return m_sqrt(v);
    case UnaryOp::Rsqrt: return C(1) / m_sqrt(v);
    case UnaryOp::Abs: return m_abs(v);
    case UnaryOp::Sign: return C((v > C(0)) - (v < C(0)));
    case UnaryOp::Square: return v * v;
    case UnaryOp::Reciprocal: return C(1) / v;
    case UnaryOp::Sin: return m_sin(v);
    case UnaryOp::Cos: return m_cos(v);
    case UnaryOp::Erf: return m_erf(v);
    case UnaryOp::Tanh: return m_tanh(v);
    case UnaryOp::Sigmoid: return sigmoid(v);
    case UnaryOp::Relu: return v < C(0) ? C(0) : v;  // NaN and -0 pass through, as torch.relu
    case UnaryOp::Gelu: return C(0.5) * v * (C(1) + m_erf(v * C(M_SQRT1_2)));
    case UnaryOp::GeluTanh: {
      const C inner = C(0.7978845608028654) * (v + C(0.044715) * v * v * v);
      return C(0.5) * v * (C(1) + m_tanh(inner));
    }
    case UnaryOp::QuickGelu: return v * sigmoid(C(1.702) * v);
    case UnaryOp::Silu: return v * sigmoid(v);
    case UnaryOp::AddScalar: return v + s0;
    case UnaryOp::MulScalar: return v * s0;
    case UnaryOp::RDivScalar: return s0 / v;
    case UnaryOp::PowScalar: return m_pow(v, s0);
    case UnaryOp::Clamp: return min_of(max_of(v, s0), s1);
    case UnaryOp::KeepScale: return v >= s0 ? s1 : C(0);
  }
  return C(0);
}

template <class C>
__device__ C apply_binary(BinaryOp op, C a, C b, C s0, C s1) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Pow: return m_pow(a, b);
    case BinaryOp::Maximum: return max_of(a, b);
    case BinaryOp::Minimum: return min_of(a, b);
    case BinaryOp::EqualValue: return C(a == b);
    case BinaryOp::MaxShare: return a > b ? C(1) : a == b ? C(0.5) : C(0);
    case BinaryOp::DivGradB: return -a / (b * b);
    case BinaryOp::PowGradA: return b == C(0) ? C(0) : b * m_pow(a, b - C(1));
    case BinaryOp::PowGradB: return b == C(0) ? C(0) : a * m_log(b);
    case BinaryOp::GeluBackward: {
      const C cdf = C(0.5) * (C(1) + m_erf(b * C(M_SQRT1_2)));
      return a * (cdf + b * m_exp(C(-0.5) * (b * b)) * C(0.3989422804014327));
    }
    // (a, b) = (x, y) below
    case BinaryOp::ExpGrad: return b;
    case BinaryOp::LogGrad: return C(1) / a;
    case BinaryOp::SqrtGrad: return C(0.5) / b;
    case BinaryOp::RsqrtGrad: return C(-0.5) * b * b * b;
    case BinaryOp::AbsGrad: return C((a > C(0)) - (a < C(0)));
    case BinaryOp::SquareGrad: return C(2) * a;
    case BinaryOp::SinGrad: return m_cos(a);
    case BinaryOp::CosGrad: return -m_sin(a);
    case BinaryOp::TanhGrad: return C(1) - b * b;
    case BinaryOp::SigmoidGrad: return b * (C(1) - b);
    case BinaryOp::ReluGrad: return C(!(a <= C(0)));  // NaN passes the gradient, as torch
    case BinaryOp::QuickGeluGrad: {
      const C s = sigmoid(C(1.702) * a);
      return s + C(1.702) * a * s * (C(1) - s);
    }
    case BinaryOp::SiluGrad: {
      const C s = sigmoid(a);
      return s * (C(1) + a * (C(1) - s));
    }
    case BinaryOp::ClampGrad: return C(a >= s0 && a <= s1);
    case BinaryOp::PowScalarGrad: return s0 == C(0) ? C(0) : s0 * m_pow(a, s0 - C(1));
    case BinaryOp::RDivGrad: return -b / a;
  }
  return C(0);
}

template <class C>
__device__ __forceinline__ bool apply_compare(CompareOp op, C a, C b) {
  switch (op) {
    case CompareOp::Eq: return a == b;
    case CompareOp::Ne: return a != b;
    case CompareOp::Lt: return a < b;
    case CompareOp::Le: return a <= b;
    case CompareOp::Gt: return a > b;
    case CompareOp::Ge: return a >= b;
  }
  return false;
}

template <class T> struct UnaryFn {
  UnaryOp op;
  T* out;
  const T* a;
  compute_t<T> s0, s1;
  __device__ void operator()(const int64_t (&off)[2]) const {
    out[off[0]] = store<T>(apply_unary<compute_t<T>>(op, load(a[off[1]]), s0, s1));
  }
};

template <class T> struct BinaryFn {
  BinaryOp op;
  T* out;
  const T *a, *b;
  compute_t<T> s0, s1;
  __device__ void operator()(const int64_t (&off)[3]) const {
    out[off[0]] = store<T>(apply_binary<compute_t<T>>(op, load(a[off[1]]), load(b[off[2]]), s0, s1));
  }
};

template <class T> struct CompareFn {
  CompareOp op;
  bool* out;
  const T *a, *b;
  compute_t<T> b_value;
  __device__ void operator()(const int64_t (&off)[3]) const {
    out[off[0]] = apply_compare<compute_t<T>>(op, load(a[off[1]]), b ? load(b[off[2]]) : b_value);
  }
};

template <class T> struct WhereFn {
  T* out;
  const bool* cond;
  const T *a, *b;
  T a_value, b_value;
  __device__ void operator()(const int64_t (&off)[4]) const {
    out[off[0]] = cond[off[1]] ? (a ? a[off[2]] : a_value) : (b ? b[off[3]] : b_value);
  }
};

template <class T> T scalar_as(double v) {
  if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, half>) return T(static_cast<float>(v));
  else return static_cast<T>(v);
}

}  // namespace

template <class T>
void unary(UnaryOp op, const Shape& shape, T* out, const Shape& out_strides, const T* a, const Shape& a_strides,
           double s0, double s1, void* stream) {
  using C = compute_t<T>;
  detail::launch_strided<2>("cuda::unary", shape, {&out_strides, &a_strides},
                            UnaryFn<T>{op, out, a, static_cast<C>(s0), static_cast<C>(s1)}, stream);
}

template <class T>
void binary(BinaryOp op, const Shape& shape, T* out, const Shape& out_strides, const T* a, const Shape& a_strides,
            const T* b, const Shape& b_strides, double s0, double s1, void* stream) {
  using C = compute_t<T>;
  detail::launch_strided<3>("cuda::binary", shape, {&out_strides, &a_strides, &b_strides},
                            BinaryFn<T>{op, out, a, b, static_cast<C>(s0), static_cast<C>(s1)}, stream);
}

template <class T>
void compare(CompareOp op, const Shape& shape, bool* out, const Shape& out_strides, const T* a, const Shape& a_strides,
             const T* b, const Shape& b_strides, double b_value, void* stream) {
  const Shape& bs = b ? b_strides : out_strides;  // a scalar b is never read through strides
  detail::launch_strided<3>("cuda::compare", shape, {&out_strides, &a_strides, &bs},
                            CompareFn<T>{op, out, a, b, static_cast<compute_t<T>>(b_value)}, stream);
}

template <class T>
void where(const Shape& shape, T* out, const Shape& out_strides, const bool* cond, const Shape& cond_strides,
           const T* a, const Shape& a_strides, double a_value, const T* b, const Shape& b_strides, double b_value,
           void* stream) {
  const Shape& as = a ? a_strides : out_strides;
  const Shape& bs = b ? b_strides : out_strides;
  detail::launch_strided<4>("cuda::where", shape, {&out_strides, &cond_strides, &as, &bs},
                            WhereFn<T>{out, cond, a, b, scalar_as<T>(a_value), scalar_as<T>(b_value)}, stream);
}

#define HG_INSTANTIATE(T)                                                                                        \
  template void unary<T>(UnaryOp, const Shape&, T*, const Shape&, const T*, const Shape&, double, double, void*); \
  template void binary<T>(BinaryOp, const Shape&, T*, const Shape&, const T*, const Shape&, const T*,             \
                          const Shape&, double, double, void*);                                                  \
  template void compare<T>(CompareOp, const Shape&, bool*, const Shape&, const T*, const Shape&, const T*,        \
                           const Shape&, double, void*);                                                         \
  template void where<T>(const Shape&, T*, const Shape&, const bool*, const Shape&, const T*, const Shape&,       \
                         double, const T*, const Shape&, double, void*);
HG_INSTANTIATE(float)
HG_INSTANTIATE(double)
HG_INSTANTIATE(bfloat16)
HG_INSTANTIATE(half)
#undef HG_INSTANTIATE

}  // namespace histograd::cuda
