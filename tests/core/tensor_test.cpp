#include "test_util.hpp"

TEST_CASE("factories give the requested shapes and values") {
  auto z = hg::zeros<float>({2, 3});
  CHECK(z.shape() == hg::Shape{2, 3});
  CHECK(z.strides() == hg::Shape{3, 1});
  check_close(z, std::vector<double>(6, 0.0));
  check_close(hg::arange<float>(0, 5, 2), {0, 2, 4});
  check_close(hg::full<double>({2}, 3.5), {3.5, 3.5});
  auto t = hg::tensor<float>({1, 2, 3, 4}, {2, 2});
  CHECK(t.at({1, 0}) == 3.0f);
  CHECK(t.at({-1, -1}) == 4.0f);
}

TEST_CASE("views share storage and follow PyTorch strides") {
  auto x = hg::arange<float>(0, 24).reshape({2, 3, 4});
  auto p = x.permute({2, 0, 1});
  CHECK(p.shape() == hg::Shape{4, 2, 3});
  CHECK(p.strides() == hg::Shape{1, 12, 4});
  CHECK(!p.is_contiguous());
  CHECK(p.storage() == x.storage());
  CHECK(p.at({3, 1, 2}) == x.at({1, 2, 3}));
  auto s = x.slice(-1, 1, 4, 2);  // columns 1 and 3
  check_close(s.select(0, 0), {1, 3, 5, 7, 9, 11});
  auto e = hg::tensor<float>({1, 2, 3}).unsqueeze(0).expand({2, 3});
  CHECK(e.strides() == hg::Shape{0, 1});
  check_close(e, {1, 2, 3, 1, 2, 3});
  auto c = p.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.storage() != x.storage());
  check_close(c.reshape({-1}).slice(0, 0, 4), {0, 4, 8, 12});
  CHECK(x.transpose(0, 1).view({3, 2, 4}).shape() == hg::Shape{3, 2, 4});  // viewable: dims 0,1 swapped only
  CHECK_THROWS_WITH_AS(p.view({24}), doctest::Contains("view: cannot view"), hg::Error);
  CHECK(p.reshape({24}).is_contiguous());
}

TEST_CASE("writes through a view reach the base tensor") {
  auto x = hg::zeros<double>({3, 3});
  x.slice(0, 1, 2).fill_(7.0);
  x.select(1, 2).copy_(hg::tensor<double>({1, 2, 3}));
  check_close(x, {0, 0, 1, 7, 7, 2, 0, 0, 3});
}

TEST_CASE("the same seed gives the same numbers on any thread count") {
  hg::Generator a(42), b(42);
  auto x = hg::randn<float>({1000, 37}, a);
  auto y = hg::randn<float>({1000, 37}, b);
  CHECK(x.to_vector() == y.to_vector());
  double mean = 0, m2 = 0;
  for (float v : x.to_vector()) { mean += v; m2 += double(v) * v; }
  mean /= x.numel();
  m2 /= x.numel();
  CHECK(std::abs(mean) < 0.02);
  CHECK(std::abs(m2 - 1.0) < 0.03);
  auto u = hg::rand<double>({10000}, a);
  for (double v : u.to_vector()) CHECK((v >= 0.0 && v < 1.0));
}

TEST_CASE("bad shapes and dims give clear errors") {
  auto x = hg::zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(x.reshape({4, 2}), doctest::Contains("reshape: shape [4, 2] is invalid for input of size 6"), hg::Error);
  CHECK_THROWS_WITH_AS(x.transpose(0, 2), doctest::Contains("dim 2 out of range"), hg::Error);
  CHECK_THROWS_WITH_AS(x + hg::zeros<float>({4}), doctest::Contains("add: shapes [2, 3] and [4] cannot be broadcast"), hg::Error);
  CHECK_THROWS_WITH_AS(x.expand({3, 3}), doctest::Contains("expand"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::Tensor<float>().shape(), doctest::Contains("undefined tensor"), hg::Error);
  CHECK_THROWS_WITH_AS(x.item(), doctest::Contains("item: expected a tensor with one element"), hg::Error);
}

TEST_CASE("bfloat16 and half round to nearest even like PyTorch") {
  CHECK(float(hg::bfloat16(1.0f)) == 1.0f);
  CHECK(hg::bfloat16(1.00390625f).bits == 0x3f80);   // tie rounds to even
  CHECK(hg::bfloat16(1.01171875f).bits == 0x3f82);   // tie rounds up to even
  CHECK(float(hg::half(65504.0f)) == 65504.0f);
  CHECK(hg::half(1.0f).bits == 0x3c00);
  CHECK(float(hg::half(5.960464477539063e-08f)) == 5.960464477539063e-08f);  // smallest subnormal
  CHECK(std::isinf(float(hg::half(70000.0f))));
  CHECK(float(hg::half(-2.5f)) == -2.5f);
}

TEST_CASE("printing looks like PyTorch") {
  std::ostringstream s;
  s << hg::tensor<float>({1, 2, 3, 4}, {2, 2});
  CHECK(s.str() == "tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]])");
}

TEST_CASE("from_blob wraps memory without copying and calls the release hook") {
  std::vector<float> buffer{1, 2, 3, 4, 5, 6};
  bool released = false;
  {
    auto t = hg::from_blob<float>(buffer.data(), {2, 3}, {}, [&](float*) { released = true; });
    CHECK(t.data() == buffer.data());
    t.at({1, 2}) = 60;
    auto column = hg::from_blob<float>(buffer.data() + 1, {2}, {3});  // strided: elements 1 and 4
    check_close(column, {2, 5});
  }
  CHECK(released);
  CHECK(buffer[5] == 60);
  CHECK_THROWS_WITH_AS(hg::from_blob<float>(nullptr, {2}), doctest::Contains("from_blob: null data pointer"), hg::Error);
}

TEST_CASE("dtype conversion, zero-size tensors and squeeze") {
  auto x = hg::tensor<float>({1.5f, -2.25f});
  auto d = x.to<double>();
  check_close(d, {1.5, -2.25});
  CHECK(x.to<int64_t>().to_vector() == std::vector<int64_t>{1, -2});
  auto empty = hg::zeros<float>({0, 3});
  CHECK(empty.numel() == 0);
  CHECK(hg::sum(empty, {0}).shape() == hg::Shape{3});
  check_close(hg::sum(empty, {0}), {0, 0, 0});
  auto s = hg::zeros<float>({1, 3, 1, 2});
  CHECK(s.squeeze().shape() == hg::Shape{3, 2});
  CHECK(s.squeeze(-2).shape() == hg::Shape{1, 3, 2});
  CHECK(s.unsqueeze(-1).shape() == hg::Shape{1, 3, 1, 2, 1});
  CHECK(s.flatten(1, 2).shape() == hg::Shape{1, 3, 2});
  auto r = hg::randint<int64_t>(3, 7, {1000});
  for (int64_t v : r.to_vector()) CHECK((v >= 3 && v < 7));
}

TEST_CASE("reshape of a non-viewable layout copies, view refuses") {
  auto x = hg::arange<float>(0, 6).reshape({2, 3}).transpose(0, 1);  // [3, 2], strides [1, 3]
  auto flat = x.reshape({6});
  check_close(flat, {0, 3, 1, 4, 2, 5});
  CHECK(flat.storage() != x.storage());
  auto same = x.reshape({3, 2, 1});
  CHECK(same.storage() == x.storage());
}

TEST_CASE("the caching allocator reuses freed large blocks and can be emptied") {
  hg::empty_cache();
  const float* first;
  {
    auto big = hg::zeros<float>({1 << 20});  // 4 MiB: cached on release
    first = big.data();
  }
  CHECK(hg::CpuAllocator::instance().cached_bytes() >= (size_t(4) << 20));
  auto again = hg::ones<float>({1 << 20});
  CHECK(again.data() == first);                  // the same block came back
  check_close(hg::sum(again), {double(1 << 20)});  // and it holds the new values
  hg::empty_cache();
  CHECK(hg::CpuAllocator::instance().cached_bytes() == 0);
}

#ifndef HISTOGRAD_WITH_CUDA
TEST_CASE("device: without histograd::cuda, asking for a CUDA tensor is a clear Error") {
  hg::Tensor<float> host = hg::ones<float>({3});
  CHECK_THROWS_WITH_AS(host.cuda(), doctest::Contains("built without CUDA"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::Tensor<float>({2}, hg::Device::cuda()), doctest::Contains("built without CUDA"), hg::Error);
  CHECK(host.to(hg::Device::cpu()).is_same(host));
  CHECK(hg::Device::cuda(1).str() == "cuda:1");
}
#endif
