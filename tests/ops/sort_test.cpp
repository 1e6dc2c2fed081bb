#include "test_util.hpp"

#include <algorithm>
#include <limits>
#include <numeric>

using Inputs = std::vector<hg::Tensor<double>>;

namespace {
std::vector<int64_t> as_vector(const hg::Tensor<int64_t>& t) { return t.to_vector(); }
}  // namespace

TEST_CASE_TEMPLATE("sort and argsort match hand values, stably", T, float, double) {
  auto x = hg::tensor<T>({3, 1, 2, 1, 3, 0}, {2, 3});
  auto up = hg::sort(x);  // along the last dim
  check_close(up.values, {1, 2, 3, 0, 1, 3});
  CHECK(as_vector(up.indices) == std::vector<int64_t>{1, 2, 0, 2, 0, 1});
  auto down = hg::sort(x, 0, true);
  check_close(down.values, {3, 3, 2, 1, 1, 0});
  CHECK(as_vector(down.indices) == std::vector<int64_t>{0, 1, 0, 1, 0, 1});

  // ties keep their input order in both directions (torch.sort(stable=True))
  auto ties = hg::tensor<T>({2, 1, 2, 1, 2});
  CHECK(as_vector(hg::sort(ties).indices) == std::vector<int64_t>{1, 3, 0, 2, 4});
  CHECK(as_vector(hg::sort(ties, -1, true).indices) == std::vector<int64_t>{0, 2, 4, 1, 3});
  CHECK(as_vector(hg::argsort(ties, 0, true)) == std::vector<int64_t>{0, 2, 4, 1, 3});

  // NaN sorts as the largest value: torch.sort([1, nan, 0], descending=True) -> [nan, 1, 0], [1, 0, 2]
  const T nan = std::numeric_limits<T>::quiet_NaN();
  auto with_nan = hg::tensor<T>({1, nan, 0});
  CHECK(as_vector(hg::sort(with_nan, -1, true).indices) == std::vector<int64_t>{1, 0, 2});
  CHECK(as_vector(hg::sort(with_nan).indices) == std::vector<int64_t>{2, 0, 1});

  // a non-contiguous input
  auto xt = x.transpose(0, 1);  // [[3, 1], [1, 3], [2, 0]]
  CHECK(as_vector(hg::argsort(xt, 1)) == std::vector<int64_t>{1, 0, 0, 1, 1, 0});
  CHECK(as_vector(hg::argsort(hg::tensor<int64_t>({5, -2, 9, 0}))) == std::vector<int64_t>{1, 3, 0, 2});
}

TEST_CASE("sort agrees with std::stable_sort on random lanes") {
  hg::Generator gen(41);
  auto x = hg::randint<int64_t>(0, 6, {4, 9, 5}, gen).to<double>();  // many ties
  for (bool descending : {false, true}) {
    auto result = hg::sort(x, 1, descending);
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t k = 0; k < 5; ++k) {
        std::vector<int64_t> order(9);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
          return descending ? x.at({i, a, k}) > x.at({i, b, k}) : x.at({i, a, k}) < x.at({i, b, k});
        });
        for (int64_t j = 0; j < 9; ++j) {
          CHECK(result.indices.at({i, j, k}) == order[j]);
          CHECK(result.values.at({i, j, k}) == x.at({i, order[j], k}));
        }
      }
  }
}

TEST_CASE_TEMPLATE("topk matches hand values", T, float, double) {
  auto x = hg::tensor<T>({3, 1, 3, 2, 3, 5, 4, 0, 4, 1}, {2, 5});
  auto top = hg::topk(x, 2);
  check_close(top.values, {3, 3, 5, 4});
  CHECK(as_vector(top.indices) == std::vector<int64_t>{0, 2, 0, 1});  // equal values: first in input order
  auto bottom = hg::topk(x, 3, -1, false);
  check_close(bottom.values, {1, 2, 3, 0, 1, 4});
  CHECK(as_vector(bottom.indices) == std::vector<int64_t>{1, 3, 0, 2, 4, 1});
  auto unsorted = hg::topk(x, 3, 1, true, false);  // the same set, in input order
  CHECK(as_vector(unsorted.indices) == std::vector<int64_t>{0, 2, 4, 0, 1, 3});
  check_close(unsorted.values, {3, 3, 3, 5, 4, 4});
  auto along_rows = hg::topk(x, 1, 0);
  CHECK(along_rows.values.shape() == hg::Shape{1, 5});
  check_close(along_rows.values, {5, 4, 3, 4, 3});
  CHECK(hg::topk(x, 0).values.shape() == hg::Shape{2, 0});
  check_close(hg::topk(x, 5).values, hg::sort(x, -1, true).values);
}

TEST_CASE("topk agrees with the head of a stable sort for every k, with ties and NaN") {
  hg::Generator gen(43);
  auto x = hg::randint<int64_t>(0, 12, {3, 50}, gen).to<float>();  // many ties
  x.at({1, 7}) = std::numeric_limits<float>::quiet_NaN();
  x.at({2, 3}) = std::numeric_limits<float>::quiet_NaN();
  x.at({2, 30}) = std::numeric_limits<float>::quiet_NaN();
  for (bool largest : {true, false}) {
    auto full = hg::sort(x, -1, largest);
    for (int64_t k : {1, 2, 5, 16, 17, 40, 50}) {
      INFO("k = " << k << ", largest = " << largest);
      auto top = hg::topk(x, k, -1, largest);
      auto head = full.indices.slice(1, 0, k).contiguous();
      CHECK(as_vector(top.indices) == as_vector(head));
      auto unsorted = hg::topk(x, k, -1, largest, false);
      for (int64_t r = 0; r < 3; ++r) {  // the same set, in input order
        auto want = as_vector(head.select(0, r).contiguous());
        std::sort(want.begin(), want.end());
        CHECK(as_vector(unsorted.indices.select(0, r).contiguous()) == want);
      }
    }
  }
}

TEST_CASE("sort and topk errors name the op") {
  auto x = hg::zeros<float>({2, 5});
  CHECK_THROWS_WITH_AS(hg::topk(x, 7), doctest::Contains("topk: k 7 out of range for dim 1 of size 5"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::topk(x, -1), doctest::Contains("topk: k -1 out of range"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::topk(x, 1, 2), doctest::Contains("topk: dim 2 out of range"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::sort(x, -3), doctest::Contains("sort: dim -3 out of range"), hg::Error);
}

TEST_CASE("gradcheck: sort and topk values") {
  auto x = random_input({3, 4, 5}, 42, true);  // distinct values almost surely: the order is locally fixed
  check_gradients([](const Inputs& in) { return hg::sort(in[0]).values; }, {x});
  check_gradients([](const Inputs& in) { return hg::sort(in[0], 0, true).values; }, {x});
  check_gradients([](const Inputs& in) { return hg::topk(in[0], 2, -2).values; }, {x});
  check_gradients([](const Inputs& in) { return hg::topk(in[0], 3, -1, false, false).values; }, {x});
  // the gradient lands where each value came from, and nowhere else
  auto v = hg::tensor<double>({0.5, 2.0, -1.0, 3.0});
  v.requires_grad_();
  hg::sum(hg::topk(v, 2).values * hg::tensor<double>({10.0, 1.0})).backward();
  check_close(v.grad(), {0, 1, 0, 10});
}

TEST_CASE("sort and topk of empty lanes and 0-d tensors") {
  CHECK(hg::sort(hg::zeros<float>({3, 0})).values.shape() == hg::Shape{3, 0});
  CHECK(hg::topk(hg::zeros<float>({0, 4}), 2).indices.shape() == hg::Shape{0, 2});
  auto scalar = hg::sort(hg::scalar_tensor<double>(2.5));
  CHECK(scalar.values.shape() == hg::Shape{});
  CHECK(scalar.values.item() == 2.5);
  CHECK(scalar.indices.item() == 0);
}
