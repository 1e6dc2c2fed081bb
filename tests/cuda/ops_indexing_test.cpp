// Joining, indexing and sorting on CUDA tensors against the same ops on the CPU: cat/stack (the
// ViT's CLS/register/patch concatenation), index_select, gather (MAE's unshuffle), scatter_add,
// embedding with padding_idx, and sort/argsort/topk (MAE's random masking) with ties, NaN and
// inner dims. Values and gradients in fp32 against float64 (≤ 1e-5; the scatter-add backwards use
// atomics, whose order is free but whose few-term sums stay well inside that), indices exactly.
// Skipped without a GPU.
#include <limits>
#include <utility>

#include "cuda/cuda_test_util.hpp"
#include "histograd/histograd.hpp"

namespace hg = histograd;
using hg::Tensor;
using hg::test::relative_error;

namespace {

struct Input {
  Tensor<double> cpu_leaf;
  Tensor<float> gpu_leaf;
  bool transposed = false;
  Tensor<double> cpu() const { return transposed ? cpu_leaf.mT() : cpu_leaf; }
  Tensor<float> gpu() const { return transposed ? gpu_leaf.mT() : gpu_leaf; }
};

Input input(hg::Shape shape, uint64_t seed, bool transposed = false) {
  if (transposed) std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
  Input in;
  in.transposed = transposed;
  // Float-exact values, so a copy on the GPU (fp32) equals the CPU copy (fp64) exactly (GPU run 3
  // compared against unrounded doubles and saw the fp32 rounding of the inputs, ~2e-8).
  in.cpu_leaf = random_input(shape, seed).to<float>().to<double>();
  in.cpu_leaf.requires_grad_();
  in.gpu_leaf = in.cpu_leaf.detach().to<float>().cuda();
  in.gpu_leaf.requires_grad_();
  return in;
}

double rel(const Tensor<double>& reference, const Tensor<float>& got) {
  REQUIRE(got.defined());
  CHECK(got.device().is_cuda());
  REQUIRE(got.shape() == reference.shape());
  return relative_error(reference.to_vector(), got.cpu().to_vector());
}

void backward_both(const Tensor<double>& y_cpu, const Tensor<float>& y_gpu, uint64_t seed) {
  const Tensor<double> g = random_input(y_cpu.shape(), seed);
  y_cpu.backward(g);
  y_gpu.backward(g.to<float>().cuda());
}

void check_same_indices(const Tensor<int64_t>& cpu, const Tensor<int64_t>& gpu) {
  CHECK(gpu.device().is_cuda());
  REQUIRE(cpu.shape() == gpu.shape());
  CHECK(cpu.to_vector() == gpu.cpu().to_vector());
}

}  // namespace

TEST_CASE("cuda cat/stack: the ViT's token concatenation (expanded CLS, registers, patches)") {
  HG_REQUIRE_GPU();
  Input cls = input({1, 1, 8}, 10), reg = input({1, 2, 8}, 11), patches = input({3, 5, 8}, 12, true);
  auto tokens = [](const auto& c, const auto& r, const auto& p) {
    return hg::cat<typename std::decay_t<decltype(c)>::value_type>({c.expand({3, 1, 8}), r.expand({3, 2, 8}), p}, 1);
  };
  Tensor<double> y_cpu = tokens(cls.cpu(), reg.cpu(), patches.cpu());
  Tensor<float> y_gpu = tokens(cls.gpu(), reg.gpu(), patches.gpu());
  CHECK(rel(y_cpu, y_gpu) == 0.0);  // a copy: exact
  backward_both(y_cpu, y_gpu, 13);
  CHECK(rel(cls.cpu_leaf.grad(), cls.gpu_leaf.grad()) <= 1e-5);
  CHECK(rel(reg.cpu_leaf.grad(), reg.gpu_leaf.grad()) <= 1e-5);
  CHECK(rel(patches.cpu_leaf.grad(), patches.gpu_leaf.grad()) <= 1e-5);
  Input a = input({4, 3}, 14), b = input({4, 3}, 15, true);
  Tensor<double> s_cpu = hg::stack<double>({a.cpu(), b.cpu()}, -1);
  Tensor<float> s_gpu = hg::stack<float>({a.gpu(), b.gpu()}, -1);
  CHECK(rel(s_cpu, s_gpu) == 0.0);
  backward_both(s_cpu, s_gpu, 16);
  CHECK(rel(b.cpu_leaf.grad(), b.gpu_leaf.grad()) <= 1e-5);
}

TEST_CASE("cuda index_select/gather/scatter_add: repeated indices, strided inputs, negative dims") {
  HG_REQUIRE_GPU();
  const Tensor<int64_t> select_index = hg::from_vector<int64_t>({4, 0, 4, 2, 1, 4}, {6});
  for (int64_t dim : {0, -1}) {
    CAPTURE(dim);
    Input x = input({5, 5}, 20 + static_cast<uint64_t>(dim + 1), true);
    Tensor<double> y_cpu = hg::index_select(x.cpu(), dim, select_index);
    Tensor<float> y_gpu = hg::index_select(x.gpu(), dim, select_index.cuda());
    CHECK(rel(y_cpu, y_gpu) == 0.0);
    backward_both(y_cpu, y_gpu, 30);
    CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
  }
  // MAE's unshuffle: gather(x, 1, ids_restore expanded over D); an index smaller than x.
  Input x = input({2, 6, 4}, 40);
  const Tensor<int64_t> ids = hg::from_vector<int64_t>({5, 1, 1, 0, 3, 2, 4, 4}, {2, 4}).unsqueeze(-1).expand({2, 4, 3});
  Tensor<double> g_cpu = hg::gather(x.cpu(), 1, ids);
  Tensor<float> g_gpu = hg::gather(x.gpu(), 1, ids.cuda());
  CHECK(rel(g_cpu, g_gpu) == 0.0);
  backward_both(g_cpu, g_gpu, 41);
  CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
  Input base = input({2, 6, 3}, 50), src = input({2, 5, 3}, 51);
  Tensor<double> s_cpu = hg::scatter_add(base.cpu(), 1, ids, src.cpu());
  Tensor<float> s_gpu = hg::scatter_add(base.gpu(), 1, ids.cuda(), src.gpu());
  CHECK(rel(s_cpu, s_gpu) <= 1e-5);
  backward_both(s_cpu, s_gpu, 52);
  CHECK(rel(base.cpu_leaf.grad(), base.gpu_leaf.grad()) <= 1e-5);
  CHECK(rel(src.cpu_leaf.grad(), src.gpu_leaf.grad()) <= 1e-5);
  CHECK_THROWS_WITH_AS(hg::gather(x.gpu(), 1, hg::from_vector<int64_t>({0, 6}, {1, 2, 1}).cuda()),
                       doctest::Contains("gather: index 6 out of range for dim 1 of size 6"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::index_select(x.gpu(), 0, hg::from_vector<int64_t>({-1}, {1})),
                       doctest::Contains("index_select: index -1 out of range for dim 0 of size 2"), hg::Error);
}

TEST_CASE("cuda embedding: lookups with repeats, padding_idx gets no gradient") {
  HG_REQUIRE_GPU();
  Input weight = input({7, 5}, 60);
  const Tensor<int64_t> ids = hg::from_vector<int64_t>({3, 6, 3, 0, 2, 6}, {2, 3});
  Tensor<double> y_cpu = hg::embedding(ids, weight.cpu(), 6);
  Tensor<float> y_gpu = hg::embedding(ids.cuda(), weight.gpu(), 6);
  CHECK(rel(y_cpu, y_gpu) == 0.0);
  backward_both(y_cpu, y_gpu, 61);
  CHECK(rel(weight.cpu_leaf.grad(), weight.gpu_leaf.grad()) <= 1e-5);
  CHECK_THROWS_WITH_AS(hg::embedding(hg::from_vector<int64_t>({7}, {1}), weight.gpu()),
                       doctest::Contains("embedding: index 7 out of range for 7 embeddings"), hg::Error);
}

TEST_CASE("cuda sort/argsort/topk: the CPU's order (stable ties, NaN last), inner dims, gradients") {
  HG_REQUIRE_GPU();
  // MAE's masking: argsort of uniform noise per sample, then argsort of that (ids_restore).
  Tensor<float> noise = hg::rand<float>({3, 49});
  check_same_indices(hg::argsort(noise, 1), hg::argsort(noise.cuda(), 1));
  check_same_indices(hg::argsort(hg::argsort(noise, 1).to<float>(), 1),
                     hg::argsort(hg::argsort(noise.cuda(), 1).to<float>(), 1));
  // Ties and NaN, both directions, along dim 0 (inner > 1).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor<float> tied = hg::from_vector<float>({1, 2, 2, nan, 0, 1, 2, 1, 0, nan, 1, 2}, {6, 2});
  for (bool descending : {false, true}) {
    CAPTURE(descending);
    auto [v_cpu, i_cpu] = hg::sort(tied, 0, descending);
    auto [v_gpu, i_gpu] = hg::sort(tied.cuda(), 0, descending);
    check_same_indices(i_cpu, i_gpu);
    for (bool sorted : {true, false}) {
      CAPTURE(sorted);
      auto [tv_cpu, ti_cpu] = hg::topk(tied, 3, 0, !descending, sorted);
      auto [tv_gpu, ti_gpu] = hg::topk(tied.cuda(), 3, 0, !descending, sorted);
      check_same_indices(ti_cpu, ti_gpu);
    }
  }
  Input x = input({4, 9}, 70, true);
  auto [y_cpu, yi_cpu] = hg::sort(x.cpu(), -1, true);
  auto [y_gpu, yi_gpu] = hg::sort(x.gpu(), -1, true);
  check_same_indices(yi_cpu, yi_gpu);
  CHECK(rel(y_cpu, y_gpu) == 0.0);
  backward_both(y_cpu, y_gpu, 71);
  CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
}
