// bf16 autocast (core/autocast.hpp) on CUDA: linear, matmul, bmm, conv2d and
// scaled_dot_product_attention under an AutocastGuard run the bf16 cuBLASLt GEMM and attention
// kernels; checked against the same ops' CPU emulation (bf16 roundings around the fp32 kernels),
// forward and every gradient. Relative error <= 1e-2: the GPU sums in another order, so a value near
// a rounding boundary may land one bf16 ulp (<= 2^-8 relative) away. Outputs and gradients must be
// bf16 values, and finite. Skipped without a GPU.
#include <functional>

#include "cuda/cuda_test_util.hpp"
#include "histograd/histograd.hpp"

namespace hg = histograd;
using hg::Tensor;

namespace {

using Op = std::function<Tensor<float>(const std::vector<Tensor<float>>&)>;

bool bf16_values(const Tensor<float>& t) {
  const std::vector<float> v = t.cpu().to_vector();
  for (float x : v)
    if (!std::isfinite(x) || static_cast<float>(hg::bfloat16(x)) != x) return false;
  return true;
}

double rel(const Tensor<float>& reference, const Tensor<float>& got) {
  REQUIRE(got.defined());
  CHECK(got.device().is_cuda());
  REQUIRE(got.shape() == reference.shape());
  const std::vector<float> r = reference.to_vector();
  return hg::test::relative_error(std::vector<double>(r.begin(), r.end()), got.cpu().to_vector());
}

// op on CPU leaves and on their copies on the GPU, both under autocast; backward() of the same
// upstream gradient outside the guard; the GPU's output and leaf gradients against the CPU's.
void check_autocast(const Op& op, const std::vector<hg::Shape>& shapes, uint64_t seed, double tol = 1e-2) {
  std::vector<Tensor<float>> cpu, gpu;
  for (const hg::Shape& shape : shapes) {
    Tensor<float> c = random_t<float>(shape, seed++);
    Tensor<float> g = c.detach().cuda();
    c.requires_grad_();
    g.requires_grad_();
    cpu.push_back(c);
    gpu.push_back(g);
  }
  Tensor<float> y_cpu, y_gpu;
  {
    hg::AutocastGuard autocast;
    y_cpu = op(cpu);
    y_gpu = op(gpu);
  }
  CHECK(rel(y_cpu, y_gpu) <= tol);
  CHECK(bf16_values(y_gpu));
  const Tensor<float> upstream = random_t<float>(y_cpu.shape(), seed++);
  y_cpu.backward(upstream);
  y_gpu.backward(upstream.cuda());
  for (size_t i = 0; i < cpu.size(); ++i) {
    CAPTURE(i);
    CHECK(rel(cpu[i].grad(), gpu[i].grad()) <= tol);
    CHECK(bf16_values(gpu[i].grad()));
  }
}

}  // namespace

TEST_CASE("cuda autocast linear: bf16 GEMM with the bias epilogue, forward and gradients match the CPU emulation") {
  HG_REQUIRE_GPU();
  const Op with_bias = [](const std::vector<Tensor<float>>& t) { return hg::linear(t[0], t[1], t[2]); };
  const Op no_bias = [](const std::vector<Tensor<float>>& t) { return hg::linear(t[0], t[1]); };
  const Op transposed_x = [](const std::vector<Tensor<float>>& t) { return hg::linear(t[0].mT(), t[1], t[2]); };
  check_autocast(with_bias, {{3, 17, 64}, {48, 64}, {48}}, 10);
  check_autocast(with_bias, {{5, 13}, {7, 13}, {7}}, 20);  // odd sizes
  check_autocast(no_bias, {{2, 9, 32}, {16, 32}}, 30);
  check_autocast(transposed_x, {{24, 6}, {8, 24}, {8}}, 40);
}

TEST_CASE("cuda autocast linear: a weight used twice in a region reads one cached bf16 copy; conv2d in bf16") {
  HG_REQUIRE_GPU();
  // The cached weight (converted by the first call) serves the second call and both backwards.
  const Op twice = [](const std::vector<Tensor<float>>& t) {
    return hg::add(hg::linear(t[0], t[1], t[2]), hg::linear(hg::mul(t[0], 0.5f), t[1], t[2]));
  };
  check_autocast(twice, {{4, 9, 64}, {32, 64}, {32}}, 50);
  const Op stem = [](const std::vector<Tensor<float>>& t) { return hg::conv2d(t[0], t[1], t[2], 16); };
  const Op padded = [](const std::vector<Tensor<float>>& t) { return hg::conv2d(t[0], t[1], t[2], 1, 1); };
  check_autocast(stem, {{2, 3, 64, 48}, {64, 3, 16, 16}, {64}}, 60);  // the ViT stem: bf16 GEMM on patches
  check_autocast(padded, {{2, 3, 12, 10}, {8, 3, 3, 3}, {8}}, 70);    // cuDNN fp32 on bf16-rounded operands
}

TEST_CASE("cuda autocast matmul and bmm: broadcast batch dims, transposed operands, 1-D operands") {
  HG_REQUIRE_GPU();
  const Op mm = [](const std::vector<Tensor<float>>& t) { return hg::matmul(t[0], t[1]); };
  const Op mm_bt = [](const std::vector<Tensor<float>>& t) { return hg::matmul(t[0], t[1].mT()); };
  const Op bmm = [](const std::vector<Tensor<float>>& t) { return hg::bmm(t[0], t[1]); };
  check_autocast(mm, {{2, 3, 16, 32}, {32, 24}}, 100);  // one right matrix: rows folded
  check_autocast(mm, {{16, 32}, {4, 32, 8}}, 110);      // left operand broadcast: its gradient summed
  check_autocast(mm, {{2, 1, 8, 16}, {3, 16, 8}}, 120);
  check_autocast(mm_bt, {{7, 13}, {5, 13}}, 130);
  check_autocast(mm, {{32}, {32, 5}}, 140);
  check_autocast(mm, {{6, 32}, {32}}, 150);
  check_autocast(bmm, {{4, 16, 32}, {4, 32, 8}}, 160);
}

TEST_CASE("cuda autocast scaled_dot_product_attention: bf16 kernels (flash and reference), mask, causal, broadcast") {
  HG_REQUIRE_GPU();
  const Op plain = [](const std::vector<Tensor<float>>& t) { return hg::scaled_dot_product_attention(t[0], t[1], t[2]); };
  const Op causal = [](const std::vector<Tensor<float>>& t) {
    return hg::scaled_dot_product_attention(t[0], t[1], t[2], Tensor<float>(), 0.0, true);
  };
  const Op masked = [](const std::vector<Tensor<float>>& t) {
    return hg::scaled_dot_product_attention(t[0], t[1], t[2], random_t<float>({t[0].size(-2), t[1].size(-2)}, 7)
                                                                  .to(t[0].device()));
  };
  check_autocast(plain, {{2, 3, 40, 64}, {2, 3, 50, 64}, {2, 3, 50, 64}}, 200);  // flash (head dim 64)
  check_autocast(causal, {{1, 2, 33, 64}, {1, 2, 33, 64}, {1, 2, 33, 64}}, 210);
  check_autocast(masked, {{2, 2, 12, 64}, {2, 1, 20, 64}, {2, 1, 20, 64}}, 220);  // k/v broadcast: summed gradients
  check_autocast(plain, {{1, 4, 16, 128}, {1, 4, 16, 128}, {1, 4, 16, 128}}, 230);
  check_autocast(masked, {{1, 2, 10, 16}, {1, 2, 14, 16}, {1, 2, 14, 16}}, 240);  // head dim 16: the reference kernel
}
