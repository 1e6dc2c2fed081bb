// Elementwise ops on CUDA tensors against the same ops on the CPU in float64 (forward and
// backward, grads staying on the device): every unary math/activation op, the binary ops with
// broadcasting, non-contiguous views (transposed, stepped slices, expanded), size-0 and size-1
// dims, comparisons, where/masked_fill, dtype conversions (bf16/half bit-exact with the host's),
// and the mixed-device error. Skipped without a GPU.
#include "cuda/parity_util.hpp"

using hg::Tensor;
using hg::test::check_parity_both;

namespace {

// Strictly positive inputs for log/sqrt/rsqrt/pow.
hg::Tensor<double> positive(const hg::Shape& shape, uint64_t seed) {
  return hg::add(hg::abs(random_input(shape, seed)), 0.25);
}

}  // namespace

TEST_CASE("cuda elementwise: unary math and activations match the CPU, forward and backward") {
  HG_REQUIRE_GPU();
  // A transposed, stepped view so the kernels walk real strides.
  auto view = [](const auto& x) { return x.transpose(0, 1).slice(0, 0, 7, 2); };
  const std::vector<hg::Tensor<double>> any{random_input({6, 9, 5}, 1)};
  const std::vector<hg::Tensor<double>> pos{positive({6, 9, 5}, 2)};
#define UNARY(expr, inputs) \
  check_parity_both(#expr, [&](const auto& v) { const auto x = view(v[0]); return expr; }, inputs)
  UNARY(hg::neg(x), any);
  UNARY(hg::exp(x), any);
  UNARY(hg::log(x), pos);
  UNARY(hg::sqrt(x), pos);
  UNARY(hg::rsqrt(x), pos);
  UNARY(hg::abs(x), any);
  UNARY(hg::square(x), any);
  UNARY(hg::sin(x), any);
  UNARY(hg::cos(x), any);
  UNARY(hg::clamp(x, -0.5, 0.7), any);
  UNARY(hg::relu(x), any);
  UNARY(hg::sigmoid(x), any);
  UNARY(hg::tanh(x), any);
  UNARY(hg::gelu(x), any);
  UNARY(hg::quick_gelu(x), any);
  UNARY(hg::silu(x), any);
  UNARY(hg::pow(x, 3.0), any);
  UNARY(hg::pow(x, 0.0), pos);
  UNARY(hg::pow(x, -1.5), pos);
  UNARY(hg::add(x, 2.5), any);
  UNARY(hg::mul(x, -1.25), any);
  UNARY(hg::rsub(x, 0.5), any);
  UNARY(hg::rdiv(x, 2.0), pos);
  UNARY(x / 4.0, any);
#undef UNARY
}

TEST_CASE("cuda elementwise: binary ops broadcast like the CPU, with sum_to in the backward") {
  HG_REQUIRE_GPU();
  struct Shapes { hg::Shape a, b; };
  for (const Shapes& s : {Shapes{{4, 5}, {4, 5}}, Shapes{{3, 1, 5}, {4, 1}}, Shapes{{5}, {2, 3, 5}},
                          Shapes{{}, {3, 4}}, Shapes{{2, 0, 3}, {3}}, Shapes{{1, 1}, {1}}}) {
    INFO("shapes " << hg::to_string(s.a) << " and " << hg::to_string(s.b));
    const std::vector<hg::Tensor<double>> in{random_input(s.a, 3), random_input(s.b, 4)};
    const std::vector<hg::Tensor<double>> pos{positive(s.a, 5), random_input(s.b, 6)};
    check_parity_both("add", [](const auto& v) { return hg::add(v[0], v[1]); }, in);
    check_parity_both("sub", [](const auto& v) { return hg::sub(v[0], v[1]); }, in);
    check_parity_both("mul", [](const auto& v) { return hg::mul(v[0], v[1]); }, in);
    check_parity_both("div", [](const auto& v) { return hg::div(v[0], hg::add(hg::abs(v[1]), 0.5)); }, in);
    check_parity_both("maximum", [](const auto& v) { return hg::maximum(v[0], v[1]); }, in);
    check_parity_both("minimum", [](const auto& v) { return hg::minimum(v[0], v[1]); }, in);
    check_parity_both("pow", [](const auto& v) { return hg::pow(v[0], v[1]); }, pos, 2e-5);
  }
  // Non-contiguous operands: a transposed one against an expanded row.
  const std::vector<hg::Tensor<double>> in{random_input({7, 6}, 7), random_input({1, 7}, 8)};
  check_parity_both("mul of views", [](const auto& v) { return hg::mul(v[0].mT(), v[1].expand({6, 7})); }, in);
  check_parity_both("chain", [](const auto& v) { return hg::exp(hg::gelu(v[0].mT() * v[1] + v[1])); }, in);
}

TEST_CASE("cuda elementwise: maximum ties split the gradient as on the CPU") {
  HG_REQUIRE_GPU();
  hg::Tensor<double> a = random_input({4, 6}, 9);
  check_parity_both("maximum with ties", [](const auto& v) { return hg::maximum(v[0], v[0].clone()); }, {a});
}

TEST_CASE("cuda elementwise: comparisons, where and masked_fill") {
  HG_REQUIRE_GPU();
  hg::Tensor<double> a = random_input({5, 4}, 10), b = random_input({4}, 11);
  b.at({1}) = a.at({2, 1});  // one exact tie for eq/ge/le
  for (int pass = 0; pass < 2; ++pass) {
    auto check_bool = [](const hg::Tensor<bool>& cpu, const hg::Tensor<bool>& gpu) {
      REQUIRE(gpu.device().is_cuda());
      CHECK(gpu.shape() == cpu.shape());
      CHECK(gpu.cpu().to_vector() == cpu.to_vector());
    };
    auto run = [&](const auto& av, const auto& bv) {
      auto ga = av.cuda(), gb = bv.cuda();
      check_bool(hg::gt(av, bv), hg::gt(ga, gb));
      check_bool(hg::lt(av, bv), hg::lt(ga, gb));
      check_bool(hg::ge(av, bv), hg::ge(ga, gb));
      check_bool(hg::le(av, bv), hg::le(ga, gb));
      check_bool(hg::eq(av, bv), hg::eq(ga, gb));
      using S = typename std::decay_t<decltype(av)>::value_type;
      check_bool(hg::gt(av, S(0.1)), hg::gt(ga, S(0.1)));
      check_bool(hg::lt(av, S(0.1)), hg::lt(ga, S(0.1)));
      check_bool(hg::eq(av, av.at({2, 1})), hg::eq(ga, av.at({2, 1})));
    };
    if (pass == 0) run(a, b);
    else run(a.to<float>(), b.to<float>());
  }
  check_parity_both("where", [](const auto& v) { return hg::where(hg::gt(v[0], v[1]), v[0], v[1] * 2.0); },
                    {random_input({3, 5}, 12), random_input({5}, 13)});
  check_parity_both("masked_fill", [](const auto& v) {
    return hg::masked_fill(v[0].mT(), hg::lt(v[0].mT().slice(1, 0, 1), 0.0), -3.5); }, {random_input({6, 4}, 14)});
}

TEST_CASE("cuda elementwise: dtype conversions are exact against the host's") {
  HG_REQUIRE_GPU();
  hg::Tensor<float> base = hg::mul(random_t<float>({17, 9}, 16), 300.0f);  // some values overflow half
  base.at({0, 0}) = std::numeric_limits<float>::quiet_NaN();
  base.at({1, 0}) = 1e-6f;  // a half subnormal
  hg::Tensor<float> x = base.mT(), gx = base.cuda().mT();  // converted through a transposed view
  auto bits = [](const auto& t) {
    std::vector<uint16_t> out;
    for (const auto& v : t.cpu().to_vector()) out.push_back(v.bits);
    return out;
  };
  CHECK(bits(gx.to<hg::bfloat16>()) == bits(x.to<hg::bfloat16>()));
  CHECK(bits(gx.to<hg::half>()) == bits(x.to<hg::half>()));
  hg::Tensor<double> xd = random_t<double>({33}, 17);
  CHECK(bits(xd.cuda().to<hg::bfloat16>()) == bits(xd.to<hg::bfloat16>()));
  hg::Tensor<hg::bfloat16> b = base.to<hg::bfloat16>();
  std::vector<float> back = b.cuda().to<float>().cpu().to_vector(), host = b.to<float>().to_vector();
  CHECK(std::isnan(back[0]));
  for (size_t i = 1; i < back.size(); ++i) CHECK(back[i] == host[i]);
  std::vector<double> widened = gx.to<double>().cpu().to_vector(), widened_host = x.to<double>().to_vector();
  for (size_t i = 0; i < widened.size(); ++i)
    CHECK((widened[i] == widened_host[i] || (std::isnan(widened[i]) && std::isnan(widened_host[i]))));
  hg::Tensor<float> finite = base.slice(0, 1, 17).mT();  // no NaN: NaN to an integer is undefined
  CHECK(finite.cuda().to<int64_t>().cpu().to_vector() == finite.to<int64_t>().to_vector());
  CHECK(finite.cuda().to<bool>().cpu().to_vector() == finite.to<bool>().to_vector());
}

TEST_CASE("cuda elementwise: bfloat16 and half add/mul compute in float and round once") {
  HG_REQUIRE_GPU();
  hg::Tensor<float> a = random_t<float>({8, 16}, 18), b = random_t<float>({16}, 19);
  for (int kind = 0; kind < 2; ++kind) {
    auto run = [&](auto tag) {
      using H = decltype(tag);
      hg::Tensor<H> ha = a.to<H>(), hb = b.to<H>();
      hg::Tensor<float> fa = ha.template to<float>(), fb = hb.template to<float>();
      // Expected: the float result of the rounded inputs, rounded once to H on the host.
      std::vector<H> sum_expected = hg::add(fa, fb).template to<H>().to_vector(),
                     mul_expected = hg::mul(fa, fb).template to<H>().to_vector();
      // The launcher directly: the ops' autograd (sum_to) is float/double only.
      auto launch = [&](hg::cuda::BinaryOp op) {
        hg::Tensor<H> da = ha.cuda(), db = hb.cuda(), out({8, 16}, hg::Device::cuda());
        hg::cuda::binary<H>(op, out.shape(), out.device_data(), out.strides(), da.device_data(), da.strides(),
                            db.device_data(), hg::broadcast_strides(db.shape(), db.strides(), out.shape()));
        return out.cpu().to_vector();
      };
      std::vector<H> sum_got = launch(hg::cuda::BinaryOp::Add), mul_got = launch(hg::cuda::BinaryOp::Mul);
      for (size_t i = 0; i < sum_got.size(); ++i) {
        CHECK(sum_got[i].bits == sum_expected[i].bits);
        CHECK(mul_got[i].bits == mul_expected[i].bits);
      }
      hg::Tensor<H> copy = ha.cuda().mT().contiguous();
      std::vector<H> copied = copy.cpu().to_vector(), expected = ha.mT().contiguous().to_vector();
      for (size_t i = 0; i < copied.size(); ++i) CHECK(copied[i].bits == expected[i].bits);
    };
    if (kind == 0) run(hg::bfloat16{});
    else run(hg::half{});
  }
}

TEST_CASE("cuda elementwise: mixed-device operands are refused naming the op") {
  HG_REQUIRE_GPU();
  hg::Tensor<float> c = random_t<float>({3}, 20), g = c.cuda();
  CHECK_THROWS_WITH_AS(hg::add(c, g), doctest::Contains("add: expected both tensors on the same device, got cpu and cuda:0"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::maximum(g, c), doctest::Contains("maximum: expected both tensors on the same device"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::where(hg::gt(g, 0.0f), g, c), doctest::Contains("where: expected both tensors on the same device"),
                       hg::Error);
}
