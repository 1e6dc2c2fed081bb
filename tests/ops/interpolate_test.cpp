#include <fstream>
#include <optional>
#include <sstream>

#include "test_util.hpp"

using Inputs = std::vector<hg::Tensor<double>>;

namespace {


// Largest |got - want| / max(1, max|want|): the relative error of the whole tensor.
template <class T>
double relative_error(const hg::Tensor<T>& got, const hg::Tensor<float>& want) {
  REQUIRE(got.shape() == want.shape());
  std::vector<T> a = got.to_vector();
  std::vector<float> b = want.to_vector();
  double diff = 0, scale = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / scale;
}

std::optional<double> parse_scale(const std::string& field) {
  if (field == "-") return std::nullopt;
  return std::stod(field);
}

}  // namespace

// The fixtures hold F.interpolate(mode='bicubic') outputs and input gradients in float32 from
// PyTorch 2.x CPU (scripts/gen_interp_fixtures.py): DINO's 14->16 with scale_factor 16.1/14,
// shrinking and growing, antialias on and off, align_corners, non-square.
TEST_CASE_TEMPLATE("interpolate_bicubic and its gradient match PyTorch", T, float, double) {
  std::string dir = std::string(HISTOGRAD_FIXTURES_DIR) + "/interpolate/";
  int cases = 0;
  for (const std::string& line : fixture_index_lines(dir)) {
    std::istringstream fields(line);
    std::string name, scale_h, scale_w;
    int64_t N, C, H, W, out_h, out_w;
    int align_corners, antialias;
    fields >> name >> N >> C >> H >> W >> out_h >> out_w >> align_corners >> antialias >> scale_h >> scale_w;
    REQUIRE(!fields.fail());
    INFO("fixture " << name);
    auto load = [&](const std::string& what, const hg::Shape& shape) {
      return hg::from_vector<float>(read_floats(dir + name + "." + what + ".bin", hg::numel_of(shape)), shape);
    };
    auto x = load("x", {N, C, H, W}).template to<T>();
    x.requires_grad_();
    auto y = hg::interpolate_bicubic(x, out_h, out_w, align_corners != 0, antialias != 0, parse_scale(scale_h),
                                     parse_scale(scale_w));
    auto expected = load("y", {N, C, out_h, out_w});
    CHECK(relative_error(y, expected) <= 1e-5);
    if (std::is_same_v<T, float> && !antialias) {
      INFO("mode (A) in float reproduces PyTorch's x86 (AVX2/AVX-512) build bit for bit");
      CHECK(y.template to<float>().to_vector() == expected.to_vector());
    }
    y.backward(load("gy", y.shape()).template to<T>());
    CHECK(relative_error(x.grad(), load("gx", x.shape())) <= 1e-5);
    ++cases;
  }
  CHECK(cases == 10);
}

TEST_CASE_TEMPLATE("interpolate_bicubic keeps constants and corners", T, float, double) {
  auto flat = hg::full<T>({2, 3, 7, 5}, T(2.5));
  for (bool antialias : {false, true})
    for (bool align_corners : {false, true}) {
      // both variants' weights sum to one: (A) by the Keys kernel's partition of unity, (B) by renormalising
      check_close(hg::interpolate_bicubic(flat, 11, 3, align_corners, antialias),
                  std::vector<double>(2 * 3 * 11 * 3, 2.5), 1e-6);
    }
  hg::Generator gen(3);
  auto x = hg::randn<T>({1, 2, 6, 9}, gen);
  // an unchanged size with no scale factor is the identity in both variants
  check_close(hg::interpolate_bicubic(x, 6, 9), x, 1e-6);
  check_close(hg::interpolate_bicubic(x, 6, 9, false, true), x, 0.0);
  // align_corners keeps the four corner pixels exactly
  auto y = hg::interpolate_bicubic(x, 13, 4, true);
  for (int64_t c = 0; c < 2; ++c) {
    CHECK(double(y.at({0, c, 0, 0})) == doctest::Approx(double(x.at({0, c, 0, 0}))).epsilon(1e-6));
    CHECK(double(y.at({0, c, 12, 3})) == doctest::Approx(double(x.at({0, c, 5, 8}))).epsilon(1e-6));
  }
}

TEST_CASE("interpolate_bicubic matches the 4x4 Keys sum written from MODELS.md §0.2 (A)") {
  // One output pixel of DINO's 14 -> 16 resize with scale 16.1/14, evaluated from the formula.
  hg::Generator gen(5);
  auto x = hg::randn<double>({1, 1, 14, 14}, gen);
  const double scale = 16.1 / 14, ratio = 1 / scale, A = -0.75;
  auto keys = [A](double d) {
    d = std::abs(d);
    if (d <= 1) return (A + 2) * d * d * d - (A + 3) * d * d + 1;
    return d < 2 ? A * d * d * d - 5 * A * d * d + 8 * A * d - 4 * A : 0.0;
  };
  auto y = hg::interpolate_bicubic(x, 16, 16, false, false, scale, scale);
  for (int64_t oh : {0, 7, 15})
    for (int64_t ow : {0, 4, 15}) {
      double sh = ratio * (oh + 0.5) - 0.5, sw = ratio * (ow + 0.5) - 0.5;
      int64_t h0 = int64_t(std::floor(sh)), w0 = int64_t(std::floor(sw));
      double expected = 0;
      for (int64_t i = -1; i <= 2; ++i)
        for (int64_t j = -1; j <= 2; ++j) {
          int64_t hi = std::clamp<int64_t>(h0 + i, 0, 13), wj = std::clamp<int64_t>(w0 + j, 0, 13);
          expected += keys(sh - double(h0 + i)) * keys(sw - double(w0 + j)) * x.at({0, 0, hi, wj});
        }
      INFO("output (" << oh << ", " << ow << ")");
      CHECK(y.at({0, 0, oh, ow}) == doctest::Approx(expected).epsilon(1e-12));
    }
}

TEST_CASE("gradcheck: interpolate_bicubic") {
  auto x = random_input({2, 3, 5, 7}, 41, true);
  REQUIRE(!x.is_contiguous());
  for (bool antialias : {false, true})
    for (bool align_corners : {false, true}) {
      INFO("antialias " << antialias << " align_corners " << align_corners);
      for (auto [out_h, out_w] : std::vector<std::pair<int64_t, int64_t>>{{9, 4}, {3, 12}, {5, 2}})
        check_gradients([=](const Inputs& in) {
          return hg::interpolate_bicubic(in[0], out_h, out_w, align_corners, antialias);
        }, {x});
    }
  // DINO's call: a scale factor that is not out/in, and a size-1 input dim
  check_gradients([](const Inputs& in) { return hg::interpolate_bicubic(in[0], 6, 8, false, false, 6.1 / 5, 8.1 / 7); },
                  {x});
  check_gradients([](const Inputs& in) { return hg::interpolate_bicubic(in[0].slice(-2, 0, 1), 3, 2, false, true); },
                  {x});
  check_gradients([](const Inputs& in) { return hg::interpolate_bicubic(in[0].transpose(-1, -2), 2, 2); }, {x});
}

TEST_CASE("interpolate_bicubic errors name the op") {
  auto x = hg::zeros<float>({1, 2, 4, 4});
  CHECK_THROWS_WITH_AS(hg::interpolate_bicubic(hg::zeros<float>({2, 4, 4}), 8, 8),
                       doctest::Contains("interpolate_bicubic: expected a 4-D input [N, C, H, W], got shape [2, 4, 4]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::interpolate_bicubic(x, 0, 8),
                       doctest::Contains("interpolate_bicubic: expected a positive output size, got 0x8"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::interpolate_bicubic(hg::zeros<float>({1, 2, 0, 4}), 3, 3),
                       doctest::Contains("interpolate_bicubic: expected a non-empty input image"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::interpolate_bicubic(x, 8, 8, false, false, -2.0),
                       doctest::Contains("interpolate_bicubic: expected positive scale factors"), hg::Error);
}
