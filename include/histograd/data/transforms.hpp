// Eval-time image preprocessing of the pathology foundation models: to_tensor, resize, center_crop,
// normalize and their composition. Each matches torchvision.transforms.v2.functional on FLOAT
// tensors (resize = F.interpolate(antialias=True, align_corners=False) with Resize's size rule,
// center_crop's banker's-rounded anchor and zero padding), not PIL's resize: published pipelines
// resize the PIL image first; we convert to float first and resize the tensor.
#pragma once
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../io/image.hpp"
#include "../ops/interpolate.hpp"
#include "../ops/views.hpp"

namespace histograd::data {

enum class Interpolation { Bilinear, Bicubic };

// [3, H, W] in [0, 1]: pixel / 255, as torchvision's ToTensor divides.
template <class T = float>
Tensor<T> to_tensor(const io::Image& image) {
  const int64_t H = image.height, W = image.width;
  HG_CHECK(H > 0 && W > 0 && image.pixels.size() == static_cast<size_t>(H * W * 3), "to_tensor",
           "expected an RGB image with width·height·3 pixels, got ", W, "x", H, " with ", image.pixels.size(), " bytes");
  Tensor<T> out({3, H, W});
  T* dst = out.data();
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < H * W; ++i) dst[c * H * W + i] = static_cast<T>(image.pixels[static_cast<size_t>(i * 3 + c)]) / T(255);
  return out;
}

namespace detail {

inline void check_image_tensor(const char* op, const Shape& shape) {
  HG_CHECK(shape.size() == 3 || shape.size() == 4, op, "expected an image tensor [C, H, W] or [N, C, H, W], got shape ",
           to_string(shape));
  HG_CHECK(shape[shape.size() - 1] > 0 && shape[shape.size() - 2] > 0, op, "expected a non-empty image, got shape ",
           to_string(shape));
}

// torchvision's Resize(size) rule: the shorter side becomes `size`, the longer int(size·long/short)
// (Python's true division, then truncation); with max_size the longer side is capped there and
// the shorter one scaled down by the same rule. Returns (height, width).
inline std::pair<int64_t, int64_t> resized_size(int64_t height, int64_t width, int64_t size,
                                                std::optional<int64_t> max_size) {
  HG_CHECK(size > 0, "resize", "expected a positive size, got ", size);
  HG_CHECK(!max_size || *max_size > size, "resize", "expected max_size greater than the requested size ", size,
           ", got ", max_size.value_or(0));
  const bool width_is_short = width <= height;
  const int64_t short_side = width_is_short ? width : height, long_side = width_is_short ? height : width;
  int64_t new_short = size, new_long = static_cast<int64_t>(double(size * long_side) / double(short_side));
  if (max_size && new_long > *max_size) {
    new_short = static_cast<int64_t>(double(*max_size * new_short) / double(new_long));
    new_long = *max_size;
  }
  return width_is_short ? std::pair{new_long, new_short} : std::pair{new_short, new_long};
}

// Python's int(round(v / 2.0)) for an integer v: halves go to the even neighbour.
inline int64_t half_round_even(int64_t v) {
  const int64_t floor_half = v >= 0 ? v / 2 : -((-v + 1) / 2);
  const bool is_half = v % 2 != 0;
  return is_half && floor_half % 2 != 0 ? floor_half + 1 : floor_half;
}

}  // namespace detail

// Resizes the last two dims to exactly (height, width), as F.interpolate(align_corners=False).
// Returns the input itself when the size already matches (torchvision does the same).
template <class T>
Tensor<T> resize(const Tensor<T>& image, int64_t height, int64_t width, Interpolation interpolation = Interpolation::Bilinear,
                 bool antialias = true) {
  detail::check_image_tensor("resize", image.shape());
  HG_CHECK(height > 0 && width > 0, "resize", "expected a positive output size, got ", height, "x", width);
  if (image.size(-2) == height && image.size(-1) == width) return image;
  const Tensor<T> batch = image.dim() == 4 ? image : image.unsqueeze(0);
  const Tensor<T> out = interpolation == Interpolation::Bilinear
                            ? interpolate_bilinear(batch, height, width, false, antialias)
                            : interpolate_bicubic(batch, height, width, false, antialias);
  return image.dim() == 4 ? out : out.squeeze(0);
}

// Resizes so that the shorter side becomes `size` (torchvision Resize(size, max_size=...)).
template <class T>
Tensor<T> resize(const Tensor<T>& image, int64_t size, Interpolation interpolation = Interpolation::Bilinear,
                 bool antialias = true, std::optional<int64_t> max_size = std::nullopt) {
  detail::check_image_tensor("resize", image.shape());
  const auto [height, width] = detail::resized_size(image.size(-2), image.size(-1), size, max_size);
  return resize(image, height, width, interpolation, antialias);
}

// The central height x width window; where the crop is larger than the image, the image is
// first padded with zeros ((crop - size) / 2 before, the rest after), as torchvision does.
template <class T>
Tensor<T> center_crop(const Tensor<T>& image, int64_t height, int64_t width) {
  detail::check_image_tensor("center_crop", image.shape());
  HG_CHECK(height > 0 && width > 0, "center_crop", "expected a positive crop size, got ", height, "x", width);
  const int64_t H = image.size(-2), W = image.size(-1);
  const int64_t pad_top = height > H ? (height - H) / 2 : 0, pad_left = width > W ? (width - W) / 2 : 0;
  const int64_t padded_h = std::max(H, height), padded_w = std::max(W, width);
  const int64_t top = detail::half_round_even(padded_h - height), left = detail::half_round_even(padded_w - width);
  // output (y, x) reads padded (top + y, left + x) = image (top + y - pad_top, left + x - pad_left)
  const int64_t row0 = top - pad_top, col0 = left - pad_left;
  const int64_t y0 = std::max<int64_t>(0, -row0), y1 = std::min(height, H - row0);
  const int64_t x0 = std::max<int64_t>(0, -col0), x1 = std::min(width, W - col0);
  Shape shape = image.shape();
  shape[shape.size() - 2] = height;
  shape[shape.size() - 1] = width;
  Tensor<T> out = zeros<T>(shape);
  out.slice(-2, y0, y1).slice(-1, x0, x1).copy_(image.slice(-2, row0 + y0, row0 + y1).slice(-1, col0 + x0, col0 + x1));
  return out;
}

// (x - mean[c]) / std[c] along the channel dim (-3); mean and std are rounded to T first and the
// subtraction and division done in T, as torchvision's normalize does.
template <class T>
Tensor<T> normalize(const Tensor<T>& image, const std::vector<double>& mean, const std::vector<double>& stddev) {
  detail::check_image_tensor("normalize", image.shape());
  const int64_t C = image.size(-3), plane = image.size(-2) * image.size(-1);
  HG_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(stddev.size()) == C, "normalize", "expected ", C,
           " means and standard deviations (one per channel), got ", mean.size(), " and ", stddev.size());
  for (double s : stddev) HG_CHECK(s != 0, "normalize", "expected non-zero standard deviations");
  Tensor<T> out = image.contiguous().clone();
  T* data = out.data();
  const int64_t images = out.numel() / (C * plane);
  for (int64_t n = 0; n < images; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const T m = static_cast<T>(mean[static_cast<size_t>(c)]), s = static_cast<T>(stddev[static_cast<size_t>(c)]);
      T* p = data + (n * C + c) * plane;
      for (int64_t i = 0; i < plane; ++i) p[i] = (p[i] - m) / s;
    }
  return out;
}

// A model's eval transform (timm/torchvision order: resize -> center crop -> to tensor -> normalize),
// computed on float tensors throughout: to_tensor first, then resize, crop and normalize.
struct Preprocess {
  int64_t resize_size = 256;  // shorter side after resizing
  int64_t crop_size = 224;
  Interpolation interpolation = Interpolation::Bicubic;
  std::vector<double> mean = {0.485, 0.456, 0.406};
  std::vector<double> std = {0.229, 0.224, 0.225};
  bool resize_to_square = false;  // Resize((s, s)) rather than Resize(s): squashes non-square inputs

  // The published transform of a model preset (models::ViTConfig or any config with the same
  // fields; a template so this layer does not pull in the models).
  template <class ModelConfig>
  static Preprocess for_model(const ModelConfig& config) {
    Preprocess p;
    p.resize_size = config.resize_size;
    p.crop_size = config.crop_size;
    p.resize_to_square = config.resize_to_square;
    p.mean.assign(config.mean.begin(), config.mean.end());
    p.std.assign(config.std.begin(), config.std.end());
    return p;
  }

  Tensor<float> operator()(const io::Image& image) const {
    Tensor<float> x = resize_to_square ? resize(to_tensor<float>(image), resize_size, resize_size, interpolation, true)
                                       : resize(to_tensor<float>(image), resize_size, interpolation, true);
    return normalize(center_crop(x, crop_size, crop_size), mean, std);
  }
};

}  // namespace histograd::data
