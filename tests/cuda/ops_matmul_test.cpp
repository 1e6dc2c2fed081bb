// matmul, bmm and linear on CUDA tensors (cuBLASLt through ops/matmul.hpp) against the same ops on
// the CPU in float64: forward and every gradient, transposed (non-contiguous) operands, broadcast
// batch dims, 1-D promotion, the bias epilogue, TF32 opt-in, and the errors for what is refused.
// fp32 exact GEMMs: relative error ≤ 1e-5 (sums of ≤ 64 fp32 products, ~1e-7 each); TF32 ≤ 2e-3
// (operands rounded to 10 mantissa bits, ~5e-4 per product). Skipped without a GPU.
#include <utility>

#include "cuda/cuda_test_util.hpp"
#include "histograd/histograd.hpp"

namespace hg = histograd;
using hg::Tensor;
using hg::test::relative_error;

namespace {

// A float64 CPU leaf and its float32 copy on the GPU (both require grad); with `transposed` the op
// sees the .mT() view of each (strides (1, rows)), while gradients are compared at the leaves.
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
  in.cpu_leaf = random_input(shape, seed);
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

// The same random upstream gradient through both graphs.
void backward_both(const Tensor<double>& y_cpu, const Tensor<float>& y_gpu, uint64_t seed) {
  const Tensor<double> g = random_input(y_cpu.shape(), seed);
  y_cpu.backward(g);
  y_gpu.backward(g.to<float>().cuda());
}

// forward and both gradients of op(a, b), for a [a_shape] and b [b_shape].
template <class Op>
void check_product(Op op, const hg::Shape& a_shape, const hg::Shape& b_shape, bool a_t, bool b_t, uint64_t seed,
                   double tol = 1e-5) {
  CAPTURE(hg::to_string(a_shape));
  CAPTURE(hg::to_string(b_shape));
  CAPTURE(a_t);
  CAPTURE(b_t);
  Input a = input(a_shape, seed, a_t), b = input(b_shape, seed + 1, b_t);
  Tensor<double> y_cpu = op(a.cpu(), b.cpu());
  Tensor<float> y_gpu = op(a.gpu(), b.gpu());
  CHECK(rel(y_cpu, y_gpu) <= tol);
  backward_both(y_cpu, y_gpu, seed + 2);
  CHECK(rel(a.cpu_leaf.grad(), a.gpu_leaf.grad()) <= tol);
  CHECK(rel(b.cpu_leaf.grad(), b.gpu_leaf.grad()) <= tol);
}

}  // namespace

TEST_CASE("cuda matmul: 2-D products, transposed views, forward and gradients match the CPU") {
  HG_REQUIRE_GPU();
  auto mm = [](const auto& a, const auto& b) { return hg::matmul(a, b); };
  uint64_t seed = 100;
  for (bool a_t : {false, true})
    for (bool b_t : {false, true}) check_product(mm, {7, 13}, {13, 5}, a_t, b_t, seed += 10);
  check_product(mm, {1, 9}, {9, 1}, false, false, seed += 10);  // 1x1 result, ld edge cases
  check_product(mm, {33, 64}, {64, 31}, true, false, seed += 10);
}

TEST_CASE("cuda matmul: batched, broadcast batch dims and 1-D operands") {
  HG_REQUIRE_GPU();
  auto mm = [](const auto& a, const auto& b) { return hg::matmul(a, b); };
  uint64_t seed = 300;
  check_product(mm, {2, 3, 6, 4}, {4, 5}, false, false, seed += 10);        // one right matrix: rows fold
  check_product(mm, {2, 3, 6, 4}, {4, 5}, true, true, seed += 10);
  check_product(mm, {2, 3, 6, 4}, {2, 3, 4, 5}, false, true, seed += 10);   // one batch stride each
  check_product(mm, {2, 1, 6, 4}, {3, 4, 5}, false, false, seed += 10);     // broadcast both ways
  check_product(mm, {6, 4}, {3, 4, 5}, true, false, seed += 10);            // left matrix broadcast (stride 0)
  check_product(mm, {4}, {4, 5}, false, false, seed += 10);                 // vector @ matrix
  check_product(mm, {2, 6, 4}, {4}, false, false, seed += 10);              // matrix @ vector
  check_product(mm, {4}, {4}, false, false, seed += 10);                    // dot
  auto bmm = [](const auto& a, const auto& b) { return hg::bmm(a, b); };
  check_product(bmm, {3, 5, 7}, {3, 7, 2}, true, false, seed += 10);
  // The ViT's attention map: q [B, H, N, D] and k^T as permuted views of one qkv product.
  Input qkv = input({2, 5, 3, 2, 8}, seed += 10);
  auto q_of = [](const auto& t) { return t.permute({2, 0, 3, 1, 4}).select(0, 0); };
  auto k_of = [](const auto& t) { return t.permute({2, 0, 3, 1, 4}).select(0, 1); };
  Tensor<double> s_cpu = hg::matmul(q_of(qkv.cpu()), k_of(qkv.cpu()).mT());
  Tensor<float> s_gpu = hg::matmul(q_of(qkv.gpu()), k_of(qkv.gpu()).mT());
  CHECK(rel(s_cpu, s_gpu) <= 1e-5);
  backward_both(s_cpu, s_gpu, seed + 1);
  CHECK(rel(qkv.cpu_leaf.grad(), qkv.gpu_leaf.grad()) <= 1e-5);
}

TEST_CASE("cuda linear: bias epilogue, no bias, 3-D and non-contiguous inputs") {
  HG_REQUIRE_GPU();
  uint64_t seed = 500;
  for (bool with_bias : {true, false})
    for (bool x_t : {false, true}) {
      CAPTURE(with_bias);
      CAPTURE(x_t);
      Input x = input({2, 6, 12}, seed += 10, x_t), w = input({9, 12}, seed += 10), b = input({9}, seed += 10);
      // x_t: x is [2, 12, 6].mT(), i.e. each batch's rows are columns of the stored tensor
      Tensor<double> y_cpu = hg::linear(x.cpu(), w.cpu(), with_bias ? b.cpu() : Tensor<double>());
      Tensor<float> y_gpu = hg::linear(x.gpu(), w.gpu(), with_bias ? b.gpu() : Tensor<float>());
      CHECK(rel(y_cpu, y_gpu) <= 1e-5);
      backward_both(y_cpu, y_gpu, seed += 10);
      CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
      CHECK(rel(w.cpu_leaf.grad(), w.gpu_leaf.grad()) <= 1e-5);
      if (with_bias) CHECK(rel(b.cpu_leaf.grad(), b.gpu_leaf.grad()) <= 1e-5);
    }
}

TEST_CASE("cuda matmul: TF32 is opt-in and stays within its bound") {
  HG_REQUIRE_GPU();
  CHECK_FALSE(hg::cuda::allow_tf32());
  hg::cuda::set_allow_tf32(true);
  auto mm = [](const auto& a, const auto& b) { return hg::matmul(a, b); };
  check_product(mm, {2, 48, 64}, {64, 40}, false, false, 700, 2e-3);
  Input x = input({16, 64}, 710), w = input({32, 64}, 711), b = input({32}, 712);
  CHECK(rel(hg::linear(x.cpu(), w.cpu(), b.cpu()), hg::linear(x.gpu(), w.gpu(), b.gpu())) <= 2e-3);
  hg::cuda::set_allow_tf32(false);
}

TEST_CASE("cuda matmul: refused inputs name the op") {
  HG_REQUIRE_GPU();
  Tensor<float> a = random_input({3, 4}, 1).to<float>().cuda(), b_cpu = random_input({4, 2}, 2).to<float>();
  CHECK_THROWS_WITH_AS(hg::matmul(a, b_cpu), doctest::Contains("matmul: expected both operands on one device"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::linear(a, b_cpu.mT()), doctest::Contains("linear: expected input, weight and bias on one"),
                       hg::Error);
  Tensor<double> d = random_input({3, 4}, 3).cuda();
  CHECK_THROWS_WITH_AS(hg::matmul(d, d.mT()), doctest::Contains("matmul: CUDA tensors are multiplied in float32 only"),
                       hg::Error);
}
