// Tissue segmentation as CLAM's WholeSlideImage.segmentTissue does it (mahmoodlab/CLAM,
// wsi_core/WholeSlideImage.py; see ../shared/docs/WSI.md A1): HSV saturation, median blur, fixed or
// Otsu threshold, morphological closing, RETR_CCOMP contours, area filtering in units of a 512²
// level-0 patch, holes by area, scaled to level 0. Plus CLAM's presets, a mask picture, contour
// drawing, and two opt-in stages CLAM has not: histolab's pen-colour filter and slideflow's Gaussian
// blur QC (qc.hpp), which together make the "histograd" preset.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "contours.hpp"
#include "image_ops.hpp"
#include "qc.hpp"

namespace histograd::wsi {

struct TissueRegion {
  Polygon outline;             // level-0 pixel coordinates
  std::vector<Polygon> holes;  // kept holes, largest first
};

// Net level-0 area: outline minus kept holes.
inline double region_area(const TissueRegion& r) {
  double a = polygon_area(r.outline);
  for (const Polygon& h : r.holes) a -= polygon_area(h);
  return a;
}

struct SegmentationParams {
  int seg_level = -1;     // −1: the level closest to downsample 64 (chosen by the slide-level caller)
  int sthresh = 8;        // saturation threshold (ignored with use_otsu)
  int mthresh = 7;        // median kernel size, odd
  int close = 4;          // closing kernel size, 0 for none
  bool use_otsu = false;
  double a_t = 100;       // minimum net tissue area, in 512×512 level-0 patches
  double a_h = 16;        // minimum hole area, same unit
  int max_n_holes = 8;    // largest holes considered per region
  int line_thickness = 250;  // CLAM's vis_params: level-0 pixels, for pictures
  // Not CLAM: zero the saturation of pixels histolab's red/green/blue pen filters call ink before
  // the median blur, so pen marks drawn on the glass are not taken for tissue.
  bool filter_pen = false;
  // Not CLAM: slideflow's Gaussian blur QC (qc.hpp) clears, from the closed mask and before contours
  // are found, the pixels that are out of focus: glass, smudges, pen marks on the coverslip. It needs
  // the region read again at blur_mpp µm/px (a QcImage; slideflow's 4 µm/px), since a thumbnail at
  // downsample 64 is too coarse to show focus. A mask pixel goes when more than blur_fraction of the
  // QC pixels it covers are blurred (slideflow's per-tile filter_threshold 0.6).
  bool blur_qc = false;
  double blur_mpp = 4, blur_sigma = 3, blur_threshold = 0.02, blur_fraction = 0.6;

  // "clam" (also "default"), "tcga", "bwh_biopsy", "bwh_resection": CLAM's presets/*.csv, exactly.
  // "histograd": CLAM's default plus filter_pen and blur_qc, the command-line tool's default, with
  // the small-biopsy area rule CLAM's maintainers advise (issue #27; bwh_biopsy's a_t = a_h = 1,
  // 512² level-0 px ≈ 0.07 mm² at 0.5 µm/px): CLAM's a_t = 100 (26 M px) rejects whole biopsies
  // and small slides outright (CMU-1-Small-Region is 6.6 M px), while dust stays out.
  static SegmentationParams preset(const std::string& name) {
    SegmentationParams p;
    if (name == "clam" || name == "default") return p;
    if (name == "histograd") {
      p.filter_pen = true;
      p.blur_qc = true;
      p.a_t = 1;
      p.a_h = 1;
      return p;
    }
    if (name == "tcga") {
      p.a_t = 16;
      p.a_h = 4;
      p.line_thickness = 100;
      return p;
    }
    if (name == "bwh_biopsy") {
      p.sthresh = 15;
      p.mthresh = 11;
      p.close = 2;
      p.a_t = 1;
      p.a_h = 1;
      p.max_n_holes = 2;
      p.line_thickness = 50;
      return p;
    }
    if (name == "bwh_resection") {
      p.sthresh = 15;
      p.mthresh = 11;
      p.a_t = 100;
      p.a_h = 16;
      p.line_thickness = 150;
      return p;
    }
    fail("SegmentationParams::preset", "expected one of clam, default, tcga, bwh_biopsy, bwh_resection, histograd, got '",
         name, "'");
  }
};

// Every intermediate of segmentTissue, for tests, debugging and pictures.
struct TissueSegmentation {
  GrayImage saturation;   // after the pen filter when it is on
  GrayImage median;
  int threshold = 0;      // sthresh, or the Otsu level
  GrayImage mask;         // thresholded and closed (and blur-QC'd when on): 255 tissue
  GrayImage blurred;      // blur QC on: slideflow's blur mask of the QC image (255 out of focus)
  int64_t blur_cleared = 0;  // mask pixels the blur QC cleared
  std::vector<Contour> contours;  // RETR_CCOMP borders of `mask`
  std::vector<int> kept;          // indices into `contours` of the kept outer borders
  std::vector<std::vector<int>> kept_holes;  // per kept border, its kept holes (largest first)
  std::vector<TissueRegion> regions;         // level 0
};

// CLAM refuses to segment a level larger than this many pixels (w·h > 1e8).
inline constexpr double max_segmentation_pixels = 1e8;

// `qc` is the same field of view at p.blur_mpp, needed when p.blur_qc is on (ignored otherwise).
inline TissueSegmentation segment_tissue_detailed(const io::Image& rgb, double downsample_x, double downsample_y,
                                                  const SegmentationParams& p, const QcImage* qc = nullptr) {
  const char* op = "segment_tissue";
  // CLAM's guard first, so an oversized level is refused before anything is allocated for it.
  HG_CHECK(static_cast<double>(rgb.width) * static_cast<double>(rgb.height) <= max_segmentation_pixels, op,
           "the image to segment is ", rgb.width, "x", rgb.height, " = ", rgb.width * rgb.height,
           " pixels, over CLAM's limit of 1e8: pick a coarser seg_level (a larger downsample)");
  detail::check_rgb(rgb, op);
  HG_CHECK(std::isfinite(downsample_x) && std::isfinite(downsample_y) && downsample_x > 0 && downsample_y > 0, op,
           "expected positive downsamples, got ", downsample_x, ", ", downsample_y);
  HG_CHECK(p.mthresh >= 1 && p.mthresh % 2 == 1, op, "expected an odd median kernel mthresh >= 1, got ", p.mthresh);
  HG_CHECK(p.sthresh >= 0 && p.sthresh <= 255, op, "expected sthresh in [0, 255], got ", p.sthresh);
  HG_CHECK(p.close >= 0, op, "expected close >= 0 (0 for no closing), got ", p.close);
  HG_CHECK(std::isfinite(p.a_t) && p.a_t >= 0, op, "expected a_t >= 0, got ", p.a_t);
  HG_CHECK(std::isfinite(p.a_h) && p.a_h >= 0, op, "expected a_h >= 0, got ", p.a_h);
  HG_CHECK(p.max_n_holes >= 0, op, "expected max_n_holes >= 0, got ", p.max_n_holes);
  if (p.blur_qc) {
    HG_CHECK(qc != nullptr, op, "blur_qc is on (the 'histograd' preset) but no QC image was given: pass the region "
             "read at blur_mpp = ", p.blur_mpp, " um/px as a QcImage (read_blur_qc_image for a slide), or turn blur_qc off");
    detail::check_rgb(qc->rgb, op);
    HG_CHECK(std::isfinite(p.blur_sigma) && p.blur_sigma > 0, op, "expected blur_sigma > 0, got ", p.blur_sigma);
    HG_CHECK(std::isfinite(p.blur_threshold), op, "expected a finite blur_threshold, got ", p.blur_threshold);
    HG_CHECK(p.blur_fraction >= 0 && p.blur_fraction <= 1, op, "expected blur_fraction in [0, 1], got ",
             p.blur_fraction);
  }

  TissueSegmentation out;
  out.saturation = rgb_to_saturation(rgb);
  if (p.filter_pen) {
    const GrayImage ink = pen_mask(rgb);
    for (size_t i = 0; i < ink.pixels.size(); ++i)
      if (ink.pixels[i]) out.saturation.pixels[i] = 0;
  }
  out.median = median_blur(out.saturation, p.mthresh);
  out.threshold = p.use_otsu ? otsu_threshold(out.median) : p.sthresh;
  out.mask = threshold_binary(out.median, out.threshold, 255);
  if (p.close > 0) out.mask = morphology_close(out.mask, p.close);
  if (p.blur_qc) {
    out.blurred = blur_mask(qc->rgb, p.blur_sigma, p.blur_threshold);
    out.blur_cleared = apply_blur_mask(out.mask, downsample_x, downsample_y, out.blurred, qc->downsample_x,
                                       qc->downsample_y, p.blur_fraction);
  }
  out.contours = find_contours(out.mask);

  // Areas are in units of a 512×512 level-0 patch, truncated to an integer at this level as CLAM does.
  const double ref_area = std::trunc(512.0 * 512.0 / (downsample_x * downsample_y));
  const double a_t = p.a_t * ref_area, a_h = p.a_h * ref_area;
  const auto& cs = out.contours;
  for (int i = 0; i < static_cast<int>(cs.size()); ++i) {
    if (cs[static_cast<size_t>(i)].parent != -1) continue;
    std::vector<int> holes;
    for (int j = 0; j < static_cast<int>(cs.size()); ++j)
      if (cs[static_cast<size_t>(j)].parent == i) holes.push_back(j);
    double a = polygon_area(cs[static_cast<size_t>(i)].points);
    double hole_sum = 0;  // numpy sums the hole areas first, then subtracts
    for (int j : holes) hole_sum += polygon_area(cs[static_cast<size_t>(j)].points);
    a -= hole_sum;
    if (a == 0 || !(a_t < a)) continue;
    // Largest holes first; ties keep contour order (Python's sorted is stable, also reversed).
    std::stable_sort(holes.begin(), holes.end(), [&](int x, int y) {
      return polygon_area(cs[static_cast<size_t>(x)].points) > polygon_area(cs[static_cast<size_t>(y)].points);
    });
    if (holes.size() > static_cast<size_t>(p.max_n_holes)) holes.resize(static_cast<size_t>(p.max_n_holes));
    std::vector<int> kept_holes;
    for (int j : holes)
      if (polygon_area(cs[static_cast<size_t>(j)].points) > a_h) kept_holes.push_back(j);
    out.kept.push_back(i);
    out.kept_holes.push_back(std::move(kept_holes));
  }
  // To level 0 as CLAM's scaleContourDim: multiply, then truncate to int32.
  auto to_level0 = [&](const std::vector<IntPoint>& pts) {
    Polygon poly;
    poly.reserve(pts.size());
    for (const IntPoint& q : pts)
      poly.push_back({std::trunc(q.x * downsample_x), std::trunc(q.y * downsample_y)});
    return poly;
  };
  for (size_t k = 0; k < out.kept.size(); ++k) {
    TissueRegion r;
    r.outline = to_level0(cs[static_cast<size_t>(out.kept[k])].points);
    for (int j : out.kept_holes[k]) r.holes.push_back(to_level0(cs[static_cast<size_t>(j)].points));
    out.regions.push_back(std::move(r));
  }
  return out;
}

// CLAM's segmentTissue on an RGB image read at (downsample_x, downsample_y) from level 0: the kept
// tissue regions in level-0 coordinates. Empty when there is no tissue.
inline std::vector<TissueRegion> segment_tissue(const io::Image& rgb, double downsample_x, double downsample_y,
                                                const SegmentationParams& params = {}, const QcImage* qc = nullptr) {
  return segment_tissue_detailed(rgb, downsample_x, downsample_y, params, qc).regions;
}

namespace detail {
// Sets the pixels whose centre (pixel-index coordinates, as OpenCV's) lies on segment a–b.
inline void mark_segment(std::vector<uint8_t>& row_major, int64_t w, int64_t h, Point a, Point b, uint8_t value) {
  const double minx = std::min(a.x, b.x), maxx = std::max(a.x, b.x), miny = std::min(a.y, b.y),
               maxy = std::max(a.y, b.y);
  const int64_t x0 = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(minx))),
                x1 = std::min<int64_t>(w - 1, static_cast<int64_t>(std::floor(maxx))),
                y0 = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(miny))),
                y1 = std::min<int64_t>(h - 1, static_cast<int64_t>(std::floor(maxy)));
  const double dx = b.x - a.x, dy = b.y - a.y;
  if (std::abs(dx) >= std::abs(dy)) {
    for (int64_t x = x0; x <= x1; ++x) {
      // The one row the segment could pass through at this column; confirm exactly.
      const double yy = dx == 0 ? a.y : a.y + (static_cast<double>(x) - a.x) * dy / dx;
      const int64_t y = static_cast<int64_t>(std::llround(yy));
      if (y < y0 || y > y1) continue;
      if ((static_cast<double>(y) - a.y) * dx - (static_cast<double>(x) - a.x) * dy == 0)
        row_major[static_cast<size_t>(y * w + x)] = value;
    }
  } else {
    for (int64_t y = y0; y <= y1; ++y) {
      const double xx = a.x + (static_cast<double>(y) - a.y) * dx / dy;
      const int64_t x = static_cast<int64_t>(std::llround(xx));
      if (x < x0 || x > x1) continue;
      if ((static_cast<double>(y) - a.y) * dx - (static_cast<double>(x) - a.x) * dy == 0)
        row_major[static_cast<size_t>(y * w + x)] = value;
    }
  }
}
}  // namespace detail

// A width×height picture of the regions, tissue white (255,255,255), the rest and kept holes
// black. Mask pixel (x, y) stands for level-0 point (x/scale, y/scale) (pixel centres at integer
// coordinates, as in OpenCV): it is white when that point is inside or on a region's outline and
// not strictly inside one of its holes, the rule CLAM's patching applies (pointPolygonTest >= 0
// on the outline, > 0 in a hole rejects). At scale 1/downsample of the segmentation level this
// reproduces the closed mask's kept components, with dropped holes filled.
inline io::Image tissue_mask_image(const std::vector<TissueRegion>& regions, int64_t width, int64_t height,
                                   double scale) {
  HG_CHECK(width > 0 && height > 0, "tissue_mask_image", "expected a positive size, got ", width, "x", height);
  HG_CHECK(std::isfinite(scale) && scale > 0, "tissue_mask_image", "expected a positive scale, got ", scale);
  std::vector<uint8_t> mask(static_cast<size_t>(width * height), 0);
  std::vector<uint8_t> region_mask(mask.size(), 0);
  std::vector<double> crossings;
  for (const TissueRegion& r : regions) {
    if (r.outline.empty()) continue;
    std::vector<const Polygon*> rings{&r.outline};
    for (const Polygon& hole : r.holes) rings.push_back(&hole);
    auto scaled = [scale](Point q) { return Point{q.x * scale, q.y * scale}; };
    double miny = 1e300, maxy = -1e300, minx = 1e300, maxx = -1e300;
    for (const Point& q : r.outline) {
      miny = std::min(miny, q.y * scale);
      maxy = std::max(maxy, q.y * scale);
      minx = std::min(minx, q.x * scale);
      maxx = std::max(maxx, q.x * scale);
    }
    const int64_t ya = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(miny))),
                  yb = std::min<int64_t>(height - 1, static_cast<int64_t>(std::floor(maxy)));
    const int64_t xa = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(minx))),
                  xb = std::min<int64_t>(width - 1, static_cast<int64_t>(std::floor(maxx)));
    if (ya > yb || xa > xb) continue;
    for (int64_t y = ya; y <= yb; ++y) std::fill_n(region_mask.begin() + y * width + xa, xb - xa + 1, uint8_t(0));
    // Interior: even-odd over the outline and its holes together, edges half-open in y.
    for (int64_t y = ya; y <= yb; ++y) {
      const double Y = static_cast<double>(y);
      crossings.clear();
      for (const Polygon* ring : rings) {
        Point a = scaled(ring->back());
        for (const Point& q0 : *ring) {
          const Point b = scaled(q0);
          if ((a.y <= Y) != (b.y <= Y)) crossings.push_back(a.x + (Y - a.y) * (b.x - a.x) / (b.y - a.y));
          a = b;
        }
      }
      std::sort(crossings.begin(), crossings.end());
      for (size_t k = 0; k + 1 < crossings.size(); k += 2) {
        const int64_t x0 = std::max<int64_t>(xa, static_cast<int64_t>(std::ceil(crossings[k]))),
                      x1 = std::min<int64_t>(xb, static_cast<int64_t>(std::ceil(crossings[k + 1])) - 1);
        for (int64_t x = x0; x <= x1; ++x) region_mask[static_cast<size_t>(y * width + x)] = 1;
      }
    }
    // Points on the outline are inside; points on a hole's border are tissue too (only strictly
    // inside a hole is rejected).
    for (const Polygon* ring : rings) {
      Point a = scaled(ring->back());
      for (const Point& q0 : *ring) {
        const Point b = scaled(q0);
        detail::mark_segment(region_mask, width, height, a, b, 1);
        a = b;
      }
    }
    for (int64_t y = ya; y <= yb; ++y)
      for (int64_t x = xa; x <= xb; ++x) mask[static_cast<size_t>(y * width + x)] |= region_mask[static_cast<size_t>(y * width + x)];
  }
  io::Image image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width * height * 3));
  for (size_t i = 0; i < mask.size(); ++i) {
    const uint8_t v = mask[i] ? 255 : 0;
    image.pixels[3 * i] = image.pixels[3 * i + 1] = image.pixels[3 * i + 2] = v;
  }
  return image;
}

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

// Draws each region's outline (CLAM: green) and holes (CLAM: blue) as closed polylines on an RGB
// canvas, level-0 coordinates times `scale`, `thickness` canvas pixels wide (every pixel whose
// centre is within thickness/2 of a segment; thickness 1 gives a connected one-pixel line).
inline void draw_regions(io::Image& canvas, const std::vector<TissueRegion>& regions, double scale,
                         Rgb outline_color = {0, 255, 0}, int thickness = 1, Rgb hole_color = {0, 0, 255}) {
  detail::check_rgb(canvas, "draw_regions");
  HG_CHECK(std::isfinite(scale) && scale > 0, "draw_regions", "expected a positive scale, got ", scale);
  HG_CHECK(thickness >= 1, "draw_regions", "expected a line thickness >= 1, got ", thickness);
  const double radius = std::max(0.5, thickness / 2.0);
  const int64_t w = canvas.width, h = canvas.height;
  auto segment = [&](Point a, Point b, Rgb c) {
    const double dx = b.x - a.x, dy = b.y - a.y, len2 = dx * dx + dy * dy;
    const int64_t x0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(std::min(a.x, b.x) - radius))),
                  x1 = std::min<int64_t>(w - 1, static_cast<int64_t>(std::ceil(std::max(a.x, b.x) + radius))),
                  y0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(std::min(a.y, b.y) - radius))),
                  y1 = std::min<int64_t>(h - 1, static_cast<int64_t>(std::ceil(std::max(a.y, b.y) + radius)));
    for (int64_t y = y0; y <= y1; ++y)
      for (int64_t x = x0; x <= x1; ++x) {
        const double px = static_cast<double>(x) - a.x, py = static_cast<double>(y) - a.y;
        const double t = len2 > 0 ? std::clamp((px * dx + py * dy) / len2, 0.0, 1.0) : 0.0;
        const double ex = px - t * dx, ey = py - t * dy;
        if (ex * ex + ey * ey <= radius * radius) {
          uint8_t* q = canvas.pixels.data() + 3 * (y * w + x);
          q[0] = c.r;
          q[1] = c.g;
          q[2] = c.b;
        }
      }
  };
  auto ring = [&](const Polygon& poly, Rgb c) {
    if (poly.empty()) return;
    Point a{poly.back().x * scale, poly.back().y * scale};
    for (const Point& q : poly) {
      const Point b{q.x * scale, q.y * scale};
      segment(a, b, c);
      a = b;
    }
  };
  for (const TissueRegion& r : regions) {
    ring(r.outline, outline_color);
    for (const Polygon& hole : r.holes) ring(hole, hole_color);
  }
}

}  // namespace histograd::wsi
