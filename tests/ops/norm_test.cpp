#include "test_util.hpp"

using Inputs = std::vector<hg::Tensor<double>>;

namespace {

// Two-pass layer norm per row in long double: mean, then the biased variance of x - mean.
template <class T>
std::vector<double> naive_layer_norm(const hg::Tensor<T>& x, const std::vector<double>& w, const std::vector<double>& b,
                                     double eps) {
  std::vector<T> v = x.to_vector();
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  std::vector<double> out(v.size());
  for (int64_t r = 0; r < rows; ++r) {
    long double mean = 0, var = 0;
    for (int64_t k = 0; k < cols; ++k) mean += v[r * cols + k];
    mean /= cols;
    for (int64_t k = 0; k < cols; ++k) var += (v[r * cols + k] - mean) * (v[r * cols + k] - mean);
    var /= cols;
    for (int64_t k = 0; k < cols; ++k) {
      long double xhat = (v[r * cols + k] - mean) / std::sqrt(var + eps);
      out[r * cols + k] = static_cast<double>(xhat * (w.empty() ? 1.0 : w[k]) + (b.empty() ? 0.0 : b[k]));
    }
  }
  return out;
}

template <class T>
std::vector<double> as_doubles(const hg::Tensor<T>& t) {
  std::vector<T> v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

}  // namespace

TEST_CASE("layer_norm: values from PyTorch") {
  // torch.nn.functional.layer_norm(x, (4,), w, b, 1e-5) in float32
  auto x = hg::tensor<float>({0.5f, -1.0f, 2.0f, 3.0f, 1.0f, 1.0f, 1.0f, 1.0f}, {2, 4});
  auto w = hg::tensor<float>({1.5f, -0.5f, 2.0f, 1.0f}), b = hg::tensor<float>({0.1f, 0.2f, -0.3f, 0.0f});
  check_close(hg::layer_norm(x, w, b, 1e-5),
              {-0.5185882449150085, 0.9010666608810425, 0.854698121547699, 1.237176537513733, 0.10000000149011612,
               0.20000000298023224, -0.30000001192092896, 0.0},
              2e-7);
}

TEST_CASE_TEMPLATE("layer_norm matches a two-pass reference, with and without affine", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-13;
  auto x = random_input({3, 5, 7}, 1, true).to<T>();
  auto w = random_input({7}, 2).to<T>(), b = random_input({7}, 3).to<T>();
  check_close(hg::layer_norm(x, w, b, 1e-5), naive_layer_norm(x, as_doubles(w), as_doubles(b), 1e-5), tol);
  check_close(hg::layer_norm(x), naive_layer_norm(x, {}, {}, 1e-5), tol);
  check_close(hg::layer_norm(x, hg::Tensor<T>(), b, 1e-6), naive_layer_norm(x, {}, as_doubles(b), 1e-6), tol);
  // Rows far from zero with a small spread: E[x²] - mean² would cancel without the shift.
  auto offset = random_input({4, 384}, 4).to<T>() * T(0.01) + T(1000);
  check_close(hg::layer_norm(offset), naive_layer_norm(offset, {}, {}, 1e-5), std::is_same_v<T, float> ? 1e-6 : 1e-9);
}

TEST_CASE("gradcheck: layer_norm on x, weight and bias") {
  auto x = random_input({2, 3, 6}, 10, true), w = random_input({6}, 11), b = random_input({6}, 12);
  check_gradients([](const Inputs& in) { return hg::layer_norm(in[0], in[1], in[2], 1e-5); }, {x, w, b});
  check_gradients([](const Inputs& in) { return hg::layer_norm(in[0]); }, {x});
  check_gradients([](const Inputs& in) { return hg::layer_norm(in[0], hg::Tensor<double>(), in[1]); }, {x, b});
  // more rows than one chunk of the weight-gradient sum
  check_gradients([](const Inputs& in) { return hg::layer_norm(in[0], in[1], in[2]); },
                  {random_input({70, 3}, 13), random_input({3}, 14), random_input({3}, 15)});
}

TEST_CASE("layer_norm gradients of weight and bias are the sums over all rows") {
  auto x = random_input({40, 5}, 20), w = random_input({5}, 21).requires_grad_(), b = random_input({5}, 22).requires_grad_();
  hg::sum(hg::layer_norm(x, w, b)).backward();
  check_close(b.grad(), {40, 40, 40, 40, 40}, 1e-12);
  hg::Tensor<double> xhat = hg::layer_norm(x);
  check_close(w.grad(), hg::sum(xhat, {0}), 1e-12);
}

TEST_CASE("normalize: values from PyTorch and the eps clamp") {
  auto x = hg::tensor<double>({3, 4, 0, 0, 1, -2}, {3, 2});
  // torch.nn.functional.normalize(x, dim=1) and normalize(x, p=1, dim=0)
  check_close(hg::normalize(x), {0.6, 0.8, 0.0, 0.0, 0.4472135954999579, -0.8944271909999159}, 1e-15);
  check_close(hg::normalize(x, 1.0, 0), {0.75, 0.6666666666666666, 0.0, 0.0, 0.25, -0.3333333333333333}, 1e-15);
  auto small = hg::tensor<float>({0.3f, 0.4f});
  check_close(hg::normalize(small, 2.0, 0, 1.0), {0.3, 0.4}, 1e-7);  // ||x|| = 0.5 < eps = 1: divided by eps
  auto p3 = hg::normalize(hg::tensor<float>({1, 2, 2}), 3.0, 0);
  const double n3 = std::cbrt(17.0);
  check_close(p3, {1 / n3, 2 / n3, 2 / n3}, 1e-6);
}

TEST_CASE("gradcheck: normalize for p = 1, 2, 3 along any dim") {
  auto x = random_input({3, 4, 5}, 30, true);
  for (double p : {1.0, 2.0, 3.0})
    for (int64_t dim : {0, 1, -1}) {
      INFO("p " << p << " dim " << dim);
      check_gradients([p, dim](const Inputs& in) { return hg::normalize(in[0], p, dim); }, {x});
    }
  // rows whose norm is under eps take the clamped branch (dx = g / eps)
  auto rows = hg::tensor<double>({0.1, -0.2, 2.0, 1.0}, {2, 2});
  check_gradients([](const Inputs& in) { return hg::normalize(in[0], 2.0, -1, 0.5); }, {rows});
}

TEST_CASE("weight_norm: values and gradients from PyTorch, gradcheck, and what it refuses") {
  auto v = hg::tensor<double>({3, 4, 0, 1, -2, 2, 0.5, 0.25, -1}, {3, 3}).requires_grad_();
  auto g = hg::tensor<double>({2, -1, 0.5}, {3, 1}).requires_grad_();
  auto w = hg::weight_norm(v, g);
  // torch._weight_norm(v, g, 0), then (w * up).sum().backward()
  check_close(w, {1.2, 1.6, 0.0, -1.0 / 3, 2.0 / 3, -2.0 / 3, 0.2182178902359924, 0.1091089451179962, -0.4364357804719848},
              1e-15);
  hg::sum(w * hg::tensor<double>({1, -1, 0.5, 0.25, 2, -1, 3, 0, 1}, {3, 3})).backward();
  check_close(v.grad(), {0.448, -0.336, 0.2, -0.2962962962962963, -0.24074074074074076, -0.09259259259259256,
                         1.2261767165641477, -0.04156531242590331, 0.6026970301755981}, 1e-14);
  check_close(g.grad(), {-0.2, -1.9166666666666667, 0.4364357804719848}, 1e-14);
  // the composed formula it replaces, and autograd's gradients of both, on a transposed (strided) v
  auto vs = random_input({6, 5}, 41, true), gs = random_input({5, 1}, 42);
  check_gradients([](const Inputs& in) { return hg::weight_norm(in[0].transpose(0, 1), in[1]); }, {vs, gs});
  check_gradients([](const Inputs& in) { return hg::weight_norm(in[0], in[1]).narrow(1, 1, 3); },
                  {random_input({4, 7}, 43), random_input({4, 1}, 44)});
  auto vt = vs.transpose(0, 1);
  check_close(hg::weight_norm(vt, gs), vt * (gs / hg::sqrt(hg::sum(vt * vt, {1}, true))), 1e-14);
  // g frozen (the DINO head's norm_last_layer): only v gets a gradient
  auto v2 = random_input({3, 4}, 45).requires_grad_();
  hg::sum(hg::weight_norm(v2, hg::ones<double>({3, 1}))).backward();
  CHECK(v2.grad().defined());
  CHECK_THROWS_WITH_AS(hg::weight_norm(v2, hg::ones<double>({4, 1})), doctest::Contains("weight_norm: expected g of shape [3, 1]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::weight_norm(hg::ones<double>({3}), hg::ones<double>({3, 1})),
                       doctest::Contains("weight_norm: expected v of shape [rows, cols]"), hg::Error);
}

TEST_CASE("float gradients of layer_norm and normalize agree with double") {
  auto x = random_input({4, 6}, 40, true), w = random_input({6}, 41), b = random_input({6}, 42);
  auto grads = [](auto x_in, auto w_in, auto b_in) {
    for (auto* t : {&x_in, &w_in, &b_in}) t->requires_grad_();
    using T = typename decltype(x_in)::value_type;
    auto weights = hg::arange<T>(24).reshape({4, 6});
    hg::sum((hg::layer_norm(x_in, w_in, b_in) + hg::normalize(x_in, 2.0, 0)) * weights).backward();
    return std::vector{x_in.grad(), w_in.grad(), b_in.grad()};
  };
  auto g64 = grads(x.detach(), w.detach(), b.detach());
  auto g32 = grads(x.detach().to<float>(), w.detach().to<float>(), b.detach().to<float>());
  for (size_t i = 0; i < g64.size(); ++i) check_close(g32[i], g64[i].to_vector(), 1e-5);
}

TEST_CASE("norm errors name the op") {
  auto x = hg::zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(hg::layer_norm(x, hg::zeros<float>({2})),
                       doctest::Contains("layer_norm: expected weight of shape [3] (the input's last dim), got [2]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::layer_norm(x, hg::Tensor<float>(), hg::zeros<float>({3, 1})),
                       doctest::Contains("layer_norm: expected bias of shape [3] (the input's last dim), got [3, 1]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::layer_norm(hg::zeros<float>({})), doctest::Contains("layer_norm: expected an input with at least 1 dim"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::normalize(x, 0.0), doctest::Contains("normalize: expected a finite p > 0, got 0"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::normalize(x, 2.0, 2), doctest::Contains("normalize: dim 2 out of range"), hg::Error);
}
