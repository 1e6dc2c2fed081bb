// The blur QC's input for a whole slide: the slide read at blur_mpp µm/px, as slideflow's
// qc.Gaussian reads wsi.thumb(mpp=...) (width int(mpp0·W0 / mpp), height likewise), here through
// resolution.hpp's banded thumbnail (best level, area resize), so memory stays bounded.
#pragma once
#include <algorithm>
#include <cmath>
#include <optional>

#include "qc.hpp"
#include "resolution.hpp"

namespace histograd::wsi {

// The whole slide at `mpp` µm/px (never finer than level 0), with its level-0 downsamples per axis.
// Needs the slide's level-0 mpp: from its metadata, or `user_mpp` (Error saying how to pass one).
inline QcImage read_blur_qc_image(const Slide& slide, double mpp, std::optional<double> user_mpp = std::nullopt) {
  HG_CHECK(std::isfinite(mpp) && mpp > 0, "read_blur_qc_image", slide.path(), ": expected a positive blur_mpp, got ", mpp);
  const double mpp0 = level0_mpp(slide, user_mpp);
  const auto [w0, h0] = slide.dimensions(0);
  const double ds = std::max(1.0, mpp / mpp0);
  const int64_t side = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(std::max(w0, h0)) / ds));
  QcImage q;
  q.rgb = thumbnail(slide, side, Background::White);
  q.downsample_x = static_cast<double>(w0) / static_cast<double>(q.rgb.width);
  q.downsample_y = static_cast<double>(h0) / static_cast<double>(q.rgb.height);
  return q;
}

}  // namespace histograd::wsi
