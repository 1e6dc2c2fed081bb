#include <fstream>
#include <sstream>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.hpp"

using Inputs = std::vector<hg::Tensor<double>>;

namespace {

struct ConvConfig {
  hg::Shape x_shape, w_shape;
  hg::IntPair stride, padding, dilation;
  int64_t groups;
  bool bias;
};

// Direct convolution from the definition, in double: the independent reference.
template <class T>
std::vector<double> reference_conv2d(const hg::Tensor<T>& x, const hg::Tensor<T>& w, const hg::Tensor<T>& b,
                                     const ConvConfig& c) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), Cg = w.size(1), kh = w.size(2), kw = w.size(3), Og = O / c.groups;
  const int64_t OH = (H + 2 * c.padding.h - c.dilation.h * (kh - 1) - 1) / c.stride.h + 1;
  const int64_t OW = (W + 2 * c.padding.w - c.dilation.w * (kw - 1) - 1) / c.stride.w + 1;
  (void)C;
  std::vector<double> out;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b.defined() ? double(b.at({o})) : 0.0;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                int64_t ih = oh * c.stride.h - c.padding.h + i * c.dilation.h;
                int64_t iw = ow * c.stride.w - c.padding.w + j * c.dilation.w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += double(w.at({o, ci, i, j})) * double(x.at({n, o / Og * Cg + ci, ih, iw}));
              }
          out.push_back(acc);
        }
  return out;
}

const std::vector<ConvConfig>& configs() {
  static const std::vector<ConvConfig> list = {
      {{2, 6, 9, 9}, {4, 3, 3, 3}, 2, 1, 2, 2, true},           // every hyper-parameter at once
      {{1, 3, 8, 7}, {5, 3, 2, 3}, {2, 1}, {0, 2}, 1, 1, true},  // rectangular everything
      {{2, 4, 6, 5}, {4, 1, 3, 3}, 1, 1, 1, 4, false},          // depthwise
      {{3, 5, 4, 6}, {7, 5, 1, 1}, 1, 0, 1, 1, true},           // 1x1: the patch path
      {{2, 3, 8, 12}, {6, 3, 4, 4}, 4, 0, 1, 1, true},          // kernel == stride: the patch path
      {{1, 2, 9, 9}, {3, 2, 4, 4}, 4, 0, 1, 1, true},           // kernel == stride, 9 % 4 != 0: im2col drops the rest
      {{2, 8, 5, 5}, {8, 2, 3, 2}, {1, 2}, {2, 0}, {1, 2}, 4, false},
  };
  return list;
}

template <class T>
hg::Tensor<T> make(const hg::Shape& shape, uint64_t seed) {
  hg::Generator gen(seed);
  return hg::randn<T>(shape, gen);
}


}  // namespace

TEST_CASE_TEMPLATE("conv2d matches a direct convolution loop", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  uint64_t seed = 1;
  for (const ConvConfig& c : configs()) {
    auto x = make<T>(c.x_shape, seed++), w = make<T>(c.w_shape, seed++);
    auto b = c.bias ? make<T>({c.w_shape[0]}, seed++) : hg::Tensor<T>();
    auto y = hg::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
    INFO("x " << hg::to_string(c.x_shape) << " w " << hg::to_string(c.w_shape) << " groups " << c.groups);
    check_close(y, reference_conv2d(x, w, b, c), tol);
    // a non-contiguous input gives the same bits as its contiguous copy
    auto xt = make<T>({c.x_shape[0], c.x_shape[1], c.x_shape[3], c.x_shape[2]}, 99).transpose(2, 3);
    REQUIRE(!xt.is_contiguous());
    CHECK(hg::conv2d(xt, w, b, c.stride, c.padding, c.dilation, c.groups).to_vector() ==
          hg::conv2d(xt.contiguous(), w, b, c.stride, c.padding, c.dilation, c.groups).to_vector());
  }
}

TEST_CASE_TEMPLATE("patch_embed equals conv2d with kernel == stride, bit for bit", T, float, double) {
  auto x = make<T>({2, 3, 32, 48}, 11), w = make<T>({24, 3, 16, 16}, 12), b = make<T>({24}, 13);
  auto tokens = hg::patch_embed(x, w, b);
  CHECK(tokens.shape() == hg::Shape{2, 24, 2, 3});
  auto conv = hg::conv2d(x, w, b, 16);
  CHECK(tokens.to_vector() == conv.to_vector());
  ConvConfig c{{2, 3, 32, 48}, {24, 3, 16, 16}, 16, 0, 1, 1, true};
  // Each output sums K = 768 products of N(0, 1) terms (|y| ~ 28), so float rounding of the sum
  // is ~1e-5 in absolute terms even where y itself is near 0: compare at 5e-5 (double: 1e-12).
  check_close(tokens, reference_conv2d(x, w, b, c), std::is_same_v<T, float> ? 5e-5 : 1e-12);
  // The ViT token layout [N, Hp·Wp, D] comes out contiguous, without a copy.
  auto seq = tokens.flatten(2).transpose(1, 2);
  CHECK(seq.shape() == hg::Shape{2, 6, 24});
  CHECK(seq.is_contiguous());
  // no bias, non-contiguous image
  auto xs = make<T>({1, 3, 8, 8}, 14).transpose(2, 3);
  auto w4 = make<T>({5, 3, 4, 4}, 15);
  CHECK(hg::patch_embed(xs, w4).to_vector() == hg::conv2d(xs, w4, hg::Tensor<T>(), 4).to_vector());
  check_close(hg::patch_embed(xs, w4), reference_conv2d(xs, w4, hg::Tensor<T>(), ConvConfig{{}, {}, 4, 0, 1, 1, false}),
              std::is_same_v<T, float> ? 1e-5 : 1e-12);
}

TEST_CASE("conv2d and its gradients match PyTorch (fixtures from scripts/gen_interp_fixtures.py)") {
  std::string dir = std::string(HISTOGRAD_FIXTURES_DIR) + "/conv/";
  int cases = 0;
  for (const std::string& line : fixture_index_lines(dir)) {
    std::istringstream fields(line);
    std::string name;
    int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    fields >> name >> N >> C >> H >> W >> O >> kh >> kw >> sh >> sw >> ph >> pw >> dh >> dw >> groups;
    REQUIRE(!fields.fail());
    INFO("fixture " << name);
    auto load = [&](const std::string& what, const hg::Shape& shape) {
      return hg::from_vector<float>(read_floats(dir + name + "." + what + ".bin", hg::numel_of(shape)), shape);
    };
    auto x = load("x", {N, C, H, W}), w = load("w", {O, C / groups, kh, kw}), b = load("b", {O});
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_();
    auto y = hg::conv2d(x, w, b, {sh, sw}, {ph, pw}, {dh, dw}, groups);
    auto expected_y = load("y", y.shape());
    check_close(y, expected_y, 1e-5);
    y.backward(load("gy", y.shape()));
    check_close(x.grad(), load("gx", x.shape()), 1e-5);
    check_close(w.grad(), load("gw", w.shape()), 1e-5);
    check_close(b.grad(), load("gb", b.shape()), 1e-5);
    ++cases;
  }
  CHECK(cases == 2);
}

TEST_CASE("gradcheck: conv2d and patch_embed") {
  for (const ConvConfig& c : configs()) {
    INFO("x " << hg::to_string(c.x_shape) << " w " << hg::to_string(c.w_shape));
    auto x = random_input(c.x_shape, 21, true), w = random_input(c.w_shape, 22);
    auto conv = [&c](const Inputs& in) {
      return hg::conv2d(in[0], in[1], in.size() > 2 ? in[2] : hg::Tensor<double>(), c.stride, c.padding, c.dilation,
                        c.groups);
    };
    if (c.bias)
      check_gradients(conv, {x, w, random_input({c.w_shape[0]}, 23)});
    else
      check_gradients(conv, {x, w});
  }
  check_gradients([](const Inputs& in) { return hg::patch_embed(in[0], in[1], in[2]).flatten(2).transpose(1, -1); },
                  {random_input({2, 2, 6, 9}, 24, true), random_input({4, 2, 3, 3}, 25), random_input({4}, 26)});
  // only the weight needs a gradient (a frozen image), and only the input (a frozen stem)
  auto x = random_input({1, 3, 7, 7}, 27), w = random_input({2, 3, 3, 3}, 28);
  check_gradients([x](const Inputs& in) { return hg::conv2d(x, in[0], {}, 2, 1); }, {w});
  check_gradients([w](const Inputs& in) { return hg::conv2d(in[0], w, {}, 2, 1); }, {x});
}

TEST_CASE("conv2d gives the same bits whatever the thread count") {
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  // depth 576 > Eigen's parallel k-block, so an Eigen-threaded product would round differently
  struct Case { hg::Shape x, w; int64_t stride, padding; };
  for (const Case& c : std::vector<Case>{{{1, 64, 12, 12}, {48, 64, 3, 3}, 1, 1},
                                          {{3, 64, 10, 10}, {40, 64, 3, 3}, 2, 1},
                                          {{1, 3, 64, 64}, {96, 3, 16, 16}, 16, 0},
                                          {{4, 3, 64, 32}, {80, 3, 16, 16}, 16, 0}}) {
    auto x = make<float>(c.x, 31), w = make<float>(c.w, 32), b = make<float>({c.w[0]}, 33);
    std::vector<std::vector<float>> runs;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      auto xr = x.detach(), wr = w.detach(), br = b.detach();
      xr.requires_grad_(), wr.requires_grad_(), br.requires_grad_();
      auto y = hg::conv2d(xr, wr, br, c.stride, c.padding);
      y.backward(hg::ones_like(y.detach()) * 0.5f + y.detach());
      std::vector<float> all = y.to_vector();
      for (auto& t : {xr.grad(), wr.grad(), br.grad()}) {
        auto v = t.to_vector();
        all.insert(all.end(), v.begin(), v.end());
      }
      runs.push_back(all);
    }
    omp_set_num_threads(saved);
    INFO("x " << hg::to_string(c.x) << " w " << hg::to_string(c.w));
    CHECK(runs[0] == runs[1]);
    CHECK(runs[0] == runs[2]);
  }
#else
  MESSAGE("built without OpenMP: one thread only, nothing to compare");
#endif
}

TEST_CASE("conv2d and patch_embed errors name the op and the sizes") {
  auto x = hg::zeros<float>({1, 5, 8, 8});
  auto w = hg::zeros<float>({4, 5, 3, 3});
  auto throws = [](auto&& call, const char* message) {
    CHECK_THROWS_WITH_AS(call(), doctest::Contains(message), hg::Error);
  };
  throws([&] { return hg::conv2d(x, hg::zeros<float>({4, 3, 3, 3}), {}, 1, 0, 1, 2); },
         "conv2d: expected input with 6 channels (weight [4, 3, 3, 3] with groups=2), got 5");
  throws([&] { return hg::conv2d(hg::zeros<float>({5, 8, 8}), w); },
         "conv2d: expected a 4-D input [N, C, H, W], got shape [5, 8, 8]");
  throws([&] { return hg::conv2d(x, hg::zeros<float>({4, 5, 3})); }, "conv2d: expected a 4-D weight");
  throws([&] { return hg::conv2d(x, hg::zeros<float>({4, 5, 9, 3})); },
         "conv2d: expected a positive output size, but the padded input 8x8 is smaller than the dilated kernel 9x3");
  throws([&] { return hg::conv2d(x, w, {}, 1, 0, 4); }, "smaller than the dilated kernel 9x9");
  throws([&] { return hg::conv2d(x, w, hg::zeros<float>({3})); }, "conv2d: expected a bias of shape [4], got [3]");
  throws([&] { return hg::conv2d(x, w, {}, 0); }, "conv2d: expected a positive stride");
  throws([&] { return hg::conv2d(x, w, {}, 1, -1); }, "conv2d: expected a non-negative padding");
  throws([&] { return hg::conv2d(hg::zeros<float>({1, 6, 8, 8}), hg::zeros<float>({5, 3, 3, 3}), {}, 1, 0, 1, 2); },
         "conv2d: expected out_channels divisible by groups=2");
  auto stem = hg::zeros<float>({8, 3, 16, 16});
  throws([&] { return hg::patch_embed(hg::zeros<float>({1, 3, 224, 230}), stem); },
         "patch_embed: expected an image size 224x230 divisible by the patch size 16x16");
  throws([&] { return hg::patch_embed(hg::zeros<float>({1, 4, 32, 32}), stem); },
         "patch_embed: expected input with 3 channels (weight [8, 3, 16, 16]), got 4");
  throws([&] { return hg::patch_embed(hg::zeros<float>({3, 32, 32}), stem); }, "patch_embed: expected a 4-D input");
}
