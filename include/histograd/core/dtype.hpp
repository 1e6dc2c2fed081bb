// Element types. float and double compute on the CPU; bfloat16 and half are storage types
// (the GPU computes in them and checkpoints arrive in them): here they convert to and from
// float with round-to-nearest-even, bit-exact with PyTorch's conversions.
#pragma once
#include <cstdint>
#include <cstring>
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
};

// The type the CPU kernels sum T in: double for float, so a float result does not carry the
// rounding of a long float sum (parity with float64 references needs it), T otherwise.
template <class T> using accumulate_t = std::conditional_t<std::is_same_v<T, float>, double, T>;

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
