// bf16 autocast (core/autocast.hpp) on the CPU: linear, matmul, bmm, conv2d and
// scaled_dot_product_attention under an AutocastGuard against the fp32 ops on operands rounded here
// by hand (Tensor::to<bfloat16>), with the rounding of every output and gradient written out: bitwise
// equal for the products and convolutions, within one bf16 ulp for attention's gradients (written as
// the naive softmax formula). Also: the region's weight cache (one conversion per parameter, emptied
// with the region), the flag is read at forward time, guards nest and restore on exceptions, double
// ignores it, and a tiny ViT trains within ~2e-2 of fp32 while visibly differing from it.
#include <stdexcept>

#include "test_util.hpp"

using hg::Tensor;

namespace {

// The reference rounding, independent of the ops' helper: float -> bfloat16 (RNE) -> float.
Tensor<float> bf(const Tensor<float>& t) { return t.detach().to<hg::bfloat16>().to<float>(); }

bool bf16_representable(const Tensor<float>& t) { return bf(t).to_vector() == t.detach().contiguous().to_vector(); }

Tensor<float> leaf(const hg::Shape& shape, uint64_t seed, bool transposed = false) {
  Tensor<float> t = random_t<float>(shape, seed, transposed);
  t.requires_grad_();
  return t;
}

// Bitwise equality (check_close with tolerance 0), plus the result being bf16 values.
void check_exact_bf16(const Tensor<float>& got, const Tensor<float>& expected) {
  REQUIRE(got.defined());
  check_close(got, expected, 0.0);
  CHECK(bf16_representable(got));
}

// The products' backward written out: g rounded, each GEMM's result rounded, and a gradient summed
// over broadcast batch dims rounded again; with one right matrix, dB is one GEMM over all rows.
struct ProductGrads {
  Tensor<float> ga, gb;
};
ProductGrads product_grads(const Tensor<float>& a, const Tensor<float>& b, const Tensor<float>& g) {
  const Tensor<float> ab = bf(a), bb = bf(b), gg = bf(g);
  auto reduce = [](const Tensor<float>& t, const hg::Shape& shape) {
    return t.shape() == shape ? t : bf(hg::sum_to(t, shape));
  };
  ProductGrads r;
  r.ga = reduce(bf(hg::matmul(gg, bb.mT())), a.shape());
  if (b.dim() == 2 && g.dim() > 2) {
    const int64_t K = a.size(-1), N = b.size(-1);
    r.gb = bf(hg::matmul(ab.reshape({-1, K}).mT(), gg.reshape({-1, N})));
  } else {
    r.gb = reduce(bf(hg::matmul(ab.mT(), gg)), b.shape());
  }
  return r;
}

}  // namespace

TEST_CASE("autocast flag: off by default, guards nest, restore on exit and on exceptions") {
  CHECK_FALSE(hg::Autocast::is_enabled());
  {
    hg::AutocastGuard on;
    CHECK(hg::Autocast::is_enabled());
    {
      hg::AutocastGuard off(false);
      CHECK_FALSE(hg::Autocast::is_enabled());
    }
    CHECK(hg::Autocast::is_enabled());
  }
  CHECK_FALSE(hg::Autocast::is_enabled());
  auto shape_error_inside_guard = [] {
    hg::AutocastGuard on;
    hg::matmul(random_t<float>({2, 3}, 1), random_t<float>({4, 2}, 2));
  };
  CHECK_THROWS_WITH_AS(shape_error_inside_guard(), doctest::Contains("matmul: shapes [2, 3] and [4, 2] cannot be multiplied"),
                       hg::Error);
  CHECK_FALSE(hg::Autocast::is_enabled());
  try {
    hg::AutocastGuard on;
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  CHECK_FALSE(hg::Autocast::is_enabled());
}

TEST_CASE("autocast linear: bf16 operands and bias, fp32 accumulation, bf16 output and gradients, bitwise") {
  struct Case {
    hg::Shape x_shape;
    bool bias, x_transposed, w_transposed;
  };
  uint64_t seed = 10;
  for (const Case& c : {Case{{6, 5}, true, false, false}, Case{{2, 3, 5}, true, false, true},
                        Case{{2, 3, 5}, false, true, false}, Case{{4, 37}, true, true, true}}) {
    CAPTURE(hg::to_string(c.x_shape));
    CAPTURE(c.bias);
    const int64_t in = c.x_shape.back(), out = 4;
    Tensor<float> x = leaf(c.x_shape, seed++, c.x_transposed), w = leaf({out, in}, seed++, c.w_transposed);
    Tensor<float> b = c.bias ? leaf({out}, seed++) : Tensor<float>();
    Tensor<float> y;
    {
      hg::AutocastGuard autocast;
      y = hg::linear(x, w, b);
    }
    CHECK(y.grad_fn_name() == "LinearBackward");
    check_exact_bf16(y, bf(hg::linear(bf(x), bf(w), c.bias ? bf(b) : Tensor<float>())));
    CHECK(y.to_vector() != hg::linear(x, w, b).to_vector());  // the fp32 op differs: autocast took effect

    // backward() outside the guard still rounds: the forward recorded that it ran under autocast.
    const Tensor<float> g = random_t<float>(y.shape(), seed++);
    y.backward(g);
    const Tensor<float> g_rows = bf(g).reshape({-1, out}), x_rows = bf(x).reshape({-1, in});
    check_exact_bf16(x.grad(), bf(hg::matmul(g_rows, bf(w))).reshape(c.x_shape));
    check_exact_bf16(w.grad(), bf(hg::matmul(g_rows.mT(), x_rows)));
    if (c.bias) check_exact_bf16(b.grad(), bf(hg::sum(g_rows, {0})));
  }
}

TEST_CASE("autocast linear: a parameter is converted once per region, and the cache empties when the region ends") {
  auto& cache = hg::Autocast::cache();
  Tensor<float> w = leaf({4, 6}, 60), b = leaf({4}, 61), x = random_t<float>({3, 6}, 62);
  const Tensor<float> activation_weight = hg::mul(w, 1.0f);  // not a leaf: never cached
  Tensor<float> frozen = random_t<float>({4, 6}, 63);        // a leaf without requires_grad: never cached
  Tensor<float> y1, y2;
  {
    hg::AutocastGuard autocast;
    y1 = hg::linear(x, w, b);
    CHECK(cache.size() == 1);
    y2 = hg::linear(x, w, b);  // the cached bf16 W
    CHECK(cache.size() == 1);
    hg::linear(x, activation_weight);
    hg::linear(x, frozen);
    CHECK(cache.size() == 1);
    {
      hg::AutocastGuard inner;  // nested regions share the cache
      hg::AutocastGuard off(false);
      hg::linear(x, w, b);
    }
    CHECK(cache.size() == 1);
  }
  CHECK(cache.empty());
  check_exact_bf16(y1, bf(hg::linear(bf(x), bf(w), bf(b))));
  check_exact_bf16(y2, y1);

  // Backward reads the bf16 W the forward used, after the region and its cache are gone.
  const Tensor<float> g = random_t<float>(y1.shape(), 64);
  hg::add(y1, y2).backward(g);
  check_exact_bf16(w.grad(), hg::mul(bf(hg::matmul(bf(g).mT(), bf(x))), 2.0f));
  Tensor<float> xl = leaf({3, 6}, 62);
  {
    hg::AutocastGuard autocast;
    hg::linear(xl, w, b).backward(g);
  }
  check_exact_bf16(xl.grad(), bf(hg::matmul(bf(g), bf(w))));

  // The optimizer changes W between regions: the next region converts the new values.
  {
    hg::NoGradGuard no_grad;
    w.copy_(random_t<float>({4, 6}, 65));
  }
  Tensor<float> y3;
  {
    hg::AutocastGuard autocast;
    y3 = hg::linear(x, w, b);
  }
  check_exact_bf16(y3, bf(hg::linear(bf(x), bf(w), bf(b))));
  CHECK(y3.to_vector() != y1.to_vector());
}

TEST_CASE("autocast conv2d: the patch path is bf16 linear; other convolutions round operands, output and gradients") {
  struct Case {
    hg::Shape x_shape, w_shape;
    int64_t stride, padding, groups;
    bool bias;
  };
  uint64_t seed = 70;
  for (const Case& c : {Case{{2, 3, 8, 8}, {5, 3, 4, 4}, 4, 0, 1, true},   // the ViT stem: patch path
                        Case{{2, 3, 7, 6}, {4, 3, 3, 3}, 1, 1, 1, true},   // padded 3x3
                        Case{{1, 4, 9, 9}, {6, 2, 3, 3}, 2, 1, 2, false}}) {  // strided, grouped
    CAPTURE(hg::to_string(c.w_shape));
    Tensor<float> x = leaf(c.x_shape, seed++), w = leaf(c.w_shape, seed++);
    Tensor<float> b = c.bias ? leaf({c.w_shape[0]}, seed++) : Tensor<float>();
    Tensor<float> y;
    {
      hg::AutocastGuard autocast;
      y = hg::conv2d(x, w, b, c.stride, c.padding, 1, c.groups);
    }
    // The reference: the fp32 convolution of rounded leaves, its output rounded, backward from the
    // rounded upstream gradient, each gradient rounded.
    Tensor<float> xr = bf(x), wr = bf(w), br = c.bias ? bf(b) : Tensor<float>();
    xr.requires_grad_();
    wr.requires_grad_();
    if (c.bias) br.requires_grad_();
    const Tensor<float> reference = hg::conv2d(xr, wr, br, c.stride, c.padding, 1, c.groups);
    check_exact_bf16(y, bf(reference));
    CHECK(y.to_vector() != hg::conv2d(x, w, b, c.stride, c.padding, 1, c.groups).to_vector());

    const Tensor<float> g = random_t<float>(y.shape(), seed++);
    y.backward(g);
    reference.backward(bf(g));
    check_exact_bf16(x.grad(), bf(xr.grad()));
    check_exact_bf16(w.grad(), bf(wr.grad()));
    if (c.bias) check_exact_bf16(b.grad(), bf(br.grad()));
  }
}

TEST_CASE("autocast matmul and bmm: products and gradients equal the rounded formula, bitwise") {
  struct Case {
    hg::Shape a, b;
    bool a_t = false, b_t = false;
  };
  uint64_t seed = 100;
  for (const Case& c : {Case{{7, 13}, {13, 5}}, Case{{7, 13}, {13, 5}, true, true}, Case{{2, 3, 4, 5}, {5, 6}},
                        Case{{3, 4}, {2, 4, 5}}, Case{{2, 1, 3, 4}, {3, 4, 2}, false, true},
                        Case{{3, 5, 40}, {3, 40, 2}}}) {
    CAPTURE(hg::to_string(c.a));
    CAPTURE(hg::to_string(c.b));
    Tensor<float> a = leaf(c.a, seed++, c.a_t), b = leaf(c.b, seed++, c.b_t);
    Tensor<float> y;
    {
      hg::AutocastGuard autocast;
      y = hg::matmul(a, b);
    }
    check_exact_bf16(y, bf(hg::matmul(bf(a), bf(b))));
    const Tensor<float> g = random_t<float>(y.shape(), seed++);
    y.backward(g);
    ProductGrads r = product_grads(a, b, g);
    check_exact_bf16(a.grad(), r.ga);
    check_exact_bf16(b.grad(), r.gb);
  }

  Tensor<float> a = leaf({3, 4, 6}, 300), b = leaf({3, 6, 5}, 301);
  Tensor<float> y;
  {
    hg::AutocastGuard autocast;
    y = hg::bmm(a, b);
  }
  CHECK(y.grad_fn_name() == "BmmBackward");
  check_exact_bf16(y, bf(hg::bmm(bf(a), bf(b))));
  const Tensor<float> g = random_t<float>(y.shape(), 302);
  y.backward(g);
  ProductGrads r = product_grads(a, b, g);
  check_exact_bf16(a.grad(), r.ga);
  check_exact_bf16(b.grad(), r.gb);
}

TEST_CASE("autocast matmul: 1-D operands are promoted, then round like the rest, bitwise") {
  for (auto [sa, sb] : {std::pair<hg::Shape, hg::Shape>{{5}, {5, 3}}, {{2, 4}, {4}}, {{6}, {6}}, {{3}, {2, 3, 4}}}) {
    CAPTURE(hg::to_string(sa));
    CAPTURE(hg::to_string(sb));
    Tensor<float> a = leaf(sa, 400), b = leaf(sb, 401);
    Tensor<float> y;
    {
      hg::AutocastGuard autocast;
      y = hg::matmul(a, b);
    }
    check_exact_bf16(y, bf(hg::matmul(bf(a), bf(b))));
    const Tensor<float> g = random_t<float>(y.shape(), 402);
    y.backward(g);
    // The formula on the promoted operands (a row, b a column), as torch.matmul promotes them.
    const Tensor<float> ap = sa.size() == 1 ? a.detach().unsqueeze(0) : a.detach();
    const Tensor<float> bp = sb.size() == 1 ? b.detach().unsqueeze(-1) : b.detach();
    ProductGrads r = product_grads(ap, bp, g.reshape(hg::matmul(ap, bp).shape()));
    check_exact_bf16(a.grad(), r.ga.reshape(sa));
    check_exact_bf16(b.grad(), r.gb.reshape(sb));
  }
}

TEST_CASE("autocast scaled_dot_product_attention: rounded q/k/v/mask, bf16 output; gradients from the formula") {
  struct Case {
    hg::Shape q, kv;
    bool mask, causal;
  };
  uint64_t seed = 500;
  for (const Case& c : {Case{{2, 2, 5, 8}, {2, 2, 7, 8}, false, false}, Case{{2, 2, 6, 8}, {2, 1, 6, 8}, true, false},
                        Case{{1, 3, 9, 4}, {1, 3, 9, 4}, false, true}}) {
    CAPTURE(hg::to_string(c.q));
    CAPTURE(hg::to_string(c.kv));
    Tensor<float> q = leaf(c.q, seed++), k = leaf(c.kv, seed++, true), v = leaf(c.kv, seed++);
    const int64_t L = c.q[2], S = c.kv[2], E = c.q[3];
    Tensor<float> mask = c.mask ? random_t<float>({L, S}, seed++) : Tensor<float>();
    Tensor<float> y;
    {
      hg::AutocastGuard autocast;
      y = hg::scaled_dot_product_attention(q, k, v, mask, 0.0, c.causal);
    }
    check_exact_bf16(y, bf(hg::scaled_dot_product_attention(bf(q), bf(k), bf(v), c.mask ? bf(mask) : Tensor<float>(),
                                                             0.0, c.causal)));

    const Tensor<float> g = random_t<float>(y.shape(), seed++);
    y.backward(g);
    // dV = P^T dO, dS = P ∘ (dO V^T - rowsum(dO ∘ out)), dQ = s dS K, dK = s dS^T Q, with
    // P = softmax(s Q K^T + mask) in fp32 from the rounded inputs, out the bf16 output and dO = bf(g).
    const float s = 1.0f / std::sqrt(static_cast<float>(E));
    const Tensor<float> qb = bf(q), kb = bf(k), vb = bf(v), dO = bf(g), o = y.detach();
    Tensor<float> scores = hg::matmul(qb, kb.mT()) * s;
    if (c.mask) scores = scores + bf(mask);
    if (c.causal) {
      std::vector<float> hide(static_cast<size_t>(L * S), 0.0f);
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = i + 1; j < S; ++j) hide[static_cast<size_t>(i * S + j)] = -std::numeric_limits<float>::infinity();
      scores = scores + hg::from_vector<float>(hide, {L, S});
    }
    const Tensor<float> P = hg::softmax(scores, -1);
    const Tensor<float> dS = P * (hg::matmul(dO, vb.mT()) - hg::sum(dO * o, {-1}, true));
    check_close(v.grad(), bf(hg::sum_to(hg::matmul(P.mT(), dO), c.kv)), 4e-3);  // 4e-3 (1 + |x|): one bf16 ulp
    check_close(q.grad(), bf(hg::matmul(dS, kb) * s), 4e-3);
    check_close(k.grad(), bf(hg::sum_to(hg::matmul(dS.mT(), qb) * s, c.kv)), 4e-3);
    for (const Tensor<float>& leaf_input : {q, k, v}) CHECK(bf16_representable(leaf_input.grad()));
  }
}

TEST_CASE("autocast: the flag is read at forward time; double and guarded-off regions run in full precision") {
  Tensor<float> x = leaf({3, 5}, 600), w = leaf({4, 5}, 601);
  const Tensor<float> g = random_t<float>({3, 4}, 602);

  Tensor<float> y = hg::linear(x, w);  // recorded without autocast ...
  {
    hg::AutocastGuard autocast;
    y.backward(g);  // ... so its backward stays fp32 even inside a guard
  }
  check_close(x.grad(), hg::matmul(g, w.detach()), 0.0);
  check_close(w.grad(), hg::matmul(g.mT(), x.detach()), 0.0);

  {
    hg::AutocastGuard autocast;
    hg::AutocastGuard off(false);
    check_close(hg::linear(x, w), hg::linear(x.detach(), w.detach()), 0.0);
    check_close(hg::matmul(x, w.mT()), hg::matmul(x.detach(), w.detach().mT()), 0.0);
  }

  const Tensor<double> xd = random_input({3, 5}, 603), wd = random_input({4, 5}, 604), qd = random_input({2, 4, 8}, 605);
  Tensor<double> plain_linear = hg::linear(xd, wd), plain_mm = hg::matmul(xd, wd.mT()),
                 plain_sdpa = hg::scaled_dot_product_attention(qd, qd, qd);
  hg::AutocastGuard autocast;
  CHECK(hg::linear(xd, wd).to_vector() == plain_linear.to_vector());
  CHECK(hg::matmul(xd, wd.mT()).to_vector() == plain_mm.to_vector());
  CHECK(hg::scaled_dot_product_attention(qd, qd, qd).to_vector() == plain_sdpa.to_vector());
}

namespace {

hg::models::ViTConfig tiny_vit() {
  hg::models::ViTConfig c;
  c.name = "tiny";
  c.image_size = 8;
  c.patch_size = 2;
  c.embed_dim = 16;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_hidden = 32;
  c.layer_scale_init = 0.5;
  return c;
}

// ||got - ref|| / ||ref||
double relative(const Tensor<float>& got, const Tensor<float>& ref) {
  std::vector<float> a = got.to_vector(), b = ref.to_vector();
  REQUIRE(a.size() == b.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff / norm);
}

}  // namespace

TEST_CASE("autocast ViT: forward and backward within 2e-2 of fp32, and not equal to it") {
  hg::models::VisionTransformer<float> model(tiny_vit(), 7);
  {
    hg::NoGradGuard no_grad;
    uint64_t seed = 700;
    for (auto& [name, p] : model.named_parameters()) p.copy_(random_t<float>(p.shape(), seed++) * 0.3f);
  }
  const Tensor<float> images = random_t<float>({2, 3, 8, 8}, 1), target = random_t<float>({2, 16}, 2);
  auto run = [&](bool autocast) {
    model.zero_grad();
    Tensor<float> loss;
    {
      hg::AutocastGuard guard(autocast);
      const Tensor<float> diff = model.forward(images) - target;
      loss = hg::mean(diff * diff);
    }
    loss.backward();
    std::vector<Tensor<float>> grads;
    for (auto& p : model.parameters()) grads.push_back(p.grad().detach().clone());
    return std::pair{loss.item(), grads};
  };
  auto [loss32, grads32] = run(false);
  auto [loss16, grads16] = run(true);
  const double loss_rel = std::abs(double(loss16) - loss32) / std::abs(double(loss32));
  MESSAGE("ViT loss fp32 " << loss32 << ", autocast " << loss16 << ", relative difference " << loss_rel);
  CHECK(loss_rel <= 2e-2);
  CHECK(loss16 != loss32);
  double worst = 0;
  size_t differing = 0;
  auto names = model.named_parameters();
  for (size_t i = 0; i < grads32.size(); ++i) {
    const double r = relative(grads16[i], grads32[i]);
    CAPTURE(names[i].first);
    CHECK(r <= 2e-2);
    worst = std::max(worst, r);
    differing += grads16[i].to_vector() != grads32[i].to_vector();
  }
  MESSAGE("ViT gradients: worst relative L2 difference " << worst << ", " << differing << " of " << grads32.size()
                                                         << " parameters differ from fp32");
  CHECK(differing == grads32.size());
}
