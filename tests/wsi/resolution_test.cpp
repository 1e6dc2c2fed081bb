// Resolution by mpp/magnification (TRIDENT's key order, TIFF resolution fallback, the missing-mpp error),
// read_region_resized and thumbnail on pyramids the test writes, and the real slides when present.
#include "test_util.hpp"

#include <filesystem>
#include <fstream>

#include <histograd/wsi/resolution.hpp>

#include "wsi/synthetic_tiff.hpp"

namespace wsi = histograd::wsi;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("histograd_resolution_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

doctest::Contains has(const std::string& text) { return doctest::Contains(text.c_str()); }

std::array<uint8_t, 3> pattern(int64_t x, int64_t y) {
  return {static_cast<uint8_t>(x * 3 + y), static_cast<uint8_t>(y * 5 + 7), static_cast<uint8_t>((x * 7) ^ (y * 11))};
}

std::string write(const std::string& name, const synthetic::PyramidOptions& o, int64_t w = 128, int64_t h = 96) {
  const std::string p = temp_path(name);
  synthetic::write_pyramid_tiff(p, w, h, pattern, o);
  return p;
}

// 256x192, levels at 1, 2, 4, 32 px tiles, no resolution metadata.
const std::string& pyramid_path() {
  static const std::string path = [] {
    synthetic::PyramidOptions o;
    o.tile = 32;
    o.levels = 3;
    return write("pyramid.tiff", o, 256, 192);
  }();
  return path;
}

const std::vector<synthetic::Image>& levels() {
  static const auto l = synthetic::pyramid_levels(synthetic::make_image(256, 192, pattern), 3);
  return l;
}

synthetic::Image crop(const synthetic::Image& im, int64_t x, int64_t y, int64_t w, int64_t h) {
  synthetic::Image out{w, h, {}};
  for (int64_t r = y; r < y + h; ++r)
    for (int64_t c = x; c < x + w; ++c)
      for (int k = 0; k < 3; ++k) out.pixels.push_back(im.pixels[static_cast<size_t>((r * im.width + c) * 3 + k)]);
  return out;
}

// Area resampling written as a 2-D integral: every source pixel contributes its overlap with the
// output pixel's footprint (an independent formulation of make_taps' shrink weights).
synthetic::Image area_reference(const synthetic::Image& src, int64_t ow, int64_t oh) {
  const double sx = double(src.width) / double(ow), sy = double(src.height) / double(oh);
  auto overlap = [](double a0, double a1, double b0, double b1) { return std::max(0.0, std::min(a1, b1) - std::max(a0, b0)); };
  synthetic::Image out{ow, oh, std::vector<uint8_t>(static_cast<size_t>(ow * oh * 3))};
  for (int64_t oy = 0; oy < oh; ++oy)
    for (int64_t ox = 0; ox < ow; ++ox)
      for (int c = 0; c < 3; ++c) {
        double acc = 0;
        // Only pixels within one footprint of the output pixel can overlap it.
        for (int64_t y = std::max<int64_t>(0, int64_t(oy * sy) - 1); y < std::min<int64_t>(src.height, int64_t((oy + 1) * sy) + 2); ++y)
          for (int64_t x = std::max<int64_t>(0, int64_t(ox * sx) - 1); x < std::min<int64_t>(src.width, int64_t((ox + 1) * sx) + 2); ++x)
            acc += overlap(ox * sx, (ox + 1) * sx, double(x), double(x + 1)) * overlap(oy * sy, (oy + 1) * sy, double(y), double(y + 1)) *
                   src.pixels[static_cast<size_t>((y * src.width + x) * 3 + c)];
        out.pixels[static_cast<size_t>((oy * ow + ox) * 3 + c)] = static_cast<uint8_t>(std::lround(acc / (sx * sy)));
      }
  return out;
}

// Max |a - b| over the bytes (the reference accumulates in double, the resampler in float).
int max_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  REQUIRE(a.size() == b.size());
  int m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(int(a[i]) - int(b[i])));
  return m;
}

std::string shared_slide(const std::string& name) { return std::string(HISTOGRAD_SHARED_DATA_DIR) + "/slides/" + name; }

bool have(const std::string& path) {
  if (fs::exists(path)) return true;
  MESSAGE("skipped: " << path << " is absent (real slides live in ../shared/data/slides)");
  return false;
}

}  // namespace

TEST_CASE("slide_mpp: TIFF resolution fallback (OpenSlide 3.4.1 gives generic TIFF no openslide.mpp-x)") {
  synthetic::PyramidOptions o;
  o.x_resolution = 20000;  // pixels per centimeter -> 10000/20000 = 0.5 µm
  o.resolution_unit = synthetic::ResolutionUnit::Centimeter;
  const wsi::Slide cm(write("cm.tiff", o));
  CHECK(!cm.property("openslide.mpp-x").has_value());
  CHECK(cm.property("tiff.ResolutionUnit") == std::optional<std::string>("centimeter"));
  CHECK(wsi::slide_mpp(cm) == std::optional<double>(0.5));
  CHECK(wsi::find_mpp(cm)->source == "tiff.XResolution (centimeter)");
  CHECK(wsi::level0_mpp(cm, std::nullopt) == 0.5);

  o.x_resolution = 101600;  // pixels per inch -> 25400/101600 = 0.25 µm
  o.resolution_unit = synthetic::ResolutionUnit::Inch;
  const wsi::Slide inch(write("inch.tiff", o));
  CHECK(wsi::slide_mpp(inch) == std::optional<double>(0.25));
  CHECK(wsi::find_mpp(inch)->source == "tiff.XResolution (inch)");

  o.x_resolution = 72;  // an image writer's default dpi, 352.8 µm/px: not a scanner's, so no mpp
  const wsi::Slide dpi72(write("dpi72.tiff", o));
  CHECK(dpi72.property("tiff.XResolution") == std::optional<std::string>("72"));
  CHECK(!wsi::slide_mpp(dpi72).has_value());

  o.x_resolution = 20000;
  o.resolution_unit = synthetic::ResolutionUnit::None;  // a resolution without a unit is no physical size
  const wsi::Slide none(write("none.tiff", o));
  CHECK(!wsi::slide_mpp(none).has_value());

  // No XResolution at all: libtiff still reports its default unit (inch), which must not be enough.
  const wsi::Slide bare(pyramid_path());
  CHECK(bare.property("tiff.ResolutionUnit") == std::optional<std::string>("inch"));
  CHECK(!wsi::slide_mpp(bare).has_value());
  CHECK(!wsi::objective_power(bare).has_value());
}

TEST_CASE("slide_mpp and objective_power from an Aperio description") {
  synthetic::PyramidOptions o;
  o.levels = 2;
  o.tile = 32;
  o.description = synthetic::aperio_description(128, 96, 32, 0.2527, 40.0);
  // A TIFF resolution that disagrees: the Aperio MPP comes first (TRIDENT's order).
  o.x_resolution = 20000;
  const wsi::Slide slide(write("aperio.svs", o));
  CHECK(slide.property("openslide.vendor") == std::optional<std::string>("aperio"));
  CHECK(slide.property("aperio.MPP") == std::optional<std::string>("0.2527"));
  CHECK(wsi::slide_mpp(slide) == std::optional<double>(0.2527));
  CHECK(wsi::find_mpp(slide)->source == "openslide.mpp-x");
  CHECK(wsi::objective_power(slide) == std::optional<double>(40));
  CHECK(wsi::level0_mpp(slide, std::nullopt) == 0.2527);
  CHECK(wsi::level0_mpp(slide, 0.3) == 0.3);  // the user's value wins
  CHECK(wsi::nominal_magnification(0.2527) == std::optional<int>(40));

  // Magnification only: TRIDENT's fallback mpp = 10 / power.
  o.description = synthetic::aperio_description(128, 96, 32, std::nullopt, 20.0);
  o.x_resolution.reset();
  const wsi::Slide mag_only(write("mag_only.svs", o));
  CHECK(!wsi::slide_mpp(mag_only).has_value());
  CHECK(wsi::objective_power(mag_only) == std::optional<double>(20));
  CHECK(wsi::level0_mpp(mag_only, std::nullopt) == 0.5);
}

TEST_CASE("level0_mpp: a slide without mpp or magnification is an error that says how to pass one") {
  synthetic::PyramidOptions o;
  o.tile = 32;
  o.description = synthetic::aperio_description(128, 96, 32, std::nullopt, std::nullopt);
  const std::string path = write("no_mpp.svs", o);
  const wsi::Slide slide(path);
  CHECK(slide.property("openslide.vendor") == std::optional<std::string>("aperio"));
  CHECK(!wsi::slide_mpp(slide).has_value());
  CHECK_THROWS_WITH_AS(wsi::level0_mpp(slide, std::nullopt),
                       has("level0_mpp: " + path + ": the slide's metadata gives no microns per pixel"), hg::Error);
  CHECK_THROWS_WITH_AS(wsi::level0_mpp(slide, std::nullopt), has("will not guess it: pass it with --slide-mpp <microns per pixel>"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(wsi::level0_mpp(slide, std::nullopt), has("per-slide CSV with columns wsi,mpp"), hg::Error);
  CHECK(wsi::level0_mpp(slide, 0.5) == 0.5);
  CHECK_THROWS_WITH_AS(wsi::level0_mpp(slide, -1.0), has("expected a positive mpp, got -1"), hg::Error);
}

TEST_CASE("parse rules, Resolution, nominal magnification, the per-slide CSV") {
  using wsi::detail::parse_positive;
  CHECK(parse_positive("0.499") == std::optional<double>(0.499));
  CHECK(parse_positive(" 0.25 ") == std::optional<double>(0.25));
  for (const char* bad : {"", "abc", "0.5um", "0", "-0.5", "nan", "inf", "MPP = 0.5"}) {
    INFO(bad);
    CHECK(!parse_positive(bad).has_value());
  }
  CHECK(wsi::Resolution::at_magnification(20).target_mpp() == 0.5);
  CHECK(wsi::Resolution::at_mpp(0.25).target_mpp() == 0.25);
  CHECK_THROWS_WITH_AS((wsi::Resolution{20.0, 0.5}.target_mpp()), has("Resolution: expected exactly one of magnification and mpp, got both"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(wsi::Resolution{}.target_mpp(), has("got neither"), hg::Error);
  CHECK_THROWS_WITH_AS(wsi::Resolution::at_magnification(0).target_mpp(), has("expected a positive magnification, got 0"), hg::Error);
  CHECK(wsi::nominal_magnification(0.12) == std::optional<int>(80));
  CHECK(wsi::nominal_magnification(0.5) == std::optional<int>(20));
  CHECK(wsi::nominal_magnification(1.0) == std::optional<int>(10));
  CHECK(wsi::nominal_magnification(2.0) == std::optional<int>(5));
  CHECK(!wsi::nominal_magnification(2.4).has_value());

  const std::string csv = temp_path("mpp.csv");
  { std::ofstream(csv) << "wsi,mpp\r\ncase01.svs,0.2527\r\nsubdir/case02.ndpi,\r\n\"case03.tif\", 0.5\r\n"; }
  const auto table = wsi::read_mpp_csv(csv);
  CHECK(table.size() == 2);
  CHECK(wsi::mpp_for(table, "case01.svs") == std::optional<double>(0.2527));
  CHECK(wsi::mpp_for(table, "/data/slides/case03.tif") == std::optional<double>(0.5));
  CHECK(!wsi::mpp_for(table, "subdir/case02.ndpi").has_value());
  { std::ofstream(csv) << "slide,mpp\nx.svs,0.5\n"; }
  CHECK_THROWS_WITH_AS(wsi::read_mpp_csv(csv), has("expected a header with columns wsi and mpp, got 'slide,mpp'"), hg::Error);
  { std::ofstream(csv) << "wsi,mpp\nx.svs,fast\n"; }
  CHECK_THROWS_WITH_AS(wsi::read_mpp_csv(csv), has(": line 2: expected a positive mpp, got 'fast'"), hg::Error);
}

TEST_CASE("resize_rgb: area when shrinking, bilinear when enlarging") {
  const auto src = crop(levels()[0], 3, 5, 30, 21);
  // Integer factor: the exact 3x3 means.
  const auto third = wsi::resize_rgb(src, 10, 7);
  CHECK(max_diff(third.pixels, area_reference(src, 10, 7).pixels) == 0);
  // Fractional factors on both axes.
  CHECK(max_diff(wsi::resize_rgb(src, 13, 8).pixels, area_reference(src, 13, 8).pixels) <= 1);
  CHECK(max_diff(wsi::resize_rgb(src, 7, 20).pixels, area_reference(src, 7, 20).pixels) <= 1);
  CHECK(wsi::resize_rgb(src, 30, 21).pixels == src.pixels);
  // Enlarging 2x: output centre (o + 0.5)/2 - 0.5 lands a quarter of the way between inputs.
  const synthetic::Image two{2, 1, {0, 100, 200, 100, 0, 200}};
  CHECK(wsi::resize_rgb(two, 4, 1).pixels == std::vector<uint8_t>{0, 100, 200, 25, 75, 200, 75, 25, 200, 100, 0, 200});
  CHECK_THROWS_WITH_AS(wsi::resize_rgb(two, 0, 3), has("resize_rgb: expected a positive output size, got 0x3"), hg::Error);
}

TEST_CASE("read_region_resized: the best level, then a resize only when needed") {
  const wsi::Slide slide(pyramid_path());
  // 2x and 4x of a box at multiples of 4: the level-1 and level-2 pixels themselves.
  CHECK(wsi::read_region_resized(slide, 32, 16, 128, 96, 64, 48).pixels == crop(levels()[1], 16, 8, 64, 48).pixels);
  CHECK(wsi::read_region_resized(slide, 32, 16, 128, 96, 32, 24).pixels == crop(levels()[2], 8, 4, 32, 24).pixels);
  CHECK(wsi::read_region_resized(slide, 32, 16, 128, 96, 128, 96).pixels == crop(levels()[0], 32, 16, 128, 96).pixels);
  // 3x: read level 1 (2x), then area-resize 1.5x.
  const auto three = wsi::read_region_resized(slide, 24, 12, 96, 72, 32, 24);
  CHECK(max_diff(three.pixels, area_reference(crop(levels()[1], 12, 6, 48, 36), 32, 24).pixels) <= 1);
  // 8x: beyond the last level (4x): level 2 then 2x2 means.
  const auto eight = wsi::read_region_resized(slide, 0, 0, 256, 192, 32, 24);
  CHECK(eight.pixels == area_reference(levels()[2], 32, 24).pixels);
  // Enlarging: level 0, bilinear.
  const auto up = wsi::read_region_resized(slide, 10, 10, 16, 16, 32, 32);
  CHECK(up.pixels == wsi::resize_rgb(crop(levels()[0], 10, 10, 16, 16), 32, 32).pixels);
  // Past the edge: transparent -> the background, at whatever level.
  const auto edge = wsi::read_region_resized(slide, 192, 128, 128, 128, 32, 32, wsi::Background::Black);
  CHECK(std::vector<int>(edge.pixels.end() - 3, edge.pixels.end()) == std::vector<int>{0, 0, 0});
  CHECK_THROWS_WITH_AS(wsi::read_region_resized(slide, 0, 0, 0, 10, 5, 5), has("read_region_resized: " + pyramid_path() + ": expected positive sizes"),
                       hg::Error);
}

TEST_CASE("thumbnail: the whole slide, aspect kept, from the level openslide-python would pick") {
  const wsi::Slide slide(pyramid_path());
  const auto t64 = wsi::thumbnail(slide, 64);  // downsample 4: exactly level 2
  CHECK(t64.width == 64);
  CHECK(t64.height == 48);
  CHECK(t64.pixels == levels()[2].pixels);
  const auto t40 = wsi::thumbnail(slide, 40);  // downsample 6.4: level 2 area-resized to 40x30
  CHECK(t40.width == 40);
  CHECK(t40.height == 30);
  CHECK(max_diff(t40.pixels, area_reference(levels()[2], 40, 30).pixels) <= 1);
  const auto big = wsi::thumbnail(slide, 1000);  // never enlarged
  CHECK(big.width == 256);
  CHECK(big.pixels == levels()[0].pixels);
}

TEST_CASE("resolution on the real slides") {
  const std::string cmu = shared_slide("CMU-1-Small-Region.svs");
  if (have(cmu)) {
    const wsi::Slide slide(cmu);
    CHECK(wsi::slide_mpp(slide) == std::optional<double>(0.499));
    CHECK(wsi::objective_power(slide) == std::optional<double>(20));
    CHECK(wsi::level0_mpp(slide, std::nullopt) == 0.499);
    CHECK(wsi::nominal_magnification(0.499) == std::optional<int>(20));
    // One level only: the thumbnail is level 0 area-resized.
    const auto t = wsi::thumbnail(slide, 512);
    CHECK(t.width == 383);  // round(2220 / (2967/512))
    CHECK(t.height == 512);
    // 10x = 1 µm/px: a 512 px box at level 0 becomes 256 px; the pixels are 2x2 means of level 0.
    const auto p = wsi::read_region_resized(slide, 1000, 1000, 512, 512, 256, 256);
    CHECK(max_diff(p.pixels, area_reference(slide.read_region(1000, 1000, 0, 512, 512), 256, 256).pixels) == 0);
  }
  const std::string boxes = shared_slide("synthetic/boxes.tiff");
  if (have(boxes)) {
    const wsi::Slide slide(boxes);
    // No MPP on OpenSlide 3.4.1 (WSI.md §A6), and its TIFF resolution is a writer's 72 dpi default.
    CHECK(slide.property("tiff.XResolution") == std::optional<std::string>("28.346456527709961"));
    CHECK(!wsi::slide_mpp(slide).has_value());
    CHECK_THROWS_WITH_AS(wsi::level0_mpp(slide, std::nullopt), has("level0_mpp: " + boxes + ": the slide's metadata gives no microns per pixel"),
                         hg::Error);
    // 4x request: level 2 is at 4.016 (within the 1% slack), read as round(120/4.016) = 30 px.
    const auto p = wsi::read_region_resized(slide, 0, 0, 120, 120, 30, 30);
    CHECK(p.pixels == slide.read_region(0, 0, 2, 30, 30).pixels);
  }
  const std::string small = shared_slide("synthetic/small.svs");
  if (have(small)) CHECK(wsi::slide_mpp(wsi::Slide(small)) == std::optional<double>(0.499));
}

TEST_CASE("synthetic_tiff refuses levels smaller than a tile (OpenSlide 3.4.1 misreads them)") {
  synthetic::PyramidOptions o;
  o.tile = 64;
  o.levels = 2;
  CHECK_THROWS_WITH_AS(synthetic::write_pyramid_tiff(temp_path("small_level.tiff"), 128, 96, pattern, o),
                       has("every level must be at least one tile wide and tall"), std::runtime_error);
}
