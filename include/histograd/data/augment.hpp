// Training augmentations on 8-bit RGB images (io::Image), computed as torchvision's PIL path and
// Pillow 13's C code compute them (Resample.c bicubic, Blend.c, Convert.c luma and HSV,
// BoxBlur.c's three-pass Gaussian), with every random draw taken from an explicit Generator;
// then DINO's multi-crop (main_dino.py DataAugmentationDINO) and MAE's pretraining transform
// (main_pretrain.py) built from them.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "../io/image.hpp"
#include "transforms.hpp"

namespace histograd::data {

namespace detail {

inline void check_rgb(const char* op, const io::Image& image) {
  HG_CHECK(image.width > 0 && image.height > 0 &&
               image.pixels.size() == static_cast<size_t>(image.width * image.height * 3),
           op, "expected a non-empty RGB image with width·height·3 bytes, got ", image.width, "x", image.height, " with ",
           image.pixels.size(), " bytes");
}

inline uint8_t clamp_u8(int v) { return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v); }

// a·b rounded to float before any addition: Pillow's wheels are built without FMA, so a fused
// multiply-add (which -march=native with GNU mode would allow) would round differently.
inline float float_product(float a, float b) {
  volatile float p = a * b;
  return p;
}

// ITU-R 601-2 luma as Pillow's convert("L"): (19595 R + 38470 G + 7471 B + 2^15) >> 16.
inline uint8_t luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
}

// Image.blend(degenerate, image, factor) for one byte (Blend.c): float arithmetic, truncation,
// clipping only when extrapolating.
inline uint8_t blend(uint8_t degenerate, uint8_t value, float alpha) {
  const float v = static_cast<float>(degenerate) + float_product(alpha, static_cast<float>(int(value) - int(degenerate)));
  if (alpha >= 0.0f && alpha <= 1.0f) return static_cast<uint8_t>(v);
  return v <= 0.0f ? 0 : v >= 255.0f ? 255 : static_cast<uint8_t>(v);
}

// Pillow's bicubic filter (a = -0.5, support 2).
inline double bicubic_weight(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// One axis of Pillow's resampling: for each output position, the first input index, the tap count
// and 22-bit fixed-point weights (Resample.c precompute_coeffs + normalize_coeffs_8bpc).
struct ResampleTaps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // out_size x ksize
};

inline ResampleTaps bicubic_taps(int in_size, int out_size) {
  constexpr int kPrecisionBits = 22;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0), support = 2.0 * filterscale, inv = 1.0 / filterscale;
  ResampleTaps taps;
  taps.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.first.resize(static_cast<size_t>(out_size));
  taps.count.resize(static_cast<size_t>(out_size));
  taps.weights.assign(static_cast<size_t>(out_size * taps.ksize), 0);
  std::vector<double> k(static_cast<size_t>(taps.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) total += k[static_cast<size_t>(x)] = bicubic_weight((x + xmin - center + 0.5) * inv);
    for (int x = 0; x < xmax; ++x) {
      const double w = total != 0.0 ? k[static_cast<size_t>(x)] / total : k[static_cast<size_t>(x)];
      const double fixed = w * (1 << kPrecisionBits);
      taps.weights[static_cast<size_t>(xx * taps.ksize + x)] = static_cast<int32_t>(w < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    taps.first[static_cast<size_t>(xx)] = xmin;
    taps.count[static_cast<size_t>(xx)] = xmax;
  }
  return taps;
}

// Rounds the 22-bit fixed-point sum to a byte: floor shift, then clip (Resample.c clip8).
inline uint8_t fixed_to_u8(int32_t sum) { return clamp_u8(sum >> 22); }

// Pillow's _gaussian_blur_radius: the box radius whose three passes approximate a Gaussian of
// standard deviation `radius` (Gwosdek et al., SSVM 2011), in float as Pillow computes it.
inline float box_radius_for_gaussian(float radius, int passes) {
  const float sigma2 = radius * radius / static_cast<float>(passes);
  const float L = static_cast<float>(std::sqrt(12.0 * sigma2 + 1.0));
  const float l = static_cast<float>(std::floor((L - 1.0) / 2.0));
  float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
  a /= 6 * (sigma2 - (l + 1) * (l + 1));
  return l + a;
}

// One box-blur pass along rows of `n` pixels spaced `stride` bytes apart, `lines` of them
// `line_stride` apart (BoxBlur.c ImagingLineBoxBlur: edge pixels repeat; the fractional part of
// the radius weights the two pixels just outside the integer window).
inline void box_blur_pass(std::vector<uint8_t>& pixels, int64_t n, int64_t stride, int64_t lines, int64_t line_stride,
                          float float_radius) {
  const int r = static_cast<int>(float_radius);
  const uint32_t ww = static_cast<uint32_t>(static_cast<float>(1 << 24) / (float_radius * 2 + 1));
  const uint32_t fw = ((1u << 24) - static_cast<uint32_t>(r * 2 + 1) * ww) / 2;
  std::vector<uint8_t> line(static_cast<size_t>(n));
  auto at = [&](int64_t x) { return static_cast<uint32_t>(line[static_cast<size_t>(std::clamp<int64_t>(x, 0, n - 1))]); };
  for (int64_t l = 0; l < lines; ++l)
    for (int64_t c = 0; c < 3; ++c) {
      uint8_t* base = pixels.data() + l * line_stride + c;
      for (int64_t x = 0; x < n; ++x) line[static_cast<size_t>(x)] = base[x * stride];
      uint32_t acc = 0;
      for (int64_t x = -r - 1; x < r; ++x) acc += at(x);  // the window of pixel -1
      for (int64_t x = 0; x < n; ++x) {
        acc += at(x + r) - at(x - r - 1);
        const uint32_t bulk = acc * ww + (at(x - r - 1) + at(x + r + 1)) * fw;
        base[x * stride] = static_cast<uint8_t>((bulk + (1u << 23)) >> 24);
      }
    }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Deterministic operations: each equals the named PIL / torchvision call on an RGB image.

// img.crop((left, top, left + width, top + height)); the box must lie inside the image.
inline io::Image crop(const io::Image& image, int64_t top, int64_t left, int64_t height, int64_t width) {
  detail::check_rgb("crop", image);
  HG_CHECK(height > 0 && width > 0 && top >= 0 && left >= 0 && top + height <= image.height &&
               left + width <= image.width,
           "crop", "expected a box inside the ", image.width, "x", image.height, " image, got top ", top, ", left ", left,
           ", ", width, "x", height);
  io::Image out{width, height, std::vector<uint8_t>(static_cast<size_t>(width * height * 3))};
  for (int64_t y = 0; y < height; ++y)
    std::copy_n(image.pixels.begin() + ((top + y) * image.width + left) * 3, width * 3, out.pixels.begin() + y * width * 3);
  return out;
}

// One bicubic pass along the rows (horizontal) or the columns of an image.
inline io::Image resample_axis(const io::Image& image, int64_t out_size, bool horizontal) {
  const int64_t H = image.height, W = image.width;
  const detail::ResampleTaps t = detail::bicubic_taps(static_cast<int>(horizontal ? W : H), static_cast<int>(out_size));
  const int64_t oh = horizontal ? H : out_size, ow = horizontal ? out_size : W;
  io::Image out{ow, oh, std::vector<uint8_t>(static_cast<size_t>(ow * oh * 3))};
  // output (y, x) sums taps along the resampled axis: input row y / column first.. (horizontal)
  // or input column x / row first.. (vertical)
  const int64_t tap_stride = horizontal ? 3 : W * 3;
  for (int64_t y = 0; y < oh; ++y)
    for (int64_t x = 0; x < ow; ++x) {
      const int64_t o = horizontal ? x : y;
      const int32_t* k = t.weights.data() + o * t.ksize;
      const int first = t.first[static_cast<size_t>(o)], count = t.count[static_cast<size_t>(o)];
      const uint8_t* in = image.pixels.data() + (horizontal ? (y * W + first) * 3 : (first * W + x) * 3);
      int32_t s0 = 1 << 21, s1 = 1 << 21, s2 = 1 << 21;
      for (int i = 0; i < count; ++i, in += tap_stride) {
        s0 += in[0] * k[i];
        s1 += in[1] * k[i];
        s2 += in[2] * k[i];
      }
      uint8_t* dst = out.pixels.data() + (y * ow + x) * 3;
      dst[0] = detail::fixed_to_u8(s0);
      dst[1] = detail::fixed_to_u8(s1);
      dst[2] = detail::fixed_to_u8(s2);
    }
  return out;
}

// img.resize((width, height), Image.BICUBIC): antialiased (the filter widens by the reduction
// factor), one pass per axis, each rounded to bytes in Pillow's 22-bit fixed point. Pillow 13
// runs the vertical pass first when the height shrinks and the width does not, else horizontal
// first; the order changes the rounding of the intermediate image.
inline io::Image resize_bicubic(const io::Image& image, int64_t height, int64_t width) {
  detail::check_rgb("resize_bicubic", image);
  HG_CHECK(height > 0 && width > 0, "resize_bicubic", "expected a positive output size, got ", width, "x", height);
  const bool need_h = width != image.width, need_v = height != image.height;
  if (!need_h && !need_v) return image;
  if (!need_h) return resample_axis(image, height, false);
  if (!need_v) return resample_axis(image, width, true);
  if (width >= image.width && height < image.height) return resample_axis(resample_axis(image, height, false), width, true);
  return resample_axis(resample_axis(image, width, true), height, false);
}

// Image.FLIP_LEFT_RIGHT / FLIP_TOP_BOTTOM.
inline io::Image hflip(const io::Image& image) {
  detail::check_rgb("hflip", image);
  io::Image out = image;
  for (int64_t y = 0; y < image.height; ++y)
    for (int64_t x = 0; x < image.width; ++x)
      std::copy_n(image.pixels.begin() + (y * image.width + x) * 3, 3,
                  out.pixels.begin() + (y * image.width + image.width - 1 - x) * 3);
  return out;
}

inline io::Image vflip(const io::Image& image) {
  detail::check_rgb("vflip", image);
  io::Image out = image;
  for (int64_t y = 0; y < image.height; ++y)
    std::copy_n(image.pixels.begin() + y * image.width * 3, image.width * 3,
                out.pixels.begin() + (image.height - 1 - y) * image.width * 3);
  return out;
}

// k quarter turns counter-clockwise (np.rot90(img, k), PIL's ROTATE_90 applied k times).
inline io::Image rot90(const io::Image& image, int k) {
  detail::check_rgb("rot90", image);
  k = ((k % 4) + 4) % 4;
  if (k == 0) return image;
  if (k == 2) return vflip(hflip(image));
  const int64_t H = image.height, W = image.width;
  io::Image out{H, W, std::vector<uint8_t>(image.pixels.size())};  // W rows of H pixels
  for (int64_t y = 0; y < W; ++y)
    for (int64_t x = 0; x < H; ++x) {
      // counter-clockwise: out(y, x) = in(x, W-1-y); clockwise: out(y, x) = in(H-1-x, y)
      const int64_t sy = k == 1 ? x : H - 1 - x, sx = k == 1 ? W - 1 - y : y;
      std::copy_n(image.pixels.begin() + (sy * W + sx) * 3, 3, out.pixels.begin() + (y * H + x) * 3);
    }
  return out;
}

// F.adjust_brightness (PIL): ImageEnhance.Brightness, a blend with black.
inline io::Image adjust_brightness(const io::Image& image, double factor) {
  detail::check_rgb("adjust_brightness", image);
  HG_CHECK(factor >= 0, "adjust_brightness", "expected a non-negative factor, got ", factor);
  io::Image out = image;
  const float alpha = static_cast<float>(factor);
  if (alpha == 1.0f) return out;
  for (uint8_t& v : out.pixels) v = detail::blend(0, v, alpha);
  return out;
}

// F.adjust_contrast (PIL): ImageEnhance.Contrast, a blend with the mean luma rounded to an integer.
inline io::Image adjust_contrast(const io::Image& image, double factor) {
  detail::check_rgb("adjust_contrast", image);
  HG_CHECK(factor >= 0, "adjust_contrast", "expected a non-negative factor, got ", factor);
  const size_t n = static_cast<size_t>(image.width * image.height);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += detail::luma(&image.pixels[i * 3]);
  const uint8_t mean = static_cast<uint8_t>(static_cast<int>(static_cast<double>(sum) / static_cast<double>(n) + 0.5));
  io::Image out = image;
  const float alpha = static_cast<float>(factor);
  if (alpha == 1.0f) return out;
  for (uint8_t& v : out.pixels) v = detail::blend(mean, v, alpha);
  return out;
}

// F.adjust_saturation (PIL): ImageEnhance.Color, a blend with the pixel's own luma.
inline io::Image adjust_saturation(const io::Image& image, double factor) {
  detail::check_rgb("adjust_saturation", image);
  HG_CHECK(factor >= 0, "adjust_saturation", "expected a non-negative factor, got ", factor);
  io::Image out = image;
  const float alpha = static_cast<float>(factor);
  if (alpha == 1.0f) return out;
  for (size_t i = 0; i < out.pixels.size(); i += 3) {
    const uint8_t gray = detail::luma(&image.pixels[i]);
    for (size_t c = 0; c < 3; ++c) out.pixels[i + c] = detail::blend(gray, image.pixels[i + c], alpha);
  }
  return out;
}

// F.adjust_hue (PIL): to Pillow's 8-bit HSV, hue += int(hue_factor·255) modulo 256, back to RGB.
inline io::Image adjust_hue(const io::Image& image, double hue_factor) {
  detail::check_rgb("adjust_hue", image);
  HG_CHECK(hue_factor >= -0.5 && hue_factor <= 0.5, "adjust_hue", "expected a hue factor in [-0.5, 0.5], got ",
           hue_factor);
  const uint8_t shift = static_cast<uint8_t>(static_cast<int32_t>(hue_factor * 255));  // numpy int32 -> uint8 wraps
  io::Image out = image;
  for (size_t i = 0; i < out.pixels.size(); i += 3) {
    const uint8_t r = image.pixels[i], g = image.pixels[i + 1], b = image.pixels[i + 2];
    // Convert.c rgb2hsv_row
    const uint8_t maxc = std::max(r, std::max(g, b)), minc = std::min(r, std::min(g, b));
    uint8_t h = 0, s = 0;
    const uint8_t v = maxc;
    if (maxc != minc) {
      const float cr = static_cast<float>(maxc - minc), sf = cr / static_cast<float>(maxc);
      const float rc = static_cast<float>(maxc - r) / cr, gc = static_cast<float>(maxc - g) / cr,
                  bc = static_cast<float>(maxc - b) / cr;
      float hf = r == maxc ? bc - gc : g == maxc ? static_cast<float>(2.0 + rc - bc) : static_cast<float>(4.0 + gc - rc);
      hf = static_cast<float>(std::fmod(hf / 6.0 + 1.0, 1.0));
      h = detail::clamp_u8(static_cast<int>(hf * 255.0));
      s = detail::clamp_u8(static_cast<int>(sf * 255.0));
    }
    h = static_cast<uint8_t>(h + shift);
    // Convert.c hsv2rgb
    uint8_t* o = &out.pixels[i];
    if (s == 0) {
      o[0] = o[1] = o[2] = v;
      continue;
    }
    const int sector = static_cast<int>(std::floor(static_cast<float>(h) * 6.0 / 255.0));
    const float f = static_cast<float>(static_cast<float>(h) * 6.0 / 255.0 - static_cast<float>(sector));
    const float fs = static_cast<float>(static_cast<float>(s) / 255.0);
    const uint8_t p = detail::clamp_u8(static_cast<int>(std::round(static_cast<float>(v) * (1.0 - fs))));
    const uint8_t q = detail::clamp_u8(static_cast<int>(std::round(static_cast<float>(v) * (1.0 - fs * f))));
    const uint8_t t = detail::clamp_u8(static_cast<int>(std::round(static_cast<float>(v) * (1.0 - fs * (1.0 - f)))));
    const std::array<std::array<uint8_t, 3>, 6> rgb{{{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}}};
    const std::array<uint8_t, 3>& chosen = rgb[static_cast<size_t>(sector % 6)];
    o[0] = chosen[0];
    o[1] = chosen[1];
    o[2] = chosen[2];
  }
  return out;
}

// F.rgb_to_grayscale(img, 3) (PIL): convert("L") copied into three channels.
inline io::Image to_grayscale(const io::Image& image) {
  detail::check_rgb("to_grayscale", image);
  io::Image out = image;
  for (size_t i = 0; i < out.pixels.size(); i += 3) out.pixels[i] = out.pixels[i + 1] = out.pixels[i + 2] = detail::luma(&image.pixels[i]);
  return out;
}

// img.filter(ImageFilter.GaussianBlur(radius)): Pillow's three box-blur passes per axis, rows
// first then columns, each pass rounded to bytes. The radius is taken as a C float, as Pillow does.
inline io::Image gaussian_blur(const io::Image& image, double radius) {
  detail::check_rgb("gaussian_blur", image);
  HG_CHECK(radius >= 0, "gaussian_blur", "expected a non-negative radius, got ", radius);
  io::Image out = image;
  if (radius == 0) return out;
  const float box = detail::box_radius_for_gaussian(static_cast<float>(radius), 3);
  if (box == 0) return out;
  const int64_t W = image.width, H = image.height;
  for (int pass = 0; pass < 3; ++pass) detail::box_blur_pass(out.pixels, W, 3, H, W * 3, box);
  for (int pass = 0; pass < 3; ++pass) detail::box_blur_pass(out.pixels, H, W * 3, W, 3, box);
  return out;
}

// ImageOps.solarize(img, threshold): values at or above the threshold are inverted.
inline io::Image solarize(const io::Image& image, int threshold = 128) {
  detail::check_rgb("solarize", image);
  io::Image out = image;
  for (uint8_t& v : out.pixels)
    if (v >= threshold) v = static_cast<uint8_t>(255 - v);
  return out;
}

// ToTensor then Normalize: [3, H, W] float.
inline Tensor<float> to_normalized_tensor(const io::Image& image, const std::vector<double>& mean,
                                          const std::vector<double>& stddev) {
  return normalize(to_tensor<float>(image), mean, stddev);
}

// ---------------------------------------------------------------------------------------------
// Random draws. Each draw takes one Philox block from the generator (24-bit uniforms), so a
// sample's augmentations depend only on the generator it is given.

inline double uniform(Generator& gen) { return gen.uniforms(gen.reserve(1), 0)[0]; }
inline double uniform(Generator& gen, double lo, double hi) { return lo + (hi - lo) * uniform(gen); }
// An integer in [lo, hi) (torch.randint(lo, hi)).
inline int64_t randint(Generator& gen, int64_t lo, int64_t hi) {
  const int64_t n = hi - lo;
  return lo + std::min(n - 1, static_cast<int64_t>(uniform(gen) * static_cast<double>(n)));
}

struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
  bool operator==(const CropBox&) const = default;
};

// transforms.RandomResizedCrop.get_params: up to 10 tries of an area fraction uniform in `scale`
// and a log-uniform aspect ratio in `ratio`, sides rounded half to even (Python's round), kept
// when the box fits; otherwise the central crop clamped to the ratio range.
inline CropBox random_resized_crop_box(int64_t height, int64_t width, Generator& gen, std::pair<double, double> scale,
                                       std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0}) {
  HG_CHECK(height > 0 && width > 0, "random_resized_crop", "expected a non-empty image, got ", width, "x", height);
  HG_CHECK(scale.first > 0 && scale.first <= scale.second && scale.second <= 1, "random_resized_crop",
           "expected 0 < scale[0] <= scale[1] <= 1, got (", scale.first, ", ", scale.second, ")");
  HG_CHECK(ratio.first > 0 && ratio.first <= ratio.second, "random_resized_crop",
           "expected 0 < ratio[0] <= ratio[1], got (", ratio.first, ", ", ratio.second, ")");
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(ratio.first), log_hi = std::log(ratio.second);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * uniform(gen, scale.first, scale.second);
    const double aspect = std::exp(uniform(gen, log_lo, log_hi));
    const int64_t w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
    const int64_t h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int64_t top = randint(gen, 0, height - h + 1), left = randint(gen, 0, width - w + 1);
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio.first)
    h = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / ratio.first));
  else if (in_ratio > ratio.second)
    w = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) * ratio.second));
  return {(height - h) / 2, (width - w) / 2, h, w};
}

// F.resized_crop(img, box, (size, size), BICUBIC) on PIL: crop, then Pillow's bicubic resize.
inline io::Image resized_crop(const io::Image& image, const CropBox& box, int64_t size) {
  io::Image cropped = crop(image, box.top, box.left, box.height, box.width);
  return box.height == size && box.width == size ? cropped : resize_bicubic(cropped, size, size);
}

// transforms.ColorJitter: the four adjustments in an order drawn at random (torch.randperm(4)),
// each factor uniform in [max(0, 1 - s), 1 + s] (hue: [-h, h]); a strength of 0 leaves that
// adjustment out.
struct ColorJitter {
  double brightness = 0.4, contrast = 0.4, saturation = 0.2, hue = 0.1;

  io::Image operator()(const io::Image& image, Generator& gen) const {
    std::array<int, 4> order{0, 1, 2, 3};
    for (int i = 3; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(randint(gen, 0, i + 1))]);
    const double b = uniform(gen, std::max(0.0, 1 - brightness), 1 + brightness);
    const double c = uniform(gen, std::max(0.0, 1 - contrast), 1 + contrast);
    const double s = uniform(gen, std::max(0.0, 1 - saturation), 1 + saturation);
    const double h = uniform(gen, -hue, hue);
    io::Image out = image;
    for (int op : order) {
      if (op == 0 && brightness > 0) out = adjust_brightness(out, b);
      if (op == 1 && contrast > 0) out = adjust_contrast(out, c);
      if (op == 2 && saturation > 0) out = adjust_saturation(out, s);
      if (op == 3 && hue > 0) out = adjust_hue(out, h);
    }
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// DINO's multi-crop (DataAugmentationDINO) with the pathology extras, and MAE's transform.

struct MultiCropConfig {
  int64_t global_size = 224, local_size = 96;
  std::pair<double, double> global_scale{0.4, 1.0}, local_scale{0.05, 0.4};
  int64_t local_crops = 8;
  std::pair<double, double> ratio{3.0 / 4.0, 4.0 / 3.0};
  double hflip_p = 0.5;
  bool vertical_flip = false;  // pathology: tissue has no up or down
  double vflip_p = 0.5;
  bool rotate90 = false;  // pathology: a uniformly drawn number of quarter turns
  ColorJitter jitter{};
  double jitter_p = 0.8, grayscale_p = 0.2;
  double global1_blur_p = 1.0, global2_blur_p = 0.1, local_blur_p = 0.5, global2_solarize_p = 0.2;
  double blur_radius_min = 0.1, blur_radius_max = 2.0;
  std::vector<double> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};
};

// Views in DINO's order: global 1, global 2, then the local crops; each a [3, size, size] tensor.
class MultiCropAugmentation {
 public:
  explicit MultiCropAugmentation(MultiCropConfig config = {}) : config_(std::move(config)) {
    HG_CHECK(config_.global_size > 0 && config_.local_size > 0, "MultiCropAugmentation",
             "expected positive crop sizes, got ", config_.global_size, " and ", config_.local_size);
    HG_CHECK(config_.local_crops >= 0, "MultiCropAugmentation", "expected a non-negative number of local crops, got ",
             config_.local_crops);
  }
  const MultiCropConfig& config() const { return config_; }
  size_t num_views() const { return static_cast<size_t>(2 + config_.local_crops); }

  std::vector<Tensor<float>> operator()(const io::Image& image, Generator& gen) const {
    detail::check_rgb("MultiCropAugmentation", image);
    std::vector<Tensor<float>> views;
    views.reserve(num_views());
    views.push_back(view(image, gen, config_.global_size, config_.global_scale, config_.global1_blur_p, 0.0));
    views.push_back(view(image, gen, config_.global_size, config_.global_scale, config_.global2_blur_p,
                         config_.global2_solarize_p));
    for (int64_t i = 0; i < config_.local_crops; ++i)
      views.push_back(view(image, gen, config_.local_size, config_.local_scale, config_.local_blur_p, 0.0));
    return views;
  }

  // One view as uint8 (before ToTensor/Normalize), for pictures and tests.
  io::Image view_image(const io::Image& image, Generator& gen, int64_t size, std::pair<double, double> scale,
                       double blur_p, double solarize_p) const {
    const MultiCropConfig& c = config_;
    io::Image x = resized_crop(image, random_resized_crop_box(image.height, image.width, gen, scale, c.ratio), size);
    if (uniform(gen) < c.hflip_p) x = hflip(x);                       // RandomHorizontalFlip: rand < p
    if (c.vertical_flip && uniform(gen) < c.vflip_p) x = vflip(x);
    if (c.rotate90) x = rot90(x, static_cast<int>(randint(gen, 0, 4)));
    if (uniform(gen) <= c.jitter_p) x = c.jitter(x, gen);            // RandomApply: skipped when p < rand
    if (uniform(gen) < c.grayscale_p) x = to_grayscale(x);           // RandomGrayscale: rand < p
    if (uniform(gen) <= blur_p)                                       // DINO's GaussianBlur: random() <= p
      x = gaussian_blur(x, uniform(gen, c.blur_radius_min, c.blur_radius_max));
    if (solarize_p > 0 && uniform(gen) < solarize_p) x = solarize(x);  // DINO's Solarization: random() < p
    return x;
  }

 private:
  Tensor<float> view(const io::Image& image, Generator& gen, int64_t size, std::pair<double, double> scale,
                     double blur_p, double solarize_p) const {
    return to_normalized_tensor(view_image(image, gen, size, scale, blur_p, solarize_p), config_.mean, config_.std);
  }

  MultiCropConfig config_;
};

// MAE's pretraining transform: RandomResizedCrop(size, scale (0.2, 1), bicubic), horizontal flip
// with p 0.5, ToTensor, Normalize (ImageNet statistics). One view.
struct MaskedAutoencoderAugmentation {
  int64_t size = 224;
  std::pair<double, double> scale{0.2, 1.0};
  std::pair<double, double> ratio{3.0 / 4.0, 4.0 / 3.0};
  double hflip_p = 0.5;
  std::vector<double> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};

  std::vector<Tensor<float>> operator()(const io::Image& image, Generator& gen) const {
    detail::check_rgb("MaskedAutoencoderAugmentation", image);
    io::Image x = resized_crop(image, random_resized_crop_box(image.height, image.width, gen, scale, ratio), size);
    if (uniform(gen) < hflip_p) x = hflip(x);
    return {to_normalized_tensor(x, mean, std)};
  }
};

}  // namespace histograd::data
