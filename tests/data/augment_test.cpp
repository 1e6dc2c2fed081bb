// data/augment.hpp: each deterministic op against torchvision's PIL path / Pillow 13 on regions of
// real H&E tiles (scripts/gen_augment_fixtures.py), RandomResizedCrop's box sampler against
// torchvision's statistics and its fallback by hand, and the multi-crop / MAE view shapes.
#include <histograd/data/augment.hpp>

#include <fstream>
#include <map>
#include <sstream>

#include "test_util.hpp"

namespace data = hg::data;

namespace {

std::string fixture(const std::string& name) { return std::string(HISTOGRAD_FIXTURES_DIR) + "/augment/" + name; }
std::string tile(const std::string& name) { return std::string(HISTOGRAD_SHARED_DATA_DIR) + "/tiles/" + name; }
bool have_tiles() { return std::ifstream(tile("hipt_he_256.png")).good(); }

// The largest per-byte difference, and how many bytes differ.
std::pair<int, size_t> compare(const hg::io::Image& got, const hg::io::Image& expected) {
  REQUIRE(got.width == expected.width);
  REQUIRE(got.height == expected.height);
  int worst = 0;
  size_t differing = 0;
  for (size_t i = 0; i < got.pixels.size(); ++i) {
    const int d = std::abs(int(got.pixels[i]) - int(expected.pixels[i]));
    worst = std::max(worst, d);
    differing += d != 0;
  }
  return {worst, differing};
}

hg::io::Image gradient_image(int64_t h, int64_t w) {
  hg::io::Image im{w, h, std::vector<uint8_t>(static_cast<size_t>(w * h * 3))};
  for (int64_t i = 0; i < w * h * 3; ++i) im.pixels[static_cast<size_t>(i)] = static_cast<uint8_t>((i * 37) % 256);
  return im;
}

}  // namespace

// Every op is byte-exact with PIL: the C++ repeats Pillow's integer and float arithmetic (fixed
// point resampling, float blends, float HSV). No tolerance is needed; a case that ever differed
// would show here as worst > 0.
TEST_CASE("augmentation ops match torchvision / Pillow byte for byte on real tiles") {
  if (!have_tiles()) {
    MESSAGE("skipped: ../shared/data/tiles is absent (the fixtures hold only expected outputs)");
    return;
  }
  std::ifstream cases(fixture("cases.txt"));
  REQUIRE(cases.good());
  std::map<std::string, hg::io::Image> sources;
  int count = 0;
  for (std::string line; std::getline(cases, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream f(line);
    std::string name, op, source;
    int64_t top, left, h, w;
    f >> name >> op >> source >> top >> left >> h >> w;
    INFO("case " << line);
    if (!sources.count(source)) sources[source] = hg::io::read_image(tile(source));
    const hg::io::Image input = data::crop(sources[source], top, left, h, w);
    hg::io::Image got;
    double a = 0;
    if (op == "brightness") f >> a, got = data::adjust_brightness(input, a);
    else if (op == "contrast") f >> a, got = data::adjust_contrast(input, a);
    else if (op == "saturation") f >> a, got = data::adjust_saturation(input, a);
    else if (op == "hue") f >> a, got = data::adjust_hue(input, a);
    else if (op == "grayscale") got = data::to_grayscale(input);
    else if (op == "blur") f >> a, got = data::gaussian_blur(input, a);
    else if (op == "solarize") got = data::solarize(input);
    else if (op == "resize") {
      int64_t oh, ow;
      f >> oh >> ow;
      got = data::resize_bicubic(input, oh, ow);
    } else if (op == "resized_crop") {
      data::CropBox box;
      int64_t size;
      f >> box.top >> box.left >> box.height >> box.width >> size;
      got = data::resized_crop(input, box, size);
    } else {
      FAIL("unknown op " << op);
    }
    const auto [worst, differing] = compare(got, hg::io::read_image(fixture(name + ".png")));
    INFO(differing << " bytes differ");
    CHECK(worst == 0);
    ++count;
  }
  CHECK(count == 94);
}

TEST_CASE("flips and quarter turns move pixels as PIL's transpose does") {
  // 2x3 image, pixel value = 10·(y·3 + x) + channel
  hg::io::Image im{3, 2, {}};
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) im.pixels.push_back(static_cast<uint8_t>(10 * (y * 3 + x) + c));
  auto at = [](const hg::io::Image& i, int y, int x) { return i.pixels[static_cast<size_t>((y * i.width + x) * 3)]; };
  CHECK(at(data::hflip(im), 0, 0) == 20);
  CHECK(at(data::vflip(im), 0, 0) == 30);
  const hg::io::Image r1 = data::rot90(im, 1);  // counter-clockwise: the right column becomes the top row
  CHECK((r1.width == 2 && r1.height == 3));
  CHECK((at(r1, 0, 0) == 20 && at(r1, 0, 1) == 50 && at(r1, 2, 0) == 0 && at(r1, 2, 1) == 30));
  const hg::io::Image r3 = data::rot90(im, 3);
  CHECK((at(r3, 0, 0) == 30 && at(r3, 0, 1) == 0 && at(r3, 2, 1) == 20));
  CHECK(data::rot90(data::rot90(im, 1), 1).pixels == data::rot90(im, 2).pixels);
  CHECK(data::rot90(im, 4).pixels == im.pixels);
  CHECK(data::solarize(hg::io::Image{1, 1, {127, 128, 255}}).pixels == std::vector<uint8_t>{127, 127, 0});
}

TEST_CASE("bad arguments name the op") {
  const hg::io::Image im = gradient_image(8, 8);
  CHECK_THROWS_WITH_AS(data::crop(im, 4, 0, 5, 2), doctest::Contains("crop: expected a box inside the 8x8 image"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(data::adjust_hue(im, 0.7), doctest::Contains("adjust_hue: expected a hue factor in [-0.5, 0.5]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(data::hflip(hg::io::Image{2, 2, {1, 2}}), doctest::Contains("hflip: expected a non-empty RGB image"),
                       hg::Error);
  hg::Generator gen(1);
  CHECK_THROWS_WITH_AS(data::random_resized_crop_box(8, 8, gen, {0.5, 0.2}),
                       doctest::Contains("random_resized_crop: expected 0 < scale[0] <= scale[1] <= 1"), hg::Error);
}

// torchvision's get_params run 20000 times (rrc_stats.txt) against ours 20000 times: the mean area
// fraction and mean log aspect ratio agree within 0.01 (their standard errors are below 0.002).
TEST_CASE("RandomResizedCrop boxes follow torchvision's distribution, and fit the image") {
  std::ifstream stats(fixture("rrc_stats.txt"));
  REQUIRE(stats.good());
  int rows = 0;
  for (std::string line; std::getline(stats, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream f(line);
    int64_t h, w, n;
    double lo, hi, mean_area, mean_log;
    f >> h >> w >> lo >> hi >> n >> mean_area >> mean_log;
    INFO(line);
    hg::Generator gen(42 + static_cast<uint64_t>(rows));
    double area = 0, logs = 0;
    for (int64_t k = 0; k < n; ++k) {
      const data::CropBox b = data::random_resized_crop_box(h, w, gen, {lo, hi});
      REQUIRE((b.top >= 0 && b.left >= 0 && b.height > 0 && b.width > 0 && b.top + b.height <= h && b.left + b.width <= w));
      area += double(b.height * b.width) / double(h * w);
      logs += std::log(double(b.width) / double(b.height));
    }
    CHECK(std::abs(area / double(n) - mean_area) < 0.01);
    CHECK(std::abs(logs / double(n) - mean_log) < 0.01);
    ++rows;
  }
  CHECK(rows == 4);
}

// When no try fits (a strip far wider than 4:3 with a scale near 1), torchvision returns the centre
// box of the widest allowed ratio: height 10, width round(10·4/3) = 13, left (200 - 13) // 2.
TEST_CASE("RandomResizedCrop falls back to the clamped centre crop") {
  hg::Generator gen(3);
  CHECK(data::random_resized_crop_box(10, 200, gen, {0.9, 1.0}) == data::CropBox{0, 93, 10, 13});
  CHECK(data::random_resized_crop_box(200, 10, gen, {0.9, 1.0}) == data::CropBox{93, 0, 13, 10});  // round(10 / 0.75)
  // inside the ratio range the fallback is the whole image: a 30x36 image asks for 99% of its area
  // at a ratio drawn in [0.75, 1.33]; a try can fit, so only check it stays inside
  const data::CropBox b = data::random_resized_crop_box(30, 36, gen, {0.99, 1.0});
  CHECK((b.height <= 30 && b.width <= 36));
}

TEST_CASE("multi-crop gives DINO's views, deterministic for a generator seed") {
  const hg::io::Image im = gradient_image(120, 150);
  data::MultiCropConfig config;
  config.global_size = 32;
  config.local_size = 16;
  config.local_crops = 3;
  config.vertical_flip = true;
  config.rotate90 = true;
  data::MultiCropAugmentation aug(config);
  CHECK(aug.num_views() == 5);
  hg::Generator g1(7), g2(7), g3(8);
  const std::vector<hg::Tensor<float>> a = aug(im, g1), b = aug(im, g2), c = aug(im, g3);
  REQUIRE(a.size() == 5);
  for (size_t v = 0; v < a.size(); ++v) {
    const int64_t s = v < 2 ? 32 : 16;
    CHECK(a[v].shape() == hg::Shape{3, s, s});
    CHECK(a[v].to_vector() == b[v].to_vector());
  }
  CHECK(a[0].to_vector() != c[0].to_vector());

  data::MaskedAutoencoderAugmentation mae;
  mae.size = 24;
  hg::Generator g4(1);
  const std::vector<hg::Tensor<float>> m = mae(im, g4);
  REQUIRE(m.size() == 1);
  CHECK(m[0].shape() == hg::Shape{3, 24, 24});
}

// With jitter, grayscale, blur and solarisation off and a full-image crop, a view is the resized
// image normalised: checks the pipeline's plumbing (ToTensor, Normalize with ImageNet statistics).
TEST_CASE("a view with every random op off is resize + ToTensor + Normalize") {
  const hg::io::Image im = gradient_image(20, 20);
  data::MultiCropConfig config;
  config.global_size = 10;
  config.global_scale = {1.0, 1.0};
  config.ratio = {1.0, 1.0};
  config.local_crops = 0;
  config.hflip_p = 0;
  config.jitter_p = -1;  // RandomApply runs when rand <= p: never for p < 0
  config.grayscale_p = 0;
  config.global1_blur_p = -1;
  config.global2_blur_p = -1;
  config.global2_solarize_p = 0;
  data::MultiCropAugmentation aug(config);
  hg::Generator gen(5);
  const std::vector<hg::Tensor<float>> views = aug(im, gen);
  REQUIRE(views.size() == 2);
  const hg::Tensor<float> expected = data::to_normalized_tensor(data::resize_bicubic(im, 10, 10), config.mean, config.std);
  CHECK(views[0].to_vector() == expected.to_vector());
  CHECK(views[1].to_vector() == expected.to_vector());
}
