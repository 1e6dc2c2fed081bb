#include "test_util.hpp"

using Inputs = std::vector<hg::Tensor<double>>;

namespace {

// Plain triple loop over broadcast batch dims: a [..., M, K] @ b [..., K, N], both at least 2-D.
// Operands are expanded (views) and read element by element, independent of the GEMM path.
template <class T>
std::vector<double> naive_matmul(const hg::Tensor<T>& a, const hg::Tensor<T>& b, hg::Shape& out_shape) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  hg::Shape batch = hg::broadcast_shapes(hg::Shape(a.shape().begin(), a.shape().end() - 2),
                                         hg::Shape(b.shape().begin(), b.shape().end() - 2), "test");
  hg::Shape a_shape = batch, b_shape = batch;
  a_shape.insert(a_shape.end(), {M, K});
  b_shape.insert(b_shape.end(), {K, N});
  std::vector<T> av = a.detach().expand(a_shape).to_vector(), bv = b.detach().expand(b_shape).to_vector();
  const int64_t count = hg::numel_of(batch);
  std::vector<double> out(static_cast<size_t>(count * M * N), 0.0);
  for (int64_t i = 0; i < count; ++i)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += double(av[i * M * K + m * K + k]) * double(bv[i * K * N + k * N + n]);
        out[i * M * N + m * N + n] = acc;
      }
  out_shape = batch;
  out_shape.insert(out_shape.end(), {M, N});
  return out;
}


template <class T>
void check_product(const hg::Tensor<T>& a, const hg::Tensor<T>& b, double tol) {
  hg::Shape shape;
  std::vector<double> expected = naive_matmul(a, b, shape);
  hg::Tensor<T> y = hg::matmul(a, b);
  CHECK(y.shape() == shape);
  check_close(y, expected, tol);
}

}  // namespace

TEST_CASE("matmul: hand-computed 2-D product and dot product") {
  auto a = hg::tensor<double>({1, 2, 3, 4}, {2, 2}), b = hg::tensor<double>({5, 6, 7, 8}, {2, 2});
  check_close(hg::matmul(a, b), {19, 22, 43, 50});
  check_close(hg::matmul(a.mT(), b), {26, 30, 38, 44});
  check_close(hg::matmul(a, b.mT()), {17, 23, 39, 53});
  auto dot = hg::matmul(hg::tensor<double>({1, 2, 3}), hg::tensor<double>({4, 5, 6}));
  CHECK(dot.shape() == hg::Shape{});
  check_close(dot, {32});
}

TEST_CASE_TEMPLATE("matmul matches a naive loop on every layout and broadcast", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  check_product(random_t<T>({3, 4}, 1), random_t<T>({4, 5}, 2), tol);
  check_product(random_t<T>({64, 80}, 3, true), random_t<T>({80, 96}, 4), tol);   // column-major A
  check_product(random_t<T>({64, 80}, 5), random_t<T>({80, 96}, 6, true), tol);   // column-major B
  check_product(random_t<T>({33, 17}, 7, true), random_t<T>({17, 29}, 8, true), tol);
  // rows with a leading dimension (a slice of columns) and an expanded operand (stride 0: copied)
  check_product(random_t<T>({20, 40}, 9).slice(1, 5, 30), random_t<T>({25, 7}, 10), tol);
  check_product(random_t<T>({20, 40}, 9).slice(1, 5, 30).mT(), random_t<T>({30, 50}, 10).slice(1, 3, 23).mT(), tol);
  check_product(random_t<T>({1, 6}, 11).expand({4, 6}), random_t<T>({6, 3}, 12).slice(0, 0, 6, 1), tol);
  // batched, with and without broadcasting of batch dims
  check_product(random_t<T>({8, 20, 30}, 13), random_t<T>({8, 30, 10}, 14, true), tol);
  check_product(random_t<T>({2, 1, 5, 6}, 15), random_t<T>({3, 6, 4}, 16), tol);
  check_product(random_t<T>({5, 6}, 17), random_t<T>({2, 3, 6, 4}, 18, true), tol);
  // one right matrix: the batch folds into rows (contiguous A) or stays batched (transposed A)
  check_product(random_t<T>({4, 50, 70}, 19), random_t<T>({70, 40}, 20), tol);
  check_product(random_t<T>({4, 50, 70}, 21, true), random_t<T>({70, 40}, 22, true), tol);
  check_product(random_t<T>({3, 50, 70}, 23), random_t<T>({1, 70, 40}, 24), tol);
  // empty inner dim gives zeros; empty batch gives an empty result
  check_product(random_t<T>({3, 0}, 25), random_t<T>({0, 4}, 26), tol);
  CHECK(hg::matmul(random_t<T>({0, 3, 4}, 27), random_t<T>({4, 2}, 28)).shape() == hg::Shape{0, 3, 2});
}

TEST_CASE_TEMPLATE("matmul promotes and drops 1-D operands as torch.matmul", T, float, double) {
  auto v = random_t<T>({4}, 30), m = random_t<T>({4, 5}, 31), batch = random_t<T>({2, 3, 4}, 32);
  auto vm = hg::matmul(v, m);
  CHECK(vm.shape() == hg::Shape{5});
  check_close(vm, hg::matmul(v.reshape({1, 4}), m).reshape({5}), 1e-6);
  auto bv = hg::matmul(batch, v);
  CHECK(bv.shape() == hg::Shape{2, 3});
  check_close(bv, hg::matmul(batch, v.reshape({4, 1})).reshape({2, 3}), 1e-6);
  auto vb = hg::matmul(v, random_t<T>({2, 4, 3}, 33));
  CHECK(vb.shape() == hg::Shape{2, 3});
  CHECK(hg::matmul(m.mT(), v).shape() == hg::Shape{5});
}

TEST_CASE("gradcheck: matmul on all shape classes") {
  auto f = [](const Inputs& in) { return hg::matmul(in[0], in[1]); };
  check_gradients(f, {random_input({3, 4}, 40), random_input({4, 5}, 41)});
  check_gradients(f, {random_input({3, 4}, 42, true), random_input({4, 5}, 43, true)});
  check_gradients(f, {random_input({2, 1, 3, 4}, 44), random_input({3, 4, 2}, 45, true)});  // both broadcast
  check_gradients(f, {random_input({2, 3, 4}, 46), random_input({4, 5}, 47)});              // one right matrix
  check_gradients(f, {random_input({2, 3, 4}, 48, true), random_input({1, 4, 5}, 49)});
  check_gradients(f, {random_input({3, 4}, 50), random_input({2, 4, 5}, 51)});              // left broadcast
  check_gradients(f, {random_input({4}, 52), random_input({4}, 53)});
  check_gradients(f, {random_input({4}, 54), random_input({2, 4, 3}, 55)});
  check_gradients(f, {random_input({2, 3, 4}, 56, true), random_input({4}, 57)});
  check_gradients(f, {random_input({4}, 58), random_input({4, 3}, 59, true)});
  // the same tensor on both sides (x^T x) accumulates both contributions
  check_gradients([](const Inputs& in) { return hg::matmul(in[0].mT(), in[0]); }, {random_input({5, 3}, 60)});
}

TEST_CASE("gradcheck: bmm") {
  check_gradients([](const Inputs& in) { return hg::bmm(in[0], in[1]); },
                  {random_input({3, 2, 4}, 61, true), random_input({3, 4, 5}, 62)});
  auto y = hg::bmm(random_input({2, 3, 4}, 63).requires_grad_(), random_input({2, 4, 1}, 64));
  CHECK(y.grad_fn_name() == "BmmBackward");
  CHECK(y.shape() == hg::Shape{2, 3, 1});
}

TEST_CASE_TEMPLATE("linear matches x W^T + b computed by hand", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  auto weight = random_t<T>({5, 4}, 70), bias = random_t<T>({5}, 71);
  for (bool transposed : {false, true}) {
    auto x = random_t<T>({2, 3, 4}, 72, transposed);
    hg::Shape shape;
    std::vector<double> expected = naive_matmul(x, weight.mT(), shape);
    std::vector<T> b = bias.to_vector();
    check_close(hg::linear(x, weight), expected, tol);
    for (size_t i = 0; i < expected.size(); ++i) expected[i] += double(b[i % 5]);
    auto y = hg::linear(x, weight, bias);
    CHECK(y.shape() == hg::Shape{2, 3, 5});
    check_close(y, expected, tol);
  }
  auto v = random_t<T>({4}, 73);
  auto yv = hg::linear(v, weight, bias);
  CHECK(yv.shape() == hg::Shape{5});
  check_close(yv, hg::linear(v.reshape({1, 4}), weight, bias).reshape({5}), 1e-6);
  check_close(hg::linear(random_t<T>({6, 4}, 74, true), random_t<T>({4, 5}, 75, true).mT()),
              hg::matmul(random_t<T>({6, 4}, 74, true), random_t<T>({4, 5}, 75, true)), 1e-6);
  // a weight that is a column slice of a wider matrix: W^T is column-major with ld > in_features
  auto wide = random_t<T>({5, 9}, 76), x2 = random_t<T>({3, 4}, 77);
  check_close(hg::linear(x2, wide.slice(1, 2, 6)), hg::matmul(x2, wide.slice(1, 2, 6).contiguous().mT()), 1e-6);
}

TEST_CASE("gradcheck: linear with and without bias, non-contiguous input and weight") {
  auto with_bias = [](const Inputs& in) { return hg::linear(in[0], in[1], in[2]); };
  check_gradients(with_bias, {random_input({2, 3, 4}, 80), random_input({5, 4}, 81), random_input({5}, 82)});
  check_gradients(with_bias, {random_input({2, 4, 3}, 83).transpose(1, 2), random_input({5, 4}, 84, true),
                              random_input({5}, 85)});
  check_gradients(with_bias, {random_input({4}, 86), random_input({3, 4}, 87), random_input({3}, 88)});
  check_gradients([](const Inputs& in) { return hg::linear(in[0], in[1]); },
                  {random_input({6, 4}, 89, true), random_input({3, 4}, 90)});
  // bias gradient sums over every row (rows > one column block)
  check_gradients(with_bias, {random_input({70, 2}, 91), random_input({3, 2}, 92), random_input({3}, 93)});
}

TEST_CASE("matmul gives the same bits whatever the thread count") {
  // Eigen's own threading would block the depth differently per thread count; ours must not.
  auto a = random_t<float>({300, 700}, 98), b = random_t<float>({700, 500}, 99, true);
  auto batched_a = random_t<float>({6, 70, 300}, 100);
  std::vector<float> one_thread, one_thread_batched;
  const int saved = hg::cpu::max_threads();
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  one_thread = hg::matmul(a, b).to_vector();
  one_thread_batched = hg::matmul(batched_a, a).to_vector();
#ifdef _OPENMP
  omp_set_num_threads(std::max(saved, 2));
#endif
  CHECK(hg::matmul(a, b).to_vector() == one_thread);
  CHECK(hg::matmul(batched_a, a).to_vector() == one_thread_batched);
#ifdef _OPENMP
  omp_set_num_threads(saved);
#endif
}

TEST_CASE("linear gives only the gradients that are asked for") {
  auto x = random_input({3, 4}, 95), w = random_input({2, 4}, 96).requires_grad_(), b = random_input({2}, 97);
  hg::sum(hg::linear(x, w, b)).backward();
  CHECK(w.grad().defined());
  CHECK_FALSE(x.grad().defined());
  CHECK_FALSE(b.grad().defined());
  // dW = g^T x with g = 1: each row of dW is the column sums of x
  check_close(w.grad(), hg::sum(x, {0}, true).expand({2, 4}).contiguous(), 1e-12);
}

TEST_CASE("float gradients of matmul and linear agree with double") {
  auto a = random_input({2, 5, 6}, 110, true), b = random_input({6, 3}, 111), bias = random_input({3}, 112);
  auto grads = [](auto a_in, auto b_in, auto bias_in) {
    a_in.requires_grad_();
    b_in.requires_grad_();
    bias_in.requires_grad_();
    hg::sum(hg::square(hg::matmul(a_in, b_in)) + hg::linear(a_in, b_in.mT(), bias_in)).backward();
    return std::vector{a_in.grad(), b_in.grad(), bias_in.grad()};
  };
  auto g64 = grads(a.detach(), b.detach(), bias.detach());
  auto g32 = grads(a.detach().to<float>(), b.detach().to<float>(), bias.detach().to<float>());
  for (size_t i = 0; i < g64.size(); ++i) check_close(g32[i], g64[i].contiguous().to_vector(), 1e-5);
}

TEST_CASE("matmul errors name the op and both shapes") {
  auto a = hg::zeros<float>({2, 3}), b = hg::zeros<float>({4, 5});
  CHECK_THROWS_WITH_AS(hg::matmul(a, b), doctest::Contains("matmul: shapes [2, 3] and [4, 5] cannot be multiplied (3 != 4)"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::matmul(hg::zeros<float>({3}), hg::zeros<float>({4})),
                       doctest::Contains("matmul: shapes [3] and [4] cannot be multiplied (3 != 4)"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::matmul(hg::zeros<float>({}), b), doctest::Contains("matmul: both arguments need at least 1 dim"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::matmul(hg::zeros<float>({2, 2, 3}), hg::zeros<float>({3, 3, 4})),
                       doctest::Contains("matmul: batch dims of shapes [2, 2, 3] and [3, 3, 4] cannot be broadcast (2 vs 3)"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::bmm(a, b), doctest::Contains("bmm: expected 3-D tensors, got shapes [2, 3] and [4, 5]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::bmm(hg::zeros<float>({2, 3, 4}), hg::zeros<float>({3, 4, 5})),
                       doctest::Contains("bmm: batch sizes of shapes [2, 3, 4] and [3, 4, 5] differ (2 != 3)"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::bmm(hg::zeros<float>({2, 3, 4}), hg::zeros<float>({2, 5, 5})),
                       doctest::Contains("bmm: shapes [2, 3, 4] and [2, 5, 5] cannot be multiplied (4 != 5)"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::linear(hg::zeros<float>({2, 3}), hg::zeros<float>({4, 5})),
                       doctest::Contains("linear: input of shape [2, 3] does not end in in_features = 5"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::linear(hg::zeros<float>({2, 3}), hg::zeros<float>({3})),
                       doctest::Contains("linear: expected a 2-D weight [out_features, in_features], got shape [3]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::linear(hg::zeros<float>({2, 3}), hg::zeros<float>({4, 3}), hg::zeros<float>({3})),
                       doctest::Contains("linear: expected a bias of shape [4], got [3]"), hg::Error);
}
