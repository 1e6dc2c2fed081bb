// wsi::SlideTiles on pyramidal TIFFs written here (tiles checked against the pyramid's own pixels,
// subsampling, several slides, threads, errors) and on CMU-1-Small-Region.svs from ../shared/data
// when present (coordinates equal the cv2/openslide-python reference grid of extract_test.cpp).
#include "test_util.hpp"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <histograd/wsi/slide_dataset.hpp>

#include "wsi/synthetic_tiff.hpp"

namespace wsi = histograd::wsi;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("histograd_slide_dataset_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

doctest::Contains has(const std::string& text) { return doctest::Contains(text.c_str()); }

// 2048 x 1536 at 0.25 mpp (40x): a pink disc centred (cx, 600) radius 350 and a purple rectangle
// [1200, 1800) x [900, 1400), on off-white; a faint texture so tiles differ pixel to pixel.
std::function<std::array<uint8_t, 3>(int64_t, int64_t)> tissue(double cx) {
  return [cx](int64_t x, int64_t y) -> std::array<uint8_t, 3> {
    const double dx = double(x) - cx, dy = double(y) - 600;
    const uint8_t t = uint8_t((x * 7 + y * 13) % 16);
    if (dx * dx + dy * dy < 350.0 * 350.0) return {uint8_t(210 + t), 120, uint8_t(160 + t)};
    if (x >= 1200 && x < 1800 && y >= 900 && y < 1400) return {140, uint8_t(70 + t), 160};
    return {245, 245, 245};
  };
}

synthetic::PyramidOptions pyramid_options(bool with_mpp = true) {
  synthetic::PyramidOptions o;
  o.tile = 64;
  o.levels = 3;
  if (with_mpp) o.description = synthetic::aperio_description(2048, 1536, 64, 0.25, 40.0);
  return o;
}

const std::string& slide_a() {
  static const std::string p = [] {
    const std::string path = temp_path("slide_a.tiff");
    synthetic::write_pyramid_tiff(path, 2048, 1536, tissue(600), pyramid_options());
    return path;
  }();
  return p;
}

const std::string& slide_b() {
  static const std::string p = [] {
    const std::string path = temp_path("slide_b.tiff");
    synthetic::write_pyramid_tiff(path, 2048, 1536, tissue(500), pyramid_options());
    return path;
  }();
  return p;
}

const std::vector<synthetic::Image>& levels_a() {
  static const std::vector<synthetic::Image> l = synthetic::pyramid_levels(synthetic::make_image(2048, 1536, tissue(600)), 3);
  return l;
}

// The w x h window of a pyramid level at level coordinates (lx, ly), white outside (Background::White).
std::vector<uint8_t> window(const synthetic::Image& im, int64_t lx, int64_t ly, int64_t w, int64_t h) {
  std::vector<uint8_t> out;
  for (int64_t y = ly; y < ly + h; ++y)
    for (int64_t x = lx; x < lx + w; ++x)
      for (int c = 0; c < 3; ++c)
        out.push_back(x < im.width && y < im.height ? im.pixels[size_t((y * im.width + x) * 3 + c)] : uint8_t(255));
  return out;
}

wsi::SlideTilesOptions synthetic_options() {
  wsi::SlideTilesOptions o;
  o.patch_size = 64;
  o.magnification = 20;  // downsample 2: level 1 exactly, 128 level-0 px per tile
  o.tissue_preset = "bwh_biopsy";  // the blur QC of "histograd" clears flat synthetic colour
  return o;
}

bool have(const std::string& path) {
  if (fs::exists(path)) return true;
  MESSAGE("skipped: " << path << " is absent (real slides live in ../shared/data/slides)");
  return false;
}

std::string shared_slide(const std::string& name) { return std::string(HISTOGRAD_SHARED_DATA_DIR) + "/slides/" + name; }

}  // namespace

TEST_CASE("SlideTiles: tiles of a synthetic pyramid are the pyramid's own pixels at the target level") {
  wsi::SlideTiles tiles(slide_a(), synthetic_options());
  // The grid the pipeline lays (wsi_extract's), tile for tile.
  const wsi::Slide slide(slide_a());
  const auto regions = wsi::segment_slide(slide, wsi::SegmentationParams::preset("bwh_biopsy")).regions;
  wsi::PatchParams pp;
  pp.magnification = 20;
  pp.patch_size = 64;
  const wsi::PatchGrid grid = wsi::patch_grid(regions, 2048, 1536, 0.25, pp);
  REQUIRE(tiles.size() == grid.coords.size());
  REQUIRE(tiles.size() > 20);
  CHECK(tiles.classes() == std::vector<std::string>{"slide_a"});
  CHECK(tiles.grid(0).patch_size_level0 == 128);
  for (size_t i = 0; i < tiles.size(); ++i) {
    const wsi::TileCoordinate& c = tiles.coordinates(i);
    CHECK(c.slide == 0);
    CHECK(c.level == 1);
    CHECK(c.size_level0 == 128);
    CHECK(c.x == grid.coords[i].x);
    CHECK(c.y == grid.coords[i].y);
    CHECK(tiles.label(i) == 0);
    // Every tile touches tissue: its box meets the disc's or the rectangle's bounding box.
    const bool near_disc = c.x < 950 && c.x + 128 > 250 && c.y < 950 && c.y + 128 > 250;
    const bool near_rect = c.x < 1800 && c.x + 128 > 1200 && c.y < 1400 && c.y + 128 > 900;
    CHECK((near_disc || near_rect));
    const hg::io::Image im = tiles.load(i);
    REQUIRE(im.width == 64);
    REQUIRE(im.height == 64);
    CHECK(im.pixels == window(levels_a()[1], c.x / 2, c.y / 2, 64, 64));
  }
  CHECK(tiles.path(0).find("slide_a.tiff tile at (") != std::string::npos);
}

TEST_CASE("SlideTiles: by mpp, and a resolution between levels is read from the finer level and resized") {
  auto o = synthetic_options();
  o.magnification.reset();
  o.mpp = 1.0;  // downsample 4: level 2 exactly
  wsi::SlideTiles at_level2(slide_a(), o);
  REQUIRE(at_level2.size() > 0);
  for (size_t i = 0; i < at_level2.size(); ++i) {
    const auto& c = at_level2.coordinates(i);
    CHECK(c.level == 2);
    CHECK(at_level2.load(i).pixels == window(levels_a()[2], c.x / 4, c.y / 4, 64, 64));
  }
  o.mpp = 0.625;  // downsample 2.5: 160 level-0 px, read as 80 px of level 1, area-resized to 64
  wsi::SlideTiles between(slide_a(), o);
  REQUIRE(between.size() > 0);
  const wsi::Slide slide(slide_a());
  for (size_t i = 0; i < between.size(); i += 3) {
    const auto& c = between.coordinates(i);
    CHECK(c.level == 1);
    CHECK(c.size_level0 == 160);
    const hg::io::Image direct = wsi::resize_rgb(slide.read_region(c.x, c.y, 1, 80, 80), 64, 64);
    CHECK(between.load(i).pixels == direct.pixels);
  }
}

TEST_CASE("SlideTiles: the per-slide subsample is deterministic, in grid order, and follows the seed") {
  const wsi::SlideTiles all(slide_a(), synthetic_options());
  auto o = synthetic_options();
  o.max_tiles_per_slide = 10;
  o.seed = 7;
  const wsi::SlideTiles a(slide_a(), o), b(slide_a(), o);
  o.seed = 8;
  const wsi::SlideTiles c(slide_a(), o);
  REQUIRE(a.size() == 10);
  REQUIRE(c.size() == 10);
  bool differs = false;
  std::set<std::pair<int64_t, int64_t>> full;
  for (size_t i = 0; i < all.size(); ++i) full.insert({all.coordinates(i).x, all.coordinates(i).y});
  for (size_t i = 0; i < 10; ++i) {
    CHECK(a.coordinates(i).x == b.coordinates(i).x);
    CHECK(a.coordinates(i).y == b.coordinates(i).y);
    CHECK(full.count({a.coordinates(i).x, a.coordinates(i).y}) == 1);
    if (i > 0) {  // row-major order kept
      const auto& p = a.coordinates(i - 1);
      const auto& q = a.coordinates(i);
      CHECK((p.y < q.y || (p.y == q.y && p.x < q.x)));
    }
    differs |= a.coordinates(i).x != c.coordinates(i).x || a.coordinates(i).y != c.coordinates(i).y;
  }
  CHECK(differs);
  // A cap above the tile count keeps every tile.
  o.max_tiles_per_slide = int64_t(all.size()) + 5;
  CHECK(wsi::SlideTiles(slide_a(), o).size() == all.size());
  // The subsample helper is uniform enough to reach every index over many seeds.
  std::set<size_t> seen;
  for (uint64_t seed = 0; seed < 200; ++seed)
    for (size_t k : wsi::detail::subsample_indices(20, 3, seed, 0)) seen.insert(k);
  CHECK(seen.size() == 20);
}

TEST_CASE("SlideTiles: several slides, labels are slide indices and classes the file stems") {
  auto o = synthetic_options();
  o.max_tiles_per_slide = 6;
  wsi::SlideTiles tiles({slide_a(), slide_b()}, o);
  REQUIRE(tiles.size() == 12);
  CHECK(tiles.classes() == std::vector<std::string>{"slide_a", "slide_b"});
  CHECK(tiles.slide_count() == 2);
  CHECK(tiles.slide_range(0) == std::pair<size_t, size_t>{0, 6});
  CHECK(tiles.slide_range(1) == std::pair<size_t, size_t>{6, 12});
  for (size_t i = 0; i < 12; ++i) {
    CHECK(tiles.label(i) == (i < 6 ? 0 : 1));
    CHECK(tiles.coordinates(i).slide == size_t(tiles.label(i)));
  }
  // Each slide draws its own subsample (the slide index is part of the stream), so equal grids
  // would still give different tiles; slide_b's grid differs anyway, so just check both load.
  CHECK(tiles.load(0).width == 64);
  CHECK(tiles.load(11).width == 64);
}

TEST_CASE("SlideTiles: load from 4 threads gives the tiles a single thread gives") {
  for (int handles : {1, 2}) {
    CAPTURE(handles);
    auto o = synthetic_options();
    o.handles_per_slide = handles;
    wsi::SlideTiles tiles({slide_a(), slide_b()}, o);
    std::vector<std::vector<uint8_t>> serial(tiles.size());
    for (size_t i = 0; i < tiles.size(); ++i) serial[i] = tiles.load(i).pixels;
    // Every tile twice, handed out in turn, so equal indices are read at once too.
    std::atomic<size_t> next{0}, loaded{0};
    std::atomic<int> errors{0}, mismatches{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < 4; ++t)
      workers.emplace_back([&] {
        try {
          for (size_t i; (i = next.fetch_add(1)) < 2 * tiles.size(); ++loaded)
            if (tiles.load(i % tiles.size()).pixels != serial[i % tiles.size()]) ++mismatches;
        } catch (...) {
          ++errors;
        }
      });
    for (auto& w : workers) w.join();
    CHECK(errors == 0);
    CHECK(mismatches == 0);
    CHECK(loaded == 2 * tiles.size());
  }
}

TEST_CASE("SlideTiles: clear errors") {
  const auto o = synthetic_options();
  CHECK_THROWS_WITH_AS(wsi::SlideTiles(std::vector<std::string>{}, o), has("SlideTiles: expected at least one slide path"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(wsi::SlideTiles(temp_path("nope.svs"), o),
                       has("SlideTiles: slide '" + temp_path("nope.svs") + "' does not exist"), hg::Error);
  {
    const std::string text = temp_path("not_a_slide.svs");
    std::ofstream(text) << "hello";
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(text, o), has("SlideTiles: cannot use slide '" + text + "': Slide: "), hg::Error);
  }
  {
    auto bad = o;
    bad.magnification = 80;  // the slide is 40x
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(slide_a(), bad),
                         has("SlideTiles: slide '" + slide_a() + "' cannot provide 80x (0.125 µm/px): its level 0 is 0.25 µm/px (40x); ask for at most 40x"),
                         hg::Error);
    bad.magnification = 40;  // exactly level 0: fine
    CHECK(wsi::SlideTiles(slide_a(), bad).coordinates(0).level == 0);
  }
  {
    const std::string blank = temp_path("blank.tiff");
    synthetic::write_pyramid_tiff(blank, 512, 512, [](int64_t, int64_t) { return std::array<uint8_t, 3>{245, 245, 245}; },
                                  [] {
                                    auto p = pyramid_options(false);
                                    p.description = synthetic::aperio_description(512, 512, 64, 0.25, 40.0);
                                    return p;
                                  }());
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(blank, o),
                         has("SlideTiles: no tissue found in slide '" + blank + "' with the 'bwh_biopsy' tissue preset"),
                         hg::Error);
    auto skip = o;
    skip.skip_slides_without_tiles = true;
    wsi::SlideTiles some({blank, slide_a()}, skip);  // warns, keeps the blank slide's class
    CHECK(some.classes() == std::vector<std::string>{"blank", "slide_a"});
    CHECK(some.slide_range(0) == std::pair<size_t, size_t>{0, 0});
    CHECK(some.label(0) == 1);
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(blank, skip), has("SlideTiles: no tiles in any of the 1 slide(s)"), hg::Error);
  }
  {
    auto bad = o;
    bad.min_tissue_fraction = 1.5;
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(slide_a(), bad), has("SlideTiles: expected min_tissue_fraction in [0, 1], got 1.5"),
                         hg::Error);
    bad = o;
    bad.tissue_preset = "nonsense";
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(slide_a(), bad), has("SlideTiles: unknown tissue preset: "), hg::Error);
    bad = o;
    bad.mpp = 0.5;
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(slide_a(), bad), has("SlideTiles: give a target magnification or a target mpp, not both"),
                         hg::Error);
    bad = o;
    bad.patch_size = 0;
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(slide_a(), bad), has("SlideTiles: expected a positive patch size, got 0"), hg::Error);
  }
  {
    const std::string no_mpp = temp_path("no_mpp.tiff");
    synthetic::write_pyramid_tiff(no_mpp, 2048, 1536, tissue(600), pyramid_options(false));
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(no_mpp, o), has("SlideTiles: cannot use slide '" + no_mpp + "': level0_mpp: "), hg::Error);
    auto given = o;
    given.slide_mpp = 0.25;
    CHECK(wsi::SlideTiles(no_mpp, given).size() == wsi::SlideTiles(slide_a(), o).size());
  }
  wsi::SlideTiles tiles(slide_a(), o);
  CHECK_THROWS_WITH_AS(tiles.load(tiles.size()), has("SlideTiles: expected a tile index below "), hg::Error);
  CHECK_THROWS_WITH_AS(tiles.slide_range(1), has("SlideTiles: expected a slide index below 1, got 1"), hg::Error);
}

// The coordinates are those of the cv2/openslide-python reference grid pasted in extract_test.cpp
// (CLAM segmentation with bwh_biopsy, TRIDENT's 20x grid of 257 level-0 px, four_pt).
TEST_CASE("SlideTiles: CMU-1-Small-Region.svs (real Aperio slide)") {
  const std::string path = shared_slide("CMU-1-Small-Region.svs");
  if (!have(path)) return;
  wsi::SlideTilesOptions o;
  o.patch_size = 256;
  o.magnification = 20;
  o.tissue_preset = "bwh_biopsy";
  wsi::SlideTiles tiles(path, o);
  const std::vector<std::pair<int64_t, int64_t>> expected = {
      {771, 0},     {1028, 0},    {771, 257},   {1028, 257},  {1285, 257},  {771, 514},   {1028, 514},  {1285, 514},
      {1542, 514},  {771, 771},   {1028, 771},  {1285, 771},  {1542, 771},  {257, 1028},  {514, 1028},  {771, 1028},
      {1028, 1028}, {1285, 1028}, {1542, 1028}, {1799, 1028}, {771, 1285},  {1028, 1285}, {1285, 1285}, {1542, 1285},
      {1799, 1285}, {771, 1542},  {1028, 1542}, {1285, 1542}, {1542, 1542}, {771, 1799},  {1028, 1799}, {1285, 1799},
      {1542, 1799}, {1799, 1799}, {771, 2056},  {1028, 2056}, {1285, 2056}, {1542, 2056}, {1799, 2056}, {514, 2313},
      {771, 2313},  {1028, 2313}, {1285, 2313}, {1542, 2313}, {514, 2570},  {771, 2570},  {1028, 2570}, {1285, 2570},
      {1542, 2570}, {514, 2827},  {771, 2827},  {1028, 2827}, {1285, 2827}, {1542, 2827}};
  REQUIRE(tiles.size() == expected.size());
  const wsi::Slide slide(path);
  for (size_t i = 0; i < tiles.size(); ++i) {
    const auto& c = tiles.coordinates(i);
    CHECK(c.x == expected[i].first);
    CHECK(c.y == expected[i].second);
    CHECK(c.level == 0);
    CHECK(c.size_level0 == 257);
  }
  // One level: each tile is the 257 px level-0 box area-resized to 256 (the last row runs past the
  // bottom edge, 2827 + 257 > 2967, and is white there).
  for (size_t i : {size_t(0), size_t(17), tiles.size() - 1}) {
    const auto& c = tiles.coordinates(i);
    CHECK(tiles.load(i).pixels == wsi::resize_rgb(slide.read_region(c.x, c.y, 0, 257, 257), 256, 256).pixels);
  }
  // The project's default preset ("histograd") at 224 px: same level, tiles on tissue.
  wsi::SlideTilesOptions d;
  d.patch_size = 224;
  wsi::SlideTiles by_default(path, d);
  MESSAGE("histograd preset, 224 px at 20x: " << by_default.size() << " tiles");
  CHECK(by_default.size() >= 40);
  CHECK(by_default.load(0).width == 224);
  // 40x from a 20x scan; CLAM's own preset finds no tissue on this small region.
  d.magnification = 40;
  CHECK_THROWS_WITH_AS(wsi::SlideTiles(path, d), has("cannot provide 40x (0.25 µm/px): its level 0 is 0.499 µm/px"),
                       hg::Error);
  d.magnification.reset();
  d.tissue_preset = "clam";
  CHECK_THROWS_WITH_AS(wsi::SlideTiles(path, d), has("SlideTiles: no tissue found in slide '" + path + "' with the 'clam'"),
                       hg::Error);
}

TEST_CASE("SlideTiles: the broken slides of ../shared/data give errors naming the slide") {
  for (const char* name : {"broken/truncated.svs", "broken/unopenable.tiff", "broken/unreadable.svs"}) {
    const std::string path = shared_slide(name);
    if (!have(path)) continue;
    wsi::SlideTilesOptions o;
    o.slide_mpp = 0.5;  // so the failure is the slide's, not its metadata's
    CHECK_THROWS_WITH_AS(wsi::SlideTiles(path, o), has("SlideTiles: cannot use slide '" + path + "': "), hg::Error);
  }
}
