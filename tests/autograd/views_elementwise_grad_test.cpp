#include <cmath>

#include "test_util.hpp"

using Inputs = std::vector<hg::Tensor<double>>;

TEST_CASE("gradcheck: arithmetic with broadcasting and non-contiguous inputs") {
  auto a = random_input({3, 4}, 1, true), b = random_input({4}, 2), c = random_input({3, 1}, 3);
  check_gradients([](const Inputs& in) { return in[0] + in[1] * in[2]; }, {a, b, c});
  check_gradients([](const Inputs& in) { return (in[0] - in[1]) / (hg::square(in[2]) + 1.0); }, {a, b, c});
  check_gradients([](const Inputs& in) { return 2.0 - in[0] * 3.0 + 1.0 / (hg::exp(in[1]) + 0.5); }, {a, b});
  check_gradients([](const Inputs& in) { return hg::pow(hg::abs(in[0]) + 0.5, in[1]); }, {a, b});
  check_gradients([](const Inputs& in) { return hg::maximum(in[0], in[1]) + hg::minimum(in[0], in[2]); }, {a, b, c});
}

TEST_CASE("gradcheck: unary math and activations") {
  auto x = random_input({2, 5}, 4, true);
  auto pos = hg::abs(random_input({7}, 5)) + 0.3;
  for (auto f : std::vector<std::function<hg::Tensor<double>(const hg::Tensor<double>&)>>{
           [](auto& v) { return hg::exp(v); }, [](auto& v) { return hg::tanh(v); }, [](auto& v) { return hg::sigmoid(v); },
           [](auto& v) { return hg::gelu(v); }, [](auto& v) { return hg::quick_gelu(v); }, [](auto& v) { return hg::silu(v); },
           [](auto& v) { return hg::relu(v); }, [](auto& v) { return hg::clamp(v, -0.5, 0.7); },
           [](auto& v) { return hg::pow(v, 3.0); }, [](auto& v) { return hg::sin(v) * hg::cos(v); }, [](auto& v) { return -v; }})
    check_gradients([f](const Inputs& in) { return f(in[0]); }, {x});
  for (auto f : std::vector<std::function<hg::Tensor<double>(const hg::Tensor<double>&)>>{
           [](auto& v) { return hg::log(v); }, [](auto& v) { return hg::sqrt(v); }, [](auto& v) { return hg::rsqrt(v); },
           [](auto& v) { return hg::pow(v, -1.5); }})
    check_gradients([f](const Inputs& in) { return f(in[0]); }, {pos});
}

TEST_CASE("gradcheck: where and masked_fill") {
  auto a = random_input({3, 4}, 6), b = random_input({4}, 7);
  auto cond = hg::gt(random_input({3, 4}, 8), 0.0);
  check_gradients([cond](const Inputs& in) { return hg::where(cond, in[0], in[1]); }, {a, b});
  auto mask = hg::gt(random_input({1, 4}, 9), 0.0);
  check_gradients([mask](const Inputs& in) { return hg::masked_fill(in[0], mask, -5.0); }, {a});
}

TEST_CASE("gradcheck: views") {
  auto x = random_input({2, 3, 4}, 10, true);
  check_gradients([](const Inputs& in) { return in[0].permute({2, 0, 1}).reshape({4, 6}) * 2.0; }, {x});
  check_gradients([](const Inputs& in) { return in[0].slice(-1, 1, 3).select(0, 1) + 0.0; }, {x});
  check_gradients([](const Inputs& in) { return in[0].slice(1, 0, 3, 2).transpose(0, -1).contiguous() * 1.0; }, {x});
  auto v = random_input({3, 1}, 11);
  check_gradients([](const Inputs& in) { return in[0].expand({2, 3, 5}).unsqueeze(0).squeeze(0) * 1.0; }, {v});
  check_gradients([](const Inputs& in) { return in[0].flatten(1) * in[0].flatten(1); }, {x});
}

TEST_CASE("gradcheck: reductions") {
  auto x = random_input({3, 4, 5}, 12, true);
  check_gradients([](const Inputs& in) { return hg::sum(in[0], {0, -1}, true); }, {x});
  check_gradients([](const Inputs& in) { return hg::mean(in[0], {1}); }, {x});
  check_gradients([](const Inputs& in) { return hg::sum(in[0]); }, {x});
  check_gradients([](const Inputs& in) { return hg::var(in[0], {-1}, 1, true); }, {x});
  check_gradients([](const Inputs& in) { return hg::var(in[0], {0, 2}, 0); }, {x});
  check_gradients([](const Inputs& in) { return hg::logsumexp(in[0], {-1}); }, {x});
  check_gradients([](const Inputs& in) { return hg::max(in[0], 1, true).values; }, {x});
  check_gradients([](const Inputs& in) { return hg::min(in[0], -1).values; }, {x});
  check_gradients([](const Inputs& in) { return hg::amax(in[0], {0, 1}); }, {x});
}

TEST_CASE("relu: NaN and -0 pass through, and a NaN passes its gradient, as torch.relu") {
  // torch.relu(tensor([nan, -0., -1., 2.])) = [nan, -0., 0., 2.]; its gradient of sum() is [1, 0, 0, 1].
  hg::Tensor<float> x = hg::from_vector<float>({std::nanf(""), -0.0f, -1.0f, 2.0f}, {4});
  x.requires_grad_();
  const hg::Tensor<float> y = hg::relu(x);
  const std::vector<float> v = y.to_vector();
  CHECK(std::isnan(v[0]));
  CHECK((v[1] == 0.0f && std::signbit(v[1])));
  CHECK((v[2] == 0.0f && !std::signbit(v[2])));
  CHECK(v[3] == 2.0f);
  hg::sum(y).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{1.0f, 0.0f, 0.0f, 1.0f});
}
