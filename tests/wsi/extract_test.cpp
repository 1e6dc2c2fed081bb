// The slide pipeline end to end on synthetic pyramidal TIFFs written here (tissue-like discs at
// known places on white): mask, coordinates and features with a tiny ViT, features checked
// against the model run directly on the same patches; resume/skip; the failures CSV on broken
// slides; atomic outputs after a forced failure; the mpp CSV for a slide without metadata.
#include <histograd/wsi/wsi.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "synthetic_tiff.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace wsi = histograd::wsi;

namespace {

std::string temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("histograd_extract_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// 2048 x 1536 at 0.25 mpp (40x), 3 levels: a pink disc centred (600, 600) radius 350 and a purple
// rectangle [1200, 1800) x [900, 1400), both saturated; white elsewhere.
std::array<uint8_t, 3> tissue_pixel(int64_t x, int64_t y) {
  const double dx = double(x) - 600, dy = double(y) - 600;
  if (dx * dx + dy * dy < 350.0 * 350.0) return {220, 120, 170};
  if (x >= 1200 && x < 1800 && y >= 900 && y < 1400) return {140, 80, 160};
  return {245, 245, 245};
}

std::string write_slide(const std::string& dir, const std::string& name, bool with_mpp = true) {
  const std::string path = dir + "/" + name;
  synthetic::PyramidOptions o;
  o.tile = 64;
  o.levels = 3;
  if (with_mpp) o.description = synthetic::aperio_description(2048, 1536, 64, 0.25, 40.0);
  synthetic::write_pyramid_tiff(path, 2048, 1536, tissue_pixel, o);
  return path;
}

hg::models::ViTConfig tiny_config() {
  hg::models::ViTConfig c = hg::models::preset("dino_vits16");
  c.name = "tiny";
  c.image_size = 32;
  c.embed_dim = 32;
  c.depth = 1;
  c.num_heads = 2;
  c.mlp_hidden = 64;
  c.resize_size = 32;
  c.crop_size = 32;
  return c;
}

wsi::ExtractOptions tiny_options(const std::string& out) {
  wsi::ExtractOptions o;
  o.model = "tiny";
  o.config = tiny_config();
  o.out_dir = out;
  o.patch.magnification = 20;  // downsample 2: 64 px patches are 128 level-0 px
  o.patch.patch_size = 64;
  o.segmentation = wsi::SegmentationParams::preset("bwh_biopsy");  // a_t = 1: 512² level-0 px
  o.batch = 5;                                                     // 5 does not divide the patch count
  o.threads = 2;
  o.progress = false;
  return o;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool has_temporaries(const std::string& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().extension() == ".tmp") return true;
  return false;
}

}  // namespace

TEST_CASE("segment_slide finds the two synthetic tissue blobs at level 2") {
  const std::string dir = temp_dir("seg");
  const wsi::Slide slide(write_slide(dir, "s.tiff"));
  const wsi::SlideTissue t = wsi::segment_slide(slide, wsi::SegmentationParams::preset("bwh_biopsy"));
  CHECK(t.level == 2);  // downsample 4 is the best level for 64
  CHECK(t.downsample_x == 4);
  REQUIRE(t.regions.size() == 2);
  // Each blob's centre is inside one region, the background corner in none.
  int disc = 0, box = 0;
  for (const auto& r : t.regions) {
    disc += wsi::point_polygon_test(r.outline, {600, 600}) > 0;
    box += wsi::point_polygon_test(r.outline, {1500, 1150}) > 0;
    CHECK(wsi::point_polygon_test(r.outline, {50, 1500}) < 0);
  }
  CHECK(disc == 1);
  CHECK(box == 1);
  fs::remove_all(dir);
}

TEST_CASE("extract: mask, coordinates and features of a synthetic slide, features equal to the model run directly") {
  const std::string dir = temp_dir("e2e"), out = dir + "/out";
  const std::string path = write_slide(dir, "slide-a.tiff");
  wsi::Extractor extractor(tiny_options(out));
  const wsi::SlideResult r = extractor.process(path);
  INFO(r.message);
  REQUIRE(r.status == "ok");
  const wsi::SlideOutputs files = wsi::slide_outputs(extractor.options(), path);
  CHECK(files.features == out + "/features_tiny/slide-a.h5");
  CHECK(files.patches == out + "/patches/slide-a_patches.h5");

  // Mask: white on the blobs, black on the background (picture at 1/4 scale: 512 x 384).
  const hg::io::Image mask = hg::io::read_image(files.mask);
  CHECK(mask.width == 512);
  CHECK(mask.height == 384);
  CHECK(mask.pixels[size_t((150 * 512 + 150) * 3)] == 255);  // (600, 600) level 0
  CHECK(mask.pixels[size_t((290 * 512 + 375) * 3)] == 255);  // (1500, 1160)
  CHECK(mask.pixels[size_t((370 * 512 + 10) * 3)] == 0);
  CHECK(fs::exists(files.visualization));

  // Coordinates: 128 level-0 px patches on the global grid, each touching a blob, blob centres covered.
  const wsi::CoordsFile coords = wsi::read_coords(files.patches);
  CHECK(coords.info.patch_size == 64);
  CHECK(coords.info.patch_size_level0 == 128);
  CHECK(coords.info.level0_magnification == 40);
  CHECK(coords.info.target_magnification == 20);
  CHECK(coords.info.patch_level == 1);  // the 2x level of the pyramid
  CHECK(coords.info.level0_width == 2048);
  CHECK(coords.info.name == "slide-a");
  REQUIRE(!coords.coords.empty());
  CHECK(int64_t(coords.coords.size()) == r.patches);
  auto has = [&](int64_t x, int64_t y) {
    return std::find(coords.coords.begin(), coords.coords.end(), wsi::Coord{x, y}) != coords.coords.end();
  };
  CHECK(has(512, 512));
  CHECK(has(1408, 1152));
  CHECK(!has(0, 0));
  CHECK(!has(1920, 0));
  for (const auto& c : coords.coords) {
    CHECK(c.x % 128 == 0);
    CHECK(c.y % 128 == 0);
    const bool near_disc = std::hypot(double(c.x + 64) - 600, double(c.y + 64) - 600) < 350 + 91;
    const bool near_box = c.x + 128 > 1200 && c.x < 1800 && c.y + 128 > 900 && c.y < 1400;
    CHECK((near_disc || near_box));
  }

  // Features: (N, 32), coords identical, and each row what the model gives on that patch alone.
  const wsi::FeaturesFile f = wsi::read_features(files.features);
  CHECK(f.count == r.patches);
  CHECK(f.dim == 32);
  CHECK(f.coords == coords.coords);
  CHECK(f.encoder == "tiny");
  hg::NoGradGuard no_grad;
  hg::models::VisionTransformer<float> model(tiny_config());
  model.eval();
  const auto preprocess = hg::data::Preprocess::for_model(tiny_config());
  const wsi::Slide slide(path);
  for (size_t i : {size_t(0), size_t(7), coords.coords.size() - 1}) {
    const auto c = coords.coords[i];
    const auto patch = wsi::read_region_resized(slide, c.x, c.y, 128, 128, 64, 64);
    const auto expected = model.forward(preprocess(patch).unsqueeze(0)).to_vector();
    for (int64_t k = 0; k < 32; ++k) CHECK(f.features[i * 32 + size_t(k)] == doctest::Approx(expected[size_t(k)]).epsilon(1e-4));
  }
  CHECK(!has_temporaries(out));
  fs::remove_all(dir);
}

TEST_CASE("extract: mixed precision (bf16 autocast, the CPU emulation) gives features near the fp32 ones") {
  const std::string dir = temp_dir("bf16");
  const std::string path = write_slide(dir, "slide-a.tiff");
  auto run = [&](bool mixed, const std::string& out) {
    wsi::ExtractOptions o = tiny_options(out);
    o.mixed_precision = mixed;
    wsi::Extractor extractor(o);
    const wsi::SlideResult r = extractor.process(path);
    INFO(r.message);
    REQUIRE(r.status == "ok");
    return wsi::read_features(wsi::slide_outputs(extractor.options(), path).features);
  };
  const wsi::FeaturesFile fp32 = run(false, dir + "/fp32"), bf16 = run(true, dir + "/bf16");
  REQUIRE(fp32.features.size() == bf16.features.size());
  CHECK(fp32.coords == bf16.coords);
  // bf16 keeps 8 mantissa bits: a few per mille per matrix product, through two blocks.
  double diff = 0, norm = 0;
  bool any_different = false;
  for (size_t i = 0; i < fp32.features.size(); ++i) {
    diff += std::pow(double(bf16.features[i]) - double(fp32.features[i]), 2);
    norm += std::pow(double(fp32.features[i]), 2);
    any_different = any_different || bf16.features[i] != fp32.features[i];
  }
  CHECK(std::sqrt(diff / norm) <= 2e-2);
  CHECK(any_different);
  wsi::ExtractOptions bad = tiny_options(dir + "/gpu");
  bad.device = hg::Device::cuda();
  if (!cuda_allocates()) CHECK_THROWS_AS(wsi::Extractor{bad}, hg::Error);  // no GPU here: refused when the model moves
  fs::remove_all(dir);
}

TEST_CASE("extract: --npy, a rerun skips finished slides, --redo does them again") {
  const std::string dir = temp_dir("resume"), out = dir + "/out";
  const std::string a = write_slide(dir, "a.tiff"), b = write_slide(dir, "b.tiff");
  wsi::ExtractOptions o = tiny_options(out);
  o.npy = true;
  wsi::Extractor extractor(o);
  auto first = extractor.run({a});
  REQUIRE(first.size() == 1);
  CHECK(first[0].status == "ok");
  const auto files = wsi::slide_outputs(o, a);
  CHECK(fs::exists(files.npy));
  const auto stamp = fs::last_write_time(files.features);
  const auto second = extractor.run({a, b});
  REQUIRE(second.size() == 2);
  CHECK(second[0].status == "skipped");
  CHECK(second[1].status == "ok");
  CHECK(fs::last_write_time(files.features) == stamp);
  CHECK(read_text(out + "/failures.csv") == "slide,status,message\n");
  o.skip_existing = false;
  CHECK(wsi::Extractor(o).process(a).status == "ok");
  fs::remove_all(dir);
}

TEST_CASE("extract: broken slides are recorded in failures.csv and the run goes on") {
  const std::string dir = temp_dir("broken"), out = dir + "/out";
  const std::string good = write_slide(dir, "good.tiff");
  const std::string junk = dir + "/junk.svs";
  std::ofstream(junk) << "this is not a slide";
  const std::string missing = dir + "/missing.svs";
  const std::string no_mpp = write_slide(dir, "nompp.tiff", /*with_mpp=*/false);
  std::vector<std::string> slides = {junk, missing, no_mpp, good};
  const std::string shared = std::string(HISTOGRAD_SHARED_DATA_DIR) + "/slides/broken/";
  const bool have_shared = fs::exists(shared + "unreadable.svs");
  if (have_shared) {
    for (const char* name : {"truncated.svs", "unopenable.tiff", "unreadable.svs"}) slides.push_back(shared + name);
  } else {
    MESSAGE("../shared/data/slides/broken not found: the three real broken slides are skipped");
  }
  wsi::Extractor extractor(tiny_options(out));
  const auto results = extractor.run(slides);
  REQUIRE(results.size() == slides.size());
  CHECK(results[0].status == "failed");
  CHECK(results[0].message.find("junk.svs: not a file OpenSlide can recognise") != std::string::npos);
  CHECK(results[1].status == "failed");
  CHECK(results[1].message.find("missing.svs: no such file") != std::string::npos);
  CHECK(results[2].status == "failed");
  CHECK(results[2].message.find("--mpp") != std::string::npos);
  CHECK(results[3].status == "ok");  // after three failures
  const std::string csv = read_text(out + "/failures.csv");
  CHECK(csv.rfind("slide,status,message\n", 0) == 0);
  CHECK(csv.find(junk + ",failed,") != std::string::npos);
  CHECK(csv.find(missing + ",failed,") != std::string::npos);
  CHECK(csv.find(good) == std::string::npos);
  if (have_shared) {
    CHECK(results[4].message.find("not a file OpenSlide can recognise") != std::string::npos);
    CHECK(results[5].message.find("Unsupported TIFF compression: 52479") != std::string::npos);
    CHECK(results[6].status == "failed");  // opens, then a tile fails to decode while reading
    CHECK(!fs::exists(wsi::slide_outputs(extractor.options(), shared + "unreadable.svs").features));
  }
  CHECK(!has_temporaries(out));
  for (const auto& r : results)
    if (r.status == "failed") CHECK(!fs::exists(wsi::slide_outputs(extractor.options(), r.slide).features));
  fs::remove_all(dir);
}

TEST_CASE("extract: the mpp CSV gives a slide without metadata its mpp") {
  const std::string dir = temp_dir("mppcsv"), out = dir + "/out";
  const std::string path = write_slide(dir, "plain.tiff", /*with_mpp=*/false);
  const std::string csv = dir + "/mpp.csv";
  std::ofstream(csv) << "wsi,mpp\nplain.tiff,0.25\n";
  wsi::ExtractOptions o = tiny_options(out);
  o.mpp_table = wsi::read_mpp_csv(csv);
  wsi::Extractor extractor(o);
  const auto r = extractor.process(path);
  INFO(r.message);
  CHECK(r.status == "ok");
  CHECK(wsi::read_coords(wsi::slide_outputs(o, path).patches).info.patch_size_level0 == 128);
  // --mpp for every slide wins over the table: 0.5 mpp is already 20x, patches of 64 level-0 px.
  o.mpp = 0.5;
  o.skip_existing = false;
  CHECK(wsi::Extractor(o).process(path).status == "ok");
  CHECK(wsi::read_coords(wsi::slide_outputs(o, path).patches).info.patch_size_level0 == 64);
  fs::remove_all(dir);
}

TEST_CASE("extract: a failure while writing leaves no partial features file") {
  const std::string dir = temp_dir("atomic"), out = dir + "/out";
  const std::string path = write_slide(dir, "s.tiff");
  wsi::ExtractOptions o = tiny_options(out);
  const auto files = wsi::slide_outputs(o, path);
  // A directory where the features' temporary file must go makes HDF5's create fail at the very end.
  fs::create_directories(files.features + ".tmp");
  wsi::Extractor extractor(o);
  const auto r = extractor.process(path);
  CHECK(r.status == "failed");
  CHECK(r.message.find("H5Writer: cannot create '" + files.features + ".tmp'") != std::string::npos);
  CHECK(!fs::exists(files.features));
  CHECK(fs::exists(files.patches));  // the finished earlier stage stays
  fs::remove_all(files.features + ".tmp");
  CHECK(extractor.process(path).status == "ok");  // not skipped: the slide was not done
  CHECK(fs::exists(files.features));
  fs::remove_all(dir);
}

TEST_CASE("extract: option errors and empty slides") {
  wsi::ExtractOptions o = tiny_options(temp_dir("opts"));
  o.batch = 0;
  CHECK_THROWS_WITH_AS(wsi::Extractor{o}, doctest::Contains("Extractor: expected a batch size >= 1, got 0"), hg::Error);
  o = tiny_options(o.out_dir);
  o.threads = 0;
  CHECK_THROWS_WITH_AS(wsi::Extractor{o}, doctest::Contains("Extractor: expected at least one reading thread"), hg::Error);
  // A slide with no tissue: empty coords and features files (TRIDENT writes empty arrays too).
  const std::string dir = temp_dir("blank");
  synthetic::PyramidOptions po;
  po.levels = 2;
  po.description = synthetic::aperio_description(512, 512, 64, 0.5, 20.0);
  synthetic::write_pyramid_tiff(dir + "/blank.tiff", 512, 512, [](int64_t, int64_t) { return std::array<uint8_t, 3>{250, 250, 250}; }, po);
  o = tiny_options(dir + "/out");
  const auto r = wsi::Extractor(o).process(dir + "/blank.tiff");
  CHECK(r.status == "ok");
  CHECK(r.patches == 0);
  CHECK(r.message.find("no tissue found") != std::string::npos);
  const auto f = wsi::read_features(wsi::slide_outputs(o, dir + "/blank.tiff").features);
  CHECK(f.count == 0);
  CHECK(f.dim == 32);
  fs::remove_all(dir);
  fs::remove_all(o.out_dir);
}

// On the real slide: the coordinates equal, in order, those of benchmarks/wsi_reference.py's grid
// (openslide-python + cv2 CLAM segmentation with the bwh_biopsy preset, TRIDENT's global 20x grid of
// round(256 · 0.5/0.499) = 257 level-0 px, CLAM's four_pt rule and hole test via cv2.pointPolygonTest),
// printed by that script and pasted here.
TEST_CASE("extract: CMU-1-Small-Region's patch coordinates match the cv2/openslide-python reference") {
  const std::string slide = std::string(HISTOGRAD_SHARED_DATA_DIR) + "/slides/CMU-1-Small-Region.svs";
  if (!fs::exists(slide)) {
    MESSAGE("../shared/data/slides/CMU-1-Small-Region.svs not found: real-slide patching check skipped");
    return;
  }
  const wsi::Slide s(slide);
  const auto tissue = wsi::segment_slide(s, wsi::SegmentationParams::preset("bwh_biopsy"));
  wsi::PatchParams p;
  p.magnification = 20;
  const auto grid = wsi::patch_grid(tissue.regions, 2220, 2967, wsi::level0_mpp(s), p);
  CHECK(grid.patch_size_level0 == 257);
  const std::vector<wsi::Coord> expected = {
      {771, 0},     {1028, 0},    {771, 257},   {1028, 257},  {1285, 257},  {771, 514},   {1028, 514},  {1285, 514},
      {1542, 514},  {771, 771},   {1028, 771},  {1285, 771},  {1542, 771},  {257, 1028},  {514, 1028},  {771, 1028},
      {1028, 1028}, {1285, 1028}, {1542, 1028}, {1799, 1028}, {771, 1285},  {1028, 1285}, {1285, 1285}, {1542, 1285},
      {1799, 1285}, {771, 1542},  {1028, 1542}, {1285, 1542}, {1542, 1542}, {771, 1799},  {1028, 1799}, {1285, 1799},
      {1542, 1799}, {1799, 1799}, {771, 2056},  {1028, 2056}, {1285, 2056}, {1542, 2056}, {1799, 2056}, {514, 2313},
      {771, 2313},  {1028, 2313}, {1285, 2313}, {1542, 2313}, {514, 2570},  {771, 2570},  {1028, 2570}, {1285, 2570},
      {1542, 2570}, {514, 2827},  {771, 2827},  {1028, 2827}, {1285, 2827}, {1542, 2827}};
  CHECK(grid.coords == expected);
  // CLAM's default preset finds nothing on this small region (a_t = 100 x 512² px > the whole slide);
  // the tool's default ("histograd": a_t = 1, pen filter, blur QC) finds it.
  CHECK(wsi::segment_slide(s, wsi::SegmentationParams::preset("clam")).regions.empty());
  const auto ours = wsi::segment_slide(s, wsi::ExtractOptions{}.segmentation);
  REQUIRE(!ours.regions.empty());
  const auto default_grid = wsi::patch_grid(ours.regions, 2220, 2967, wsi::level0_mpp(s), p);
  MESSAGE("histograd preset: " << ours.regions.size() << " regions, " << default_grid.coords.size() << " patches");
  CHECK(default_grid.coords.size() >= 40);
}
