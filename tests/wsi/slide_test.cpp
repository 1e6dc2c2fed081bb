// wsi::Slide on pyramids the test writes itself (geometry, exact pixels at every level, blocked reads,
// out-of-bounds backgrounds, premultiplied alpha checked against openslide-python, threads) and on the
// real slides of ../shared/data/slides when present (properties, associated images, broken files).
#include "test_util.hpp"

#include <filesystem>
#include <thread>

#include <histograd/wsi/slide.hpp>

#include "wsi/synthetic_tiff.hpp"

namespace wsi = histograd::wsi;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("histograd_slide_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

std::array<uint8_t, 3> pattern(int64_t x, int64_t y) {
  return {static_cast<uint8_t>(x * 3 + y), static_cast<uint8_t>(y * 5 + 7), static_cast<uint8_t>((x * 7) ^ (y * 11))};
}

// A 256x192, 3-level generic TIFF pyramid in 32 px tiles (downsamples 1, 2, 4) written once per process.
const std::string& pyramid_path() {
  static const std::string path = [] {
    const std::string p = temp_path("pyramid.tiff");
    synthetic::PyramidOptions o;
    o.tile = 32;  // the 64x48 level 2 must hold whole tiles (see synthetic_tiff.hpp)
    o.levels = 3;
    synthetic::write_pyramid_tiff(p, 256, 192, pattern, o);
    return p;
  }();
  return path;
}

const std::vector<synthetic::Image>& pyramid_pixels() {
  static const std::vector<synthetic::Image> levels = synthetic::pyramid_levels(synthetic::make_image(256, 192, pattern), 3);
  return levels;
}

// The expected RGB of a window of `level`, with `bg` outside the image.
std::vector<uint8_t> expected_window(int level, int64_t lx, int64_t ly, int64_t w, int64_t h, std::array<uint8_t, 3> bg) {
  const auto& im = pyramid_pixels()[static_cast<size_t>(level)];
  std::vector<uint8_t> out;
  for (int64_t y = ly; y < ly + h; ++y)
    for (int64_t x = lx; x < lx + w; ++x)
      for (int c = 0; c < 3; ++c)
        out.push_back(x >= 0 && y >= 0 && x < im.width && y < im.height ? im.pixels[static_cast<size_t>((y * im.width + x) * 3 + c)]
                                                                        : bg[static_cast<size_t>(c)]);
  return out;
}

std::string shared_slide(const std::string& name) {
  return std::string(HISTOGRAD_SHARED_DATA_DIR) + "/slides/" + name;
}

doctest::Contains has(const std::string& text) { return doctest::Contains(text.c_str()); }

bool have(const std::string& path) {
  if (fs::exists(path)) return true;
  MESSAGE("skipped: " << path << " is absent (real slides live in ../shared/data/slides)");
  return false;
}

std::vector<int> rgb_at(const hg::io::Image& im, int64_t x, int64_t y) {
  const size_t i = static_cast<size_t>((y * im.width + x) * 3);
  return {im.pixels[i], im.pixels[i + 1], im.pixels[i + 2]};
}

}  // namespace

TEST_CASE("Slide: geometry of a synthetic pyramid") {
  const wsi::Slide slide(pyramid_path());
  CHECK(slide.path() == pyramid_path());
  CHECK(slide.level_count() == 3);
  CHECK(slide.dimensions() == std::pair<int64_t, int64_t>{256, 192});
  CHECK(slide.dimensions(1) == std::pair<int64_t, int64_t>{128, 96});
  CHECK(slide.dimensions(2) == std::pair<int64_t, int64_t>{64, 48});
  CHECK(slide.downsample(0) == 1.0);
  CHECK(slide.downsample(1) == 2.0);
  CHECK(slide.downsample(2) == 4.0);
  CHECK(slide.property("openslide.vendor") == std::optional<std::string>("generic-tiff"));
  CHECK(!slide.property("openslide.mpp-x").has_value());
  CHECK(slide.properties().count("openslide.level[2].width") == 1);
  CHECK(slide.associated_image_names().empty());
  // Our cached best level follows OpenSlide's own rule exactly.
  for (double d : {0.25, 1.0, 1.5, 1.999, 2.0, 3.0, 3.9999, 4.0, 7.0, 64.0, 1e9}) {
    INFO("downsample " << d);
    CHECK(slide.best_level_for_downsample(d) == openslide_get_best_level_for_downsample(slide.handle(), d));
  }
  CHECK(slide.best_level_for_downsample(2.0) == 1);
  CHECK(slide.best_level_for_downsample(64) == 2);
}

TEST_CASE("Slide: pixels come back exactly at level 0 and at lower levels") {
  const wsi::Slide slide(pyramid_path());
  const auto whole = slide.read_region(0, 0, 0, 256, 192);
  CHECK(whole.width == 256);
  CHECK(whole.height == 192);
  CHECK(whole.pixels == pyramid_pixels()[0].pixels);
  // A window across tile borders.
  CHECK(slide.read_region(50, 60, 0, 100, 70).pixels == expected_window(0, 50, 60, 100, 70, {255, 255, 255}));
  // Level 1 and 2: (x0, y0) is level 0, so level pixel (lx, ly) is at (lx·ds, ly·ds).
  CHECK(slide.read_region(2 * 30, 2 * 10, 1, 70, 50).pixels == expected_window(1, 30, 10, 70, 50, {255, 255, 255}));
  CHECK(slide.read_region(4 * 5, 4 * 7, 2, 40, 30).pixels == expected_window(2, 5, 7, 40, 30, {255, 255, 255}));
  CHECK(slide.read_region(0, 0, 2, 64, 48).pixels == pyramid_pixels()[2].pixels);
}

TEST_CASE("Slide: blocked reads give the same pixels as one read") {
  const wsi::Slide slide(pyramid_path());
  for (int level : {0, 1, 2}) {
    for (int64_t chunk : {int64_t(1), int64_t(37), int64_t(100), int64_t(5000)}) {
      INFO("level " << level << ", chunk " << chunk);
      const int64_t ds = int64_t(1) << level;
      hg::io::Image a = slide.read_region(ds * 3, ds * 5, level, 45, 33);
      std::vector<uint8_t> b(a.pixels.size());
      slide.read_region_chunked(b.data(), ds * 3, ds * 5, level, 45, 33, wsi::Background::White, chunk);
      CHECK(a.pixels == b);
    }
  }
}

TEST_CASE("Slide: pixels outside the slide are transparent, so they take the background") {
  const wsi::Slide slide(pyramid_path());
  // 20x20 from (-10, -10): the top-left 10x10 block and the rest outside the image are background.
  CHECK(slide.read_region(-10, -10, 0, 20, 20).pixels == expected_window(0, -10, -10, 20, 20, {255, 255, 255}));
  CHECK(slide.read_region(-10, -10, 0, 20, 20, wsi::Background::Black).pixels ==
        expected_window(0, -10, -10, 20, 20, {0, 0, 0}));
  // No openslide.background-color on a generic TIFF: SlideColor is white.
  CHECK(slide.read_region(250, 185, 0, 12, 12, wsi::Background::SlideColor).pixels ==
        expected_window(0, 250, 185, 12, 12, {255, 255, 255}));
  CHECK(slide.read_region(4 * 60, 4 * 40, 2, 10, 10, wsi::Background::Black).pixels ==
        expected_window(2, 60, 40, 10, 10, {0, 0, 0}));
  // Far outside.
  const auto far = slide.read_region(-1000000, 5000000, 1, 3, 2, wsi::Background::Black);
  CHECK(far.pixels == std::vector<uint8_t>(18, 0));
}

TEST_CASE("Slide: premultiplied ARGB -> RGB matches openslide-python") {
  // A 32x32 RGBA TIFF with unassociated alpha; libtiff premultiplies when OpenSlide decodes it.
  // Pixel i = y·32 + x has r = 5i mod 256, g = 200, b = i mod 256, a = i mod 256.
  std::vector<uint8_t> rgba(32 * 32 * 4);
  for (int i = 0; i < 32 * 32; ++i) {
    rgba[static_cast<size_t>(i * 4 + 0)] = static_cast<uint8_t>(i * 5);
    rgba[static_cast<size_t>(i * 4 + 1)] = 200;
    rgba[static_cast<size_t>(i * 4 + 2)] = static_cast<uint8_t>(i);
    rgba[static_cast<size_t>(i * 4 + 3)] = static_cast<uint8_t>(i % 256);
  }
  const std::string path = temp_path("rgba.tiff");
  synthetic::PyramidOptions o;
  o.tile = 16;
  synthetic::write_rgba_tiff(path, 32, 32, rgba, o);
  const wsi::Slide slide(path);
  const auto black = slide.read_region(0, 0, 0, 32, 32, wsi::Background::Black);
  const auto white = slide.read_region(0, 0, 0, 32, 32, wsi::Background::White);
  // openslide-python 1.4.7 on OpenSlide 3.4.1, Pillow 13 (this file, same pixels):
  //   black = np.asarray(s.read_region((0,0),0,(32,32)).convert('RGB'))            (CLAM/TRIDENT)
  //   t = s.read_region(...); th = Image.new('RGB', t.size, 'white'); th.paste(t, None, t)  (get_thumbnail)
  struct Row { int i; std::vector<int> black, white; };
  const std::vector<Row> rows = {
      {0, {0, 0, 0}, {255, 255, 255}},         {1, {0, 255, 0}, {254, 255, 254}},
      {37, {186, 199, 34}, {245, 247, 223}},   {128, {127, 199, 127}, {191, 227, 191}},
      {255, {251, 200, 255}, {251, 200, 255}}, {300, {220, 202, 46}, {249, 246, 219}},
      {767, {251, 200, 255}, {251, 200, 255}}, {1000, {136, 200, 231}, {147, 205, 233}},
  };
  for (const Row& r : rows) {
    INFO("pixel " << r.i);
    CHECK(rgb_at(black, r.i % 32, r.i / 32) == r.black);
    CHECK(rgb_at(white, r.i % 32, r.i / 32) == r.white);
  }
}

TEST_CASE("Slide: the pixel conversion by hand") {
  std::array<uint8_t, 3> out{};
  const std::array<uint8_t, 3> grey{100, 100, 100};
  const uint32_t px[4] = {0x00000000u, 0xFF102030u, 0x80402010u, 0x01010000u};
  uint8_t rgb[12];
  wsi::detail::argb_to_rgb(px, 4, grey, false, rgb);
  // transparent -> background; opaque -> itself; a=128: u = c·255/128 = (127, 63, 31), blend with 100.
  CHECK(std::vector<int>(rgb, rgb + 12) == std::vector<int>{100, 100, 100, 0x10, 0x20, 0x30, 114, 81, 65, 101, 100, 100});
  wsi::detail::argb_to_rgb(px, 4, grey, true, rgb);
  CHECK(std::vector<int>(rgb, rgb + 12) == std::vector<int>{0, 0, 0, 0x10, 0x20, 0x30, 127, 63, 31, 255, 0, 0});
  CHECK(wsi::detail::parse_hex_rgb("FfA001") == std::optional<std::array<uint8_t, 3>>({255, 160, 1}));
  CHECK(!wsi::detail::parse_hex_rgb("ffa0").has_value());
  CHECK(!wsi::detail::parse_hex_rgb("ffa0zz").has_value());
  (void)out;
}

TEST_CASE("Slide: user mistakes are clear errors") {
  const wsi::Slide slide(pyramid_path());
  CHECK_THROWS_WITH_AS(wsi::Slide("/nonexistent/x.svs"), has("Slide: /nonexistent/x.svs: no such file"), hg::Error);
  CHECK_THROWS_WITH_AS(slide.dimensions(3), has("dimensions: " + pyramid_path() + ": level 3 out of range (the slide has 3 levels)"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(slide.downsample(-1), has("level -1 out of range"), hg::Error);
  CHECK_THROWS_WITH_AS(slide.read_region(0, 0, 5, 10, 10), has("read_region: "), hg::Error);
  CHECK_THROWS_WITH_AS(slide.read_region(0, 0, 0, 0, 10), has("expected a positive size, got 0x10"), hg::Error);
  CHECK_THROWS_WITH_AS(slide.read_region(0, 0, 0, int64_t(1) << 20, int64_t(1) << 20),
                       has("1048576x1048576 pixels is more than one read may ask for"), hg::Error);
  CHECK_THROWS_WITH_AS(slide.read_region(0, 0, 0, INT64_MAX, 2), has("more than one read may ask for"), hg::Error);
  CHECK_THROWS_WITH_AS(slide.associated_image("label"), has("no associated image 'label' (the slide has: none)"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(slide.best_level_for_downsample(0), has("expected a positive downsample, got 0"), hg::Error);
  // A file that is not a slide at all.
  const std::string junk = temp_path("junk.svs");
  { std::ofstream(junk) << "not a slide"; }
  CHECK_THROWS_WITH_AS(wsi::Slide{junk}, has(junk + ": not a file OpenSlide can recognise"), hg::Error);
}

TEST_CASE("Slide: moves, and reads from several threads on one handle and through a pool") {
  wsi::Slide a(pyramid_path());
  wsi::Slide b = std::move(a);
  CHECK(b.level_count() == 3);
  CHECK_THROWS_WITH_AS(a.dimensions(0), has("moved-from Slide"), hg::Error);  // NOLINT(bugprone-use-after-move)

  auto work = [](const wsi::Slide& s, int t, std::vector<bool>& ok) {
    bool good = true;
    for (int k = 0; k < 20; ++k) {
      const int level = (t + k) % 3;
      const int64_t ds = int64_t(1) << level, lx = (t * 7 + k) % 20, ly = (t * 3 + k * 5) % 15;
      good = good && s.read_region(lx * ds, ly * ds, level, 30, 25).pixels == expected_window(level, lx, ly, 30, 25, {255, 255, 255});
    }
    ok[static_cast<size_t>(t)] = good;
  };
  {
    std::vector<bool> ok(4, false);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) threads.emplace_back([&, t] { work(b, t, ok); });
    for (auto& th : threads) th.join();
    CHECK(ok == std::vector<bool>(4, true));
  }
  {
    wsi::SlidePool pool(pyramid_path(), 2);
    CHECK(pool.size() == 2);
    CHECK(&pool.slide(0) != &pool.slide(1));
    CHECK_THROWS_WITH_AS(pool.slide(2), has("SlidePool: worker 2 out of range for 2 handles"), hg::Error);
    std::vector<bool> ok(4, false);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int r = 0; r < 3; ++r) {
          auto lease = pool.acquire();
          work(*lease, t, ok);
        }
      });
    for (auto& th : threads) th.join();
    CHECK(ok == std::vector<bool>(4, true));
    CHECK_THROWS_WITH_AS(wsi::SlidePool(pyramid_path(), 0), has("expected at least one handle, got 0"), hg::Error);
  }
}

TEST_CASE("Slide: CMU-1-Small-Region.svs (real Aperio slide)") {
  const std::string path = shared_slide("CMU-1-Small-Region.svs");
  if (!have(path)) return;
  const wsi::Slide slide(path);
  CHECK(slide.property("openslide.vendor") == std::optional<std::string>("aperio"));
  CHECK(slide.level_count() == 1);
  CHECK(slide.dimensions() == std::pair<int64_t, int64_t>{2220, 2967});
  CHECK(slide.property("openslide.level[0].tile-width") == std::optional<std::string>("240"));
  CHECK(slide.property("openslide.mpp-x") == std::optional<std::string>("0.499"));
  CHECK(slide.property("openslide.mpp-y") == std::optional<std::string>("0.499"));
  CHECK(slide.property("openslide.objective-power") == std::optional<std::string>("20"));
  CHECK(slide.property("openslide.quickhash-1") ==
        std::optional<std::string>("6335ea0e6cc54c2cba64bb265d3c713a50cd84484924e3a9c109558c13521d5c"));
  CHECK(slide.associated_image_names() == std::vector<std::string>{"label", "macro", "thumbnail"});
  // Sizes and pixels from openslide-python 1.4.7 / OpenSlide 3.4.1: s.associated_images[name].size,
  // np.asarray(s.associated_images['thumbnail'])[0,0] and [10,20], ...['label'][5,5].
  CHECK(slide.associated_image_dimensions("label") == std::pair<int64_t, int64_t>{387, 463});
  CHECK(slide.associated_image_dimensions("macro") == std::pair<int64_t, int64_t>{1280, 431});
  const auto thumb = slide.associated_image("thumbnail");
  CHECK(thumb.width == 574);
  CHECK(thumb.height == 768);
  CHECK(rgb_at(thumb, 0, 0) == std::vector<int>{197, 161, 187});
  CHECK(rgb_at(thumb, 20, 10) == std::vector<int>{246, 244, 244});
  CHECK(rgb_at(slide.associated_image("label"), 5, 5) == std::vector<int>{0, 1, 0});
  // np.asarray(s.read_region((x, y), 0, (w, h))): RGBA, alpha 255 inside, (0,0,0,0) outside.
  const auto a = slide.read_region(1000, 1000, 0, 3, 1);
  CHECK(a.pixels == std::vector<uint8_t>{67, 34, 65, 18, 5, 53, 38, 0, 55});
  CHECK(slide.read_region(0, 0, 0, 2, 1).pixels == std::vector<uint8_t>{221, 182, 221, 255, 172, 196});
  // (2218, 2965) 3x3 at the corner: 2x2 inside, the rest transparent.
  const auto corner = slide.read_region(2218, 2965, 0, 3, 3, wsi::Background::Black);
  CHECK(corner.pixels == std::vector<uint8_t>{246, 246, 246, 248, 248, 248, 0, 0, 0, 246, 246, 246, 248, 248, 248, 0, 0, 0,
                                              0, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(rgb_at(slide.read_region(2218, 2965, 0, 3, 3), 2, 2) == std::vector<int>{255, 255, 255});
}

TEST_CASE("Slide: boxes.tiff and small.svs (openslide-python's test files)") {
  const std::string boxes = shared_slide("synthetic/boxes.tiff");
  if (have(boxes)) {
    const wsi::Slide slide(boxes);
    CHECK(slide.property("openslide.vendor") == std::optional<std::string>("generic-tiff"));
    REQUIRE(slide.level_count() == 4);
    CHECK(slide.dimensions(0) == std::pair<int64_t, int64_t>{300, 250});
    CHECK(slide.dimensions(1) == std::pair<int64_t, int64_t>{150, 125});
    CHECK(slide.dimensions(2) == std::pair<int64_t, int64_t>{75, 62});
    CHECK(slide.dimensions(3) == std::pair<int64_t, int64_t>{37, 31});
    CHECK(slide.downsample(3) == doctest::Approx(8.086312118570184).epsilon(1e-12));  // openslide-python
    CHECK(slide.best_level_for_downsample(64) == 3);
    CHECK(slide.best_level_for_downsample(8) == 2);
    CHECK(slide.best_level_for_downsample(1.9) == 0);
    CHECK(!slide.property("openslide.mpp-x").has_value());
    // np.asarray(b.read_region((100,100),2,(2,2))): opaque blue.
    CHECK(slide.read_region(100, 100, 2, 2, 2).pixels == std::vector<uint8_t>{0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255});
  }
  const std::string small = shared_slide("synthetic/small.svs");
  if (have(small)) {
    const wsi::Slide slide(small);
    CHECK(slide.level_count() == 1);
    CHECK(slide.dimensions() == std::pair<int64_t, int64_t>{16, 16});
    CHECK(slide.property("openslide.mpp-x") == std::optional<std::string>("0.499"));
    // First pixel 0xfff5f3fc (WSI.md §A6), then (244, 243, 234) from openslide-python.
    CHECK(slide.read_region(0, 0, 0, 2, 1).pixels == std::vector<uint8_t>{0xf5, 0xf3, 0xfc, 244, 243, 234});
  }
}

TEST_CASE("Slide: the three broken slides give clear errors with the path and OpenSlide's message") {
  const std::string truncated = shared_slide("broken/truncated.svs");
  if (have(truncated))
    CHECK_THROWS_WITH_AS(wsi::Slide{truncated}, has("Slide: " + truncated + ": not a file OpenSlide can recognise"),
                         hg::Error);
  const std::string unopenable = shared_slide("broken/unopenable.tiff");
  if (have(unopenable))
    CHECK_THROWS_WITH_AS(wsi::Slide{unopenable},
                         has("Slide: " + unopenable +
                                           ": OpenSlide opened it into an error state: Unsupported TIFF compression: 52479"),
                         hg::Error);
  const std::string unreadable = shared_slide("broken/unreadable.svs");
  if (have(unreadable)) {
    const wsi::Slide slide(unreadable);  // opens fine: the tiles are what is corrupt
    CHECK(slide.property("openslide.vendor") == std::optional<std::string>("aperio"));
    const auto [w, h] = slide.dimensions();
    CHECK_THROWS_WITH_AS(slide.read_region(0, 0, 0, w, h),
                         has("read_region: " + unreadable + ": OpenSlide failed reading level 0 at (0, 0)"), hg::Error);
    CHECK_THROWS_WITH_AS(slide.read_region(0, 0, 0, w, h), has("Bogus marker length"), hg::Error);
    // The error state is terminal; geometry read at open stays available.
    CHECK_THROWS_WITH_AS(slide.read_region(0, 0, 0, 1, 1), has("terminal error state"), hg::Error);
    CHECK(slide.level_count() == 1);
  }
}
