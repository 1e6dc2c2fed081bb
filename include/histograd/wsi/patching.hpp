// Patch grids over tissue at a target magnification or mpp. The grid is TRIDENT's WSIPatcher
// (downsample = target_mpp / level0_mpp, patch_size_level0 = round(patch_size · downsample), one
// global row-major grid x = col · (size0 − overlap0) over the whole slide, edge patches optional);
// the keep rules are CLAM's process_contour (four_pt, four_pt_hard, center, basic, and rejection
// of a patch whose centre lies strictly inside a hole). ../shared/docs/WSI.md §A1-A2.
// Coordinates are level-0 top-left corners.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../cpu/parallel.hpp"
#include "../io/image.hpp"
#include "hdf5.hpp"
#include "tissue.hpp"

namespace histograd::wsi {

// CLAM's contour_fn. None keeps every grid position that meets min_tissue_fraction (with fraction
// 0: any overlap with tissue, TRIDENT's test).
enum class KeepRule { FourPt, FourPtHard, Center, Basic, None };

inline KeepRule keep_rule_from_name(const std::string& name) {
  if (name == "four_pt") return KeepRule::FourPt;
  if (name == "four_pt_hard") return KeepRule::FourPtHard;
  if (name == "center") return KeepRule::Center;
  if (name == "basic") return KeepRule::Basic;
  if (name == "none") return KeepRule::None;
  fail("keep_rule", "expected four_pt, four_pt_hard, center, basic or none, got '", name, "'");
}

struct PatchParams {
  // The target resolution: one of the two (neither: 20x). TRIDENT's mag <-> mpp is mpp = 10 / mag.
  std::optional<double> magnification, mpp;
  int64_t patch_size = 256;  // side at the target resolution
  int64_t overlap = 0;       // pixels shared by neighbours, at the target resolution
  KeepRule rule = KeepRule::FourPt;
  bool reject_holes = true;          // CLAM: a centre strictly inside a hole drops the patch
  double min_tissue_fraction = 0;    // share of the patch area on tissue, see tissue_fraction below
  bool edge_patches = true;          // keep patches that run past the right/bottom edge (TRIDENT, CLAM use_padding)
};

struct PatchGrid {
  std::vector<Coord> coords;  // kept patches, row-major
  int64_t patch_size = 0, overlap = 0, patch_size_level0 = 0, step_level0 = 0;
  double level0_mpp = 0, target_mpp = 0, downsample = 1;  // downsample = target_mpp / level0_mpp
  int64_t level0_width = 0, level0_height = 0;
  int64_t candidates = 0;  // grid positions looked at
};

// The fraction of a level-0 box covered by tissue, on a raster of the regions (outline minus
// holes) sampled at pixel centres with `cell` level-0 pixels per raster pixel. The regions carry
// the precision of the segmentation level already; the raster adds at most one cell of error at
// each edge of a box: with cell = patch_size_level0 / 16 that is at most ~1/16 of the side, and
// parts of a box outside the slide count as background.
class TissueRaster {
 public:
  TissueRaster(const std::vector<TissueRegion>& regions, int64_t width0, int64_t height0, double cell)
      : cell_(cell), w_(std::max<int64_t>(1, int64_t(std::ceil(double(width0) / cell)))),
        h_(std::max<int64_t>(1, int64_t(std::ceil(double(height0) / cell)))) {
    HG_CHECK(cell > 0 && width0 > 0 && height0 > 0, "TissueRaster", "expected a positive cell and slide size, got ",
             cell, " and ", width0, "x", height0);
    HG_CHECK(double(w_) * double(h_) <= 4e8, "TissueRaster", "raster of ", w_, "x", h_, " cells is too large; use a larger cell");
    std::vector<uint8_t> mask(size_t(w_ * h_), 0);
    std::vector<double> xs;
    for (const TissueRegion& region : regions) {
      double ymin = 1e300, ymax = -1e300;
      for (const Point& p : region.outline) ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
      if (region.outline.size() < 3) continue;
      const int64_t j0 = std::max<int64_t>(0, int64_t(std::floor(ymin / cell_ - 0.5)));
      const int64_t j1 = std::min<int64_t>(h_ - 1, int64_t(std::ceil(ymax / cell_ - 0.5)));
      for (int64_t j = j0; j <= j1; ++j) {
        const double y = (double(j) + 0.5) * cell_;
        xs.clear();
        auto cross = [&](const Polygon& poly) {
          for (size_t k = 0, prev = poly.size() - 1; k < poly.size(); prev = k++) {
            const Point &a = poly[prev], &b = poly[k];
            if ((a.y > y) != (b.y > y)) xs.push_back(a.x + (y - a.y) * (b.x - a.x) / (b.y - a.y));
          }
        };
        cross(region.outline);
        for (const Polygon& hole : region.holes)
          if (hole.size() >= 3) cross(hole);
        std::sort(xs.begin(), xs.end());
        // Even-odd over outline and holes together: inside the outline and outside every hole.
        for (size_t k = 0; k + 1 < xs.size(); k += 2) {
          const int64_t i0 = std::max<int64_t>(0, int64_t(std::ceil(xs[k] / cell_ - 0.5)));
          const int64_t i1 = std::min<int64_t>(w_, int64_t(std::ceil(xs[k + 1] / cell_ - 0.5)));
          for (int64_t i = i0; i < i1; ++i) mask[size_t(j * w_ + i)] = 1;
        }
      }
    }
    integral_.assign(size_t((w_ + 1) * (h_ + 1)), 0);
    for (int64_t j = 0; j < h_; ++j) {
      uint32_t row = 0;
      for (int64_t i = 0; i < w_; ++i) {
        row += mask[size_t(j * w_ + i)];
        integral_[size_t((j + 1) * (w_ + 1) + i + 1)] = integral_[size_t(j * (w_ + 1) + i + 1)] + row;
      }
    }
  }

  // Tissue share of the level-0 box [x, x+w) x [y, y+h).
  double fraction(double x, double y, double w, double h) const {
    auto first = [&](double v, int64_t n) { return std::clamp<int64_t>(int64_t(std::ceil(v / cell_ - 0.5)), 0, n); };
    const int64_t i0 = first(x, w_), i1 = first(x + w, w_), j0 = first(y, h_), j1 = first(y + h, h_);
    if (i1 <= i0 || j1 <= j0) return 0;
    auto at = [&](int64_t i, int64_t j) { return double(integral_[size_t(j * (w_ + 1) + i)]); };
    const double count = at(i1, j1) - at(i0, j1) - at(i1, j0) + at(i0, j0);
    return std::min(1.0, count / ((w / cell_) * (h / cell_)));
  }
  double cell() const { return cell_; }

 private:
  double cell_;
  int64_t w_, h_;
  std::vector<uint32_t> integral_;
};

namespace detail {

struct RegionBox {
  double x0, y0, x1, y1;
};

// CLAM's contour_fn for one region: shift = int(size0 // 2 · 0.5) around the centre (x + size0 // 2).
inline bool passes_rule(const TissueRegion& r, KeepRule rule, int64_t x, int64_t y, int64_t size0) {
  const int64_t half = size0 / 2, shift = (size0 / 2) / 2;
  const double cx = double(x + half), cy = double(y + half);
  auto in = [&](double px, double py) { return point_polygon_test(r.outline, Point{px, py}) >= 0; };
  switch (rule) {
    case KeepRule::Basic: return in(double(x), double(y));
    case KeepRule::Center: return in(cx, cy);
    case KeepRule::FourPt:
    case KeepRule::FourPtHard: {
      const double s = double(shift);
      const std::array<Point, 4> pts = {Point{cx - s, cy - s}, Point{cx + s, cy + s}, Point{cx + s, cy - s},
                                        Point{cx - s, cy + s}};
      if (shift == 0) return in(cx, cy);
      int inside = 0;
      for (const Point& p : pts) inside += in(p.x, p.y);
      return rule == KeepRule::FourPt ? inside > 0 : inside == 4;
    }
    case KeepRule::None: return true;
  }
  return false;
}

// CLAM's isInHoles: the centre (x + size0/2, true division) strictly inside one of the holes.
inline bool centre_in_hole(const TissueRegion& r, int64_t x, int64_t y, int64_t size0) {
  const Point c{double(x) + double(size0) / 2, double(y) + double(size0) / 2};
  for (const Polygon& hole : r.holes)
    if (point_polygon_test(hole, c) > 0) return true;
  return false;
}

}  // namespace detail

// Level-0 size of a patch for a target resolution on a slide of level-0 mpp `level0_mpp`.
inline double target_mpp(const PatchParams& p) {
  HG_CHECK(!(p.magnification && p.mpp), "patch_grid", "give a target magnification or a target mpp, not both");
  if (p.mpp) {
    HG_CHECK(*p.mpp > 0, "patch_grid", "expected a positive target mpp, got ", *p.mpp);
    return *p.mpp;
  }
  const double mag = p.magnification.value_or(20.0);
  HG_CHECK(mag > 0, "patch_grid", "expected a positive target magnification, got ", mag);
  return 10.0 / mag;
}

// The grid of patches kept by `params` over `regions` (level-0 polygons) on a slide of
// width0 x height0 level-0 pixels whose level 0 has `level0_mpp` microns per pixel.
inline PatchGrid patch_grid(const std::vector<TissueRegion>& regions, int64_t width0, int64_t height0, double level0_mpp,
                            const PatchParams& params) {
  HG_CHECK(width0 > 0 && height0 > 0, "patch_grid", "expected a non-empty slide, got ", width0, "x", height0);
  HG_CHECK(level0_mpp > 0, "patch_grid", "expected a positive level-0 mpp, got ", level0_mpp);
  HG_CHECK(params.patch_size > 0, "patch_grid", "expected a positive patch size, got ", params.patch_size);
  HG_CHECK(params.overlap >= 0 && params.overlap < params.patch_size, "patch_grid",
           "expected 0 <= overlap < patch size ", params.patch_size, ", got ", params.overlap);
  HG_CHECK(params.min_tissue_fraction >= 0 && params.min_tissue_fraction <= 1, "patch_grid",
           "expected min_tissue_fraction in [0, 1], got ", params.min_tissue_fraction);
  PatchGrid g;
  g.patch_size = params.patch_size;
  g.overlap = params.overlap;
  g.level0_mpp = level0_mpp;
  g.target_mpp = target_mpp(params);
  g.downsample = g.target_mpp / level0_mpp;
  g.patch_size_level0 = std::llround(double(params.patch_size) * g.downsample);
  const int64_t overlap0 = std::llround(double(params.overlap) * g.downsample);
  g.step_level0 = g.patch_size_level0 - overlap0;
  HG_CHECK(g.patch_size_level0 >= 1 && g.step_level0 >= 1, "patch_grid", "patch of ", params.patch_size, " px at ",
           g.target_mpp, " mpp is under one level-0 pixel on a ", level0_mpp, " mpp slide");
  g.level0_width = width0;
  g.level0_height = height0;
  const int64_t size0 = g.patch_size_level0, step = g.step_level0;
  auto count = [&](int64_t extent) {
    if (params.edge_patches) return (extent + step - 1) / step;  // x < extent
    return extent >= size0 ? (extent - size0) / step + 1 : int64_t(0);
  };
  const int64_t cols = count(width0), rows = count(height0);
  g.candidates = cols * rows;

  std::vector<detail::RegionBox> boxes;
  for (const TissueRegion& r : regions) {
    detail::RegionBox b{1e300, 1e300, -1e300, -1e300};
    for (const Point& p : r.outline) b = {std::min(b.x0, p.x), std::min(b.y0, p.y), std::max(b.x1, p.x), std::max(b.y1, p.y)};
    boxes.push_back(b);
  }
  std::optional<TissueRaster> raster;
  const bool need_fraction = params.min_tissue_fraction > 0 || params.rule == KeepRule::None;
  if (need_fraction) raster.emplace(regions, width0, height0, std::max(1.0, double(size0) / 16.0));

  // Rows are independent: each fills its own list, joined in row order (deterministic).
  std::vector<std::vector<Coord>> kept(static_cast<size_t>(rows));
  cpu::parallel_for(rows, cols * 64 * int64_t(std::max<size_t>(1, regions.size())), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t y = row * step;
      for (int64_t col = 0; col < cols; ++col) {
        const int64_t x = col * step;
        bool keep = false;
        for (size_t k = 0; k < regions.size() && !keep; ++k) {
          const detail::RegionBox& b = boxes[k];
          if (double(x) > b.x1 || double(x + size0) < b.x0 || double(y) > b.y1 || double(y + size0) < b.y0) continue;
          if (!detail::passes_rule(regions[k], params.rule, x, y, size0)) continue;
          if (params.reject_holes && detail::centre_in_hole(regions[k], x, y, size0)) continue;
          keep = true;
        }
        if (keep && need_fraction) {
          const double f = raster->fraction(double(x), double(y), double(size0), double(size0));
          keep = params.min_tissue_fraction > 0 ? f >= params.min_tissue_fraction : f > 0;
        }
        if (keep) kept[size_t(row)].push_back({x, y});
      }
    }
  });
  for (auto& row : kept) g.coords.insert(g.coords.end(), row.begin(), row.end());
  return g;
}

// The attributes written beside the coordinates. level0_magnification: the caller's (extract.hpp
// gives the slide's objective power, else TRIDENT's nominal magnification for its mpp). patch_level:
// the pyramid level whose downsample is within 1% of the grid's (then CLAM's readers read patch_size
// px there, exactly the patch), else 0 with custom_downsample = patch_size_level0 / patch_size.
inline PatchGridInfo grid_info(const PatchGrid& g, const std::string& name, const std::string& savetodir,
                               double level0_magnification, const std::vector<double>& level_downsamples) {
  PatchGridInfo info;
  info.patch_size = g.patch_size;
  info.patch_size_level0 = g.patch_size_level0;
  info.level0_magnification = level0_magnification;
  info.target_magnification = 10.0 / g.target_mpp;
  info.overlap = g.overlap;
  info.name = name;
  info.savetodir = savetodir;
  info.level0_width = g.level0_width;
  info.level0_height = g.level0_height;
  info.patch_level = 0;
  info.level_downsample = 1;
  info.custom_downsample = double(g.patch_size_level0) / double(g.patch_size);
  for (size_t l = 0; l < level_downsamples.size(); ++l)
    if (std::abs(level_downsamples[l] - g.downsample) <= 0.01 * g.downsample) {
      info.patch_level = int64_t(l);
      info.level_downsample = level_downsamples[l];
      info.custom_downsample = 1;
      break;
    }
  return info;
}

// Outlines of the patches (level-0 coords, side size0) drawn on a picture of the slide at level-0
// coordinates times `scale` (a thumbnail: its width / level-0 width, as draw_regions takes it),
// `thickness` pixels wide, clipped to the canvas.
inline void draw_patches(io::Image& canvas, const std::vector<Coord>& coords, int64_t size0, double scale,
                         Rgb color, int thickness = 1) {
  HG_CHECK(scale > 0 && thickness >= 1, "draw_patches", "expected a positive scale and thickness, got ", scale, " and ",
           thickness);
  HG_CHECK(canvas.pixels.size() == size_t(canvas.width * canvas.height * 3), "draw_patches",
           "expected an RGB canvas, got ", canvas.width, "x", canvas.height, " with ", canvas.pixels.size(), " bytes");
  auto put = [&](int64_t x, int64_t y) {
    if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return;
    uint8_t* p = &canvas.pixels[size_t((y * canvas.width + x) * 3)];
    p[0] = color.r, p[1] = color.g, p[2] = color.b;
  };
  for (const Coord& c : coords) {
    const int64_t x0 = int64_t(std::llround(double(c.x) * scale)), y0 = int64_t(std::llround(double(c.y) * scale));
    const int64_t x1 = std::max<int64_t>(x0, std::llround(double(c.x + size0) * scale) - 1);
    const int64_t y1 = std::max<int64_t>(y0, std::llround(double(c.y + size0) * scale) - 1);
    for (int t = 0; t < thickness; ++t) {
      for (int64_t x = x0; x <= x1; ++x) put(x, y0 + t), put(x, y1 - t);
      for (int64_t y = y0; y <= y1; ++y) put(x0 + t, y), put(x1 - t, y);
    }
  }
}

}  // namespace histograd::wsi
