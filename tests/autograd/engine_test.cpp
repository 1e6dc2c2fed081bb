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

// PyTorch frees a node's saved tensors right after that node's backward has run; without it,
// every activation of a training step stays alive until the last gradient is made.
TEST_CASE("backward frees an activation once the nodes that saved it have run") {
  auto x = hg::tensor<double>({0.5, -1.0, 2.0}).requires_grad_();
  std::weak_ptr<hg::Storage<double>> activation;
  bool freed_before_probe = false, retained_before_probe = false;
  auto step = [&](bool retain) {
    // probe: identity whose backward records whether `activation` is gone by the time it runs,
    // i.e. after exp (which saved its output) and mul (which saved its inputs) have run
    auto probe = x.detach().clone();
    hg::autograd::record<double>(probe, "Probe", {x}, [&, retain](const hg::Tensor<double>& g, const hg::NeedsGrad&) {
      (retain ? retained_before_probe : freed_before_probe) = activation.expired();
      return std::vector<hg::Tensor<double>>{g};
    });
    hg::Tensor<double> loss;
    {
      auto h = hg::exp(probe);
      activation = h.storage();
      loss = hg::sum(h * h);
    }
    CHECK(!activation.expired());  // held by the graph alone
    loss.backward(hg::Tensor<double>(), retain);
  };
  step(false);
  CHECK(freed_before_probe);
  check_close(x.grad(), {2 * std::exp(1.0), 2 * std::exp(-2.0), 2 * std::exp(4.0)}, 1e-10);
  x.zero_grad();
  step(true);
  CHECK(!retained_before_probe);  // retain_graph keeps it for a second backward
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
