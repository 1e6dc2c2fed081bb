#include "test_util.hpp"

TEST_CASE("reductions match hand-computed values") {
  auto x = hg::tensor<double>({1, 5, 3, 4, 2, 6}, {2, 3});
  check_close(hg::sum(x, {0}), {5, 7, 9});
  check_close(hg::sum(x, {-1}, true), {9, 12});
  CHECK(hg::sum(x, {-1}, true).shape() == hg::Shape{2, 1});
  check_close(hg::mean(x), {3.5});
  check_close(hg::var(x, {1}), {4.0, 4.0});
  check_close(hg::var(x, {1}, 0), {8.0 / 3, 8.0 / 3});
  check_close(hg::logsumexp(x, {1}), {std::log(std::exp(1) + std::exp(5) + std::exp(3)),
                                      std::log(std::exp(4) + std::exp(2) + std::exp(6))});
  auto m = hg::max(x, 1);
  check_close(m.values, {5, 6});
  CHECK(m.indices.to_vector() == std::vector<int64_t>{1, 2});
  CHECK(hg::argmin(x, 0).to_vector() == std::vector<int64_t>{0, 1, 0});
  check_close(hg::amax(x), {6});
  check_close(hg::min(x), {1});
  check_close(hg::sum_to(x, {1, 3}), {5, 7, 9});
}

TEST_CASE("sums of large float tensors do not drift") {
  auto x = hg::full<float>({1 << 22}, 0.1f);
  CHECK(hg::sum(x).item() == doctest::Approx(0.1f * (1 << 22)).epsilon(1e-6));
}

TEST_CASE("reduction errors name the op") {
  auto x = hg::zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(hg::sum(x, {2}), doctest::Contains("sum: dim 2 out of range"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::sum(x, {1, -1}), doctest::Contains("appears more than once"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::max(hg::zeros<float>({0}), 0), doctest::Contains("max: cannot reduce an empty tensor"), hg::Error);
}
