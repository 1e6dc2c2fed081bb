// Tensor<bfloat16> and Tensor<half> on the CPU, bit for bit against PyTorch 2.x on CPU, which
// widens each element to float, computes the op in float, rounds the result back once, and sums
// in float. The literals are uint16 bit patterns printed by this script (torch 2.x, CPU):
//
//   import torch
//   torch.manual_seed(0)
//   def b(t): return "{" + ", ".join("0x%04x" % (v & 0xffff) for v in t.contiguous().reshape(-1).view(torch.int16).tolist()) + "}"
//   inf, nan = float("inf"), float("nan")
//   for dt, name in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
//       base = (torch.randn(4, 3) * 3).to(dt)  # a = base.T: [3, 4], non-contiguous
//       row = (torch.randn(8) * 2).to(dt)      # r = row[::2]: [4], stride 2
//       a, r = base.T, row[::2]
//       pos = (torch.rand(6) * 5 + 0.01).to(dt)
//       ramp = torch.tensor([((i * 37) % 257) / 64 for i in range(1000)], dtype=dt)  # exact float sums
//       big = 3e38 if dt == torch.bfloat16 else 6e4
//       x = torch.tensor([1, inf, -inf, nan, 0, -0.0, big, 2], dtype=dt)
//       y = torch.tensor([inf, -inf, 1, 1, -0.0, -0.0, big, 0], dtype=dt)
//       out = {"base": base, "row": row, "pos": pos,
//              "add": a + r, "sub": a - r, "mul": a * r, "div": a / r, "neg": -a,
//              "mul_s": a * 0.1, "div_s": a / 0.3, "add_s": a + 0.7, "rsub_s": 0.5 - a, "rdiv_s": 0.7 / a,
//              "sum": a.sum(), "sum0": a.sum(0), "sum1k": a.sum(-1, keepdim=True), "mean": a.mean(), "mean1": a.mean(1),
//              "exp": a.exp(), "log": pos.log(), "sqrt": pos.sqrt(), "relu": a.relu(), "gelu": torch.nn.functional.gelu(a),
//              "ramp_sum": ramp.sum(), "ramp_mean": ramp.mean(), "ramp_rows": ramp.reshape(10, 100).sum(1),
//              "ramp_cols_mean": ramp.reshape(10, 100).mean(0)[:5],
//              "x+y": x + y, "x*y": x * y, "x/y": x / y, "exp_x": x.exp(), "log_x": x.log(), "sqrt_x": (x - 1).sqrt(),
//              "to_other": a.to(torch.float16 if dt == torch.bfloat16 else torch.bfloat16)}
//       for k, v in out.items(): print(name, k, b(v))
//
// (x+y, x*y, x/y are named x_add_y, x_mul_y, x_div_y below.)
#include "test_util.hpp"

#include <cstdio>
#include <limits>
#include <sstream>
#include <string>

namespace {

using Bits = std::vector<uint16_t>;

template <class T> hg::Tensor<T> from_bits(const Bits& bits, const hg::Shape& shape) {
  std::vector<T> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i].bits = bits[i];
  return hg::from_vector(values, shape);
}

template <class T> bool is_nan(T v) { return std::isnan(static_cast<float>(v)); }

inline std::string hex(uint16_t bits) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%04x", bits);
  return text;
}

// Bit for bit (or within `ulps` steps of the 16-bit grid), except that any NaN matches any NaN:
// PyTorch's NaN payloads depend on which of its vector paths ran (its bfloat16 exp(nan) gives
// 0xffff, its add 0x7fc0).
template <class T>
void check_bits(const hg::Tensor<T>& got, const Bits& want, const hg::Shape& shape, int ulps = 0) {
  REQUIRE(got.shape() == shape);
  std::vector<T> values = got.to_vector();
  REQUIRE(values.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    T expected;
    expected.bits = want[i];
    INFO(hg::dtype_name<T>() << " element " << i << ": got " << hex(values[i].bits) << " (" << float(values[i])
                             << "), expected " << hex(want[i]) << " (" << float(expected) << ")");
    if (is_nan(expected)) CHECK(is_nan(values[i]));
    else if (ulps == 0) CHECK(values[i].bits == want[i]);
    else CHECK(std::abs(int(values[i].bits) - int(want[i])) <= ulps);  // same sign here, so bits are ordered
  }
}

template <class T> struct Torch;
template <> struct Torch<hg::bfloat16> {
  static inline const Bits base = {0x4094, 0xbf61, 0xc0d1, 0x3fda, 0xc050, 0xc086, 0x3f9b, 0x4021, 0xc00a, 0xbf9b, 0xbfe5, 0x3f0c};
  static inline const Bits row = {0xbfdb, 0x400d, 0xc009, 0x3e7b, 0xbf91, 0x3f3f, 0xbfe4, 0xc041};
  static inline const Bits pos = {0x4029, 0x3f9d, 0x403c, 0x3e34, 0x3f34, 0x3f9c};
  static inline const Bits add = {0x403a, 0xbee0, 0x3da0, 0xc040, 0xc026, 0xc0ac, 0x3fb1, 0xc064, 0xc104, 0xc0ca, 0xc052, 0xbf9e};
  static inline const Bits sub = {0x40cb, 0x4076, 0x4016, 0x3f12, 0x3f55, 0xbf8e, 0x406a, 0xbc00, 0xc09a, 0xc003, 0xbf83, 0x4015};
  static inline const Bits mul = {0xc0fd, 0xc069, 0xbfb0, 0x400a, 0x3fc0, 0x40df, 0xc036, 0x404c, 0x4133, 0x410f, 0x401c, 0xbf79};
  static inline const Bits div = {0xc02d, 0xbf4c, 0xbf89, 0x3f2e, 0x3f04, 0x3fc2, 0xc00e, 0x3f81, 0x4074, 0x3ffa, 0x3ff4, 0xbe9d};
  static inline const Bits neg = {0xc094, 0xbfda, 0xbf9b, 0x3f9b, 0x3f61, 0x4050, 0xc021, 0x3fe5, 0x40d1, 0x4086, 0x400a, 0xbf0c};
  static inline const Bits mul_s = {0x3eed, 0x3e2e, 0x3df8, 0xbdf8, 0xbdb4, 0xbea6, 0x3e81, 0xbe37, 0xbf27, 0xbed6, 0xbe5d, 0x3d60};
  static inline const Bits div_s = {0x4177, 0x40b6, 0x4081, 0xc081, 0xc03c, 0xc12d, 0x4106, 0xc0bf, 0xc1ae, 0xc15f, 0xc0e6, 0x3fe9};
  static inline const Bits add_s = {0x40aa, 0x401a, 0x3ff4, 0xbf03, 0xbe38, 0xc023, 0x404e, 0xbf8c, 0xc0bb, 0xc05f, 0xbfba, 0x3fa0};
  static inline const Bits rsub_s = {0xc084, 0xbf9a, 0xbf36, 0x3fdb, 0x3fb0, 0x4070, 0xc001, 0x4012, 0x40e1, 0x4096, 0x402a, 0xbd40};
  static inline const Bits rdiv_s = {0x3e1b, 0x3ed2, 0x3f14, 0xbf14, 0xbf4c, 0xbe5d, 0x3e8f, 0xbec8, 0xbddc, 0xbe2c, 0xbea6, 0x3fa4};
  static inline const Bits sum = {0xc116};
  static inline const Bits sum0 = {0xc032, 0xc0b8, 0x3fc9, 0xc01d};
  static inline const Bits sum1k = {0x40ca, 0xc05a, 0xc145};
  static inline const Bits mean = {0xbf49};
  static inline const Bits mean1 = {0x3fca, 0xbf5a, 0xc045};
  static inline const Bits exp = {0x42cc, 0x40b0, 0x4057, 0x3e99, 0x3ed5, 0x3d1f, 0x4146, 0x3e2b, 0x3abf, 0x3c79, 0x3ded, 0x3fdd};
  static inline const Bits log = {0x3f79, 0x3e51, 0x3f8a, 0xbfdf, 0xbeb4, 0x3e4b};
  static inline const Bits sqrt = {0x3fd0, 0x3f8e, 0x3fdb, 0x3ed7, 0x3f57, 0x3f8d};
  static inline const Bits relu = {0x4094, 0x3fda, 0x3f9b, 0x0000, 0x0000, 0x0000, 0x4021, 0x0000, 0x0000, 0x0000, 0x0000, 0x3f0c};
  static inline const Bits gelu = {0x4094, 0x3fd0, 0x3f89, 0xbe0c, 0xbe2b, 0xbaf6, 0x4020, 0xbd87, 0x8000, 0xb878, 0xbd09, 0x3ec6};
  static inline const Bits ramp_sum = {0x44f9};
  static inline const Bits ramp_mean = {0x3fff};
  static inline const Bits ramp_rows = {0x433f, 0x4346, 0x4349, 0x434c, 0x434a, 0x4341, 0x4348, 0x434b, 0x434d, 0x4344};
  static inline const Bits ramp_cols_mean = {0x3ffa, 0x4008, 0x3ff4, 0x3fd7, 0x4010};
  static inline const Bits x_add_y = {0x7f80, 0x7fc0, 0xff80, 0x7fc0, 0x0000, 0x8000, 0x7f80, 0x4000};
  static inline const Bits x_mul_y = {0x7f80, 0xff80, 0xff80, 0x7fc0, 0x8000, 0x0000, 0x7f80, 0x0000};
  static inline const Bits x_div_y = {0x0000, 0x7fc0, 0xff80, 0x7fc0, 0x7fc0, 0x7fc0, 0x3f80, 0x7f80};
  static inline const Bits exp_x = {0x402e, 0x7f80, 0x0000, 0xffff, 0x3f80, 0x3f80, 0x7f80, 0x40ec};
  static inline const Bits log_x = {0x0000, 0x7f80, 0xffff, 0xffff, 0xff80, 0xff80, 0x42b1, 0x3f31};
  static inline const Bits sqrt_x = {0x0000, 0x7f80, 0xffff, 0xffff, 0xffff, 0xffff, 0x5f71, 0x3f80};
  static inline const Bits to_other = {0x44a0, 0x3ed0, 0x3cd8, 0xbcd8, 0xbb08, 0xc280, 0x4108, 0xbf28, 0xc688, 0xc430, 0xc050, 0x3860};
};
template <> struct Torch<hg::half> {
  static inline const Bits base = {0xc03f, 0xb51c, 0xc375, 0xbdb7, 0xc01e, 0xc484, 0x3a1f, 0x456a, 0xbd67, 0xbdcc, 0x3fe4, 0x41a2};
  static inline const Bits row = {0x4087, 0xbd2a, 0xc315, 0x36db, 0xbc4e, 0x3cb4, 0x426c, 0x3ad8};
  static inline const Bits pos = {0x4032, 0x3d76, 0x42f1, 0x3c1e, 0x42da, 0x438c};
  static inline const Bits add = {0x3080, 0xc4f8, 0xb4fa, 0x3f0c, 0x3fc7, 0xc59a, 0x4456, 0x452f, 0xbddc, 0xc807, 0xc0da, 0x4607};
  static inline const Bits sub = {0xc463, 0x403a, 0x3f5e, 0xc4a9, 0xc12a, 0x3dee, 0x467e, 0xbcf4, 0xc5fe, 0xbbcc, 0xb464, 0xb650};
  static inline const Bits mul = {0xc4ce, 0x450f, 0xba96, 0xc4a7, 0xb9c8, 0x474a, 0xc5d4, 0x4656, 0xc838, 0x4bff, 0x3dd0, 0x4886};
  static inline const Bits div = {0xbb81, 0x3675, 0xb9b0, 0xb739, 0xb084, 0x38a7, 0xc508, 0x38ea, 0xbe97, 0x3d1a, 0x3d05, 0x3b04};
  static inline const Bits neg = {0x403f, 0x3db7, 0xba1f, 0x3dcc, 0x351c, 0x401e, 0xc56a, 0xbfe4, 0x4375, 0x4484, 0x3d67, 0xc1a2};
  static inline const Bits mul_s = {0xb2cb, 0xb092, 0x2ce6, 0xb0a3, 0xa816, 0xb296, 0x3855, 0x3250, 0xb5f7, 0xb73a, 0xb052, 0x3482};
  static inline const Bits div_s = {0xc714, 0xc4c3, 0x411a, 0xc4d5, 0xbc42, 0xc6dd, 0x4c83, 0x4693, 0xca37, 0xcb87, 0xc480, 0x48b2};
  static inline const Bits add_s = {0xbdb1, 0xb9d4, 0x3ddc, 0xb9fe, 0x3618, 0xbd6f, 0x461d, 0x4158, 0xc20e, 0xc3a2, 0xb934, 0x4308};
  static inline const Bits rsub_s = {0x413f, 0x3fb7, 0xb43e, 0x3fcc, 0x3a8e, 0x411e, 0xc4ea, 0xbde4, 0x443a, 0x4504, 0x3f67, 0xc0a2};
  static inline const Bits rdiv_s = {0xb546, 0xb7d6, 0x3b51, 0xb7ba, 0xc062, 0xb571, 0x3023, 0x35ad, 0xb203, 0xb0f6, 0xb825, 0x33f4};
  static inline const Bits sum = {0xc601};
  static inline const Bits sum0 = {0xc62c, 0xc800, 0x44d4, 0x42ae};
  static inline const Bits sum1k = {0xc43c, 0x4502, 0xc6c7};
  static inline const Bits mean = {0xb801};
  static inline const Bits mean1 = {0xbc3c, 0x3d02, 0xbec7};
  static inline const Bits exp = {0x2fa9, 0x33ab, 0x404c, 0x3383, 0x39d0, 0x3016, 0x5b04, 0x4731, 0x2627, 0x219a, 0x3425, 0x4c2e};
  static inline const Bits log = {0x39ed, 0x34fb, 0x3cfa, 0x2764, 0x3ced, 0x3d50};
  static inline const Bits sqrt = {0x3dcb, 0x3cac, 0x3f74, 0x3c0f, 0x3f67, 0x3fc5};
  static inline const Bits relu = {0x0000, 0x0000, 0x3a1f, 0x0000, 0x0000, 0x0000, 0x456a, 0x3fe4, 0x0000, 0x0000, 0x0000, 0x41a2};
  static inline const Bits gelu = {0xa896, 0xaf00, 0x38c3, 0xaed4, 0xafa9, 0xa935, 0x456a, 0x3fb3, 0x8de2, 0x80ef, 0xafa4, 0x419e};
  static inline const Bits ramp_sum = {0x67ca};
  static inline const Bits ramp_mean = {0x3ff9};
  static inline const Bits ramp_rows = {0x59fb, 0x5a31, 0x5a47, 0x5a5d, 0x5a53, 0x5a09, 0x5a3f, 0x5a55, 0x5a6b, 0x5a21};
  static inline const Bits ramp_cols_mean = {0x3fce, 0x4042, 0x3f9d, 0x3eb6, 0x4083};
  static inline const Bits x_add_y = {0x7c00, 0xfe00, 0xfc00, 0x7e00, 0x0000, 0x8000, 0x7c00, 0x4000};
  static inline const Bits x_mul_y = {0x7c00, 0xfc00, 0xfc00, 0x7e00, 0x8000, 0x0000, 0x7c00, 0x0000};
  static inline const Bits x_div_y = {0x0000, 0xfe00, 0xfc00, 0x7e00, 0xfe00, 0xfe00, 0x3c00, 0x7c00};
  static inline const Bits exp_x = {0x4170, 0x7c00, 0x0000, 0x7e00, 0x3c00, 0x3c00, 0x7c00, 0x4764};
  static inline const Bits log_x = {0x0000, 0x7c00, 0xfe00, 0x7e00, 0xfc00, 0xfc00, 0x4980, 0x398c};
  static inline const Bits sqrt_x = {0x0000, 0x7c00, 0xfe00, 0x7e00, 0xfe00, 0xfe00, 0x5ba8, 0x3c00};
  static inline const Bits to_other = {0xc008, 0xbfb7, 0x3f44, 0xbfba, 0xbea4, 0xc004, 0x40ad, 0x3ffc, 0xc06f, 0xc090, 0xbfad, 0x4034};
};

// a = base.T ([3, 4], non-contiguous) and r = row[::2] ([4], stride 2), as in the script.
template <class T> hg::Tensor<T> operand_a() { return from_bits<T>(Torch<T>::base, {4, 3}).transpose(0, 1); }
template <class T> hg::Tensor<T> operand_r() { return from_bits<T>(Torch<T>::row, {8}).slice(0, 0, 8, 2); }

// 1000 values k/64 with k < 257: every partial sum is exact in float, so the order of the
// float sum cannot matter, while a sum kept in T loses most of its bits.
template <class T> hg::Tensor<T> ramp() {
  std::vector<T> values;
  for (int i = 0; i < 1000; ++i) values.push_back(T(static_cast<float>((i * 37) % 257) / 64.0f));
  return hg::from_vector(values, {1000});
}

}  // namespace

TEST_CASE_TEMPLATE("16-bit binary ops broadcast strided operands and round once", T, hg::bfloat16, hg::half) {
  hg::Tensor<T> a = operand_a<T>(), r = operand_r<T>();
  REQUIRE(!a.is_contiguous());
  REQUIRE(!r.is_contiguous());
  check_bits(hg::add(a, r), Torch<T>::add, {3, 4});
  check_bits(a - r, Torch<T>::sub, {3, 4});
  check_bits(a * r, Torch<T>::mul, {3, 4});
  check_bits(a / r, Torch<T>::div, {3, 4});
  check_bits(r.expand({3, 4}) + a, Torch<T>::add, {3, 4});  // a stride-0 operand on the left
}

TEST_CASE_TEMPLATE("16-bit ops with a scalar apply it as float", T, hg::bfloat16, hg::half) {
  hg::Tensor<T> a = operand_a<T>();
  check_bits(-a, Torch<T>::neg, {3, 4});
  check_bits(hg::neg(a), Torch<T>::neg, {3, 4});
  check_bits(a * 0.1f, Torch<T>::mul_s, {3, 4});   // 0.1 rounded to T first would give other bits
  check_bits(a / 0.3f, Torch<T>::div_s, {3, 4});   // divided, not multiplied by 1/0.3
  check_bits(a + 0.7f, Torch<T>::add_s, {3, 4});
  check_bits(0.5f - a, Torch<T>::rsub_s, {3, 4});   // PyTorch rounds an added scalar to T first
  check_bits(0.7f / a, Torch<T>::rdiv_s, {3, 4});   // PyTorch: a.reciprocal() * 0.7, two roundings
}

TEST_CASE_TEMPLATE("16-bit reductions and views", T, hg::bfloat16, hg::half) {
  hg::Tensor<T> a = operand_a<T>(), r = operand_r<T>();
  check_bits(hg::sum(a), Torch<T>::sum, {});
  check_bits(hg::sum(a, {0}), Torch<T>::sum0, {4});
  check_bits(hg::sum(a, {-1}, true), Torch<T>::sum1k, {3, 1});
  check_bits(hg::mean(a), Torch<T>::mean, {});
  check_bits(hg::mean(a, {1}), Torch<T>::mean1, {3});
  check_bits(hg::sum_to(a, {1, 4}), Torch<T>::sum0, {1, 4});
  check_bits(hg::sum_to(a, {4}), Torch<T>::sum0, {4});

  Bits row_bits;
  for (size_t i = 0; i < Torch<T>::row.size(); i += 2) row_bits.push_back(Torch<T>::row[i]);
  Bits expanded;
  for (int k = 0; k < 3; ++k) expanded.insert(expanded.end(), row_bits.begin(), row_bits.end());
  check_bits(r.expand({3, 4}), expanded, {3, 4});
  check_bits(r.expand({3, 4}).contiguous(), expanded, {3, 4});
  Bits transposed;  // base.T read row by row
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) transposed.push_back(Torch<T>::base[static_cast<size_t>(j * 3 + i)]);
  hg::Tensor<T> c = a.contiguous();
  CHECK(c.is_contiguous());
  check_bits(c, transposed, {3, 4});
  hg::Tensor<T> copy = c.clone();
  CHECK(copy.data() != c.data());
  check_bits(copy, transposed, {3, 4});
}

TEST_CASE_TEMPLATE("16-bit sums accumulate in float and round once at the end", T, hg::bfloat16, hg::half) {
  hg::Tensor<T> x = ramp<T>();
  check_bits(hg::sum(x), Torch<T>::ramp_sum, {});
  check_bits(hg::mean(x), Torch<T>::ramp_mean, {});
  check_bits(hg::sum(x.reshape({10, 100}), {1}), Torch<T>::ramp_rows, {10});
  check_bits(hg::mean(x.reshape({10, 100}), {0}).slice(0, 0, 5), Torch<T>::ramp_cols_mean, {5});
  // Accumulating in T (one rounding per element) lands elsewhere.
  T in_t(0.0f);
  for (T v : x.to_vector()) in_t += v;
  CHECK(in_t.bits != Torch<T>::ramp_sum[0]);
  float in_float = 0;
  for (T v : x.to_vector()) in_float += float(v);
  CHECK(T(in_float).bits == Torch<T>::ramp_sum[0]);
}

TEST_CASE_TEMPLATE("16-bit NaN and infinity propagate as in PyTorch", T, hg::bfloat16, hg::half) {
  const float big = std::is_same_v<T, hg::bfloat16> ? 3e38f : 6e4f, inf = std::numeric_limits<float>::infinity(),
              nan = std::numeric_limits<float>::quiet_NaN();
  auto make = [](std::vector<float> v) {
    return hg::from_vector(v, {static_cast<int64_t>(v.size())}).template to<T>();
  };
  hg::Tensor<T> x = make({1, inf, -inf, nan, 0, -0.0f, big, 2}), y = make({inf, -inf, 1, 1, -0.0f, -0.0f, big, 0});
  check_bits(x + y, Torch<T>::x_add_y, {8});
  check_bits(x * y, Torch<T>::x_mul_y, {8});  // big * big overflows to inf
  check_bits(x / y, Torch<T>::x_div_y, {8});
  check_bits(hg::exp(x), Torch<T>::exp_x, {8});
  check_bits(hg::log(x), Torch<T>::log_x, {8});
  check_bits(hg::sqrt(x - 1.0f), Torch<T>::sqrt_x, {8});
  CHECK(is_nan(hg::sum(x).item()));
  CHECK(float(hg::sum(x.slice(0, 0, 2)).item()) == inf);
  CHECK(is_nan(hg::mean(x.slice(0, 1, 3)).item()));  // inf + -inf
  CHECK(float(hg::sum(make({big, big})).item()) == inf);  // the float sum is finite, its rounding is not
}

TEST_CASE_TEMPLATE("16-bit exp, log, sqrt, relu and gelu compute in float", T, hg::bfloat16, hg::half) {
  hg::Tensor<T> a = operand_a<T>(), p = from_bits<T>(Torch<T>::pos, {6});
  check_bits(hg::exp(a), Torch<T>::exp, {3, 4});
  check_bits(hg::log(p), Torch<T>::log, {6});
  check_bits(hg::sqrt(p), Torch<T>::sqrt, {6});
  check_bits(hg::relu(a), Torch<T>::relu, {3, 4});
  // PyTorch's 16-bit gelu runs its own vectorised erf: it differs from float gelu rounded once
  // (and from ours, std::erf in float) by one step on up to 1% of all 16-bit inputs, more in the
  // far tails and for subnormals, so gelu is held to one step.
  check_bits(hg::gelu(a), Torch<T>::gelu, {3, 4}, 1);
}

TEST_CASE_TEMPLATE("16-bit conversions", T, hg::bfloat16, hg::half) {
  using Other = std::conditional_t<std::is_same_v<T, hg::bfloat16>, hg::half, hg::bfloat16>;
  hg::Tensor<T> a = operand_a<T>();
  hg::Tensor<float> f = a.template to<float>();
  hg::Tensor<double> d = a.template to<double>();
  std::vector<T> values = a.to_vector();
  for (size_t i = 0; i < values.size(); ++i) {
    CHECK(f.to_vector()[i] == float(values[i]));
    CHECK(d.to_vector()[i] == double(values[i]));
  }
  Bits transposed;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) transposed.push_back(Torch<T>::base[static_cast<size_t>(j * 3 + i)]);
  check_bits(f.template to<T>(), transposed, {3, 4});
  check_bits(d.template to<T>(), transposed, {3, 4});
  check_bits(a.template to<Other>(), Torch<T>::to_other, {3, 4});
}

TEST_CASE_TEMPLATE("16-bit scalars: operators, limits, printing", T, hg::bfloat16, hg::half) {
  const float eps = float(std::numeric_limits<T>::epsilon());
  CHECK(T(1.0f) + T(eps / 2) == T(1.0f));  // a tie rounds to even
  CHECK(T(1.0f) + T(eps) > T(1.0f));
  CHECK(T(0.0f) == -T(0.0f));
  CHECK((-T(0.0f)).bits == 0x8000);
  CHECK(!(std::numeric_limits<T>::quiet_NaN() == std::numeric_limits<T>::quiet_NaN()));
  CHECK(std::isinf(float(std::numeric_limits<T>::infinity())));
  CHECK(float(std::numeric_limits<T>::max()) == (std::is_same_v<T, hg::bfloat16> ? 3.3895313892515355e38f : 65504.0f));
  CHECK(float(std::numeric_limits<T>::lowest()) == -float(std::numeric_limits<T>::max()));
  CHECK(std::isinf(float(std::numeric_limits<T>::max() * T(2.0f))));
  CHECK(T(3.0f) / T(4.0f) == T(0.75f));
  std::ostringstream s;
  s << T(1.5f) << " " << hg::from_vector(std::vector<T>{T(0.25f)}, {1});
  CHECK(s.str() == "1.5 tensor([0.25])");
}

TEST_CASE_TEMPLATE("16-bit tensors take no gradient", T, hg::bfloat16, hg::half) {
  hg::Tensor<T> a = operand_a<T>();
  CHECK_THROWS_WITH_AS(a.requires_grad_(), doctest::Contains("requires_grad_: only floating-point tensors can require grad"),
                       hg::Error);
  CHECK(!(a + a).requires_grad());
}
