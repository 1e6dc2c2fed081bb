// Slideflow's Gaussian blur QC (slideflow/slide/qc/gaussian.py, qc.Gaussian; GaussianV2 applies the
// same function tile by tile): grey = skimage rgb2gray, |skimage.filters.laplace(grey)| (3×3 kernel
// 4/−1, scipy 'reflect' border), skimage.filters.gaussian(sigma=3) (scipy gaussian_filter, 'nearest'
// border, truncate 4), and a pixel is out of focus — blurred, or a smudge such as a pen mark on the
// glass — where the result is <= 0.02. Slideflow runs it on a thumbnail at 4 µm/px for 10× tiles.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "image_ops.hpp"

namespace histograd::wsi {

// One double channel, pixels[y·width + x] (scikit-image's float64 images).
struct FloatImage {
  int64_t width = 0, height = 0;
  std::vector<double> pixels;
  FloatImage() = default;
  FloatImage(int64_t w, int64_t h) : width(w), height(h), pixels(static_cast<size_t>(w * h), 0.0) {}
  double at(int64_t x, int64_t y) const { return pixels[static_cast<size_t>(y * width + x)]; }
};

// skimage.color.rgb2gray on uint8 RGB: (r·0.2125 + g·0.7154 + b·0.0721) with channels scaled to [0, 1].
inline FloatImage rgb_to_gray(const io::Image& rgb) {
  detail::check_rgb(rgb, "rgb_to_gray");
  FloatImage out(rgb.width, rgb.height);
  const uint8_t* s = rgb.pixels.data();
  for (size_t i = 0; i < out.pixels.size(); ++i)
    out.pixels[i] = (s[3 * i] / 255.0) * 0.2125 + (s[3 * i + 1] / 255.0) * 0.7154 + (s[3 * i + 2] / 255.0) * 0.0721;
  return out;
}

// skimage.filters.laplace(ksize=3): scipy.ndimage.convolve with [[0,−1,0],[−1,4,−1],[0,−1,0]] in
// 'reflect' mode, where the pixel beyond an edge is the edge pixel itself. Summed in scipy's order.
inline FloatImage laplace(const FloatImage& src) {
  const int64_t w = src.width, h = src.height;
  FloatImage out(w, h);
  cpu::parallel_for(h, w * 5, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const double* up = src.pixels.data() + std::max<int64_t>(y - 1, 0) * w;
      const double* row = src.pixels.data() + y * w;
      const double* down = src.pixels.data() + std::min(y + 1, h - 1) * w;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t l = std::max<int64_t>(x - 1, 0), r = std::min(x + 1, w - 1);
        double v = 0.0;
        v += up[x] * -1.0;
        v += row[l] * -1.0;
        v += row[x] * 4.0;
        v += row[r] * -1.0;
        v += down[x] * -1.0;
        out.pixels[static_cast<size_t>(y * w + x)] = v;
      }
    }
  });
  return out;
}

// scipy.ndimage.gaussian_filter(sigma, mode='nearest', truncate) as skimage.filters.gaussian calls it:
// weights exp(−x²/2σ²) over |x| <= int(truncate·σ + 0.5), normalised; rows (axis 0) first, then
// columns; each tap pair summed symmetrically as scipy's correlate1d does for symmetric weights.
inline FloatImage gaussian_filter(const FloatImage& src, double sigma, double truncate = 4.0) {
  HG_CHECK(std::isfinite(sigma) && sigma > 0, "gaussian_filter", "expected a positive sigma, got ", sigma);
  HG_CHECK(std::isfinite(truncate) && truncate > 0, "gaussian_filter", "expected a positive truncate, got ", truncate);
  const int64_t radius = static_cast<int64_t>(truncate * sigma + 0.5);
  std::vector<double> wt(static_cast<size_t>(radius + 1));
  double total = 0;
  for (int64_t k = -radius; k <= radius; ++k) total += std::exp(-0.5 / (sigma * sigma) * double(k * k));
  for (int64_t k = 0; k <= radius; ++k)
    wt[static_cast<size_t>(k)] = std::exp(-0.5 / (sigma * sigma) * double(k * k)) / total;
  const int64_t w = src.width, h = src.height;
  FloatImage mid(w, h), out(w, h);
  if (w == 0 || h == 0) return out;
  auto clampi = [](int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); };
  cpu::parallel_for(h, w * (radius + 1), [&](int64_t y0, int64_t y1) {  // along y ('nearest' = clamp)
    for (int64_t y = y0; y < y1; ++y) {
      double* d = mid.pixels.data() + y * w;
      const double* c = src.pixels.data() + y * w;
      for (int64_t x = 0; x < w; ++x) d[x] = c[x] * wt[0];
      for (int64_t k = 1; k <= radius; ++k) {
        const double* a = src.pixels.data() + clampi(y + k, h) * w;
        const double* b = src.pixels.data() + clampi(y - k, h) * w;
        const double wk = wt[static_cast<size_t>(k)];
        for (int64_t x = 0; x < w; ++x) d[x] += (a[x] + b[x]) * wk;
      }
    }
  });
  cpu::parallel_for(h, w * (radius + 1), [&](int64_t y0, int64_t y1) {  // along x
    std::vector<double> line(static_cast<size_t>(w + 2 * radius));
    for (int64_t y = y0; y < y1; ++y) {
      const double* s = mid.pixels.data() + y * w;
      for (int64_t i = 0; i < w + 2 * radius; ++i) line[static_cast<size_t>(i)] = s[clampi(i - radius, w)];
      const double* l = line.data() + radius;
      double* d = out.pixels.data() + y * w;
      for (int64_t x = 0; x < w; ++x) {
        double v = l[x] * wt[0];
        for (int64_t k = 1; k <= radius; ++k) v += (l[x + k] + l[x - k]) * wt[static_cast<size_t>(k)];
        d[x] = v;
      }
    }
  });
  return out;
}

// Slideflow qc.Gaussian's focus measure: gaussian(|laplace(rgb2gray(rgb))|, sigma). Sharp tissue
// (nuclei, fibres) scores ~0.04–0.3; glass, out-of-focus areas and pen smudges score below 0.02.
inline FloatImage blur_response(const io::Image& rgb, double sigma = 3.0) {
  FloatImage lap = laplace(rgb_to_gray(rgb));
  for (double& v : lap.pixels) v = std::abs(v);
  return gaussian_filter(lap, sigma);
}

// Slideflow's blur mask: 255 where blur_response <= threshold (slideflow's True, "filtered out").
inline GrayImage blur_mask(const io::Image& rgb, double sigma = 3.0, double threshold = 0.02) {
  HG_CHECK(std::isfinite(threshold), "blur_mask", "expected a finite threshold, got ", threshold);
  const FloatImage r = blur_response(rgb, sigma);
  GrayImage out(r.width, r.height);
  for (size_t i = 0; i < r.pixels.size(); ++i) out.pixels[i] = r.pixels[i] <= threshold ? 255 : 0;
  return out;
}

// The region a segmentation image shows, read again at the blur QC's resolution: the same level-0
// field of view starting at (0, 0), `downsample_x/y` level-0 pixels per pixel of `rgb`.
struct QcImage {
  io::Image rgb;
  double downsample_x = 1, downsample_y = 1;
};

// Clears the pixels of a segmentation-level mask (at seg_ds_x/y) that the blur QC flags: a mask pixel
// is cleared when more than `max_fraction` of the QC pixels whose centres fall in its footprint are
// blurred (slideflow discards a tile when more than 0.6 of it is flagged: its filter_threshold); when
// the QC image is coarser and no centre falls inside, the QC pixel under the mask pixel's centre
// decides. Returns the number of mask pixels cleared.
inline int64_t apply_blur_mask(GrayImage& mask, double seg_ds_x, double seg_ds_y, const GrayImage& blurred,
                               double qc_ds_x, double qc_ds_y, double max_fraction) {
  const char* op = "apply_blur_mask";
  detail::check_gray(mask, op);
  detail::check_gray(blurred, op);
  HG_CHECK(seg_ds_x > 0 && seg_ds_y > 0 && qc_ds_x > 0 && qc_ds_y > 0 && std::isfinite(seg_ds_x * seg_ds_y * qc_ds_x * qc_ds_y),
           op, "expected positive downsamples, got ", seg_ds_x, ", ", seg_ds_y, " (mask) and ", qc_ds_x, ", ", qc_ds_y,
           " (QC image)");
  HG_CHECK(max_fraction >= 0 && max_fraction <= 1, op, "expected a fraction in [0, 1], got ", max_fraction);
  if (blurred.width == 0 || blurred.height == 0) return 0;
  // QC pixel i covers level-0 [i·qc_ds, (i+1)·qc_ds), centre (i + 0.5)·qc_ds; per axis, the QC indices
  // whose centres lie in mask pixel j's footprint [j·seg_ds, (j+1)·seg_ds).
  auto span = [](int64_t j, double seg_ds, double qc_ds, int64_t n) {
    const int64_t a = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(j * seg_ds / qc_ds - 0.5)));
    const int64_t b = std::min<int64_t>(n, static_cast<int64_t>(std::ceil((j + 1) * seg_ds / qc_ds - 0.5)));
    if (a < b) return std::pair<int64_t, int64_t>{a, b};
    const int64_t c = std::min<int64_t>(n - 1, static_cast<int64_t>((j + 0.5) * seg_ds / qc_ds));
    return std::pair<int64_t, int64_t>{c, c + 1};
  };
  int64_t cleared = 0;
  for (int64_t y = 0; y < mask.height; ++y) {
    const auto [ya, yb] = span(y, seg_ds_y, qc_ds_y, blurred.height);
    for (int64_t x = 0; x < mask.width; ++x) {
      uint8_t& m = mask.pixels[static_cast<size_t>(y * mask.width + x)];
      if (!m) continue;
      const auto [xa, xb] = span(x, seg_ds_x, qc_ds_x, blurred.width);
      int64_t n = 0, flagged = 0;
      for (int64_t v = ya; v < yb; ++v)
        for (int64_t u = xa; u < xb; ++u, ++n) flagged += blurred.pixels[static_cast<size_t>(v * blurred.width + u)] != 0;
      if (static_cast<double>(flagged) > max_fraction * static_cast<double>(n)) {
        m = 0;
        ++cleared;
      }
    }
  }
  return cleared;
}

}  // namespace histograd::wsi
