// The ViT's non-GEMM ops on CUDA tensors against the same ops on the CPU in float64: softmax and
// log_softmax (any dim), layer_norm, normalize, scaled_dot_product_attention (the ViT's permuted
// qkv views, causal, additive masks, broadcast batch), the attention-map composition, cross_entropy
// (hard labels with ignore_index, probability targets), conv2d (cuDNN or the patch fallback) and
// bicubic/bilinear interpolation (DINO's +0.1 offset, antialias). Forward and every gradient.
// Bounds: fp32 relative error ≤ 1e-5 (reductions of ≤ a few hundred fp32 terms); softmax in
// float64 on the GPU ≤ 1e-12. Skipped without a GPU.
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

// A float64 CPU leaf and its float32 GPU copy; `transposed`: the ops see .mT() views.
Input input(hg::Shape shape, uint64_t seed, bool transposed = false, double scale = 1.0) {
  if (transposed) std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
  Input in;
  in.transposed = transposed;
  in.cpu_leaf = random_input(shape, seed) * scale;
  in.cpu_leaf.requires_grad_();
  in.gpu_leaf = in.cpu_leaf.detach().to<float>().cuda();
  in.gpu_leaf.requires_grad_();
  return in;
}

template <class U>
double rel(const Tensor<double>& reference, const Tensor<U>& got) {
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

// Leaves the caching allocator a block of `count` floats full of NaN bytes, so an output of that
// size that a kernel fails to write shows up as NaN.
void poison_next(int64_t count) {
  const size_t bytes = static_cast<size_t>(count) * sizeof(float);
  void* block = hg::cuda::allocate(bytes);
  hg::cuda::fill_bytes(block, 0xff, bytes);
  hg::cuda::release(block, bytes);
}

}  // namespace

TEST_CASE("cuda softmax/log_softmax: last dim, inner dims, -inf entries, float64") {
  HG_REQUIRE_GPU();
  uint64_t seed = 10;
  for (bool log : {false, true})
    for (int64_t dim : {-1, 1, 0}) {
      CAPTURE(log);
      CAPTURE(dim);
      Input x = input({4, 37, 6}, seed += 10, dim == -1, 3.0);  // dim -1 on a transposed view
      poison_next(4 * 37 * 6);
      Tensor<double> y_cpu = log ? hg::log_softmax(x.cpu(), dim) : hg::softmax(x.cpu(), dim);
      Tensor<float> y_gpu = log ? hg::log_softmax(x.gpu(), dim) : hg::softmax(x.gpu(), dim);
      CHECK(rel(y_cpu, y_gpu) <= 1e-5);
      backward_both(y_cpu, y_gpu, seed + 1);
      CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
    }
  // Long rows (many threads per row) and masked entries (exactly 0 probability).
  Tensor<double> x = random_input({3, 3000}, 77) * 4.0;
  x.at({1, 5}) = -std::numeric_limits<double>::infinity();
  Tensor<double> y_cpu = hg::softmax(x, -1);
  Tensor<float> y_gpu = hg::softmax(x.to<float>().cuda(), -1);
  CHECK(rel(y_cpu, y_gpu) <= 1e-5);
  CHECK(y_gpu.cpu().at({1, 5}) == 0.0f);
  // float64 on the GPU: the same math in double
  Tensor<double> xd = random_input({5, 40}, 78);
  CHECK(rel(hg::log_softmax(xd, 0), hg::log_softmax(xd.cuda(), 0)) <= 1e-12);
}

TEST_CASE("cuda layer_norm: affine, no affine, non-contiguous input") {
  HG_REQUIRE_GPU();
  uint64_t seed = 200;
  for (bool affine : {true, false})
    for (bool transposed : {false, true}) {
      CAPTURE(affine);
      CAPTURE(transposed);
      Input x = input({3, 17, 64}, seed += 10, transposed, 2.0);  // transposed: a .mT() view of [3, 64, 17]
      Input w = input({64}, seed + 1), b = input({64}, seed + 2);
      const Tensor<double> x_cpu = x.cpu();
      const Tensor<float> x_gpu = x.gpu();
      poison_next(3 * 17 * 64);
      Tensor<double> y_cpu = affine ? hg::layer_norm(x_cpu, w.cpu(), b.cpu(), 1e-6) : hg::layer_norm(x_cpu);
      Tensor<float> y_gpu = affine ? hg::layer_norm(x_gpu, w.gpu(), b.gpu(), 1e-6) : hg::layer_norm(x_gpu);
      CHECK(rel(y_cpu, y_gpu) <= 1e-5);
      backward_both(y_cpu, y_gpu, seed + 3);
      CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
      if (affine) {
        CHECK(rel(w.cpu_leaf.grad(), w.gpu_leaf.grad()) <= 1e-5);
        CHECK(rel(b.cpu_leaf.grad(), b.gpu_leaf.grad()) <= 1e-5);
      }
    }
}

TEST_CASE("cuda normalize: p = 2 and p = 3 along a dim, all-zero rows stay finite") {
  HG_REQUIRE_GPU();
  for (double p : {2.0, 3.0}) {
    CAPTURE(p);
    Input x = input({6, 10}, 300 + static_cast<uint64_t>(p));
    Tensor<double> y_cpu = hg::normalize(x.cpu(), p, -1);
    Tensor<float> y_gpu = hg::normalize(x.gpu(), p, -1);
    CHECK(rel(y_cpu, y_gpu) <= 1e-5);
    backward_both(y_cpu, y_gpu, 310);
    CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
  }
  Tensor<float> zeros = hg::zeros<float>({2, 4}).cuda();
  zeros.requires_grad_();
  Tensor<float> y = hg::normalize(zeros, 2.0, 1);
  hg::sum(y).backward();
  for (float v : zeros.grad().cpu().to_vector()) CHECK(std::isfinite(v));
}

TEST_CASE("cuda scaled_dot_product_attention: the ViT's qkv views, causal, masks, broadcast batch") {
  HG_REQUIRE_GPU();
  // The ViT: qkv [B, N, 3, H, hd] permuted to [3, B, H, N, hd], q/k/v selected (strided views).
  const int64_t B = 2, N = 17, H = 3, hd = 16;
  for (bool causal : {false, true}) {
    CAPTURE(causal);
    Input qkv = input({B, N, 3, H, hd}, 400 + causal);
    auto part = [](const auto& t, int64_t i) { return t.permute({2, 0, 3, 1, 4}).select(0, i); };
    Tensor<double> y_cpu = hg::scaled_dot_product_attention(part(qkv.cpu(), 0), part(qkv.cpu(), 1), part(qkv.cpu(), 2),
                                                            Tensor<double>(), 0.0, causal);
    Tensor<float> y_gpu = hg::scaled_dot_product_attention(part(qkv.gpu(), 0), part(qkv.gpu(), 1), part(qkv.gpu(), 2),
                                                           Tensor<float>(), 0.0, causal);
    CHECK(rel(y_cpu, y_gpu) <= 1e-5);
    backward_both(y_cpu, y_gpu, 410);
    CHECK(rel(qkv.cpu_leaf.grad(), qkv.gpu_leaf.grad()) <= 1e-5);
  }
  // Additive mask broadcast over heads, key/value shared across the batch (broadcast batch dims),
  // query length != key length, an explicit scale.
  Input q = input({2, 3, 5, 8}, 420), k = input({1, 3, 7, 8}, 421), v = input({1, 3, 7, 8}, 422);
  Tensor<double> mask = random_input({2, 1, 5, 7}, 423);
  mask.at({0, 0, 1, 3}) = -std::numeric_limits<double>::infinity();
  Tensor<double> y_cpu = hg::scaled_dot_product_attention(q.cpu(), k.cpu(), v.cpu(), mask, 0.0, false, 0.3);
  Tensor<float> y_gpu =
      hg::scaled_dot_product_attention(q.gpu(), k.gpu(), v.gpu(), mask.to<float>().cuda(), 0.0, false, 0.3);
  CHECK(rel(y_cpu, y_gpu) <= 1e-5);
  backward_both(y_cpu, y_gpu, 424);
  CHECK(rel(q.cpu_leaf.grad(), q.gpu_leaf.grad()) <= 1e-5);
  CHECK(rel(k.cpu_leaf.grad(), k.gpu_leaf.grad()) <= 1e-5);
  CHECK(rel(v.cpu_leaf.grad(), v.gpu_leaf.grad()) <= 1e-5);
  CHECK_THROWS_WITH_AS(hg::scaled_dot_product_attention(q.gpu(), k.gpu(), v.gpu(), Tensor<float>(), 0.1),
                       doctest::Contains("scaled_dot_product_attention: dropout_p > 0 is not supported on CUDA"),
                       hg::Error);
}

TEST_CASE("cuda attention map: softmax(q k^T * scale) as the ViT's last_self_attention forms it") {
  HG_REQUIRE_GPU();
  Input qkv = input({2, 9, 3, 2, 8}, 450);
  auto map = [](const auto& t) {
    auto heads = t.permute({2, 0, 3, 1, 4});
    return hg::softmax(hg::matmul(heads.select(0, 0), heads.select(0, 1).mT()) * 0.35, -1);
  };
  Tensor<double> y_cpu = map(qkv.cpu());
  Tensor<float> y_gpu = map(qkv.gpu());
  CHECK(rel(y_cpu, y_gpu) <= 1e-5);
  backward_both(y_cpu, y_gpu, 451);
  CHECK(rel(qkv.cpu_leaf.grad(), qkv.gpu_leaf.grad()) <= 1e-5);
}

TEST_CASE("cuda cross_entropy: hard labels (mean/sum/none, ignore_index, [N, C, d]) and probability targets") {
  HG_REQUIRE_GPU();
  const std::vector<int64_t> labels{3, 0, -100, 9, 4, 4};
  for (hg::Reduction reduction : {hg::Reduction::Mean, hg::Reduction::Sum, hg::Reduction::None}) {
    CAPTURE(static_cast<int>(reduction));
    Input logits = input({6, 10}, 500 + static_cast<uint64_t>(reduction), false, 3.0);
    const Tensor<int64_t> target = hg::from_vector<int64_t>(labels, {6});
    Tensor<double> y_cpu = hg::cross_entropy(logits.cpu(), target, -100, 0.0, reduction);
    Tensor<float> y_gpu = hg::cross_entropy(logits.gpu(), target.cuda(), -100, 0.0, reduction);
    CHECK(rel(y_cpu, y_gpu) <= 1e-5);
    backward_both(y_cpu, y_gpu, 510);
    CHECK(rel(logits.cpu_leaf.grad(), logits.gpu_leaf.grad()) <= 1e-5);
  }
  // [N, C, d] logits (class dim moved last on the device), labels given on the host.
  Input logits = input({2, 5, 3}, 520);
  const Tensor<int64_t> target = hg::from_vector<int64_t>({0, 4, 2, 1, -100, 3}, {2, 3});
  Tensor<double> y_cpu = hg::cross_entropy(logits.cpu(), target);
  Tensor<float> y_gpu = hg::cross_entropy(logits.gpu(), target);
  CHECK(rel(y_cpu, y_gpu) <= 1e-5);
  backward_both(y_cpu, y_gpu, 521);
  CHECK(rel(logits.cpu_leaf.grad(), logits.gpu_leaf.grad()) <= 1e-5);
  CHECK_THROWS_WITH_AS(hg::cross_entropy(logits.gpu(), hg::from_vector<int64_t>({0, 5, 2, 1, 0, 3}, {2, 3})),
                       doctest::Contains("cross_entropy: target 5 out of range for 5 classes"), hg::Error);
  // Probability targets (DINO's H(t, s)), with label smoothing; gradients to logits and targets.
  for (double smoothing : {0.0, 0.1}) {
    Input s = input({4, 12}, 530), t = input({4, 12}, 531);
    Tensor<double> t_cpu = hg::softmax(t.cpu(), -1);
    Tensor<float> t_gpu = hg::softmax(t.gpu(), -1);
    Tensor<double> l_cpu = hg::cross_entropy(s.cpu(), t_cpu, smoothing);
    Tensor<float> l_gpu = hg::cross_entropy(s.gpu(), t_gpu, smoothing);
    CHECK(rel(l_cpu, l_gpu) <= 1e-5);
    backward_both(l_cpu, l_gpu, 532);
    CHECK(rel(s.cpu_leaf.grad(), s.gpu_leaf.grad()) <= 1e-5);
    CHECK(rel(t.cpu_leaf.grad(), t.gpu_leaf.grad()) <= 1e-5);
  }
}

TEST_CASE("cuda conv2d: the patch embedding (cuDNN or the GEMM fallback) and a padded conv") {
  HG_REQUIRE_GPU();
  MESSAGE("cuDNN " << (hg::cuda::cudnn_available() ? "available" : "absent: the patch path runs"));
  Input x = input({2, 3, 32, 32}, 600), w = input({16, 3, 8, 8}, 601), b = input({16}, 602);
  Tensor<double> y_cpu = hg::conv2d(x.cpu(), w.cpu(), b.cpu(), 8);
  Tensor<float> y_gpu = hg::conv2d(x.gpu(), w.gpu(), b.gpu(), 8);
  CHECK(rel(y_cpu, y_gpu) <= 1e-5);
  backward_both(y_cpu, y_gpu, 603);
  CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
  CHECK(rel(w.cpu_leaf.grad(), w.gpu_leaf.grad()) <= 1e-5);
  CHECK(rel(b.cpu_leaf.grad(), b.gpu_leaf.grad()) <= 1e-5);
  if (!hg::cuda::cudnn_available()) return;
  Input x2 = input({2, 4, 9, 11}, 610), w2 = input({5, 4, 3, 3}, 611);
  Tensor<double> z_cpu = hg::conv2d(x2.cpu(), w2.cpu(), Tensor<double>(), 2, 1);
  Tensor<float> z_gpu = hg::conv2d(x2.gpu(), w2.gpu(), Tensor<float>(), 2, 1);
  CHECK(rel(z_cpu, z_gpu) <= 1e-5);
  backward_both(z_cpu, z_gpu, 612);
  CHECK(rel(x2.cpu_leaf.grad(), x2.gpu_leaf.grad()) <= 1e-5);
  CHECK(rel(w2.cpu_leaf.grad(), w2.gpu_leaf.grad()) <= 1e-5);
}

TEST_CASE("cuda interpolate: bicubic (DINO +0.1 offset, antialias) and bilinear, up and down") {
  HG_REQUIRE_GPU();
  struct Case {
    bool bicubic, antialias;
    int64_t out_h, out_w;
    bool dino_offset;
  };
  const Case cases[] = {{true, false, 6, 9, true},  {true, false, 3, 2, false}, {true, true, 3, 7, false},
                        {true, true, 8, 5, false},  {false, false, 7, 3, false}, {false, true, 2, 3, false}};
  uint64_t seed = 700;
  for (const Case& c : cases) {
    CAPTURE(c.bicubic);
    CAPTURE(c.antialias);
    CAPTURE(c.out_h);
    CAPTURE(c.out_w);
    Input x = input({2, 3, 4, 5}, seed += 10, true);  // the op sees a [2, 3, 5, 4] .mT() view
    auto resize = [&](const auto& image) {
      const int64_t h = image.size(2), w = image.size(3);
      std::optional<double> sh, sw;
      if (c.dino_offset) sh = (double(c.out_h) + 0.1) / double(h), sw = (double(c.out_w) + 0.1) / double(w);
      return c.bicubic ? hg::interpolate_bicubic(image, c.out_h, c.out_w, false, c.antialias, sh, sw)
                       : hg::interpolate_bilinear(image, c.out_h, c.out_w, false, c.antialias);
    };
    Tensor<double> y_cpu = resize(x.cpu());
    Tensor<float> y_gpu = resize(x.gpu());
    CHECK(rel(y_cpu, y_gpu) <= 1e-5);
    backward_both(y_cpu, y_gpu, seed + 1);
    CHECK(rel(x.cpu_leaf.grad(), x.gpu_leaf.grad()) <= 1e-5);
  }
}
