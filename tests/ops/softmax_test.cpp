#include "test_util.hpp"

#include <limits>

using Inputs = std::vector<hg::Tensor<double>>;

namespace {

// Reference softmax / log_softmax along `dim`, one strided line at a time, in long double.
template <class T>
std::vector<double> naive_softmax(const hg::Tensor<T>& x, int64_t dim, bool log) {
  const hg::Shape& shape = x.shape();
  std::vector<T> v = x.to_vector();
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(dim) + 1; d < shape.size(); ++d) inner *= shape[d];
  const int64_t n = shape[dim], outer = x.numel() / (n * inner);
  std::vector<double> out(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) { return static_cast<size_t>((o * n + k) * inner + i); };
      long double m = -INFINITY, s = 0;
      for (int64_t k = 0; k < n; ++k) m = std::max<long double>(m, v[at(k)]);
      for (int64_t k = 0; k < n; ++k) s += std::exp(static_cast<long double>(v[at(k)]) - m);
      for (int64_t k = 0; k < n; ++k) {
        long double z = static_cast<long double>(v[at(k)]) - m;
        out[at(k)] = static_cast<double>(log ? z - std::log(s) : std::exp(z) / s);
      }
    }
  return out;
}


}  // namespace

TEST_CASE("softmax: values from PyTorch and overflow-free large inputs") {
  // torch.softmax(torch.tensor([1., 2., 3.], dtype=torch.float64), 0)
  check_close(hg::softmax(hg::tensor<double>({1, 2, 3}), 0), {0.09003057317038045, 0.2447284710547976, 0.6652409557748218},
              1e-15);
  // torch.log_softmax(torch.tensor([1., 2., 3.], dtype=torch.float64), 0)
  check_close(hg::log_softmax(hg::tensor<double>({1, 2, 3}), -1),
              {-2.4076059644443806, -1.4076059644443804, -0.4076059644443804}, 1e-15);
  // exp(1000) overflows a float; the max shift avoids it. torch.softmax(torch.tensor([1000., 1001.]), 0)
  check_close(hg::softmax(hg::tensor<float>({1000, 1001}), 0), {0.2689414322376251, 0.7310585975646973}, 1e-7);
  check_close(hg::log_softmax(hg::tensor<float>({-1000, 0}, {1, 2}), 1), {-1000, 0}, 1e-6);
  auto with_inf = hg::softmax(hg::tensor<double>({0, -INFINITY, 0}), 0);
  check_close(with_inf, {0.5, 0, 0.5}, 1e-15);
}

TEST_CASE_TEMPLATE("softmax and log_softmax match a naive loop along every dim", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  for (bool transposed : {false, true}) {
    auto x = random_t<T>({3, 4, 5}, 1, transposed);
    for (int64_t dim : {0, 1, 2, -1, -2, -3}) {
      const int64_t d = dim < 0 ? dim + 3 : dim;
      INFO("dim " << dim << " transposed " << transposed);
      check_close(hg::softmax(x, dim), naive_softmax(x, d, false), tol);
      check_close(hg::log_softmax(x, dim), naive_softmax(x, d, true), tol);
    }
  }
  // more inner columns than one block, and a long last dim
  auto wide = random_t<T>({2, 3, 300}, 2) * T(4);
  check_close(hg::softmax(wide, 1), naive_softmax(wide, 1, false), tol);
  check_close(hg::log_softmax(wide, 0), naive_softmax(wide, 0, true), tol);
  check_close(hg::softmax(wide, -1), naive_softmax(wide, 2, false), tol);
  check_close(hg::log_softmax(wide, -1), naive_softmax(wide, 2, true), tol);
  // a NaN poisons its own row (or column) only, as in PyTorch
  auto with_nan = hg::tensor<T>({1, NAN, 2, 3, 4, 5}, {2, 3});
  auto rows = hg::softmax(with_nan, 1).to_vector(), cols = hg::log_softmax(with_nan, 0).to_vector();
  for (int i = 0; i < 3; ++i) CHECK(std::isnan(rows[i]));
  for (int i = 3; i < 6; ++i) CHECK_FALSE(std::isnan(rows[i]));
  CHECK(std::isnan(cols[1]));
  CHECK(std::isnan(cols[4]));
  CHECK_FALSE(std::isnan(cols[0]));
  auto scalar = hg::softmax(hg::scalar_tensor<T>(T(3)), 0);
  CHECK(scalar.shape() == hg::Shape{});
  check_close(scalar, {1.0});
}

TEST_CASE("gradcheck: softmax and log_softmax, all dims, non-contiguous") {
  auto x = random_input({3, 4, 5}, 10, true);
  for (int64_t dim : {0, 1, -1}) {
    INFO("dim " << dim);
    check_gradients([dim](const Inputs& in) { return hg::softmax(in[0], dim); }, {x});
    check_gradients([dim](const Inputs& in) { return hg::log_softmax(in[0], dim); }, {x});
  }
  auto y = random_input({2, 6}, 11);
  check_gradients([](const Inputs& in) { return hg::softmax(in[0] * 3.0, -1) * hg::log_softmax(in[0], 0); }, {y});
}

TEST_CASE("float gradients of softmax and log_softmax agree with double") {
  auto x = random_input({3, 4, 5}, 20, true);
  for (int64_t dim : {-1, 1}) {
    auto grads = [dim](auto in) {
      in.requires_grad_();
      auto weights = hg::arange<typename decltype(in)::value_type>(60).reshape({3, 4, 5});
      hg::sum((hg::softmax(in, dim) + hg::log_softmax(in, dim)) * weights).backward();
      return in.grad();
    };
    check_close(grads(x.detach().to<float>()), grads(x.detach()).to_vector(), 1e-5);
  }
}

TEST_CASE("softmax errors name the op") {
  auto x = hg::zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(hg::softmax(x, 2), doctest::Contains("softmax: dim 2 out of range"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::log_softmax(x, -3), doctest::Contains("log_softmax: dim -3 out of range"), hg::Error);
}

TEST_CASE("masked (-inf) logits get a probability of exactly 0 on every path") {
  const float inf = std::numeric_limits<float>::infinity();
  auto x = hg::tensor<float>({0, -inf, 1, -inf, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14});
  for (const auto& y : {hg::softmax(x, -1), hg::softmax(x.reshape({17, 1}), 0).reshape({17})}) {
    CHECK(y.at({1}) == 0.0f);
    CHECK(y.at({3}) == 0.0f);
    CHECK(y.at({16}) > 0.5f);
  }
  CHECK(hg::log_softmax(x, -1).at({1}) == -inf);
}
