// Patch grids on hand-made tissue polygons: grid geometry (magnification/mpp, overlap, edge
// patches), CLAM's keep rules against a naive reference written here for axis-aligned rectangles,
// hole rejection, the minimum tissue fraction, the attributes for the .h5 and the grid picture.
#include <histograd/wsi/patching.hpp>

#include "test_util.hpp"

namespace wsi = histograd::wsi;

namespace {

wsi::TissueRegion rect(double x0, double y0, double x1, double y1) {
  wsi::TissueRegion r;
  r.outline = {{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}};
  return r;
}
wsi::Polygon rect_poly(double x0, double y0, double x1, double y1) { return {{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}}; }

// The keep rules written out for one closed rectangle [x0, x1] x [y0, y1] (boundary counts as in).
bool reference_keep(wsi::KeepRule rule, int64_t x, int64_t y, int64_t s, double x0, double y0, double x1, double y1) {
  auto in = [&](double px, double py) { return px >= x0 && px <= x1 && py >= y0 && py <= y1; };
  const double cx = double(x + s / 2), cy = double(y + s / 2), d = double(s / 4);
  const bool pts[4] = {in(cx - d, cy - d), in(cx + d, cy - d), in(cx - d, cy + d), in(cx + d, cy + d)};
  switch (rule) {
    case wsi::KeepRule::Basic: return in(double(x), double(y));
    case wsi::KeepRule::Center: return in(cx, cy);
    case wsi::KeepRule::FourPt: return pts[0] || pts[1] || pts[2] || pts[3];
    case wsi::KeepRule::FourPtHard: return pts[0] && pts[1] && pts[2] && pts[3];
    default: return true;
  }
}

wsi::PatchParams params20x() {
  wsi::PatchParams p;
  p.magnification = 20;
  p.patch_size = 256;
  return p;
}

}  // namespace

TEST_CASE("patch_grid: geometry of the grid at a magnification or an mpp") {
  // A 40x slide (0.25 mpp) at 20x: downsample 2, 512 level-0 pixels per 256 px patch.
  const std::vector<wsi::TissueRegion> all = {rect(0, 0, 4096, 3000)};
  wsi::PatchGrid g = wsi::patch_grid(all, 4096, 3000, 0.25, params20x());
  CHECK(g.downsample == 2);
  CHECK(g.target_mpp == 0.5);
  CHECK(g.patch_size_level0 == 512);
  CHECK(g.step_level0 == 512);
  CHECK(g.candidates == 8 * 6);  // x < 4096: 8 columns; y < 3000: 6 rows (the last runs past the edge)
  REQUIRE(g.coords.size() == 48);
  CHECK(g.coords[0] == wsi::Coord{0, 0});
  CHECK(g.coords[1] == wsi::Coord{512, 0});  // row-major
  CHECK(g.coords[8] == wsi::Coord{0, 512});
  CHECK(g.coords.back() == wsi::Coord{3584, 2560});

  wsi::PatchParams no_edge = params20x();
  no_edge.edge_patches = false;
  g = wsi::patch_grid(all, 4096, 3000, 0.25, no_edge);
  CHECK(g.candidates == 8 * 5);  // the row at y = 2560 would end at 3072 > 3000
  for (const auto& c : g.coords) CHECK(c.y + 512 <= 3000);

  wsi::PatchParams overlap = params20x();
  overlap.overlap = 64;  // 128 level-0 pixels: step 384
  g = wsi::patch_grid(all, 4096, 3000, 0.25, overlap);
  CHECK(g.step_level0 == 384);
  CHECK(g.candidates == 11 * 8);  // ceil(4096/384) = 11, ceil(3000/384) = 8
  CHECK(g.coords[1] == wsi::Coord{384, 0});

  wsi::PatchParams by_mpp;
  by_mpp.mpp = 1.0;
  by_mpp.patch_size = 224;
  g = wsi::patch_grid(all, 4096, 3000, 0.25, by_mpp);
  CHECK(g.downsample == 4);
  CHECK(g.patch_size_level0 == 896);

  // A 0.499 mpp slide (CMU-1) at 20x: TRIDENT's round(256 · 0.5/0.499) = 257.
  g = wsi::patch_grid(all, 4096, 3000, 0.499, params20x());
  CHECK(g.patch_size_level0 == 257);
  wsi::PatchParams defaults;  // neither set: 20x
  CHECK(wsi::patch_grid(all, 4096, 3000, 0.25, defaults).patch_size_level0 == 512);
}

TEST_CASE("patch_grid: CLAM's keep rules match a reference on rectangles") {
  // Edges placed between grid points so the rules disagree (four_pt keeps x = 512, centre not).
  const double x0 = 850, y0 = 700, x1 = 3010, y1 = 2333;
  const std::vector<wsi::TissueRegion> regions = {rect(x0, y0, x1, y1)};
  for (auto rule : {wsi::KeepRule::FourPt, wsi::KeepRule::FourPtHard, wsi::KeepRule::Center, wsi::KeepRule::Basic}) {
    wsi::PatchParams p = params20x();
    p.rule = rule;
    const wsi::PatchGrid g = wsi::patch_grid(regions, 4096, 4096, 0.25, p);
    std::vector<wsi::Coord> expected;
    for (int64_t y = 0; y < 4096; y += 512)
      for (int64_t x = 0; x < 4096; x += 512)
        if (reference_keep(rule, x, y, 512, x0, y0, x1, y1)) expected.push_back({x, y});
    INFO("rule " << int(rule));
    CHECK(g.coords == expected);
  }
  wsi::PatchParams p = params20x();
  p.rule = wsi::KeepRule::FourPt;
  const auto four = wsi::patch_grid(regions, 4096, 4096, 0.25, p).coords;
  p.rule = wsi::KeepRule::Center;
  const auto centre = wsi::patch_grid(regions, 4096, 4096, 0.25, p).coords;
  CHECK(four.size() > centre.size());
  CHECK(std::find(four.begin(), four.end(), wsi::Coord{512, 512}) != four.end());  // (896, 896) is inside
  CHECK(std::find(centre.begin(), centre.end(), wsi::Coord{512, 512}) == centre.end());

  // Two regions: a patch is kept once even when both would keep it.
  const std::vector<wsi::TissueRegion> two = {rect(0, 0, 2000, 600), rect(0, 0, 600, 2000)};
  p.rule = wsi::KeepRule::Basic;
  const auto both = wsi::patch_grid(two, 2048, 2048, 0.25, p).coords;
  CHECK(both == std::vector<wsi::Coord>{{0, 0}, {512, 0}, {1024, 0}, {1536, 0}, {0, 512}, {512, 512}, {1024, 512},
                                       {1536, 512}, {0, 1024}, {512, 1024}, {0, 1536}, {512, 1536}});

  // No tissue, no patches.
  CHECK(wsi::patch_grid({}, 4096, 4096, 0.25, params20x()).coords.empty());
}

TEST_CASE("patch_grid: a centre strictly inside a hole rejects the patch, unless holes are kept") {
  wsi::TissueRegion r = rect(0, 0, 4096, 4096);
  r.holes.push_back(rect_poly(1000, 1000, 2100, 2100));
  wsi::PatchParams p = params20x();
  p.rule = wsi::KeepRule::FourPt;
  const auto with_holes = wsi::patch_grid({r}, 4096, 4096, 0.25, p).coords;
  // Centres (x + 256) at 1280 and 1792 are inside (1000, 2100): 2 x 2 patches dropped.
  CHECK(with_holes.size() == 64 - 4);
  CHECK(std::find(with_holes.begin(), with_holes.end(), wsi::Coord{1024, 1024}) == with_holes.end());
  CHECK(std::find(with_holes.begin(), with_holes.end(), wsi::Coord{512, 1024}) != with_holes.end());
  // A centre exactly on the hole's border is not strictly inside: kept.
  wsi::TissueRegion on = rect(0, 0, 4096, 4096);
  on.holes.push_back(rect_poly(1280, 1280, 2000, 2000));
  CHECK(wsi::patch_grid({on}, 4096, 4096, 0.25, p).coords.size() == 64 - 1);  // only (1536, 1536)'s centre is inside
  p.reject_holes = false;  // TRIDENT's default: holes are tissue
  CHECK(wsi::patch_grid({r}, 4096, 4096, 0.25, p).coords.size() == 64);
}

TEST_CASE("patch_grid: minimum tissue fraction on the rasterised regions") {
  // Tissue covers x < 1280: the patch at x = 1024 is half on tissue (raster cell 32 = 512/16, exact here).
  const std::vector<wsi::TissueRegion> regions = {rect(0, 0, 1280, 4096)};
  wsi::PatchParams p = params20x();
  p.rule = wsi::KeepRule::None;
  CHECK(wsi::patch_grid(regions, 4096, 4096, 0.25, p).coords.size() == 3 * 8);  // any overlap
  p.min_tissue_fraction = 0.5;
  CHECK(wsi::patch_grid(regions, 4096, 4096, 0.25, p).coords.size() == 3 * 8);
  p.min_tissue_fraction = 0.55;
  CHECK(wsi::patch_grid(regions, 4096, 4096, 0.25, p).coords.size() == 2 * 8);
  // Combined with a keep rule, both must pass: four_pt keeps x = 1024, the fraction then drops it.
  p.rule = wsi::KeepRule::FourPt;
  CHECK(wsi::patch_grid(regions, 4096, 4096, 0.25, p).coords.size() == 2 * 8);

  wsi::TissueRegion holed = rect(0, 0, 1024, 1024);
  holed.holes.push_back(rect_poly(0, 0, 512, 512));
  const wsi::TissueRaster raster({holed}, 2048, 2048, 32);
  CHECK(raster.fraction(0, 0, 1024, 1024) == doctest::Approx(0.75));
  CHECK(raster.fraction(0, 0, 512, 512) == 0);
  CHECK(raster.fraction(512, 512, 512, 512) == 1);
  CHECK(raster.fraction(768, 768, 512, 512) == doctest::Approx(0.25));
  CHECK(raster.fraction(1792, 1792, 512, 512) == 0);  // partly outside the slide: background
  // A triangle: half of its bounding square, within the raster's one-cell tolerance.
  wsi::TissueRegion tri;
  tri.outline = {{0, 0}, {1024, 0}, {0, 1024}};
  CHECK(wsi::TissueRaster({tri}, 1024, 1024, 16).fraction(0, 0, 1024, 1024) == doctest::Approx(0.5).epsilon(1.0 / 64));
}

TEST_CASE("grid_info: TRIDENT attributes and CLAM's patch_level") {
  const std::vector<wsi::TissueRegion> all = {rect(0, 0, 4096, 3000)};
  wsi::PatchGrid g = wsi::patch_grid(all, 4096, 3000, 0.25, params20x());
  wsi::PatchGridInfo info = wsi::grid_info(g, "s1", "/out", 40.0, {1.0, 2.0, 8.0});
  CHECK(info.patch_size == 256);
  CHECK(info.patch_size_level0 == 512);
  CHECK(info.level0_magnification == 40);
  CHECK(info.target_magnification == 20);
  CHECK(info.patch_level == 1);  // the 2x level: CLAM reads 256 px there
  CHECK(info.custom_downsample == 1);
  CHECK(info.level0_width == 4096);
  info = wsi::grid_info(g, "s1", "/out", 40.0, {1.0, 4.0});
  CHECK(info.patch_level == 0);
  CHECK(info.custom_downsample == 2);
}

TEST_CASE("draw_patches outlines each patch on a thumbnail") {
  hg::io::Image canvas{16, 16, std::vector<uint8_t>(16 * 16 * 3, 255)};
  wsi::draw_patches(canvas, {{0, 0}, {512, 512}}, 512, 1.0 / 64, {255, 0, 0});
  auto px = [&](int x, int y) { return canvas.pixels[size_t((y * 16 + x) * 3 + 1)]; };
  CHECK(px(0, 0) == 0);
  CHECK(px(7, 0) == 0);
  CHECK(px(7, 7) == 0);
  CHECK(px(3, 3) == 255);  // inside stays
  CHECK(px(8, 8) == 0);
  CHECK(px(15, 15) == 0);
  CHECK(px(12, 12) == 255);
}

TEST_CASE("patching errors say what was expected") {
  const std::vector<wsi::TissueRegion> all = {rect(0, 0, 100, 100)};
  wsi::PatchParams p;
  p.magnification = 20;
  p.mpp = 0.5;
  CHECK_THROWS_WITH_AS(wsi::patch_grid(all, 100, 100, 0.25, p), doctest::Contains("patch_grid: give a target magnification or a target mpp, not both"), hg::Error);
  p = params20x();
  p.overlap = 256;
  CHECK_THROWS_WITH_AS(wsi::patch_grid(all, 100, 100, 0.25, p), doctest::Contains("patch_grid: expected 0 <= overlap < patch size 256, got 256"), hg::Error);
  CHECK_THROWS_WITH_AS(wsi::patch_grid(all, 100, 100, 0, params20x()), doctest::Contains("patch_grid: expected a positive level-0 mpp"), hg::Error);
  CHECK_THROWS_WITH_AS(wsi::keep_rule_from_name("corners"), doctest::Contains("keep_rule: expected four_pt, four_pt_hard, center, basic or none, got 'corners'"), hg::Error);
  p = params20x();
  p.min_tissue_fraction = 1.5;
  CHECK_THROWS_WITH_AS(wsi::patch_grid(all, 100, 100, 0.25, p), doctest::Contains("min_tissue_fraction in [0, 1]"), hg::Error);
}
