// Reductions on CUDA tensors against the CPU in float64: sum/mean/var/logsumexp/amax/amin over
// any dims (negative, several, all) with and without keepdim, on non-contiguous inputs, short
// rows (thread per row) and long rows (block per row), size-0 and size-1 dims; max/min values
// and indices (first extreme, NaN wins) and their scatter backward; sum_to; the gradients of
// small expressions built from them. Skipped without a GPU.
#include "cuda/parity_util.hpp"

using hg::test::check_parity_both;

TEST_CASE("cuda reduce: sum, mean, var, logsumexp, amax over dims match the CPU") {
  HG_REQUIRE_GPU();
  struct Case {
    hg::Shape shape;
    hg::Shape dims;
  };
  // Short rows (3, 5), long rows (300, 6*70), several dims, all dims, size-1 and size-0 dims.
  for (const Case& c : {Case{{4, 3, 5}, {-1}}, Case{{4, 3, 5}, {0, 2}}, Case{{4, 3, 5}, {}}, Case{{3, 300}, {1}},
                        Case{{6, 70, 3}, {0, 1}}, Case{{5, 1, 4}, {1}}, Case{{2, 0, 3}, {2}}, Case{{7}, {0}}}) {
    INFO("shape " << hg::to_string(c.shape) << " dims " << hg::to_string(c.dims));
    const std::vector<hg::Tensor<double>> in{random_input(c.shape, 21)};
    const hg::Shape dims = c.dims;
    const bool empty = hg::numel_of(c.shape) == 0;
    for (bool keepdim : {false, true}) {
      check_parity_both("sum", [&](const auto& v) { return hg::sum(v[0], dims, keepdim); }, in);
      check_parity_both("logsumexp", [&](const auto& v) { return hg::logsumexp(v[0], dims, keepdim); }, in);
      if (empty) continue;
      check_parity_both("mean", [&](const auto& v) { return hg::mean(v[0], dims, keepdim); }, in);
      check_parity_both("amax", [&](const auto& v) { return hg::amax(v[0], dims, keepdim); }, in);
      check_parity_both("amin", [&](const auto& v) { return hg::amin(v[0], dims, keepdim); }, in);
      if (c.shape != hg::Shape{5, 1, 4}) check_parity_both("var", [&](const auto& v) { return hg::var(v[0], dims, 1, keepdim); }, in);
    }
  }
  // A transposed leaf reduced over its now-outer dim.
  check_parity_both("sum of mT", [](const auto& v) { return hg::sum(v[0].mT(), {0}); }, {random_input({9, 130}, 22)});
  // amax ties share the gradient.
  check_parity_both("amax ties", [](const auto& v) { return hg::amax(hg::clamp(v[0], -0.3, 0.3), {1}); },
                    {random_input({4, 50}, 23)});
}

TEST_CASE("cuda reduce: expressions backpropagate on the device") {
  HG_REQUIRE_GPU();
  check_parity_both("mean(var(x, dim))", [](const auto& v) { return hg::mean(hg::var(v[0], {-1})); },
                    {random_input({6, 80}, 24)});
  check_parity_both("sum(gelu(a*b+c).exp())", [](const auto& v) { return hg::sum(hg::exp(hg::gelu(v[0] * v[1] + v[2]))); },
                    {random_input({5, 8}, 25), random_input({8}, 26), random_input({5, 1}, 27)});
  check_parity_both("logsumexp - x", [](const auto& v) { return hg::sub(v[0], hg::logsumexp(v[0], {-1}, true)); },
                    {random_input({3, 7, 65}, 28)});
  check_parity_both("sum_to", [](const auto& v) { return hg::sum_to(v[0], {3, 1}); }, {random_input({2, 3, 500}, 29)});
}

TEST_CASE("cuda reduce: max/min values, indices and backward match the CPU") {
  HG_REQUIRE_GPU();
  hg::Tensor<double> x = random_input({5, 90, 3}, 30);
  x.at({1, 7, 2}) = x.at({1, 50, 2});  // a tie: the first index wins
  for (int64_t dim : {0, 1, -1}) {
    for (bool keepdim : {false, true}) {
      INFO("dim " << dim << " keepdim " << keepdim);
      for (bool largest : {true, false}) {
        auto cpu = largest ? hg::max(x, dim, keepdim) : hg::min(x, dim, keepdim);
        auto gpu = largest ? hg::max(x.cuda(), dim, keepdim) : hg::min(x.cuda(), dim, keepdim);
        CHECK(gpu.indices.device().is_cuda());
        CHECK(gpu.indices.cpu().to_vector() == cpu.indices.to_vector());
        CHECK(gpu.values.cpu().to_vector() == cpu.values.to_vector());
      }
      check_parity_both("max values", [&](const auto& v) { return hg::max(v[0], dim, keepdim).values; }, {x});
      check_parity_both("min values", [&](const auto& v) { return hg::min(v[0], dim, keepdim).values; }, {x});
    }
  }
  CHECK(hg::argmax(x.cuda(), 1).cpu().to_vector() == hg::argmax(x, 1).to_vector());
  // NaN counts as the extreme: the first NaN wins, as on the CPU; amax propagates it.
  hg::Tensor<float> n = random_t<float>({2, 70}, 31);
  n.at({0, 40}) = n.at({0, 60}) = std::numeric_limits<float>::quiet_NaN();
  CHECK(hg::argmax(n.cuda(), 1).cpu().to_vector() == hg::argmax(n, 1).to_vector());
  std::vector<float> amax = hg::amax(n.cuda(), {1}).cpu().to_vector();
  CHECK(std::isnan(amax[0]));
  CHECK(amax[1] == hg::amax(n, {1}).to_vector()[1]);
  // 0-d input
  hg::Tensor<double> s = hg::scalar_tensor<double>(2.5);
  CHECK(hg::max(s.cuda(), 0).values.cpu().item() == 2.5);
}

TEST_CASE("cuda reduce: float sums accumulate in double like the CPU") {
  HG_REQUIRE_GPU();
  hg::Tensor<float> x = hg::add(random_t<float>({1 << 20}, 32), 1.0f);
  const float cpu = hg::sum(x).item(), gpu = hg::sum(x.cuda()).cpu().item();
  CHECK(std::abs(double(cpu) - double(gpu)) <= std::abs(double(cpu)) * 1.2e-7);  // at most one float ulp apart
}
