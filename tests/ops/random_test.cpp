#include "test_util.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

using Inputs = std::vector<hg::Tensor<double>>;

TEST_CASE_TEMPLATE("dropout keeps 1-p of the elements, scaled by 1/(1-p), from the generator's stream", T, float, double) {
  const double p = 0.3;
  const int64_t n = 200000;
  auto x = hg::randn<T>({n / 400, 400});
  hg::Generator gen(77);
  auto y = hg::dropout(x, p, true, gen);
  // the mask is exactly rand() >= p on a generator with the same seed and offset
  hg::Generator same(77);
  auto u = hg::rand<double>(x.shape(), same);
  CHECK(gen.offset() == same.offset());
  const T scale = T(1.0 / (1.0 - p));
  auto xs = x.to_vector(), ys = y.to_vector();
  auto us = u.to_vector();
  int64_t kept = 0, mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool keep = us[static_cast<size_t>(i)] >= p;
    kept += keep;
    mismatches += ys[static_cast<size_t>(i)] != (keep ? xs[static_cast<size_t>(i)] * scale : T(0));
  }
  CHECK(mismatches == 0);
  // Binomial(n, 0.7): standard deviation ≈ 205, so 5 sigma is ≈ 0.005 of n
  CHECK(double(kept) / double(n) == doctest::Approx(1.0 - p).epsilon(0.008));

  // the same seed gives the same mask; the next draw gives a different one
  hg::Generator again(77);
  CHECK(hg::dropout(x, p, true, again).to_vector() == ys);
  CHECK(hg::dropout(x, p, true, again).to_vector() != ys);
}

TEST_CASE("dropout: identity when not training or p == 0, zeros when p == 1") {
  auto x = hg::randn<float>({3, 4});
  hg::Generator gen(1);
  CHECK(hg::dropout(x, 0.5, false, gen).is_same(x));
  CHECK(hg::dropout(x, 0.0, true, gen).is_same(x));
  CHECK(gen.offset() == 0);  // nothing drawn
  check_close(hg::dropout(x, 1.0, true, gen), std::vector<double>(12, 0.0));
  // a non-contiguous input is masked in its logical (row-major) order
  hg::Generator g1(9), g2(9);
  auto xt = x.transpose(0, 1);
  check_close(hg::dropout(xt, 0.4, true, g1), hg::dropout(xt.contiguous(), 0.4, true, g2), 0.0);
}

TEST_CASE("dropout and drop_path masks do not depend on the thread count") {
#ifdef _OPENMP
  auto x = hg::randn<float>({64, 1024});
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  hg::Generator g1(5);
  auto serial = hg::dropout(x, 0.25, true, g1).to_vector();
  omp_set_num_threads(2);
  hg::Generator g2(5);
  auto parallel = hg::dropout(x, 0.25, true, g2).to_vector();
  omp_set_num_threads(saved);
  CHECK(serial == parallel);
#else
  MESSAGE("built without OpenMP: one thread only, nothing to compare");
#endif
}

TEST_CASE("dropout's gradient is the mask times 1/(1-p)") {
  const double p = 0.6;
  auto x = hg::ones<double>({50, 40});
  x.requires_grad_();
  hg::Generator gen(3);
  auto y = hg::dropout(x, p, true, gen);  // with x = 1, y is exactly mask / (1 - p)
  auto w = hg::randn<double>({50, 40});
  hg::sum(y * w).backward();
  auto g = x.grad().to_vector(), ys = y.to_vector(), ws = w.to_vector();
  int64_t zeros = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    CHECK((ys[i] == 0.0 || ys[i] == 1.0 / (1.0 - p)));
    CHECK(g[i] == ys[i] * ws[i]);
    zeros += ys[i] == 0.0;
  }
  CHECK(zeros > 0);
  CHECK(zeros < 2000);
  // gradcheck: a fresh generator per evaluation replays the same mask
  auto v = random_input({6, 7}, 4, true);
  check_gradients([](const Inputs& in) {
    hg::Generator replay(11);
    return hg::dropout(in[0], 0.5, true, replay);
  }, {v});
}

TEST_CASE_TEMPLATE("drop_path drops whole samples, scaled by 1/(1-p)", T, float, double) {
  const double p = 0.25;
  auto x = hg::randn<T>({4000, 3, 2});
  hg::Generator gen(8);
  auto y = hg::drop_path(x, p, true, gen);
  hg::Generator same(8);
  auto u = hg::rand<double>({4000}, same);  // one draw per sample, from the same stream
  const T scale = T(1.0 / (1.0 - p));
  int64_t kept = 0, mismatches = 0;
  for (int64_t b = 0; b < 4000; ++b) {
    bool keep = u.data()[b] >= p;
    kept += keep;
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 2; ++j) mismatches += y.at({b, i, j}) != (keep ? x.at({b, i, j}) * scale : T(0));
  }
  CHECK(mismatches == 0);
  CHECK(double(kept) / 4000.0 == doctest::Approx(1.0 - p).epsilon(0.05));  // ≈ 7 sigma
  CHECK(hg::drop_path(x, p, false, gen).is_same(x));
  CHECK(hg::drop_path(x, 0.0, true, gen).is_same(x));
  check_close(hg::drop_path(x.slice(0, 0, 5), 1.0, true, gen), std::vector<double>(30, 0.0));
}

TEST_CASE("drop_path's gradient is the per-sample mask times 1/(1-p)") {
  auto x = random_input({8, 3, 4}, 12, true);
  check_gradients([](const Inputs& in) {
    hg::Generator replay(13);
    return hg::drop_path(in[0], 0.5, true, replay);
  }, {x});
  hg::Generator gen(13);
  auto y = hg::drop_path(x, 0.5, true, gen);
  x.zero_grad();
  hg::sum(y).backward();
  for (int64_t b = 0; b < 8; ++b) {
    double expected = y.at({b, 0, 0}) == 0.0 ? 0.0 : 2.0;
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 4; ++j) CHECK(x.grad().at({b, i, j}) == expected);
  }
}

TEST_CASE("dropout and drop_path errors name the op") {
  auto x = hg::zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(hg::dropout(x, 1.5), doctest::Contains("dropout: expected a drop probability p in [0, 1], got 1.5"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::dropout(x, -0.1), doctest::Contains("dropout: expected a drop probability"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::drop_path(x, 2.0), doctest::Contains("drop_path: expected a drop probability p in [0, 1], got 2"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::drop_path(hg::scalar_tensor<float>(1), 0.5), doctest::Contains("drop_path: expected a batch dim"),
                       hg::Error);
}
