// Resolution by microns per pixel or magnification, as TRIDENT reads it from a slide's metadata
// (WSI.md §A2: its key order, then tiff.XResolution/ResolutionUnit; objective power as mpp = 10/power),
// never guessed: a slide without either is an error that says how to pass the mpp. Reading a level-0 box
// at an output size from the best pyramid level, then resampling (area when shrinking, as TIAToolbox's
// "optimise" does; bilinear when enlarging), and whole-slide thumbnails the way openslide-python picks the level.
#pragma once
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "slide.hpp"

namespace histograd::wsi {

namespace detail {

// The whole string as a positive finite decimal, like Python's float() but refusing 0, negatives, nan/inf.
inline std::optional<double> parse_positive(const std::string& text) {
  size_t a = 0, b = text.size();
  while (a < b && std::isspace(static_cast<unsigned char>(text[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(text[b - 1]))) --b;
  if (a == b) return std::nullopt;
  const std::string s = text.substr(a, b - a);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno != 0 || !std::isfinite(v) || v <= 0) return std::nullopt;
  return v;
}

inline std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace detail

// TRIDENT's OpenSlideWSI._fetch_mpp order; each value must be a number on its own.
inline const std::vector<std::string>& mpp_property_keys() {
  static const std::vector<std::string> keys = {"openslide.mpp-x", "openslide.mirax.MPP", "aperio.MPP",
                                                "hamamatsu.XResolution", "openslide.comment"};
  return keys;
}

// TIFF resolutions outside this range (µm/px) are not a scanner's: 72 dpi, the default of image
// writers, is 352.8 µm/px (openslide-python's boxes.tiff has it). TRIDENT would take it and fail later
// ("mpp is very low"); we treat it as no mpp, so the user is asked for one instead.
inline constexpr std::pair<double, double> kTiffMppRange{0.01, 50.0};

struct MppReading {
  double mpp;
  std::string source;  // the property it came from, e.g. "aperio.MPP" or "tiff.XResolution (centimeter)"
};

// Level-0 microns per pixel from the metadata, and where it was found; nullopt when none of the keys
// holds a positive number and the TIFF resolution is absent, in unit "none" or implausible (kTiffMppRange). OpenSlide 3.4.1 gives
// generic TIFFs no openslide.mpp-x, so the TIFF fallback is what makes those slides usable.
inline std::optional<MppReading> find_mpp(const Slide& slide) {
  for (const std::string& key : mpp_property_keys())
    if (auto value = slide.property(key))
      if (auto v = detail::parse_positive(*value)) return MppReading{*v, key};
  const auto res = slide.property("tiff.XResolution"), unit = slide.property("tiff.ResolutionUnit");
  if (res && unit)
    if (auto per_unit = detail::parse_positive(*res)) {
      const std::string u = detail::lower(*unit);
      const double mpp = u == "centimeter" ? 10000.0 / *per_unit : u == "inch" ? 25400.0 / *per_unit : 0.0;
      if (mpp >= kTiffMppRange.first && mpp <= kTiffMppRange.second)
        return MppReading{mpp, "tiff.XResolution (" + u + ")"};
    }
  return std::nullopt;
}

inline std::optional<double> slide_mpp(const Slide& slide) {
  if (auto r = find_mpp(slide)) return r->mpp;
  return std::nullopt;
}

// Objective magnification: openslide.objective-power (OpenSlide fills it from aperio.AppMag, hamamatsu
// SourceLens, ...), then the vendor keys TRIDENT also reads.
inline std::optional<double> objective_power(const Slide& slide) {
  for (const char* key : {"openslide.objective-power", "aperio.AppMag", "hamamatsu.SourceLens"})
    if (auto value = slide.property(key))
      if (auto v = detail::parse_positive(*value)) return v;
  return std::nullopt;
}

// TRIDENT's nominal magnification for an mpp (WSI.md §A2 table): 80, 60, 40, 20, 10, 5, or nullopt beyond 2.4 µm/px.
inline std::optional<int> nominal_magnification(double mpp) {
  HG_CHECK(std::isfinite(mpp) && mpp > 0, "nominal_magnification", "expected a positive mpp, got ", mpp);
  const std::pair<double, int> table[] = {{0.16, 80}, {0.2, 60}, {0.3, 40}, {0.6, 20}, {1.2, 10}, {2.4, 5}};
  for (const auto& [below, mag] : table)
    if (mpp < below) return mag;
  return std::nullopt;
}

// What the user asked for: a magnification (20 for 20x) or microns per pixel; exactly one set.
// Magnification converts as mpp = 10 / magnification, the convention of TRIDENT and TIAToolbox.
struct Resolution {
  std::optional<double> magnification, mpp;

  static Resolution at_magnification(double m) { return Resolution{m, std::nullopt}; }
  static Resolution at_mpp(double v) { return Resolution{std::nullopt, v}; }

  double target_mpp() const {
    HG_CHECK(magnification.has_value() != mpp.has_value(), "Resolution",
             "expected exactly one of magnification and mpp, got ", magnification ? "both" : "neither");
    if (mpp) {
      HG_CHECK(std::isfinite(*mpp) && *mpp > 0, "Resolution", "expected a positive mpp, got ", *mpp);
      return *mpp;
    }
    HG_CHECK(std::isfinite(*magnification) && *magnification > 0, "Resolution", "expected a positive magnification, got ",
             *magnification);
    return 10.0 / *magnification;
  }
};

// The mpp to use for a slide's level 0: the user's value when given (it wins over the metadata, as
// TRIDENT's CSV mpp does), else find_mpp, else 10 / objective_power (TRIDENT's fallback), else an Error
// naming what was looked at and how to pass the value. Never a guess.
inline double level0_mpp(const Slide& slide, std::optional<double> user_mpp = std::nullopt) {
  if (user_mpp) {
    HG_CHECK(std::isfinite(*user_mpp) && *user_mpp > 0, "level0_mpp", slide.path(), ": expected a positive mpp, got ",
             *user_mpp);
    return *user_mpp;
  }
  if (auto m = slide_mpp(slide)) return *m;
  if (auto p = objective_power(slide)) return 10.0 / *p;
  fail("level0_mpp", slide.path(),
       ": the slide's metadata gives no microns per pixel (looked at openslide.mpp-x, openslide.mirax.MPP, aperio.MPP, "
       "hamamatsu.XResolution, openslide.comment, tiff.XResolution with tiff.ResolutionUnit inch or centimeter giving "
       "0.01-50 µm, and "
       "openslide.objective-power) and histograd will not guess it: pass it with --slide-mpp <microns per pixel> for all "
       "slides, or in a per-slide CSV with columns wsi,mpp (--mpp-csv <file>)");
}

// A per-slide mpp table in TRIDENT's custom_list_of_wsis layout: a header with columns "wsi" and "mpp"
// (others ignored), one slide per row; an empty mpp means "from the metadata" and is left out.
inline std::map<std::string, double> read_mpp_csv(const std::string& path) {
  std::ifstream in(path);
  HG_CHECK(in.good(), "read_mpp_csv", "cannot open '", path, "'");
  auto split = [](const std::string& line) {
    std::vector<std::string> cells(1);
    for (char c : line) {
      if (c == ',') cells.emplace_back();
      else if (c != '\r') cells.back() += c;
    }
    for (auto& cell : cells) {
      const size_t a = cell.find_first_not_of(" \t\""), b = cell.find_last_not_of(" \t\"");
      cell = a == std::string::npos ? "" : cell.substr(a, b - a + 1);
    }
    return cells;
  };
  std::string line;
  HG_CHECK(static_cast<bool>(std::getline(in, line)), "read_mpp_csv", path, ": empty file, expected a header wsi,mpp");
  const auto header = split(line);
  const auto col = [&](const char* name) {
    for (size_t i = 0; i < header.size(); ++i)
      if (detail::lower(header[i]) == name) return static_cast<int64_t>(i);
    return int64_t(-1);
  };
  const int64_t wsi_col = col("wsi"), mpp_col = col("mpp");
  HG_CHECK(wsi_col >= 0 && mpp_col >= 0, "read_mpp_csv", path, ": expected a header with columns wsi and mpp, got '", line, "'");
  std::map<std::string, double> table;
  for (int64_t row = 2; std::getline(in, line); ++row) {
    const auto cells = split(line);
    if (cells.size() == 1 && cells[0].empty()) continue;
    HG_CHECK(static_cast<int64_t>(cells.size()) > std::max(wsi_col, mpp_col), "read_mpp_csv", path, ": line ", row,
             " has ", cells.size(), " cells, expected at least ", std::max(wsi_col, mpp_col) + 1);
    const std::string& mpp = cells[static_cast<size_t>(mpp_col)];
    if (mpp.empty()) continue;
    const auto v = detail::parse_positive(mpp);
    HG_CHECK(v.has_value(), "read_mpp_csv", path, ": line ", row, ": expected a positive mpp, got '", mpp, "'");
    table[cells[static_cast<size_t>(wsi_col)]] = *v;
  }
  return table;
}

// The table's mpp for a slide: matched on the path as given, else on its file name.
inline std::optional<double> mpp_for(const std::map<std::string, double>& table, const std::string& slide_path) {
  if (auto it = table.find(slide_path); it != table.end()) return it->second;
  if (auto it = table.find(std::filesystem::path(slide_path).filename().string()); it != table.end()) return it->second;
  return std::nullopt;
}

namespace detail {

// Separable resampling weights from n_in to n_out samples. Shrinking: each output sample averages the
// input over its footprint [o·s, (o+1)·s) (s = n_in/n_out), weighted by overlap: cv2's INTER_AREA, an
// exact mean for integer factors, the right filter for pyramid-like reductions with no ringing.
// Enlarging: bilinear on pixel centres (half-pixel convention), edges clamped.
struct Taps {
  std::vector<int64_t> first;   // first input index of output o
  std::vector<int32_t> count;   // inputs used by output o
  std::vector<float> weight;    // weight[o·stride + k]
  int64_t stride = 0;
};

inline Taps make_taps(int64_t n_in, int64_t n_out) {
  Taps t;
  const double s = static_cast<double>(n_in) / static_cast<double>(n_out);
  t.first.resize(static_cast<size_t>(n_out));
  t.count.resize(static_cast<size_t>(n_out));
  if (s >= 1) {
    t.stride = static_cast<int64_t>(std::ceil(s)) + 1;
    t.weight.assign(static_cast<size_t>(n_out * t.stride), 0.f);
    for (int64_t o = 0; o < n_out; ++o) {
      const double lo = static_cast<double>(o) * s, hi = std::min(static_cast<double>(o + 1) * s, static_cast<double>(n_in));
      const int64_t i0 = static_cast<int64_t>(std::floor(lo));
      const int64_t i1 = std::min<int64_t>(n_in, static_cast<int64_t>(std::ceil(hi)));
      int32_t k = 0;
      for (int64_t i = i0; i < i1; ++i) {
        const double cover = std::min<double>(static_cast<double>(i + 1), hi) - std::max<double>(static_cast<double>(i), lo);
        if (cover <= 1e-12) continue;
        if (k == 0) t.first[static_cast<size_t>(o)] = i;
        t.weight[static_cast<size_t>(o * t.stride + k++)] = static_cast<float>(cover / s);
      }
      t.count[static_cast<size_t>(o)] = k;
    }
  } else {
    t.stride = 2;
    t.weight.assign(static_cast<size_t>(n_out * 2), 0.f);
    for (int64_t o = 0; o < n_out; ++o) {
      const double c = std::max(0.0, (static_cast<double>(o) + 0.5) * s - 0.5);
      const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(c)), n_in - 1);
      const double f = c - static_cast<double>(i0);
      t.first[static_cast<size_t>(o)] = i0;
      if (i0 + 1 < n_in && f > 0) {
        t.count[static_cast<size_t>(o)] = 2;
        t.weight[static_cast<size_t>(o * 2)] = static_cast<float>(1 - f);
        t.weight[static_cast<size_t>(o * 2 + 1)] = static_cast<float>(f);
      } else {
        t.count[static_cast<size_t>(o)] = 1;
        t.weight[static_cast<size_t>(o * 2)] = 1.f;
      }
    }
  }
  return t;
}

// Output rows [oy0, oy1) of an RGB resize, from the source rows [src_row0, src_row0 + src_rows) that
// they need (src has src_w columns); `out` points at output row oy0.
inline void resize_rows(const uint8_t* src, int64_t src_w, int64_t src_row0, int64_t src_rows, const Taps& tx,
                        const Taps& ty, int64_t oy0, int64_t oy1, uint8_t* out) {
  const int64_t out_w = static_cast<int64_t>(tx.first.size());
  std::vector<float> horiz(static_cast<size_t>(src_rows * out_w * 3));
  for (int64_t r = 0; r < src_rows; ++r) {
    const uint8_t* row = src + r * src_w * 3;
    float* h = horiz.data() + r * out_w * 3;
    for (int64_t o = 0; o < out_w; ++o) {
      float acc[3] = {0, 0, 0};
      const int64_t i0 = tx.first[static_cast<size_t>(o)];
      const float* w = tx.weight.data() + o * tx.stride;
      for (int32_t k = 0; k < tx.count[static_cast<size_t>(o)]; ++k)
        for (int c = 0; c < 3; ++c) acc[c] += w[k] * static_cast<float>(row[(i0 + k) * 3 + c]);
      for (int c = 0; c < 3; ++c) h[o * 3 + c] = acc[c];
    }
  }
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const int64_t j0 = ty.first[static_cast<size_t>(oy)] - src_row0;
    const float* w = ty.weight.data() + oy * ty.stride;
    uint8_t* dst = out + (oy - oy0) * out_w * 3;
    for (int64_t x = 0; x < out_w * 3; ++x) {
      float acc = 0;
      for (int32_t k = 0; k < ty.count[static_cast<size_t>(oy)]; ++k) acc += w[k] * horiz[static_cast<size_t>((j0 + k) * out_w * 3 + x)];
      dst[x] = static_cast<uint8_t>(std::clamp(std::lround(acc), 0L, 255L));
    }
  }
}

}  // namespace detail

// An RGB image resized to out_w x out_h (area when shrinking, bilinear when enlarging, per axis).
inline io::Image resize_rgb(const io::Image& image, int64_t out_w, int64_t out_h) {
  HG_CHECK(image.width > 0 && image.height > 0 && image.pixels.size() == static_cast<size_t>(image.width * image.height * 3),
           "resize_rgb", "expected a non-empty RGB image, got ", image.width, "x", image.height, " with ", image.pixels.size(),
           " bytes");
  HG_CHECK(out_w > 0 && out_h > 0, "resize_rgb", "expected a positive output size, got ", out_w, "x", out_h);
  if (out_w == image.width && out_h == image.height) return image;
  const detail::Taps tx = detail::make_taps(image.width, out_w), ty = detail::make_taps(image.height, out_h);
  io::Image out{out_w, out_h, std::vector<uint8_t>(static_cast<size_t>(out_w * out_h * 3))};
  detail::resize_rows(image.pixels.data(), image.width, 0, image.height, tx, ty, 0, out_h, out.pixels.data());
  return out;
}

// The level-0 box (x0, y0, w0 x h0) at out_w x out_h: read from the lowest-resolution level that still
// has at least the needed detail (downsample <= min(w0/out_w, h0/out_h), with 1% slack so a level at
// 4.016 serves a 4x request as TRIDENT's tolerance does), then resized when the level's pixels do not
// already have the output size. Exact pyramid levels need no resize: the pixels are the slide's own.
inline io::Image read_region_resized(const Slide& slide, int64_t x0, int64_t y0, int64_t w0, int64_t h0, int64_t out_w,
                                     int64_t out_h, Background background = Background::White) {
  HG_CHECK(w0 > 0 && h0 > 0 && out_w > 0 && out_h > 0, "read_region_resized", slide.path(),
           ": expected positive sizes, got a ", w0, "x", h0, " box to ", out_w, "x", out_h);
  const double want = std::min(static_cast<double>(w0) / static_cast<double>(out_w),
                               static_cast<double>(h0) / static_cast<double>(out_h));
  const int level = slide.best_level_for_downsample(want * 1.01);
  const double ds = slide.downsample(level);
  const int64_t lw = std::max<int64_t>(1, std::llround(static_cast<double>(w0) / ds));
  const int64_t lh = std::max<int64_t>(1, std::llround(static_cast<double>(h0) / ds));
  return resize_rgb(slide.read_region(x0, y0, level, lw, lh, background), out_w, out_h);
}

// The whole slide with its longer side max_side (never enlarged beyond level 0), aspect kept: read
// from openslide-python get_thumbnail's level (best level for the overall downsample), area-resized.
// Huge levels are read in bands of rows, so memory stays bounded by a few bands.
inline io::Image thumbnail(const Slide& slide, int64_t max_side, Background background = Background::White) {
  HG_CHECK(max_side > 0, "thumbnail", slide.path(), ": expected a positive size, got ", max_side);
  const auto [W, H] = slide.dimensions(0);
  const double ds = std::max(1.0, static_cast<double>(std::max(W, H)) / static_cast<double>(max_side));
  const int64_t tw = std::max<int64_t>(1, std::llround(static_cast<double>(W) / ds));
  const int64_t th = std::max<int64_t>(1, std::llround(static_cast<double>(H) / ds));
  const int level = slide.best_level_for_downsample(ds);
  const auto [lw, lh] = slide.dimensions(level);
  const double lds = slide.downsample(level);
  const detail::Taps tx = detail::make_taps(lw, tw), ty = detail::make_taps(lh, th);
  io::Image out{tw, th, std::vector<uint8_t>(static_cast<size_t>(tw * th * 3))};
  const int64_t budget_rows = std::max<int64_t>(1, detail::kReadChunkPixels * 4 / lw);
  for (int64_t oy0 = 0; oy0 < th;) {
    const int64_t src0 = ty.first[static_cast<size_t>(oy0)];
    int64_t oy1 = oy0 + 1, src1 = src0 + ty.count[static_cast<size_t>(oy0)];
    while (oy1 < th) {
      const int64_t end = ty.first[static_cast<size_t>(oy1)] + ty.count[static_cast<size_t>(oy1)];
      if (end - src0 > budget_rows) break;
      src1 = std::max(src1, end), ++oy1;
    }
    const io::Image band = slide.read_region(0, std::llround(static_cast<double>(src0) * lds), level, lw, src1 - src0, background);
    detail::resize_rows(band.pixels.data(), lw, src0, src1 - src0, tx, ty, oy0, oy1, out.pixels.data() + oy0 * tw * 3);
    oy0 = oy1;
  }
  return out;
}

}  // namespace histograd::wsi
