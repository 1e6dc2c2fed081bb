#include "test_util.hpp"

// Three steps on loss = Σ p³ + Σ c·p, compared with torch.optim in float64 (values printed by
// torch 2.15: AdamW(lr=0.1, weight_decay=0.05); SGD(lr=0.1, momentum=0.9, weight_decay=0.05, nesterov=True)).
template <class Opt>
std::vector<double> three_steps(Opt make) {
  auto p = hg::tensor<double>({1.0, -2.0, 0.5}).requires_grad_();
  auto c = hg::tensor<double>({1.0, 2.0, 3.0});
  auto opt = make(std::vector<hg::Tensor<double>>{p});
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    (hg::sum(hg::pow(p, 3.0)) + hg::sum(p * c)).backward();
    opt.step();
  }
  return p.detach().to_vector();
}

TEST_CASE("AdamW matches torch.optim.AdamW") {
  auto got = three_steps([](auto params) { return hg::optim::AdamW<double>(params, 0.1, 0.9, 0.999, 1e-8, 0.05); });
  std::vector<double> torch_values{0.689318702315081, -2.26910943869879, 0.19495053822837};
  for (size_t i = 0; i < 3; ++i) CHECK(got[i] == doctest::Approx(torch_values[i]).epsilon(1e-12));
}

TEST_CASE("SGD with Nesterov momentum matches torch.optim.SGD") {
  auto got = three_steps([](auto params) { return hg::optim::SGD<double>(params, 0.1, 0.9, 0.05, true); });
  std::vector<double> torch_values{-0.955449693113365, -217.535160312105, -2.91831369423659};
  for (size_t i = 0; i < 3; ++i) CHECK(got[i] == doctest::Approx(torch_values[i]).epsilon(1e-12));
}

TEST_CASE("optimizers reject non-leaf parameters") {
  auto p = hg::ones<double>({2}).requires_grad_();
  CHECK_THROWS_WITH_AS(hg::optim::SGD<double>({p * 2.0}, 0.1), doctest::Contains("leaf"), hg::Error);
}
