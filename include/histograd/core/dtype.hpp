// Element types. float and double compute on the CPU; bfloat16 and half convert to and from
// float with round-to-nearest-even, bit-exact with PyTorch's conversions, and their arithmetic
// is PyTorch's CPU arithmetic for them: each operand widened to float, the operation done in
// float, the result rounded back once (sums accumulate in float: accumulate_t).
#pragma once
#include <concepts>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <string_view>
#include <type_traits>

namespace histograd {

struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  explicit bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) { bits = 0x7fc0; return; }  // NaN stays a quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    bits = static_cast<uint16_t>(u >> 16);
  }
  explicit operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  explicit operator double() const { return static_cast<float>(*this); }
};

struct half {
  uint16_t bits = 0;
  half() = default;
  explicit half(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u, exp = (u >> 23) & 0xffu, mant = u & 0x7fffffu;
    if (exp == 0xff) { bits = static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u)); return; }
    int e = static_cast<int>(exp) - 127 + 15;
    if (e >= 31) { bits = static_cast<uint16_t>(sign | 0x7c00u); return; }  // overflow to inf
    if (e <= 0) {                                                              // subnormal or zero
      if (e < -10) { bits = static_cast<uint16_t>(sign); return; }
      mant |= 0x800000u;
      uint32_t shift = static_cast<uint32_t>(14 - e);
      uint32_t rounded = (mant >> shift) + (((mant >> (shift - 1)) & 1u) &
                                            (((mant & ((1u << (shift - 1)) - 1)) != 0) | ((mant >> shift) & 1u)));
      bits = static_cast<uint16_t>(sign | rounded);
      return;
    }
    uint32_t out = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (out & 1u))) ++out;  // ties to even; may carry into exp
    bits = static_cast<uint16_t>(out);
  }
  explicit operator float() const {
    uint32_t sign = (bits & 0x8000u) << 16, exp = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu, u;
    if (exp == 0x1f) {
      u = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
      if (mant == 0) {
        u = sign;
      } else {  // normalise the subnormal
        int e = -1;
        do { ++e; mant <<= 1; } while (!(mant & 0x400u));
        u = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
      }
    } else {
      u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  explicit operator double() const { return static_cast<float>(*this); }
};

// bfloat16 and half: the 16-bit floats that compute in float. compute_t<T> is the type an op on
// T runs in (float for them, T itself otherwise) and to_compute widens one value to it.
template <class T> concept reduced_float = std::same_as<T, bfloat16> || std::same_as<T, half>;
template <class T> constexpr bool is_reduced_float = reduced_float<T>;
template <class T> using compute_t = std::conditional_t<reduced_float<T>, float, T>;
template <class T> compute_t<T> to_compute(T v) { return static_cast<compute_t<T>>(v); }

// One rounding per operation; there is deliberately no implicit conversion, so an expression
// mixing bfloat16 with float does not compile rather than silently widening or narrowing.
template <reduced_float T> T operator+(T a, T b) { return T(float(a) + float(b)); }
template <reduced_float T> T operator-(T a, T b) { return T(float(a) - float(b)); }
template <reduced_float T> T operator*(T a, T b) { return T(float(a) * float(b)); }
template <reduced_float T> T operator/(T a, T b) { return T(float(a) / float(b)); }
template <reduced_float T> T operator-(T a) { T out = a; out.bits ^= 0x8000u; return out; }  // exact, NaN too
template <reduced_float T> T operator+(T a) { return a; }
template <reduced_float T> T& operator+=(T& a, T b) { return a = a + b; }
template <reduced_float T> T& operator-=(T& a, T b) { return a = a - b; }
template <reduced_float T> T& operator*=(T& a, T b) { return a = a * b; }
template <reduced_float T> T& operator/=(T& a, T b) { return a = a / b; }
// Compared as floats: -0 == +0 and NaN is unordered, as in PyTorch.
template <reduced_float T> bool operator==(T a, T b) { return float(a) == float(b); }
template <reduced_float T> bool operator<(T a, T b) { return float(a) < float(b); }
template <reduced_float T> bool operator<=(T a, T b) { return float(a) <= float(b); }
template <reduced_float T> bool operator>(T a, T b) { return float(a) > float(b); }
template <reduced_float T> bool operator>=(T a, T b) { return float(a) >= float(b); }
template <reduced_float T> std::ostream& operator<<(std::ostream& out, T v) { return out << float(v); }

// The type the CPU kernels sum T in: double for float, so a float result does not carry the
// rounding of a long float sum (parity with float64 references needs it); float for bfloat16
// and half (PyTorch's CPU sums them in float and rounds once); T otherwise.
template <class T>
using accumulate_t = std::conditional_t<std::is_same_v<T, float>, double, compute_t<T>>;

template <class T> constexpr std::string_view dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  else if constexpr (std::is_same_v<T, double>) return "float64";
  else if constexpr (std::is_same_v<T, bfloat16>) return "bfloat16";
  else if constexpr (std::is_same_v<T, half>) return "float16";
  else if constexpr (std::is_same_v<T, int64_t>) return "int64";
  else if constexpr (std::is_same_v<T, int32_t>) return "int32";
  else if constexpr (std::is_same_v<T, uint8_t>) return "uint8";
  else if constexpr (std::is_same_v<T, bool>) return "bool";
  else return "unknown";
}

template <class T> constexpr bool is_floating = std::is_floating_point_v<T>;

}  // namespace histograd

// numeric_limits for the 16-bit floats, so generic code asking for infinity() or lowest() gets
// the real value rather than the primary template's T() (zero).
namespace histograd::detail {
template <class T> T from_bits(uint16_t bits) {
  T out;
  out.bits = bits;
  return out;
}
template <class T, uint16_t Inf, uint16_t Max, uint16_t Min, uint16_t Eps, uint16_t NaN, int Digits>
struct limits16 {
  static constexpr bool is_specialized = true, is_signed = true, is_integer = false, is_exact = false;
  static constexpr bool has_infinity = true, has_quiet_NaN = true, has_signaling_NaN = false;
  static constexpr int digits = Digits, radix = 2;
  static T infinity() { return from_bits<T>(Inf); }
  static T quiet_NaN() { return from_bits<T>(NaN); }
  static T max() { return from_bits<T>(Max); }
  static T lowest() { return from_bits<T>(static_cast<uint16_t>(Max | 0x8000u)); }
  static T min() { return from_bits<T>(Min); }  // smallest positive normal
  static T epsilon() { return from_bits<T>(Eps); }
};
}  // namespace histograd::detail

template <>
struct std::numeric_limits<histograd::bfloat16>
    : histograd::detail::limits16<histograd::bfloat16, 0x7f80, 0x7f7f, 0x0080, 0x3c00, 0x7fc0, 8> {};
template <>
struct std::numeric_limits<histograd::half>
    : histograd::detail::limits16<histograd::half, 0x7c00, 0x7bff, 0x0400, 0x1400, 0x7e00, 11> {};
