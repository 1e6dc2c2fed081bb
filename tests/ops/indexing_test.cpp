#include "test_util.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

using Inputs = std::vector<hg::Tensor<double>>;

namespace {
hg::Tensor<int64_t> ids(std::initializer_list<int64_t> values, hg::Shape shape = {}) {
  return hg::tensor<int64_t>(values, std::move(shape));
}

// Reads element `index` (row-major multi-index) of any strided tensor.
template <class T> T element(const hg::Tensor<T>& t, const hg::Shape& index) {
  int64_t offset = t.storage_offset();
  for (size_t d = 0; d < index.size(); ++d) offset += index[d] * t.strides()[d];
  return t.storage()->data()[offset];
}

// Every multi-index of `shape`, in row-major order.
std::vector<hg::Shape> all_indices(const hg::Shape& shape) {
  std::vector<hg::Shape> out{hg::Shape{}};
  for (int64_t size : shape) {
    std::vector<hg::Shape> next;
    for (const auto& prefix : out)
      for (int64_t i = 0; i < size; ++i) {
        next.push_back(prefix);
        next.back().push_back(i);
      }
    out = std::move(next);
  }
  return out;
}
}  // namespace

TEST_CASE_TEMPLATE("cat and stack match hand-computed values", T, float, double) {
  auto a = hg::tensor<T>({1, 2, 3, 4, 5, 6}, {2, 3}), b = hg::tensor<T>({7, 8}, {2, 1});
  auto along_last = hg::cat<T>({a, b}, -1);
  CHECK(along_last.shape() == hg::Shape{2, 4});
  check_close(along_last, {1, 2, 3, 7, 4, 5, 6, 8});
  auto along_first = hg::cat<T>({a, a.slice(0, 1, 2)}, 0);
  check_close(along_first, {1, 2, 3, 4, 5, 6, 4, 5, 6});
  // a non-contiguous input (a transposed view) is read through its strides
  check_close(hg::cat<T>({a.transpose(0, 1), hg::tensor<T>({9, 10}, {1, 2})}, 0), {1, 4, 2, 5, 3, 6, 9, 10});
  check_close(hg::cat<T>({a, hg::zeros<T>({0, 3})}, 0), a);

  auto stacked = hg::stack<T>({a, a * T(10)}, -1);
  CHECK(stacked.shape() == hg::Shape{2, 3, 2});
  check_close(stacked, {1, 10, 2, 20, 3, 30, 4, 40, 5, 50, 6, 60});
  CHECK(hg::stack<T>({a, a}, 0).shape() == hg::Shape{2, 2, 3});
}

TEST_CASE("cat and stack errors name the op") {
  auto a = hg::zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(hg::cat<float>({}, 0), doctest::Contains("cat: expected a non-empty list"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::cat<float>({a, hg::zeros<float>({3, 3})}, 1),
                       doctest::Contains("cat: sizes must match except in dim 1: tensor 0 has shape [2, 3], tensor 1 has shape [3, 3]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::cat<float>({a, hg::zeros<float>({6})}, 0), doctest::Contains("cat: sizes must match"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::cat<float>({a}, 2), doctest::Contains("cat: dim 2 out of range"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::cat<float>({hg::scalar_tensor<float>(1)}, 0), doctest::Contains("cat: zero-dimensional"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::stack<float>({a, hg::zeros<float>({2, 4})}, 0),
                       doctest::Contains("stack: expected every tensor to have shape [2, 3] like tensor 0, got [2, 4] for tensor 1"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::stack<float>({a}, 3), doctest::Contains("stack: dim 3 out of range"), hg::Error);
}

TEST_CASE_TEMPLATE("index_select, gather and scatter_add match naive loops", T, float, double) {
  auto x = hg::randn<T>({4, 5, 3}).transpose(0, 2);  // [3, 5, 4], non-contiguous
  // index_select along each dim, with repeats
  for (int64_t dim : {0, 1, -1}) {
    int64_t d = dim < 0 ? dim + 3 : dim;
    auto index = ids({2, 0, 2, 1});
    auto y = hg::index_select(x, dim, index);
    hg::Shape expect_shape = x.shape();
    expect_shape[d] = 4;
    REQUIRE(y.shape() == expect_shape);
    for (const auto& at : all_indices(y.shape())) {
      hg::Shape from = at;
      from[d] = index.data()[at[d]];
      CHECK(element(y, at) == element(x, from));
    }
  }
  auto single = hg::index_select(x, 1, hg::scalar_tensor<int64_t>(3));  // 0-d index keeps the dim, size 1
  CHECK(single.shape() == hg::Shape{3, 1, 4});
  check_close(single, x.slice(1, 3, 4).contiguous());

  // gather with an index smaller than x outside dim
  hg::Generator gen(3);
  for (int64_t dim : {0, 1, -1}) {
    int64_t d = dim < 0 ? dim + 3 : dim;
    hg::Shape index_shape{2, 4, 3};
    auto index = hg::randint<int64_t>(0, x.shape()[d], index_shape, gen);
    auto y = hg::gather(x, dim, index);
    REQUIRE(y.shape() == index_shape);
    for (const auto& at : all_indices(index_shape)) {
      hg::Shape from = at;
      from[d] = element(index, at);
      CHECK(element(y, at) == element(x, from));
    }
    // scatter_add: out = x; out[.. index ..] += src, src larger than index
    auto src = hg::randn<T>({3, 5, 4}, gen);
    auto out = hg::scatter_add(x, dim, index, src);
    hg::Tensor<T> expected = x.contiguous().clone();
    for (const auto& at : all_indices(index_shape)) {
      hg::Shape to = at;
      to[d] = element(index, at);
      expected.at({to[0], to[1], to[2]}) += element(src, at);
    }
    check_close(out, expected, 1e-6);
  }
}

TEST_CASE("scatter_add adds repeated indices and gives torch's documented example") {
  // torch.zeros(3, 5).scatter_add(0, [[0, 1, 2, 0, 0], [2, 0, 0, 1, 2]], ones(2, 5)), from torch's docs
  auto src = hg::ones<double>({2, 5});
  auto index = ids({0, 1, 2, 0, 0, 2, 0, 0, 1, 2}, {2, 5});
  auto y = hg::scatter_add(hg::zeros<double>({3, 5}), 0, index, src);
  check_close(y, {1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1});
  auto row = hg::scatter_add(hg::zeros<double>({1, 3}), 1, ids({2, 2, 0, 2}, {1, 4}), hg::tensor<double>({1, 2, 4, 8}, {1, 4}));
  check_close(row, {4, 0, 11});
}

TEST_CASE("scatter_add with colliding indices is deterministic across thread counts") {
#ifdef _OPENMP
  hg::Generator gen(5);
  auto x = hg::zeros<float>({64, 8, 512}), table = hg::randn<float>({64, 8, 512}, gen);
  auto index = hg::randint<int64_t>(0, 8, {64, 40, 512}, gen);
  auto src = hg::randn<float>({64, 40, 512}, gen);
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  auto serial = hg::scatter_add(x, 1, index, src).to_vector();
  auto gathered_serial = hg::gather(table, 1, index).to_vector();
  omp_set_num_threads(2);
  auto parallel = hg::scatter_add(x, 1, index, src).to_vector();
  auto gathered_parallel = hg::gather(table, 1, index).to_vector();
  omp_set_num_threads(saved);
  CHECK(serial == parallel);
  CHECK(gathered_serial == gathered_parallel);
#else
  MESSAGE("built without OpenMP: one thread only, nothing to compare");
#endif
}

TEST_CASE_TEMPLATE("embedding looks up rows and scatter-adds its gradient", T, float, double) {
  auto weight = hg::tensor<T>({0, 1, 10, 11, 20, 21, 30, 31}, {4, 2});
  weight.requires_grad_();
  auto tokens = ids({1, 3, 1, 0, 2, 1}, {2, 3});
  auto y = hg::embedding(tokens, weight, 1);  // row 1 is padding: looked up, but gets no gradient
  CHECK(y.shape() == hg::Shape{2, 3, 2});
  check_close(y, {10, 11, 30, 31, 10, 11, 0, 1, 20, 21, 10, 11});
  hg::sum(y * hg::tensor<T>({1, 2}, {2})).backward();
  check_close(weight.grad(), {1, 2, 0, 0, 1, 2, 1, 2});

  weight.zero_grad();
  hg::sum(hg::embedding(tokens, weight)).backward();  // no padding: id 1 appears three times
  check_close(weight.grad(), {1, 1, 3, 3, 1, 1, 1, 1});
  weight.zero_grad();
  hg::sum(hg::embedding(tokens, weight, -1)).backward();  // -1 means the last row, 3
  check_close(weight.grad(), {1, 1, 3, 3, 1, 1, 0, 0});
}

TEST_CASE("index errors name the op, the index and the size") {
  auto x = hg::zeros<float>({5, 3});
  CHECK_THROWS_WITH_AS(hg::index_select(x, 0, ids({1, 7})),
                       doctest::Contains("index_select: index 7 out of range for dim 0 of size 5"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::index_select(x, -1, ids({-1})),
                       doctest::Contains("index_select: index -1 out of range for dim 1 of size 3"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::index_select(x, 0, ids({0, 1}, {1, 2})),
                       doctest::Contains("index_select: expected a 0-d or 1-D index, got shape [1, 2]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::index_select(x, 2, ids({0})), doctest::Contains("index_select: dim 2 out of range"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::gather(x, 1, ids({0, 3}, {1, 2})),
                       doctest::Contains("gather: index 3 out of range for dim 1 of size 3"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::gather(x, 1, ids({0, 1})), doctest::Contains("gather: expected index with as many dims"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::gather(x, 1, hg::zeros<int64_t>({6, 1})),
                       doctest::Contains("gather: index of shape [6, 1] is larger than the input of shape [5, 3] in dim 0"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::scatter_add(x, 0, hg::zeros<int64_t>({2, 3}), hg::zeros<float>({1, 3})),
                       doctest::Contains("scatter_add: index of shape [2, 3] is larger than src of shape [1, 3] in dim 0"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::scatter_add(x, 0, ids({9}, {1, 1}), hg::zeros<float>({1, 1})),
                       doctest::Contains("scatter_add: index 9 out of range for dim 0 of size 5"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::embedding(ids({0, 5}), x),
                       doctest::Contains("embedding: index 5 out of range for 5 embeddings (weight of shape [5, 3])"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::embedding(ids({0}), x, 5), doctest::Contains("embedding: padding_idx 5 out of range for 5 embeddings"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::embedding(ids({0}), hg::zeros<float>({5})),
                       doctest::Contains("embedding: expected a weight of shape [num_embeddings, dim], got [5]"), hg::Error);
}

TEST_CASE("gradcheck: cat and stack") {
  auto a = random_input({3, 4}, 1, true), b = random_input({3, 2}, 2), c = random_input({3, 1}, 3);
  check_gradients([](const Inputs& in) { return hg::cat<double>({in[0], in[1], in[2]}, -1); }, {a, b, c});
  check_gradients([](const Inputs& in) { return hg::cat<double>({in[0], in[0] * in[0]}, 0); }, {a});
  auto d = random_input({3, 4}, 4);
  check_gradients([](const Inputs& in) { return hg::stack<double>({in[0], in[1]}, -2); }, {a, d});
}

TEST_CASE("gradcheck: index_select, gather and scatter_add with repeated indices") {
  auto x = random_input({4, 5}, 5, true);
  check_gradients([](const Inputs& in) { return hg::index_select(in[0], 0, ids({3, 1, 3, 3})); }, {x});
  check_gradients([](const Inputs& in) { return hg::index_select(in[0], -1, ids({4, 0, 4})); }, {x});
  auto x3 = random_input({3, 4, 5}, 6, true);
  check_gradients([](const Inputs& in) { return hg::index_select(in[0], 1, ids({2, 2, 0})); }, {x3});

  hg::Generator gen(8);
  auto index0 = hg::randint<int64_t>(0, 4, {6, 5}, gen);  // 6 picks from 4 rows: repeats guaranteed
  auto index1 = hg::randint<int64_t>(0, 5, {3, 7}, gen);
  check_gradients([index0](const Inputs& in) { return hg::gather(in[0], 0, index0); }, {x});
  check_gradients([index1](const Inputs& in) { return hg::gather(in[0], -1, index1); }, {x});
  auto index3 = hg::randint<int64_t>(0, 4, {2, 6, 3}, gen);
  check_gradients([index3](const Inputs& in) { return hg::gather(in[0], 1, index3); }, {x3});

  auto src = random_input({7, 5}, 9, true);  // larger than index0 in dim 0: its last row is unused
  check_gradients([index0](const Inputs& in) { return hg::scatter_add(in[0], 0, index0, in[1]); }, {x, src});
  auto src1 = random_input({4, 7}, 10);
  check_gradients([index1](const Inputs& in) { return hg::scatter_add(in[0], -1, index1, in[1]); }, {x, src1});
}

TEST_CASE("gradcheck: embedding with repeated ids and padding") {
  auto weight = random_input({6, 4}, 11, true);
  auto tokens = ids({0, 5, 5, 2, 0, 5, 3, 2}, {2, 4});
  check_gradients([tokens](const Inputs& in) { return hg::embedding(tokens, in[0]); }, {weight});
  // the padding row's numeric gradient is not zero, so check it by hand instead
  weight.zero_grad();
  auto y = hg::embedding(tokens, weight, 5);
  hg::sum(y * y).backward();
  auto g = weight.grad(), w = weight.detach().contiguous();
  for (int64_t c = 0; c < 4; ++c) {
    CHECK(g.at({5, c}) == 0.0);
    CHECK(g.at({0, c}) == doctest::Approx(4 * w.at({0, c})));
    CHECK(g.at({2, c}) == doctest::Approx(4 * w.at({2, c})));
    CHECK(g.at({3, c}) == doctest::Approx(2 * w.at({3, c})));
    CHECK(g.at({1, c}) == 0.0);
  }
}

TEST_CASE("index ops accept empty tensors and empty indices") {
  auto x = hg::randn<double>({4, 3});
  x.requires_grad_();
  auto none = hg::index_select(x, 0, hg::zeros<int64_t>({0}));
  CHECK(none.shape() == hg::Shape{0, 3});
  hg::sum(none).backward();
  check_close(x.grad(), std::vector<double>(12, 0.0));
  CHECK(hg::gather(x, 1, hg::zeros<int64_t>({4, 0})).shape() == hg::Shape{4, 0});
  check_close(hg::scatter_add(x, 0, hg::zeros<int64_t>({0, 3}), hg::zeros<double>({0, 3})), x);
  CHECK(hg::embedding(hg::zeros<int64_t>({2, 0}), x).shape() == hg::Shape{2, 0, 3});
  CHECK(hg::cat<double>({hg::zeros<double>({0, 3}), hg::zeros<double>({0, 3})}, 0).shape() == hg::Shape{0, 3});
}
