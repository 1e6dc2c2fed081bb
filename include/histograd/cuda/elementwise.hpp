// Elementwise kernels on the GPU (cuda/elementwise.cu): one strided broadcasting kernel per
// arity, the op chosen by an op code since C++ lambdas cannot cross into the .cu. Every operand
// is (pointer, strides) over the output's shape, with stride 0 on broadcast dims, as
// cpu::map reads them. The math mirrors ops/elementwise.hpp's CPU lambdas expression for
// expression; bfloat16/half load to float, compute in float and round once on store.
// Plain C++ declarations: present only when histograd::cuda is linked (HISTOGRAD_WITH_CUDA).
#pragma once
#include <cstdint>

#include "../core/shape.hpp"

namespace histograd::cuda {

// Up to this many dims after merging the dims every operand steps through as one.
constexpr int kMaxDims = 8;

enum class UnaryOp {
  Identity, Neg, Exp, Log, Sqrt, Rsqrt, Abs, Sign, Square, Reciprocal, Sin, Cos, Erf, Tanh, Sigmoid, Relu,
  Gelu,       // x Φ(x), erf form
  GeluTanh,   // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
  QuickGelu,  // x σ(1.702 x)
  Silu,
  AddScalar,   // x + s0
  MulScalar,   // x * s0
  RDivScalar,  // s0 / x
  PowScalar,   // x ^ s0
  Clamp,       // min(max(x, s0), s1)
  KeepScale,   // x >= s0 ? s1 : 0 (drop_path's per-sample mask from uniforms)
};

enum class BinaryOp {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum,
  EqualValue,  // T(a == b)
  MaxShare,    // a > b ? 1 : a == b ? 0.5 : 0 (maximum's gradient share)
  DivGradB,    // -a / (b b)
  PowGradA,    // (a, b): b == 0 ? 0 : b a^(b-1)
  PowGradB,    // (y, a): a == 0 ? 0 : y log(a)
  GeluBackward,  // (g, x): g (Φ(x) + x φ(x))
  // dy/dx of a unary op from (x, y), as ops/elementwise.hpp's derivative lambdas:
  ExpGrad, LogGrad, SqrtGrad, RsqrtGrad, AbsGrad, SquareGrad, SinGrad, CosGrad, TanhGrad, SigmoidGrad, ReluGrad,
  QuickGeluGrad, SiluGrad, ClampGrad /* s0, s1 */, PowScalarGrad /* s0 */, RDivGrad,
};

enum class CompareOp { Eq, Ne, Lt, Le, Gt, Ge };

// T ∈ {float, double, bfloat16, half}. Strides are in elements; `shape` is the output's.
template <class T>
void unary(UnaryOp op, const Shape& shape, T* out, const Shape& out_strides, const T* a, const Shape& a_strides,
           double s0 = 0, double s1 = 0, void* stream = nullptr);
template <class T>
void binary(BinaryOp op, const Shape& shape, T* out, const Shape& out_strides, const T* a, const Shape& a_strides,
            const T* b, const Shape& b_strides, double s0 = 0, double s1 = 0, void* stream = nullptr);
// out = a op b, or a op b_value when b is null.
template <class T>
void compare(CompareOp op, const Shape& shape, bool* out, const Shape& out_strides, const T* a, const Shape& a_strides,
             const T* b, const Shape& b_strides, double b_value = 0, void* stream = nullptr);
// out = cond ? a : b; a null reads a_value, b null reads b_value (masked_fill, where's backward).
template <class T>
void where(const Shape& shape, T* out, const Shape& out_strides, const bool* cond, const Shape& cond_strides,
           const T* a, const Shape& a_strides, double a_value, const T* b, const Shape& b_strides, double b_value,
           void* stream = nullptr);

}  // namespace histograd::cuda
