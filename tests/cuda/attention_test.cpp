// cuda/attention.cu against a float64 CPU reference written here (naive loops over the exact
// definition): forward out and logsumexp, backward dq, dk, dv, for the reference kernel and the
// flash kernel alike, so a wrong flash kernel still shows a working harness beside it. Outputs
// are poisoned (NaN) before every run, so unwritten elements fail; NaN never passes.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "histograd/cuda/attention.hpp"

namespace {

using hg::cuda::AttentionKernel;
using hg::test::DeviceBuffer;
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Case {
  int64_t B = 2, H = 3, Nq = 64, Nk = 64, D = 64;
  bool causal = false, mask = false, padding = false;
  float scale = 0.0f;
};

std::string describe(const Case& c) {
  return hg::detail::concat("B ", c.B, " H ", c.H, " Nq ", c.Nq, " Nk ", c.Nk, " D ", c.D, c.causal ? " causal" : "",
                            c.mask ? " mask" : "", c.padding ? " padding" : "", c.scale != 0 ? " scale" : "");
}

struct Inputs {
  std::vector<double> q, k, v, dout;  // the values the GPU sees (already rounded to T)
  std::vector<float> mask;            // [1, H, Nq, Nk] (broadcast over batch), -inf where hidden
  std::vector<uint8_t> padding;       // [B, Nk], 1 = ignored key
};

struct Expected {
  std::vector<double> out, lse, dq, dk, dv;
};

// softmax(scale q k^T + bias) v and its gradients, straight from the definitions, in float64.
Expected cpu_attention(const Case& c, const Inputs& in) {
  const double scale = c.scale != 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.D));
  Expected e;
  e.out.assign(c.B * c.H * c.Nq * c.D, 0.0);
  e.lse.assign(c.B * c.H * c.Nq, kInf);
  e.dq.assign(c.B * c.H * c.Nq * c.D, 0.0);
  e.dk.assign(c.B * c.H * c.Nk * c.D, 0.0);
  e.dv.assign(c.B * c.H * c.Nk * c.D, 0.0);
  std::vector<double> s(c.Nk), prob(c.Nk), dprob(c.Nk);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h) {
      const int64_t bh = b * c.H + h;
      auto Q = [&](int64_t i, int64_t d) { return in.q[(bh * c.Nq + i) * c.D + d]; };
      auto K = [&](int64_t j, int64_t d) { return in.k[(bh * c.Nk + j) * c.D + d]; };
      auto V = [&](int64_t j, int64_t d) { return in.v[(bh * c.Nk + j) * c.D + d]; };
      auto dO = [&](int64_t i, int64_t d) { return in.dout[(bh * c.Nq + i) * c.D + d]; };
      for (int64_t i = 0; i < c.Nq; ++i) {
        double mx = -kInf;
        for (int64_t j = 0; j < c.Nk; ++j) {
          double bias = 0;
          if (c.causal && j > i) bias = -kInf;
          if (c.padding && in.padding[b * c.Nk + j]) bias = -kInf;
          if (c.mask && bias == 0) bias = in.mask[(h * c.Nq + i) * c.Nk + j];
          if (bias == -kInf) {
            s[j] = -kInf;
            continue;
          }
          double dot = 0;
          for (int64_t d = 0; d < c.D; ++d) dot += Q(i, d) * K(j, d);
          s[j] = dot * scale + bias;
          mx = std::max(mx, s[j]);
        }
        if (mx == -kInf) continue;  // sees no key: out 0, lse +inf, no gradient
        double sum = 0;
        for (int64_t j = 0; j < c.Nk; ++j) sum += prob[j] = std::exp(s[j] - mx);
        e.lse[bh * c.Nq + i] = mx + std::log(sum);
        double delta = 0;
        for (int64_t j = 0; j < c.Nk; ++j) {
          prob[j] /= sum;
          double dp = 0;
          for (int64_t d = 0; d < c.D; ++d) {
            e.out[(bh * c.Nq + i) * c.D + d] += prob[j] * V(j, d);
            dp += dO(i, d) * V(j, d);
          }
          dprob[j] = dp;
          delta += prob[j] * dp;
        }
        for (int64_t j = 0; j < c.Nk; ++j) {
          const double ds = prob[j] * (dprob[j] - delta);
          for (int64_t d = 0; d < c.D; ++d) {
            e.dq[(bh * c.Nq + i) * c.D + d] += scale * ds * K(j, d);
            e.dk[(bh * c.Nk + j) * c.D + d] += scale * ds * Q(i, d);
            e.dv[(bh * c.Nk + j) * c.D + d] += prob[j] * dO(i, d);
          }
        }
      }
    }
  return e;
}

// lse: +inf exactly where the reference has it, relative error over the rest.
double lse_error(const std::vector<double>& ref, const std::vector<float>& got) {
  std::vector<double> r;
  std::vector<float> g;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i])) {
      if (!(std::isinf(got[i]) && got[i] > 0)) return kInf;
      continue;
    }
    r.push_back(ref[i]);
    g.push_back(got[i]);
  }
  return hg::test::relative_error(r, g);
}

// flash runs the Hopper (wgmma) forward at head dim 128 and the Hopper backward at 64 and 128
// where attention_hopper_available() (the backward unless HISTOGRAD_ATTENTION_BWD=v1), else flash_v1.
std::string kernel_label(AttentionKernel kernel, int64_t D) {
  switch (kernel) {
    case AttentionKernel::reference: return "reference";
    case AttentionKernel::flash_v1: return "flash_v1";
    case AttentionKernel::flash: {
      if (!hg::cuda::attention_hopper_available() || (D != 64 && D != 128)) return "flash(=v1)";
      const std::string forward = D == 128 ? "hopper fwd" : "v1 fwd";
      return "flash(" + forward + (hg::cuda::attention_hopper_backward_available() ? ", hopper bwd)" : ", v1 bwd)");
    }
    default: return "automatic";
  }
}

template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  else if constexpr (std::is_same_v<T, hg::bfloat16>) return 1e-2;
  else return 5e-3;
}

template <class T>
void check_case(const Case& c, AttentionKernel kernel, uint64_t seed) {
  using hg::test::as_doubles;
  using hg::test::random_values;
  CAPTURE(describe(c));
  CAPTURE(hg::dtype_name<T>());
  const std::string kernel_name = kernel_label(kernel, c.D);
  CAPTURE(kernel_name);
  const size_t nq = c.B * c.H * c.Nq * c.D, nk = c.B * c.H * c.Nk * c.D;
  const std::vector<T> q = random_values<T>(nq, seed), k = random_values<T>(nk, seed + 1),
                       v = random_values<T>(nk, seed + 2), dout = random_values<T>(nq, seed + 3);
  Inputs in{as_doubles(q), as_doubles(k), as_doubles(v), as_doubles(dout), {}, {}};
  if (c.mask) {
    const std::vector<double> m = random_input({c.H * c.Nq * c.Nk}, seed + 4).to_vector();
    in.mask.resize(m.size());
    for (size_t i = 0; i < m.size(); ++i)  // about one score in ten hidden
      in.mask[i] = m[i] > 1.3 ? -std::numeric_limits<float>::infinity() : static_cast<float>(0.5 * m[i]);
    if (c.Nq > 1)  // head 0's row 1 sees nothing at all
      std::fill(in.mask.begin() + c.Nk, in.mask.begin() + 2 * c.Nk, -std::numeric_limits<float>::infinity());
  }
  if (c.padding) {
    in.padding.assign(c.B * c.Nk, 0);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = 0; j < c.Nk; ++j) in.padding[b * c.Nk + j] = (j >= c.Nk - 3 * (b + 1)) || (j % 7 == 3);
  }
  const Expected e = cpu_attention(c, in);

  DeviceBuffer<T> dq_(q), dk_(k), dv_(v), ddout(dout), out(nq), dq(nq), dk(nk), dv(nk);
  DeviceBuffer<float> lse(c.B * c.H * c.Nq), mask(in.mask.size());
  DeviceBuffer<uint8_t> padding(in.padding.size());
  hg::cuda::AttentionOptions options;
  options.scale = c.scale;
  options.causal = c.causal;
  options.kernel = kernel;
  if (c.mask) {
    mask.upload(in.mask);
    options.mask = mask.ptr;
    options.mask_stride_b = 0, options.mask_stride_h = c.Nq * c.Nk, options.mask_stride_q = c.Nk,
    options.mask_stride_k = 1;
  }
  if (c.padding) {
    padding.upload(in.padding);
    options.key_padding = padding.ptr;
  }
  const hg::cuda::AttentionShape shape{c.B, c.H, c.Nq, c.Nk, c.D};
  DeviceBuffer<float> workspace((hg::cuda::attention_backward_workspace_bytes(shape) + 3) / 4);

  hg::cuda::attention_forward(dq_.ptr, dk_.ptr, dv_.ptr, out.ptr, lse.ptr, shape, options);
  hg::cuda::attention_backward(dq_.ptr, dk_.ptr, dv_.ptr, out.ptr, ddout.ptr, lse.ptr, dq.ptr, dk.ptr, dv.ptr,
                               workspace.ptr, shape, options);
  const double tol = tolerance<T>();
  const double err_out = hg::test::relative_error(e.out, out.download());
  const double err_lse = lse_error(e.lse, lse.download());
  const double err_dq = hg::test::relative_error(e.dq, dq.download());
  const double err_dk = hg::test::relative_error(e.dk, dk.download());
  const double err_dv = hg::test::relative_error(e.dv, dv.download());
  MESSAGE(describe(c) << " " << hg::dtype_name<T>() << " " << kernel_name
                      << ": out " << err_out << " lse " << err_lse << " dq " << err_dq << " dk " << err_dk << " dv "
                      << err_dv);
  CHECK(err_out <= tol);
  CHECK(err_lse <= tol);
  CHECK(err_dq <= tol);
  CHECK(err_dk <= tol);
  CHECK(err_dv <= tol);
}

// Every case on the reference kernel, and on both flash kernels where they apply (16-bit types).
template <class T>
void check_both(const Case& c, uint64_t seed) {
  check_case<T>(c, AttentionKernel::reference, seed);
  if constexpr (!std::is_same_v<T, float>)
    if (c.D == 32 || c.D == 64 || c.D == 96 || c.D == 128) {
      check_case<T>(c, AttentionKernel::flash_v1, seed);
      check_case<T>(c, AttentionKernel::flash, seed);
    }
}

template <class T>
void check_all_shapes() {
  uint64_t seed = 100;
  for (int64_t D : {32, 64, 128})
    for (int64_t N : {1, 7, 64, 197, 257}) {
      Case c;
      c.D = D, c.Nq = N, c.Nk = N;
      check_both<T>(c, seed += 10);
    }
}

template <class T>
void check_masks_and_lengths() {
  uint64_t seed = 1000;
  auto with = [](int64_t Nq, int64_t Nk, int64_t D, bool causal, bool mask, bool padding) {
    Case c;
    c.Nq = Nq, c.Nk = Nk, c.D = D, c.causal = causal, c.mask = mask, c.padding = padding;
    return c;
  };
  check_both<T>(with(100, 257, 64, false, false, false), seed += 10);  // Nq != Nk
  check_both<T>(with(197, 50, 128, false, false, false), seed += 10);
  check_both<T>(with(197, 197, 64, true, false, false), seed += 10);  // causal
  check_both<T>(with(64, 130, 64, true, false, false), seed += 10);   // causal, more keys than queries
  check_both<T>(with(130, 64, 128, true, false, false), seed += 10);  // causal, fewer keys
  check_both<T>(with(197, 197, 64, false, true, false), seed += 10);  // additive mask with -inf
  check_both<T>(with(197, 197, 32, false, false, true), seed += 10);  // key padding
  check_both<T>(with(257, 257, 128, true, true, true), seed += 10);   // all at once
  check_both<T>(with(70, 70, 96, false, true, false), seed += 10);    // head dim 96
  check_both<T>(with(300, 389, 128, true, false, false), seed += 10);  // several 128-row/key blocks, causal
  check_both<T>(with(389, 300, 64, false, false, true), seed += 10);   // several blocks, padding
  check_both<T>(with(33, 40, 80, false, false, false), seed += 10);   // head dim 80: reference only
  Case scaled = with(64, 64, 64, false, false, false);
  scaled.scale = 0.3f;
  check_both<T>(scaled, seed += 10);
  Case many_heads = with(65, 65, 64, false, false, true);  // B*H = 20
  many_heads.B = 4, many_heads.H = 5;
  check_both<T>(many_heads, seed += 10);
}

}  // namespace

TEST_CASE("cuda attention: launchers reject bad shapes and an inapplicable flash kernel without a device") {
  hg::cuda::AttentionShape shape{1, 1, 4, 4, 0};
  CHECK_THROWS_WITH_AS(hg::cuda::attention_forward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, shape),
                       doctest::Contains("attention_forward: expected head_dim in [1, 256], got 0"), hg::Error);
  shape.head_dim = 64;
  hg::cuda::AttentionOptions flash;
  flash.kernel = AttentionKernel::flash;
  CHECK_THROWS_WITH_AS(hg::cuda::attention_forward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, shape, flash),
                       doctest::Contains("attention_forward: expected bf16/fp16 with head_dim 32, 64, 96 or 128"),
                       hg::Error);
  shape.head_dim = 80;
  CHECK_THROWS_WITH_AS(
      hg::cuda::attention_forward<hg::bfloat16>(nullptr, nullptr, nullptr, nullptr, nullptr, shape, flash),
      doctest::Contains("got bfloat16 with head_dim 80"), hg::Error);
  shape.head_dim = 64;
  CHECK_THROWS_WITH_AS(hg::cuda::attention_backward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                           nullptr, nullptr, nullptr, nullptr, shape),
                       doctest::Contains("attention_backward: expected a 16-byte aligned workspace"), hg::Error);
}

TEST_CASE("cuda attention: head dims 32/64/128 at N = 1, 7, 64, 197, 257 against float64") {
  HG_REQUIRE_GPU();
  check_all_shapes<float>();
  check_all_shapes<hg::bfloat16>();
  check_all_shapes<hg::half>();
}

TEST_CASE("cuda attention: Nq != Nk, causal, additive and padding masks, head dims 96 and 80, B*H > 1") {
  HG_REQUIRE_GPU();
  check_masks_and_lengths<float>();
  check_masks_and_lengths<hg::bfloat16>();
  check_masks_and_lengths<hg::half>();
}

TEST_CASE("cuda attention: no keys gives out 0 and logsumexp +inf; no queries gives dk = dv = 0") {
  HG_REQUIRE_GPU();
  for (AttentionKernel kernel : {AttentionKernel::reference, AttentionKernel::flash_v1, AttentionKernel::flash}) {
    const hg::cuda::AttentionShape no_keys{1, 2, 5, 0, 64};
    DeviceBuffer<hg::bfloat16> q(hg::test::random_values<hg::bfloat16>(640, 7)), kv(1), out(640);
    DeviceBuffer<float> lse(10);
    hg::cuda::AttentionOptions options;
    options.kernel = kernel;
    hg::cuda::attention_forward(q.ptr, kv.ptr, kv.ptr, out.ptr, lse.ptr, no_keys, options);
    for (hg::bfloat16 x : out.download()) CHECK(static_cast<float>(x) == 0.0f);
    for (float x : lse.download()) CHECK((std::isinf(x) && x > 0));

    const hg::cuda::AttentionShape no_queries{1, 2, 0, 5, 64};
    DeviceBuffer<hg::bfloat16> k(hg::test::random_values<hg::bfloat16>(640, 8)), dk(640), dv(640), none(1);
    DeviceBuffer<float> no_lse(1), workspace(4);
    hg::cuda::attention_backward(none.ptr, k.ptr, k.ptr, none.ptr, none.ptr, no_lse.ptr, none.ptr, dk.ptr, dv.ptr,
                                 workspace.ptr, no_queries, options);
    for (hg::bfloat16 x : dk.download()) CHECK(static_cast<float>(x) == 0.0f);
    for (hg::bfloat16 x : dv.download()) CHECK(static_cast<float>(x) == 0.0f);
  }
}

TEST_CASE("cuda attention: the flash backwards give the same dk and dv bits on every run") {
  HG_REQUIRE_GPU();
  // dq goes through fp32 atomics (order may vary); dk and dv are each one CTA's registers.
  for (AttentionKernel kernel : {AttentionKernel::flash_v1, AttentionKernel::flash})
    for (int64_t D : {64, 128}) {
      const std::string kernel_name = kernel_label(kernel, D);
      CAPTURE(kernel_name);
      CAPTURE(D);
      const hg::cuda::AttentionShape shape{2, 3, 300, 260, D};
      const size_t nq = static_cast<size_t>(2 * 3 * 300 * D), nk = static_cast<size_t>(2 * 3 * 260 * D);
      DeviceBuffer<hg::bfloat16> q(hg::test::random_values<hg::bfloat16>(nq, 21)),
          k(hg::test::random_values<hg::bfloat16>(nk, 22)), v(hg::test::random_values<hg::bfloat16>(nk, 23)),
          dout(hg::test::random_values<hg::bfloat16>(nq, 24)), out(nq), dq(nq), dk(nk), dv(nk);
      DeviceBuffer<float> lse(2 * 3 * 300), workspace((hg::cuda::attention_backward_workspace_bytes(shape) + 3) / 4);
      hg::cuda::AttentionOptions options;
      options.kernel = kernel;
      hg::cuda::attention_forward(q.ptr, k.ptr, v.ptr, out.ptr, lse.ptr, shape, options);
      hg::cuda::attention_backward(q.ptr, k.ptr, v.ptr, out.ptr, dout.ptr, lse.ptr, dq.ptr, dk.ptr, dv.ptr,
                                   workspace.ptr, shape, options);
      const std::vector<hg::bfloat16> dk1 = dk.download(), dv1 = dv.download();
      hg::cuda::attention_backward(q.ptr, k.ptr, v.ptr, out.ptr, dout.ptr, lse.ptr, dq.ptr, dk.ptr, dv.ptr,
                                   workspace.ptr, shape, options);
      const std::vector<hg::bfloat16> dk2 = dk.download(), dv2 = dv.download();
      CHECK(std::memcmp(dk1.data(), dk2.data(), nk * sizeof(hg::bfloat16)) == 0);
      CHECK(std::memcmp(dv1.data(), dv2.data(), nk * sizeof(hg::bfloat16)) == 0);
    }
}

TEST_CASE("cuda attention: dilated gather/scatter follow the LongNet index formula and round-trip") {
  HG_REQUIRE_GPU();
  // [B, N, H, D] sparse layout, N not a multiple of w, H not a multiple of r.
  for (const std::array<int64_t, 3>& nwr : {std::array<int64_t, 3>{23, 8, 2}, {23, 8, 3}, {16, 32, 4}, {10, 4, 1}}) {
    const int64_t B = 2, H = 5, D = 3, N = nwr[0], w = nwr[1], r = nwr[2];
    CAPTURE(N);
    CAPTURE(w);
    CAPTURE(r);
    hg::cuda::DilatedShape s;
    s.batch = B, s.seq_len = N, s.heads = H, s.head_dim = D, s.segment = w, s.dilation = r;
    s.stride_b = N * H * D, s.stride_n = H * D, s.stride_h = D;
    const int64_t we = std::min(w, N), S = (N + we - 1) / we, G = (H + r - 1) / r, kept = (we + r - 1) / r;
    REQUIRE(s.segments() == S);
    REQUIRE(s.kept() == kept);
    const std::vector<float> x = hg::test::random_values<float>(B * N * H * D, 77);
    std::vector<double> dense_ref(B * S * H * kept * D, 0.0), back_ref(x.size(), -1e8);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t sg = 0; sg < S; ++sg)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t l = 0; l < kept; ++l) {
            const int64_t pos = l * r + h / G, n = sg * we + pos;
            if (pos >= we || n >= N) continue;
            for (int64_t d = 0; d < D; ++d) {
              const int64_t src = ((b * N + n) * H + h) * D + d;
              dense_ref[(((b * S + sg) * H + h) * kept + l) * D + d] = x[src];
              back_ref[src] = x[src];
            }
          }
    DeviceBuffer<float> sparse(x), dense(dense_ref.size()), back(x.size());
    hg::cuda::dilated_gather(sparse.ptr, dense.ptr, s);
    CHECK(hg::test::relative_error(dense_ref, dense.download()) == 0.0);
    hg::cuda::dilated_scatter(dense.ptr, back.ptr, s, -1e8f);
    CHECK(hg::test::relative_error(back_ref, back.download()) == 0.0);
  }
}
