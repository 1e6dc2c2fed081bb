// data::to_tensor / resize / center_crop / normalize / Preprocess against torchvision.transforms.v2
// on float tensors (scripts/gen_image_fixtures.py), torchvision's size and crop rules by hand, and
// interpolate_bilinear (the antialias kernel resize uses): gradchecks and PyTorch values.
#include <histograd/data/transforms.hpp>
#include <histograd/io/safetensors.hpp>

#include <sstream>

#include "test_util.hpp"

namespace data = hg::data;

namespace {

std::string fixture(const std::string& name) { return std::string(HISTOGRAD_FIXTURES_DIR) + "/images/" + name; }

data::Interpolation parse_interpolation(const std::string& s) {
  REQUIRE((s == "bilinear" || s == "bicubic"));
  return s == "bilinear" ? data::Interpolation::Bilinear : data::Interpolation::Bicubic;
}

std::pair<std::vector<double>, std::vector<double>> parse_stats(const std::string& s) {
  if (s == "imagenet") return {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}};
  REQUIRE(s == "hoptimus");
  return {{0.707223, 0.578729, 0.703617}, {0.211883, 0.230117, 0.177517}};
}

double max_abs_difference(const std::vector<double>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - double(b[i])));
  return worst;
}

template <class T>
std::vector<double> as_doubles(const hg::Tensor<T>& t) {
  std::vector<T> v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

}  // namespace

TEST_CASE_TEMPLATE("to_tensor is pixel / 255 in [3, H, W]", T, float, double) {
  hg::io::Image image{3, 2, {0, 1, 2, 10, 20, 30, 255, 254, 253, 7, 8, 9, 100, 101, 102, 50, 60, 70}};
  hg::Tensor<T> x = data::to_tensor<T>(image);
  CHECK(x.shape() == hg::Shape{3, 2, 3});
  check_close(x, {0 / 255., 10 / 255., 255 / 255., 7 / 255., 100 / 255., 50 / 255.,  // red plane
                  1 / 255., 20 / 255., 254 / 255., 8 / 255., 101 / 255., 60 / 255.,  // green
                  2 / 255., 30 / 255., 253 / 255., 9 / 255., 102 / 255., 70 / 255.},
              1e-7);
  CHECK_THROWS_WITH_AS(data::to_tensor<T>(hg::io::Image{2, 2, {1, 2, 3}}),
                       doctest::Contains("to_tensor: expected an RGB image with width·height·3 pixels"), hg::Error);
}

// Each case of transforms.txt run through our functions and compared with torchvision's float32
// output: 1e-6 absolute (the antialias sums may round an ulp or two apart from PyTorch's).
TEST_CASE_TEMPLATE("transforms match torchvision v2 on float tensors", T, float, double) {
  hg::io::SafetensorsFile expected(fixture("transforms.safetensors"));
  std::ifstream index(fixture("transforms.txt"));
  REQUIRE(index.good());
  int cases = 0;
  double worst = 0;
  for (std::string line; std::getline(index, line);) {
    if (line.empty() || line[0] == '#') continue;
    INFO("case: " << line);
    std::istringstream fields(line);
    std::string name, op, source;
    fields >> name >> op >> source;
    hg::Tensor<T> x = source == "batch_input" ? expected.get<T>("batch_input")
                                              : data::to_tensor<T>(hg::io::read_image(fixture(source)));
    hg::Tensor<T> y;
    std::string interpolation, max_size, stats;
    int64_t a = 0, b = 0;
    int antialias = 1;
    if (op == "resize") {
      fields >> interpolation >> a >> max_size >> antialias;
      std::optional<int64_t> cap;
      if (max_size != "-") cap = std::stoll(max_size);
      y = data::resize(x, a, parse_interpolation(interpolation), antialias != 0, cap);
    } else if (op == "resizehw") {
      fields >> interpolation >> a >> b >> antialias;
      y = data::resize(x, a, b, parse_interpolation(interpolation), antialias != 0);
    } else if (op == "crop") {
      fields >> a >> b;
      y = data::center_crop(x, a, b);
    } else if (op == "normalize") {
      fields >> stats;
      auto [mean, std_dev] = parse_stats(stats);
      y = data::normalize(x, mean, std_dev);
    } else {
      REQUIRE(op == "preprocess");
      fields >> interpolation >> a >> b >> stats;
      auto [mean, std_dev] = parse_stats(stats);
      data::Preprocess preprocess{a, b, parse_interpolation(interpolation), mean, std_dev};
      y = preprocess(hg::io::read_image(fixture(source))).template to<T>();
    }
    REQUIRE(!fields.fail());
    hg::Tensor<float> want = expected.get<float>(name);
    REQUIRE(y.shape() == want.shape());
    const double difference = max_abs_difference(as_doubles(y), want.to_vector());
    CHECK(difference <= 1e-6);
    worst = std::max(worst, difference);
    ++cases;
  }
  MESSAGE("largest difference from torchvision (", hg::dtype_name<T>(), "): ", worst);
  CHECK(cases == 19);
}

TEST_CASE("resize follows torchvision's size rule") {
  using data::detail::resized_size;
  CHECK(resized_size(750, 1000, 256, std::nullopt) == std::pair<int64_t, int64_t>{256, 341});  // int(256·1000/750)
  CHECK(resized_size(1000, 750, 256, std::nullopt) == std::pair<int64_t, int64_t>{341, 256});
  CHECK(resized_size(300, 300, 224, std::nullopt) == std::pair<int64_t, int64_t>{224, 224});
  CHECK(resized_size(100, 400, 50, 120) == std::pair<int64_t, int64_t>{30, 120});  // long side capped, short int(120·50/200)
  CHECK(resized_size(100, 400, 50, 300) == std::pair<int64_t, int64_t>{50, 200});
  auto x = hg::rand<float>({3, 10, 20});
  CHECK(data::resize(x, 5).shape() == hg::Shape{3, 5, 10});
  CHECK(data::resize(x, 10).data() == x.data());  // unchanged size: the input itself, as torchvision
  CHECK(data::resize(hg::rand<float>({2, 3, 10, 20}), 4, 6, data::Interpolation::Bicubic).shape() ==
        hg::Shape{2, 3, 4, 6});
  CHECK_THROWS_WITH_AS(data::resize(hg::rand<float>({10, 20}), 5),
                       doctest::Contains("resize: expected an image tensor [C, H, W] or [N, C, H, W], got shape"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(data::resize(x, 5, data::Interpolation::Bilinear, true, 5),
                       doctest::Contains("resize: expected max_size greater than the requested size 5"), hg::Error);
  CHECK_THROWS_WITH_AS(data::resize(x, 0), doctest::Contains("resize: expected a positive size, got 0"), hg::Error);
}

TEST_CASE("center_crop rounds the anchor half to even and pads with zeros") {
  CHECK(data::detail::half_round_even(3) == 2);  // round(1.5) = 2
  CHECK(data::detail::half_round_even(5) == 2);  // round(2.5) = 2
  CHECK(data::detail::half_round_even(7) == 4);  // round(3.5) = 4
  CHECK(data::detail::half_round_even(4) == 2);
  // rows 0..6 of a 7 x 1 column: a crop of 2 starts at round(2.5) = 2
  auto column = hg::arange<float>(0, 7).reshape({1, 7, 1});
  check_close(data::center_crop(column, 2, 1), {2, 3}, 0);
  // a 2 x 3 image in a 4 x 6 crop: padding (1, 1) above/below, (1, 2) left/right
  auto image = hg::arange<float>(1, 7).reshape({1, 2, 3});
  check_close(data::center_crop(image, 4, 6), {0, 0, 0, 0, 0, 0,  //
                                               0, 1, 2, 3, 0, 0,  //
                                               0, 4, 5, 6, 0, 0,  //
                                               0, 0, 0, 0, 0, 0},
              0);
  CHECK_THROWS_WITH_AS(data::center_crop(image, 0, 3), doctest::Contains("center_crop: expected a positive crop size"),
                       hg::Error);
}

TEST_CASE("normalize subtracts the mean and divides by the std per channel") {
  auto x = hg::full<double>({2, 3, 1, 2}, 1.0);
  auto y = data::normalize(x, {0.5, 0.25, 0.0}, {0.5, 0.25, 2.0});
  check_close(y, {1, 1, 3, 3, 0.5, 0.5, 1, 1, 3, 3, 0.5, 0.5}, 1e-12);
  CHECK_THROWS_WITH_AS(data::normalize(x, {0.5}, {0.5}),
                       doctest::Contains("normalize: expected 3 means and standard deviations (one per channel)"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(data::normalize(x, {0, 0, 0}, {1, 0, 1}),
                       doctest::Contains("normalize: expected non-zero standard deviations"), hg::Error);
}

// Values from torch 2.15: F.interpolate(torch.arange(5.).reshape(1,1,1,5), size=(1,3), mode='bilinear',
// align_corners=False, antialias=...) -> [0.4286, 2.0, 3.5714] with antialias, [0.3333, 2.0, 3.6667] without.
TEST_CASE_TEMPLATE("interpolate_bilinear matches PyTorch and keeps constants", T, float, double) {
  auto x = hg::arange<T>(0, 5).reshape({1, 1, 1, 5});
  check_close(hg::interpolate_bilinear(x, 1, 3, false, true), {3.0 / 7.0, 2.0, 25.0 / 7.0}, 1e-6);
  check_close(hg::interpolate_bilinear(x, 1, 3, false, false), {1.0 / 3.0, 2.0, 11.0 / 3.0}, 1e-6);
  auto flat = hg::full<T>({2, 3, 7, 5}, T(1.5));
  for (bool antialias : {false, true})
    for (bool align_corners : {false, true})
      check_close(hg::interpolate_bilinear(flat, 11, 3, align_corners, antialias), std::vector<double>(2 * 3 * 11 * 3, 1.5),
                  1e-6);
  CHECK_THROWS_WITH_AS(hg::interpolate_bilinear(hg::rand<T>({3, 4, 4}), 2, 2),
                       doctest::Contains("interpolate_bilinear: expected a 4-D input [N, C, H, W]"), hg::Error);
}

TEST_CASE("interpolate_bilinear gradients (gradcheck)") {
  for (bool antialias : {false, true})
    for (bool align_corners : {false, true})
      for (bool transposed : {false, true}) {
        INFO("antialias " << antialias << ", align_corners " << align_corners << ", non-contiguous " << transposed);
        auto x = random_t<double>({2, 2, 7, 6}, 5, transposed);
        check_gradients([&](const auto& in) { return hg::interpolate_bilinear(in[0], 4, 9, align_corners, antialias); },
                        {x});
        check_gradients([&](const auto& in) { return hg::interpolate_bilinear(in[0], 10, 3, align_corners, antialias); },
                        {x});
      }
}
