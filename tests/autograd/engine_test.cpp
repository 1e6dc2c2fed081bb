#include "test_util.hpp"

TEST_CASE("backward accumulates through shared subexpressions") {
  auto x = hg::tensor<double>({2.0, 3.0}).requires_grad_();
  auto y = x * x + x;  // dy/dx = 2x + 1
  hg::sum(y).backward();
  check_close(x.grad(), {5.0, 7.0});
  hg::sum(x * 3.0).backward();  // grads accumulate across calls
  check_close(x.grad(), {8.0, 10.0});
  x.zero_grad();
  CHECK(!x.grad().defined());
}

TEST_CASE("graph is freed after backward unless retained") {
  auto x = hg::tensor<double>({1.0}).requires_grad_();
  auto y = hg::exp(x);
  y.backward(hg::Tensor<double>(), true);
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(2 * std::exp(1.0)));
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("a second time"), hg::Error);
}

TEST_CASE("no_grad and detach stop recording") {
  auto x = hg::tensor<double>({1.0}).requires_grad_();
  {
    hg::NoGradGuard guard;
    auto y = x * 2.0;
    CHECK(!y.requires_grad());
  }
  auto d = x.detach();
  CHECK(!d.requires_grad());
  CHECK((x * 2.0).grad_fn_name() == "MulScalarBackward");
  CHECK_THROWS_WITH_AS(hg::sum(d).backward(), doctest::Contains("does not require grad"), hg::Error);
  CHECK_THROWS_WITH_AS(x.fill_(1.0), doctest::Contains("in-place write to a tensor that requires grad"), hg::Error);
}

TEST_CASE("deep graphs do not overflow the stack") {
  auto x = hg::tensor<double>({1.0}).requires_grad_();
  auto y = x;
  for (int i = 0; i < 20000; ++i) y = y + 1e-3;
  y.backward();
  CHECK(x.grad().item() == 1.0);
}

TEST_CASE("gradcheck catches a wrong derivative") {
  auto x = random_input({3}, 1);
  auto wrong = [](const std::vector<hg::Tensor<double>>& in) {
    // forward is x², but the recorded derivative claims 3x
    auto y = hg::cpu::map<double>(in[0], [](double v) { return v * v; });
    hg::autograd::record(y, "Wrong", {in[0]}, [x = in[0].detach()](const hg::Tensor<double>& g, const hg::NeedsGrad&) {
      return std::vector<hg::Tensor<double>>{g * (x * 3.0)};
    });
    return y;
  };
  CHECK(!hg::gradcheck(wrong, {x}).ok);
}
