// Preprocess::for_model takes each preset's published transform, and Hibou's square resize
// squashes a non-square tile where the others resize the short side.
#include "test_util.hpp"

TEST_CASE("Preprocess::for_model copies the preset's transform") {
  auto p = hg::data::Preprocess::for_model(hg::models::preset("h_optimus_0"));
  CHECK(p.resize_size == hg::models::preset("h_optimus_0").resize_size);
  CHECK(p.mean == std::vector<double>{0.707223, 0.578729, 0.703617});
  CHECK(p.std == std::vector<double>{0.211883, 0.230117, 0.177517});
  CHECK(!p.resize_to_square);
  CHECK(hg::data::Preprocess::for_model(hg::models::preset("hibou_b")).resize_to_square);
}

TEST_CASE("resize_to_square squashes; the default keeps the aspect and crops") {
  hg::io::Image image{64, 32, std::vector<uint8_t>(64 * 32 * 3)};
  for (int64_t y = 0; y < 32; ++y)
    for (int64_t x = 0; x < 64; ++x)
      for (int64_t c = 0; c < 3; ++c) image.pixels[size_t((y * 64 + x) * 3 + c)] = uint8_t(x * 4);  // ramp along x
  hg::data::Preprocess p;
  p.resize_size = p.crop_size = 16;
  p.mean = {0, 0, 0};
  p.std = {1, 1, 1};
  auto cropped = p(image);  // 32x64 -> 16x32, centre 16 columns: the ramp's middle half
  p.resize_to_square = true;
  auto squashed = p(image);  // 32x64 -> 16x16: the whole ramp
  CHECK(cropped.shape() == hg::Shape{3, 16, 16});
  CHECK(squashed.shape() == hg::Shape{3, 16, 16});
  auto x = hg::data::to_tensor<float>(image);
  check_close(squashed, hg::data::resize(x, 16, 16, p.interpolation, true), 1e-6);
  const float span_cropped = cropped.at({0, 0, 15}) - cropped.at({0, 0, 0});
  const float span_squashed = squashed.at({0, 0, 15}) - squashed.at({0, 0, 0});
  CHECK(span_squashed > 1.8f * span_cropped);
}
