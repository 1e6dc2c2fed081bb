// 8-bit single-channel image operations behind CLAM's tissue segmentation, each giving what
// OpenCV gives for uint8 input: cvtColor(RGB2HSV)'s saturation, medianBlur (replicated border),
// threshold (THRESH_BINARY, THRESH_OTSU), dilate/erode/morphologyEx(MORPH_CLOSE) with a ones
// kernel and OpenCV's default border; plus histolab's pen-colour filter. Facts from OpenCV's
// documentation and checked pixel for pixel against cv2 by scripts/gen_tissue_fixtures.py.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../cpu/parallel.hpp"
#include "../io/image.hpp"

namespace histograd::wsi {

// One 8-bit channel, pixels[y·width + x], rows top to bottom.
struct GrayImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;
  GrayImage() = default;
  GrayImage(int64_t w, int64_t h, uint8_t fill = 0)
      : width(w), height(h), pixels(static_cast<size_t>(w * h), fill) {}
  uint8_t at(int64_t x, int64_t y) const { return pixels[static_cast<size_t>(y * width + x)]; }
};

namespace detail {
inline void check_rgb(const io::Image& rgb, const char* op) {
  HG_CHECK(rgb.width >= 0 && rgb.height >= 0, op, "expected non-negative image size, got ", rgb.width, "x",
           rgb.height);
  HG_CHECK(rgb.pixels.size() == static_cast<size_t>(rgb.width * rgb.height * 3), op, "expected ",
           rgb.width * rgb.height * 3, " bytes of RGB pixels for ", rgb.width, "x", rgb.height, ", got ",
           rgb.pixels.size());
}
inline void check_gray(const GrayImage& g, const char* op) {
  HG_CHECK(g.width >= 0 && g.height >= 0, op, "expected non-negative image size, got ", g.width, "x", g.height);
  HG_CHECK(g.pixels.size() == static_cast<size_t>(g.width * g.height), op, "expected ", g.width * g.height,
           " pixels for ", g.width, "x", g.height, ", got ", g.pixels.size());
}
}  // namespace detail

// HSV saturation as OpenCV computes it for 8-bit RGB: S = (diff·round(255·4096/V) + 2048) >> 12
// with V = max, diff = max − min (a 12-bit fixed-point table, which differs from
// round(255·diff/V) on 207 of the (V, diff) pairs), and 0 where V = 0.
inline GrayImage rgb_to_saturation(const io::Image& rgb) {
  detail::check_rgb(rgb, "rgb_to_saturation");
  static const std::array<int32_t, 256> table = [] {
    std::array<int32_t, 256> t{};
    for (int v = 1; v < 256; ++v) t[v] = static_cast<int32_t>(std::lround(255.0 * 4096.0 / v));
    return t;
  }();
  GrayImage out(rgb.width, rgb.height);
  const uint8_t* src = rgb.pixels.data();
  uint8_t* dst = out.pixels.data();
  const int64_t n = rgb.width * rgb.height;
  cpu::parallel_for(n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int r = src[3 * i], g = src[3 * i + 1], b = src[3 * i + 2];
      const int v = std::max(r, std::max(g, b)), diff = v - std::min(r, std::min(g, b));
      dst[i] = static_cast<uint8_t>((diff * table[v] + 2048) >> 12);
    }
  });
  return out;
}

// Median over a ksize×ksize window, borders replicated (cv2.medianBlur). ksize 1 copies. Each row
// slides a 256-bin histogram and keeps the median's rank pointer up to date, so a pixel costs
// O(ksize) rather than a sort.
inline GrayImage median_blur(const GrayImage& src, int ksize) {
  detail::check_gray(src, "median_blur");
  HG_CHECK(ksize >= 1 && ksize % 2 == 1, "median_blur", "expected an odd kernel size >= 1, got ", ksize);
  if (ksize == 1 || src.width == 0 || src.height == 0) return src;
  const int64_t w = src.width, h = src.height, r = ksize / 2;
  const int rank = ksize * ksize / 2;
  GrayImage out(w, h);
  auto clampx = [w](int64_t x) { return x < 0 ? 0 : (x >= w ? w - 1 : x); };
  auto clampy = [h](int64_t y) { return y < 0 ? 0 : (y >= h ? h - 1 : y); };
  cpu::parallel_for(h, w * ksize * 2, [&](int64_t y_begin, int64_t y_end) {
    std::vector<int64_t> rows(static_cast<size_t>(ksize));
    for (int64_t y = y_begin; y < y_end; ++y) {
      for (int64_t k = 0; k < ksize; ++k) rows[static_cast<size_t>(k)] = clampy(y - r + k) * w;
      std::array<int32_t, 256> hist{};
      for (int64_t dx = -r; dx <= r; ++dx)
        for (int64_t row : rows) ++hist[src.pixels[static_cast<size_t>(row + clampx(dx))]];
      int m = 0, below = 0;  // median value and the count of window values below it
      for (;;) {
        if (below + hist[m] > rank) break;
        below += hist[m];
        ++m;
      }
      uint8_t* dst = out.pixels.data() + y * w;
      dst[0] = static_cast<uint8_t>(m);
      for (int64_t x = 1; x < w; ++x) {
        const int64_t xo = clampx(x - r - 1), xi = clampx(x + r);
        if (xo != xi) {
          for (int64_t row : rows) {
            const int vo = src.pixels[static_cast<size_t>(row + xo)], vi = src.pixels[static_cast<size_t>(row + xi)];
            --hist[vo];
            below -= vo < m;
            ++hist[vi];
            below += vi < m;
          }
          while (below > rank) below -= hist[--m];
          while (below + hist[m] <= rank) below += hist[m++];
        }
        dst[x] = static_cast<uint8_t>(m);
      }
    }
  });
  return out;
}

// cv2.threshold(src, thresh, maxval, THRESH_BINARY): maxval where src > thresh, else 0.
inline GrayImage threshold_binary(const GrayImage& src, int thresh, int maxval = 255) {
  detail::check_gray(src, "threshold_binary");
  HG_CHECK(thresh >= 0 && thresh <= 255, "threshold_binary", "expected a threshold in [0, 255], got ", thresh);
  HG_CHECK(maxval >= 0 && maxval <= 255, "threshold_binary", "expected maxval in [0, 255], got ", maxval);
  GrayImage out(src.width, src.height);
  for (size_t i = 0; i < src.pixels.size(); ++i) out.pixels[i] = src.pixels[i] > thresh ? uint8_t(maxval) : 0;
  return out;
}

// The threshold cv2.threshold(..., THRESH_OTSU) picks on 8-bit input: the first level t (0..255)
// maximising the between-class variance q1·q2·(mu1 − mu2)² of {<= t} vs {> t}, computed with
// OpenCV's running update, which skips levels where either class weight is within FLT_EPSILON of
// 0 or 1 (the skipped level's mean update is lost, as in OpenCV). 0 for an empty or flat image.
inline int otsu_threshold(const GrayImage& src) {
  detail::check_gray(src, "otsu_threshold");
  if (src.pixels.empty()) return 0;
  std::array<int64_t, 256> hist{};
  for (uint8_t v : src.pixels) ++hist[v];
  const double scale = 1.0 / static_cast<double>(src.pixels.size());
  double mu = 0;
  for (int i = 0; i < 256; ++i) mu += i * static_cast<double>(hist[i]);
  mu *= scale;
  const double eps = 1.1920928955078125e-07;  // FLT_EPSILON
  double mu1 = 0, q1 = 0, max_sigma = 0;
  int best = 0;
  for (int i = 0; i < 256; ++i) {
    const double p = static_cast<double>(hist[i]) * scale;
    mu1 *= q1;
    q1 += p;
    const double q2 = 1.0 - q1;
    if (std::min(q1, q2) < eps || std::max(q1, q2) > 1.0 - eps) continue;
    mu1 = (mu1 + i * p) / q1;
    const double mu2 = (mu - q1 * mu1) / q2;
    const double sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
    if (sigma > max_sigma) {
      max_sigma = sigma;
      best = i;
    }
  }
  return best;
}

namespace detail {
// Max (dilate) or min (erode) over a ksize×ksize ones kernel anchored at ksize/2 as OpenCV anchors
// it (offsets −ksize/2 .. ksize−1−ksize/2, the same for both, not reflected), with OpenCV's
// default border for morphology: pixels outside the image never win. Separable: rows, then columns.
template <bool Max>
GrayImage morph_rect(const GrayImage& src, int ksize, const char* op) {
  check_gray(src, op);
  HG_CHECK(ksize >= 1, op, "expected a kernel size >= 1, got ", ksize);
  const int64_t w = src.width, h = src.height, lo = -(ksize / 2), hi = ksize - 1 - ksize / 2;
  if (ksize == 1 || w == 0 || h == 0) return src;
  auto pick = [](uint8_t a, uint8_t b) { return Max ? std::max(a, b) : std::min(a, b); };
  GrayImage rows(w, h), out(w, h);
  cpu::parallel_for(h, w * ksize, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const uint8_t* s = src.pixels.data() + y * w;
      uint8_t* d = rows.pixels.data() + y * w;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t a = std::max<int64_t>(0, x + lo), b = std::min<int64_t>(w - 1, x + hi);
        uint8_t v = s[a];
        for (int64_t k = a + 1; k <= b; ++k) v = pick(v, s[k]);
        d[x] = v;
      }
    }
  });
  cpu::parallel_for(h, w * ksize, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const int64_t a = std::max<int64_t>(0, y + lo), b = std::min<int64_t>(h - 1, y + hi);
      uint8_t* d = out.pixels.data() + y * w;
      std::copy_n(rows.pixels.data() + a * w, w, d);
      for (int64_t k = a + 1; k <= b; ++k) {
        const uint8_t* s = rows.pixels.data() + k * w;
        for (int64_t x = 0; x < w; ++x) d[x] = pick(d[x], s[x]);
      }
    }
  });
  return out;
}
}  // namespace detail

inline GrayImage dilate(const GrayImage& src, int ksize) { return detail::morph_rect<true>(src, ksize, "dilate"); }
inline GrayImage erode(const GrayImage& src, int ksize) { return detail::morph_rect<false>(src, ksize, "erode"); }

// cv2.morphologyEx(src, MORPH_CLOSE, np.ones((ksize, ksize))): dilate, then erode.
inline GrayImage morphology_close(const GrayImage& src, int ksize) {
  HG_CHECK(ksize >= 1, "morphology_close", "expected a kernel size >= 1, got ", ksize);
  return erode(dilate(src, ksize), ksize);
}

// Pixels histolab's red, green and blue pen filters mark as ink (255), else 0. A pixel is red ink
// when r >= R, g <= G, b <= B for one of histolab's (R, G, B) triples, green ink when r <= R,
// g >= G, b >= B, blue ink when r <= R, g <= G, b >= B (the complements of histolab's keep masks).
inline GrayImage pen_mask(const io::Image& rgb) {
  detail::check_rgb(rgb, "pen_mask");
  struct Rgb { int r, g, b; };
  static constexpr Rgb red[] = {{150, 80, 90},   {110, 20, 30},   {185, 65, 105}, {195, 85, 125},
                                {220, 115, 145}, {125, 40, 70},   {100, 50, 65},  {85, 25, 45}};
  static constexpr Rgb green[] = {{150, 160, 140}, {70, 110, 110},  {45, 115, 100},  {30, 75, 60},  {195, 220, 210},
                                  {225, 230, 225}, {170, 210, 200}, {20, 30, 20},    {50, 60, 40},  {30, 50, 35},
                                  {65, 70, 60},    {100, 110, 105}, {165, 180, 180}, {140, 140, 150}, {185, 195, 195}};
  static constexpr Rgb blue[] = {{60, 120, 190}, {120, 170, 200}, {175, 210, 230}, {145, 180, 210},
                                 {37, 95, 160},  {30, 65, 130},   {130, 155, 180}, {40, 35, 85},
                                 {30, 20, 65},   {90, 90, 140},   {60, 60, 120},   {110, 110, 175}};
  GrayImage out(rgb.width, rgb.height);
  const int64_t n = rgb.width * rgb.height;
  cpu::parallel_for(n, 40, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int r = rgb.pixels[3 * i], g = rgb.pixels[3 * i + 1], b = rgb.pixels[3 * i + 2];
      bool ink = false;
      for (const Rgb& t : red) ink = ink || (r >= t.r && g <= t.g && b <= t.b);
      for (const Rgb& t : green) ink = ink || (r <= t.r && g >= t.g && b >= t.b);
      for (const Rgb& t : blue) ink = ink || (r <= t.r && g <= t.g && b >= t.b);
      out.pixels[static_cast<size_t>(i)] = ink ? 255 : 0;
    }
  });
  return out;
}

}  // namespace histograd::wsi
