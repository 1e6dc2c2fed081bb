#include "test_util.hpp"

#include <limits>
#include <optional>
#ifdef _OPENMP
#include <omp.h>
#endif

using Inputs = std::vector<hg::Tensor<double>>;
using hg::cpu::AttentionTiles;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The op with chosen tiles; tiny tiles make small inputs span many partial tiles.
template <class T>
hg::Tensor<T> attention(const hg::Tensor<T>& q, const hg::Tensor<T>& k, const hg::Tensor<T>& v,
                        const hg::Tensor<T>& mask, AttentionTiles tiles, bool causal = false,
                        std::optional<double> scale = std::nullopt, double dropout_p = 0.0, hg::Generator* gen = nullptr) {
  return hg::detail::scaled_dot_product_attention(q, k, v, mask, dropout_p, causal, scale, gen, tiles);
}

// (softmax(q k^T * scale + mask) * dropped) v materialised in double, one [L, S] matrix per batch
// entry. q, k, v, mask and dropped (both optional; dropped holds 0 or 1/(1-p)) must already share
// one batch shape. A row whose scores are all -inf gives 0, the choice the op documents.
template <class T>
std::vector<double> naive_attention(const hg::Tensor<T>& q, const hg::Tensor<T>& k, const hg::Tensor<T>& v,
                                    const hg::Tensor<T>& mask, bool causal, double scale,
                                    const hg::Tensor<T>& dropped = hg::Tensor<T>()) {
  const int64_t L = q.size(-2), S = k.size(-2), E = q.size(-1), Ev = v.size(-1), batch = q.numel() / (L * E);
  std::vector<T> qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  std::vector<T> mv = mask.defined() ? mask.to_vector() : std::vector<T>();
  std::vector<T> dv = dropped.defined() ? dropped.to_vector() : std::vector<T>();
  std::vector<double> out(static_cast<size_t>(batch * L * Ev), 0.0), scores(static_cast<size_t>(S));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < L; ++i) {
      double row_max = -kInf;
      for (int64_t j = 0; j < S; ++j) {
        double s = 0;
        for (int64_t e = 0; e < E; ++e) s += double(qv[(b * L + i) * E + e]) * double(kv[(b * S + j) * E + e]);
        s *= scale;
        if (mask.defined()) s += double(mv[(b * L + i) * S + j]);
        if (causal && j > i) s = -kInf;
        scores[j] = s;
        row_max = std::max(row_max, s);
      }
      if (row_max == -kInf) continue;
      double total = 0;
      for (int64_t j = 0; j < S; ++j) total += scores[j] = std::exp(scores[j] - row_max);
      for (int64_t j = 0; j < S; ++j) {
        const double weight = scores[j] / total * (dropped.defined() ? double(dv[(b * L + i) * S + j]) : 1.0);
        for (int64_t c = 0; c < Ev; ++c) out[(b * L + i) * Ev + c] += weight * double(vv[(b * S + j) * Ev + c]);
      }
    }
  return out;
}

template <class T>
hg::Tensor<T> randn(const hg::Shape& shape, uint64_t seed) {
  hg::Generator gen(seed);
  return hg::randn<T>(shape, gen);
}

// A random additive mask with about a fifth of its entries -inf.
template <class T>
hg::Tensor<T> random_mask(const hg::Shape& shape, uint64_t seed) {
  hg::Generator gen(seed);
  hg::Tensor<T> values = hg::randn<T>(shape, gen), u = hg::rand<T>(shape, gen);
  return hg::masked_fill(values, hg::lt(u, T(0.2)), -std::numeric_limits<T>::infinity());
}

template <class T> double tolerance() { return std::is_same_v<T, float> ? 2e-5 : 1e-12; }

const std::vector<AttentionTiles> kTilings{AttentionTiles{}, AttentionTiles{8, 16}, AttentionTiles{5, 7},
                                           AttentionTiles{1, 1}};

}  // namespace

TEST_CASE_TEMPLATE("scaled_dot_product_attention matches a materialised softmax on odd, partial tiles", T, float, double) {
  const int64_t B = 2, H = 3, L = 37, S = 53, E = 24, Ev = 16;
  auto q = randn<T>({B, H, L, E}, 1), k = randn<T>({B, H, S, E}, 2), v = randn<T>({B, H, S, Ev}, 3);
  auto mask_ls = random_mask<T>({L, S}, 4);            // broadcast over batch and heads
  auto mask_b1 = random_mask<T>({B, 1, L, S}, 5);      // broadcast over heads
  const hg::Shape full{B, H, L, S};
  const double default_scale = 1.0 / std::sqrt(double(E));
  for (AttentionTiles tiles : kTilings) {
    CAPTURE(tiles.query_rows);
    CAPTURE(tiles.key_rows);
    hg::Tensor<T> none;
    check_close(attention(q, k, v, none, tiles), naive_attention(q, k, v, none, false, default_scale), tolerance<T>());
    check_close(attention(q, k, v, none, tiles, true), naive_attention(q, k, v, none, true, default_scale), tolerance<T>());
    check_close(attention(q, k, v, none, tiles, false, 0.3), naive_attention(q, k, v, none, false, 0.3), tolerance<T>());
    check_close(attention(q, k, v, mask_ls, tiles), naive_attention(q, k, v, mask_ls.expand(full), false, default_scale),
                tolerance<T>());
    check_close(attention(q, k, v, mask_b1, tiles, false, 0.7),
                naive_attention(q, k, v, mask_b1.expand(full), false, 0.7), tolerance<T>());
    check_close(attention(q, k, v, mask_ls, tiles, true), naive_attention(q, k, v, mask_ls.expand(full), true, default_scale),
                tolerance<T>());
    // L > S: causal rows past S see every key (top-left alignment).
    check_close(attention(k, q, v.slice(2, 0, L), none, tiles, true),
                naive_attention(k, q, v.slice(2, 0, L), none, true, default_scale), tolerance<T>());
  }
  hg::Tensor<T> out = hg::scaled_dot_product_attention(q, k, v, mask_ls);
  CHECK(out.shape() == hg::Shape{B, H, L, Ev});
}

TEST_CASE_TEMPLATE("scaled_dot_product_attention reads non-contiguous and broadcast q, k, v", T, float, double) {
  const int64_t B = 2, N = 29, H = 3, D = 8;
  const double scale = 1.0 / std::sqrt(double(D));
  // The ViT layout: qkv [B, N, 3, H, D] permuted to [3, B, H, N, D]; rows are H*D apart.
  auto qkv = randn<T>({B, N, 3, H, D}, 10).permute({2, 0, 3, 1, 4});
  auto q = qkv.select(0, 0), k = qkv.select(0, 1), v = qkv.select(0, 2);
  REQUIRE(!q.is_contiguous());
  for (AttentionTiles tiles : kTilings)
    check_close(attention(q, k, v, hg::Tensor<T>(), tiles), naive_attention(q, k, v, hg::Tensor<T>(), false, scale),
                tolerance<T>());
  // Transposed last two dims (columns not adjacent): the op copies them.
  auto qt = randn<T>({B, H, D, N}, 11).transpose(-1, -2), kt = randn<T>({B, H, D, N}, 12).transpose(-1, -2);
  check_close(hg::scaled_dot_product_attention(qt, kt, v, hg::Tensor<T>(), 0.0, true),
              naive_attention(qt, kt, v, hg::Tensor<T>(), true, scale), tolerance<T>());
  // Batch dims broadcast: one key/value set shared by every batch entry, and no batch dims at all.
  auto k_shared = randn<T>({H, 17, D}, 13), v_shared = randn<T>({1, H, 17, 5}, 14);
  check_close(attention(q, k_shared, v_shared, hg::Tensor<T>(), AttentionTiles{4, 6}),
              naive_attention(q, k_shared.expand({B, H, 17, D}), v_shared.expand({B, H, 17, 5}), hg::Tensor<T>(), false,
                              scale),
              tolerance<T>());
  auto q2 = randn<T>({11, D}, 15), k2 = randn<T>({13, D}, 16), v2 = randn<T>({13, 3}, 17);
  hg::Tensor<T> out2 = hg::scaled_dot_product_attention(q2, k2, v2);
  CHECK(out2.shape() == hg::Shape{11, 3});
  check_close(out2, naive_attention(q2, k2, v2, hg::Tensor<T>(), false, scale), tolerance<T>());
}

TEST_CASE_TEMPLATE("scaled_dot_product_attention matches PyTorch", T, float, double) {
  // q, k, v are rebuilt from the formulas used in the script; the expected values were printed by
  // torch 2.15 (CPU, float64): F.scaled_dot_product_attention(q, k, v, ...).
  auto q = hg::sin(hg::arange<T>(12) * T(0.7)).reshape({1, 2, 3, 2});
  auto k = hg::cos(hg::arange<T>(16) * T(0.3)).reshape({1, 2, 4, 2});
  auto v = (hg::arange<T>(24) * T(0.1) - T(1)).reshape({1, 2, 4, 3});
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-12;
  check_close(hg::scaled_dot_product_attention(q, k, v, {}, 0.0, true),  // is_causal=True; {} = no mask
              {-1.0, -0.9, -0.8, -0.8741926216022529, -0.7741926216022529, -0.6741926216022529, -0.6931800668185097,
               -0.5931800668185098, -0.4931800668185098, 0.20000000000000018, 0.30000000000000004, 0.40000000000000013,
               0.3583734063126562, 0.4583734063126562, 0.5583734063126563, 0.5053689555907568, 0.6053689555907569,
               0.7053689555907567},
              tol);
  auto mask = (hg::arange<T>(12) * T(0.25) - T(1.5)).reshape({3, 4});
  check_close(hg::scaled_dot_product_attention(q, k, v, mask, 0.0, false, 0.5),  // attn_mask=mask, scale=0.5
              {-0.5164478185458754, -0.4164478185458755, -0.3164478185458755, -0.6085957356999336, -0.5085957356999335,
               -0.4085957356999336, -0.45233340835235264, -0.3523334083523527, -0.25233340835235263, 0.6824569749776916,
               0.7824569749776916, 0.8824569749776916, 0.7301119547250843, 0.8301119547250844, 0.9301119547250842,
               0.8042361454408871, 0.9042361454408872, 1.004236145440887},
              tol);
  // attn_mask=[[T,F,T,T],[F,F,T,F],[T,T,T,T]] (bool: true = attend)
  auto keep = hg::gt(hg::tensor<T>({1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1}, {3, 4}), T(0.5));
  check_close(hg::scaled_dot_product_attention(q, k, v, keep),
              {-0.6042319591621933, -0.5042319591621934, -0.4042319591621934, -0.3999999999999999, -0.29999999999999993,
               -0.19999999999999996, -0.5410141606454157, -0.44101416064541576, -0.3410141606454158, 0.6240330300119006,
               0.7240330300119007, 0.8240330300119005, 0.8, 0.9000000000000001, 1.0, 0.7351643347210715,
               0.8351643347210715, 0.9351643347210716},
              tol);
}

TEST_CASE("scaled_dot_product_attention gives 0, not NaN, for fully masked rows") {
  auto q = randn<double>({1, 2, 6, 4}, 20), k = randn<double>({1, 2, 9, 4}, 21), v = randn<double>({1, 2, 9, 3}, 22);
  auto mask = randn<double>({6, 9}, 23);
  for (int64_t j = 0; j < 9; ++j) mask.at({2, j}) = -kInf;  // query 2 may see no key
  for (AttentionTiles tiles : kTilings) {
    auto out = attention(q, k, v, mask, tiles);
    check_close(out, naive_attention(q, k, v, mask.expand({1, 2, 6, 9}), false, 0.5), 1e-12);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t c = 0; c < 3; ++c) CHECK(out.at({0, h, 2, c}) == 0.0);
  }
  // Gradients stay finite and vanish for the hidden row.
  check_gradients([mask](const Inputs& in) { return attention(in[0], in[1], in[2], mask, AttentionTiles{2, 4}); },
                  {q, k, v});
  auto qg = q.detach().clone().requires_grad_();
  hg::sum(hg::scaled_dot_product_attention(qg, k, v, mask)).backward();
  for (double g : qg.grad().to_vector()) CHECK(std::isfinite(g));
  for (int64_t e = 0; e < 4; ++e) CHECK(qg.grad().at({0, 1, 2, e}) == 0.0);
  // No key at all (S = 0) is the same case.
  auto empty = hg::scaled_dot_product_attention(q, k.slice(2, 0, 0), v.slice(2, 0, 0));
  for (double x : empty.to_vector()) CHECK(x == 0.0);
}

TEST_CASE("gradcheck: scaled_dot_product_attention over q, k, v and the mask, across many tiles") {
  // B=1, H=2, L=5, S=7, E=3, Ev=4 with 2x3 tiles: partial tiles on both axes.
  const AttentionTiles tiles{2, 3};
  auto q = random_input({1, 2, 5, 3}, 30), k = random_input({1, 2, 7, 3}, 31), v = random_input({1, 2, 7, 4}, 32);
  hg::Tensor<double> none;
  check_gradients([&](const Inputs& in) { return attention(in[0], in[1], in[2], none, tiles); }, {q, k, v});
  check_gradients([&](const Inputs& in) { return attention(in[0], in[1], in[2], none, tiles, true, 0.8); }, {q, k, v});
  // Causal with L > S, key and value swapped roles.
  check_gradients([&](const Inputs& in) { return attention(in[0], in[1], in[2], none, tiles, true); },
                  {random_input({1, 2, 7, 3}, 33), random_input({1, 2, 5, 3}, 34), random_input({1, 2, 5, 2}, 35)});
  // Additive masks that require grad: broadcast over batch and heads, and over queries.
  check_gradients([&](const Inputs& in) { return attention(in[0], in[1], in[2], in[3], tiles); },
                  {q, k, v, random_input({5, 7}, 36)});
  check_gradients([&](const Inputs& in) { return attention(in[0], in[1], in[2], in[3], tiles, true); },
                  {q, k, v, random_input({2, 1, 7}, 37)});
  // Non-contiguous inputs (transposed storage, and the permuted ViT layout) and broadcast batch dims.
  check_gradients([&](const Inputs& in) { return attention(in[0], in[1], in[2], none, tiles); },
                  {random_input({2, 2, 5, 3}, 38, true), random_input({2, 7, 3}, 39, true), random_input({1, 7, 4}, 40)});
  check_gradients(
      [&](const Inputs& in) {
        auto qkv = in[0].permute({2, 0, 3, 1, 4});  // [B, N, 3, H, D] -> [3, B, H, N, D]
        return attention(qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2), none, tiles);
      },
      {random_input({1, 6, 3, 2, 3}, 41)});
}

TEST_CASE_TEMPLATE("scaled_dot_product_attention backward agrees across tilings and precisions", T, float, double) {
  const int64_t B = 2, H = 2, L = 37, S = 53, E = 24, Ev = 16;
  auto grads = [&](AttentionTiles tiles) {
    auto q = randn<T>({B, H, L, E}, 50).requires_grad_(), k = randn<T>({B, H, S, E}, 51).requires_grad_();
    auto v = randn<T>({B, H, S, Ev}, 52).requires_grad_(), mask = random_mask<T>({B, 1, L, S}, 53).requires_grad_();
    auto out = attention(q, k, v, mask, tiles, true);
    out.backward(randn<T>(out.shape(), 54));
    return std::vector<hg::Tensor<T>>{q.grad(), k.grad(), v.grad(), mask.grad()};
  };
  std::vector<hg::Tensor<double>> reference;  // double, default tiles (gradchecked above at small sizes)
  {
    auto q = randn<double>({B, H, L, E}, 50).requires_grad_(), k = randn<double>({B, H, S, E}, 51).requires_grad_();
    auto v = randn<double>({B, H, S, Ev}, 52).requires_grad_(), mask = random_mask<double>({B, 1, L, S}, 53).requires_grad_();
    auto out = attention(q, k, v, mask, AttentionTiles{}, true);
    out.backward(randn<double>(out.shape(), 54));
    reference = {q.grad(), k.grad(), v.grad(), mask.grad()};
  }
  for (AttentionTiles tiles : {AttentionTiles{}, AttentionTiles{5, 7}}) {
    auto got = grads(tiles);
    for (size_t i = 0; i < got.size(); ++i) {
      CAPTURE(i);
      std::vector<double> expected = reference[i].to_vector();
      check_close(got[i], expected, std::is_same_v<T, float> ? 1e-4 : 1e-11);
    }
  }
  // Randomly generated -inf entries leave those mask gradients exactly 0.
  CHECK(reference[3].shape() == hg::Shape{B, 1, L, S});
}

TEST_CASE("scaled_dot_product_attention dropout is reproducible, tiling-independent and drops about p") {
  const int64_t B = 2, H = 4, L = 64, S = 64;
  auto q = randn<double>({B, H, L, 8}, 60), k = randn<double>({B, H, S, 8}, 61);
  // v = identity, so the output rows are the dropped probabilities themselves.
  hg::Tensor<double> v = hg::zeros<double>({S, S});
  for (int64_t j = 0; j < S; ++j) v.at({j, j}) = 1.0;
  hg::Tensor<double> none;
  const double p = 0.3;
  hg::Generator gen(123);
  auto first = hg::scaled_dot_product_attention(q, k, v, none, p, false, std::nullopt, &gen);
  auto second = hg::scaled_dot_product_attention(q, k, v, none, p, false, std::nullopt, &gen);
  gen.manual_seed(123);
  auto again = attention(q, k, v, none, AttentionTiles{5, 7}, false, std::nullopt, p, &gen);
  check_close(again, first, 1e-12);  // same seed, other tiles: the same mask
  CHECK(first.to_vector() != second.to_vector());  // the generator advanced

  auto plain = hg::scaled_dot_product_attention(q, k, v);
  std::vector<double> dropped = first.to_vector(), kept = plain.to_vector();
  int64_t zeros = 0;
  for (size_t e = 0; e < dropped.size(); ++e) {
    if (dropped[e] == 0.0) ++zeros;
    else CHECK(dropped[e] == doctest::Approx(kept[e] / (1 - p)).epsilon(1e-12));  // kept ones scaled by 1/(1-p)
  }
  // 32768 draws: the standard deviation of the fraction is 0.0025.
  CHECK(double(zeros) / double(dropped.size()) == doctest::Approx(p).epsilon(0.05));

  // Element for element, the mask is hg::dropout's on the [B, H, L, S] probabilities drawn from the
  // same generator state: the fused op equals dropout(softmax(scores)) v.
  auto v_random = randn<double>({S, 5}, 62);
  gen.manual_seed(77);
  auto fused = attention(q, k, v_random, none, AttentionTiles{16, 24}, true, std::nullopt, p, &gen);
  gen.manual_seed(77);
  auto dropped_scale = hg::dropout(hg::ones<double>({B, H, L, S}), p, true, gen);
  check_close(fused, naive_attention(q, k, v_random.expand({B, H, S, 5}), none, true, 1.0 / std::sqrt(8.0), dropped_scale),
              1e-12);

  // p = 0 is exactly no dropout and draws nothing; p = 1 drops everything.
  uint64_t offset = gen.offset();
  CHECK(hg::scaled_dot_product_attention(q, k, v, none, 0.0, false, std::nullopt, &gen).to_vector() == kept);
  CHECK(gen.offset() == offset);
  for (double x : hg::scaled_dot_product_attention(q, k, v, none, 1.0, false, std::nullopt, &gen).to_vector())
    CHECK(x == 0.0);

#ifdef _OPENMP
  // The same seed gives the same bits whatever the thread count.
  int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  gen.manual_seed(5);
  auto serial = hg::scaled_dot_product_attention(q, k, v, none, p, true, std::nullopt, &gen);
  omp_set_num_threads(std::max(2, threads));
  gen.manual_seed(5);
  auto parallel = hg::scaled_dot_product_attention(q, k, v, none, p, true, std::nullopt, &gen);
  omp_set_num_threads(threads);
  CHECK(serial.to_vector() == parallel.to_vector());
#endif
}

TEST_CASE("gradcheck: scaled_dot_product_attention with dropout regenerates the forward's mask") {
  hg::Generator gen(0);
  auto q = random_input({1, 2, 5, 3}, 70), k = random_input({1, 2, 7, 3}, 71), v = random_input({1, 2, 7, 4}, 72);
  // Re-seeded inside, so every evaluation (and the backward) sees one mask.
  check_gradients(
      [&gen](const Inputs& in) {
        gen.manual_seed(99);
        return attention(in[0], in[1], in[2], in[3], AttentionTiles{2, 3}, true, std::nullopt, 0.4, &gen);
      },
      {q, k, v, random_input({5, 7}, 73)});
}

TEST_CASE("scaled_dot_product_attention errors name the op") {
  auto q = hg::zeros<float>({2, 3, 5, 4}), k = hg::zeros<float>({2, 3, 6, 4}), v = hg::zeros<float>({2, 3, 6, 8});
  CHECK_THROWS_WITH_AS(hg::scaled_dot_product_attention(q, hg::zeros<float>({2, 3, 6, 5}), v),
                       doctest::Contains("scaled_dot_product_attention: expected key's last dim to equal query's "
                                         "embedding size 4"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::scaled_dot_product_attention(q, k, hg::zeros<float>({2, 3, 7, 8})),
                       doctest::Contains("scaled_dot_product_attention: expected value's sequence length to equal key's 6"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::scaled_dot_product_attention(q, k, v, hg::zeros<float>({5, 7})),
                       doctest::Contains("scaled_dot_product_attention: expected attn_mask broadcastable to [2, 3, 5, 6]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::scaled_dot_product_attention(q, k, v, hg::zeros<float>({4, 2, 3, 5, 6})),
                       doctest::Contains("got shape [4, 2, 3, 5, 6]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::scaled_dot_product_attention(q, hg::zeros<float>({4, 3, 6, 4}), v),
                       doctest::Contains("scaled_dot_product_attention: expected the batch dims"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::scaled_dot_product_attention(hg::zeros<float>({4}), k, v),
                       doctest::Contains("scaled_dot_product_attention: expected query [..., L, E]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::scaled_dot_product_attention(q, k, v, hg::Tensor<float>(), 1.5),
                       doctest::Contains("scaled_dot_product_attention: expected dropout_p in [0, 1], got 1.5"), hg::Error);
}
