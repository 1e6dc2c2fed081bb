// HDF5 coordinate/feature files: round trips through our writer and reader, the files CLAM and
// TRIDENT write (fixtures written by h5py in their exact layouts: tests/fixtures/wsi/
// make_h5_fixtures.py), what h5py sees in ours, atomic writes and errors naming the file.
#include <histograd/wsi/hdf5.hpp>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "test_util.hpp"

namespace fs = std::filesystem;
namespace wsi = histograd::wsi;

namespace {
std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("histograd_h5_" + std::to_string(::getpid()) + "_" + name)).string();
}
std::string fixture(const std::string& name) { return std::string(HISTOGRAD_FIXTURES_DIR) + "/wsi/" + name; }

wsi::PatchGridInfo sample_info() {
  wsi::PatchGridInfo g;
  g.patch_size = 256;
  g.patch_size_level0 = 512;
  g.level0_magnification = 40;
  g.target_magnification = 20;
  g.overlap = 0;
  g.name = "slide-1";
  g.savetodir = "/out/patches";
  g.level0_width = 4000;
  g.level0_height = 3000;
  g.patch_level = 1;
  g.level_downsample = 2;
  return g;
}
}  // namespace

TEST_CASE("H5Writer/H5Reader: datasets grow by appends, attributes of every kind come back") {
  const std::string path = temp_path("raw.h5");
  {
    wsi::H5Writer w(path);
    w.create_dataset<int64_t>("coords", 2, 4);
    const int64_t a[] = {1, 2, 3, 4, 5, 6};
    w.append<int64_t>("coords", a, 3);
    w.append<int64_t>("coords", a, 2);
    w.append<int64_t>("coords", a, 0);
    const float f[] = {0.5f, -1.5f, 2.25f};
    w.write_dataset<float>("features", f, 1, 3);
    w.set_attribute("coords", "i", int64_t(-7));
    w.set_attribute("coords", "d", 2.5);
    w.set_attribute("coords", "s", std::string("héllo"));
    w.set_attribute("coords", "iv", std::vector<int64_t>{3, 4});
    w.set_attribute("coords", "dv", std::vector<double>{1.5, 2.5});
    w.set_attribute("/", "root", std::string("r"));
    CHECK(!fs::exists(path));  // only the temporary exists until commit
    CHECK(fs::exists(path + ".tmp"));
    w.commit();
  }
  CHECK(fs::exists(path));
  CHECK(!fs::exists(path + ".tmp"));
  wsi::H5Reader r(path);
  CHECK(r.has("coords"));
  CHECK(!r.has("nothing"));
  CHECK(r.shape("coords") == std::vector<int64_t>{5, 2});
  CHECK(r.read<int64_t>("coords") == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 1, 2, 3, 4});
  CHECK(r.read<double>("coords")[4] == 5.0);  // converted on read
  CHECK(r.read<float>("features") == std::vector<float>{0.5f, -1.5f, 2.25f});
  const auto attrs = r.attributes("coords");
  CHECK(attrs.size() == 5);
  CHECK(std::get<int64_t>(attrs.at("i")) == -7);
  CHECK(std::get<double>(attrs.at("d")) == 2.5);
  CHECK(std::get<std::string>(attrs.at("s")) == "héllo");
  CHECK(std::get<std::vector<int64_t>>(attrs.at("iv")) == std::vector<int64_t>{3, 4});
  CHECK(std::get<std::vector<double>>(attrs.at("dv")) == std::vector<double>{1.5, 2.5});
  CHECK(std::get<std::string>(*r.attribute("/", "root")) == "r");
  CHECK(!r.attribute("coords", "absent").has_value());
  fs::remove(path);
}

TEST_CASE("H5Writer: destroyed without commit leaves no file, not even the temporary") {
  const std::string path = temp_path("abandoned.h5");
  try {
    wsi::H5Writer w(path);
    w.create_dataset<float>("features", 4);
    const float row[] = {1, 2, 3, 4};
    w.append<float>("features", row, 1);
    throw std::runtime_error("model failed half way");
  } catch (const std::runtime_error&) {
  }
  CHECK(!fs::exists(path));
  CHECK(!fs::exists(path + ".tmp"));
  // An earlier complete file is left as it was by a failed rewrite.
  wsi::write_coords(path, {{1, 2}}, sample_info());
  try {
    wsi::H5Writer w(path);
    w.create_dataset<int64_t>("coords", 2);
    throw std::runtime_error("stop");
  } catch (const std::runtime_error&) {
  }
  CHECK(wsi::read_coords(path).coords == std::vector<wsi::Coord>{{1, 2}});
  fs::remove(path);
}

TEST_CASE("coords and features files round trip in the TRIDENT layout, with CLAM's patch_level") {
  const std::string cpath = temp_path("patches.h5"), fpath = temp_path("features.h5");
  const std::vector<wsi::Coord> coords = {{0, 0}, {512, 0}, {1024, 512}};
  wsi::write_coords(cpath, coords, sample_info());
  const wsi::CoordsFile c = wsi::read_coords(cpath);
  CHECK(c.coords == coords);
  CHECK(c.info.layout == "trident");
  CHECK(c.info.patch_size == 256);
  CHECK(c.info.patch_size_level0 == 512);
  CHECK(c.info.level0_magnification == 40);
  CHECK(c.info.target_magnification == 20);
  CHECK(c.info.name == "slide-1");
  CHECK(c.info.savetodir == "/out/patches");
  CHECK(c.info.level0_width == 4000);
  CHECK(c.info.level0_height == 3000);
  CHECK(c.info.patch_level == 1);
  // The attribute names on disk are exactly TRIDENT's nine plus patch_level.
  std::vector<std::string> names;
  for (const auto& [k, v] : wsi::H5Reader(cpath).attributes("coords")) names.push_back(k);
  CHECK(names == std::vector<std::string>{"level0_height", "level0_magnification", "level0_width", "name", "overlap",
                                          "patch_level", "patch_size", "patch_size_level0", "savetodir",
                                          "target_magnification"});

  std::vector<float> feats(3 * 4);
  for (size_t i = 0; i < feats.size(); ++i) feats[i] = 0.25f * float(i) - 1;
  wsi::write_features(fpath, feats.data(), 3, 4, coords, sample_info(), "dino_vits16");
  const wsi::FeaturesFile f = wsi::read_features(fpath);
  CHECK(f.count == 3);
  CHECK(f.dim == 4);
  CHECK(f.features == feats);
  CHECK(f.coords == coords);
  CHECK(f.encoder == "dino_vits16");
  CHECK(f.name == "slide-1");
  CHECK(f.savetodir == fs::path(fpath).parent_path().string());  // the features folder, as TRIDENT writes it
  REQUIRE(f.info.has_value());
  CHECK(f.info->savetodir == "/out/patches");
  CHECK(f.info->patch_size_level0 == 512);

  // A slide without tissue: empty arrays, as TRIDENT writes them.
  wsi::write_features(fpath, nullptr, 0, 4, {}, sample_info(), "dino_vits16");
  const wsi::FeaturesFile empty = wsi::read_features(fpath);
  CHECK(empty.count == 0);
  CHECK(empty.dim == 4);
  CHECK(empty.coords.empty());
  fs::remove(cpath);
  fs::remove(fpath);
}

TEST_CASE("the CLAM layout written by us reads back as CLAM") {
  const std::string path = temp_path("clam.h5");
  wsi::write_coords(path, {{5, 6}}, sample_info(), wsi::CoordsLayout::Clam);
  const auto c = wsi::read_coords(path);
  CHECK(c.info.layout == "clam");
  CHECK(c.info.patch_size == 256);
  CHECK(c.info.patch_level == 1);
  CHECK(c.info.level_downsample == 2);
  CHECK(c.info.patch_size_level0 == 512);
  CHECK(c.info.level0_width == 4000);
  CHECK(c.info.savetodir == "/out/patches");
  fs::remove(path);
}

TEST_CASE("files written by h5py in CLAM's and TRIDENT's layouts are read") {
  const auto clam = wsi::read_coords(fixture("clam_coords.h5"));
  const std::vector<wsi::Coord> expected = {{0, 0}, {512, 0}, {1024, 512}, {1536, 2048}, {2048, 2560}};
  CHECK(clam.coords == expected);
  CHECK(clam.info.layout == "clam");
  CHECK(clam.info.patch_size == 256);
  CHECK(clam.info.patch_level == 1);
  CHECK(clam.info.level_downsample == 4.0);
  CHECK(clam.info.patch_size_level0 == 1024);  // 256 px at level 1 (downsample 4)
  CHECK(clam.info.level0_width == 4000);
  CHECK(clam.info.level0_height == 3000);
  CHECK(clam.info.name == "slide_clam");
  CHECK(clam.info.savetodir == "/data/clam/patches");

  const auto trident = wsi::read_coords(fixture("trident_coords.h5"));
  CHECK(trident.coords == expected);
  CHECK(trident.info.layout == "trident");
  CHECK(trident.info.patch_size == 256);
  CHECK(trident.info.patch_size_level0 == 512);
  CHECK(trident.info.level0_magnification == 40);
  CHECK(trident.info.target_magnification == 20);
  CHECK(trident.info.name == "slide_trident");

  // CLAM's extract_features_fp output: features float32 (N, D) and coords int32, no attributes.
  const auto feats = wsi::read_features(fixture("clam_features.h5"));
  CHECK(feats.count == 5);
  CHECK(feats.dim == 8);
  CHECK(feats.features[9] == 9.0f / 8);
  CHECK(feats.coords == expected);
  CHECK(!feats.info.has_value());
  CHECK(feats.encoder.empty());
}

// What h5py 3.16 printed for the file this test writes (run by hand once; the script is below):
//   coords int64 (3, 2) chunks (256, 2) maxshape (None, 2)
//   features float32 (3, 4) chunks (32, 4) maxshape (None, 4)
//   coords.attrs: level0_height 3000 int64, level0_magnification 40 int64, level0_width 4000 int64,
//     name 'slide-1' str, overlap 0 int64, patch_level 1 int64, patch_size 256 int64,
//     patch_size_level0 512 int64, savetodir '/out/patches' str, target_magnification 20 int64
//   features.attrs: encoder 'dino_vits16' str, name 'slide-1' str, savetodir <the file's folder> str
// When python3 with h5py is on this machine the same check runs live.
TEST_CASE("h5py reads our features file with the datasets and attribute types the tools expect") {
  const std::string path = temp_path("for_h5py.h5");
  const std::vector<wsi::Coord> coords = {{0, 0}, {512, 0}, {1024, 512}};
  std::vector<float> feats(12, 0.5f);
  wsi::write_features(path, feats.data(), 3, 4, coords, sample_info(), "dino_vits16");
  if (std::system("python3 -c 'import h5py' > /dev/null 2>&1") != 0) {
    MESSAGE("python3 with h5py not found: live h5py check skipped (the pasted output above is what it printed)");
    fs::remove(path);
    return;
  }
  const std::string script = temp_path("check.py");
  {
    std::ofstream py(script);
    py << "import sys, h5py, numpy as np\n"
          "f = h5py.File(sys.argv[1], 'r')\n"
          "c, x = f['coords'], f['features']\n"
          "assert c.dtype == np.int64 and c.shape == (3, 2) and c.maxshape == (None, 2), (c.dtype, c.shape)\n"
          "assert x.dtype == np.float32 and x.shape == (3, 4) and x.maxshape == (None, 4), (x.dtype, x.shape)\n"
          "assert (c[:] == [[0, 0], [512, 0], [1024, 512]]).all()\n"
          "a = dict(c.attrs)\n"
          "assert a['patch_size'] == 256 and a['patch_size_level0'] == 512 and a['patch_level'] == 1, a\n"
          "assert a['level0_magnification'] == 40 and a['target_magnification'] == 20 and a['overlap'] == 0, a\n"
          "assert a['name'] == 'slide-1' and isinstance(a['name'], str) and a['savetodir'] == '/out/patches', a\n"
          "assert a['level0_width'] == 4000 and a['level0_height'] == 3000, a\n"
          "assert isinstance(a['patch_size'], np.int64)\n"
          "fa = dict(x.attrs)\n"
          "import os\n"
          "assert fa == {'name': 'slide-1', 'savetodir': os.path.dirname(os.path.abspath(sys.argv[1])), 'encoder': 'dino_vits16'}, fa\n"
          "# TRIDENT's read_coords_legacy path and CLAM's Whole_Slide_Bag_FP need only these two:\n"
          "assert int(c.attrs['patch_size']) == 256 and int(c.attrs['patch_level']) == 1\n";
  }
  CHECK(std::system(("python3 " + script + " " + path).c_str()) == 0);
  fs::remove(script);
  fs::remove(path);
}

TEST_CASE("HDF5 errors name the file and what is wrong") {
  CHECK_THROWS_WITH_AS(wsi::read_coords(temp_path("missing.h5")), doctest::Contains("H5Reader: no such file"),
                       hg::Error);
  const std::string junk = temp_path("junk.h5");
  std::ofstream(junk) << "not hdf5 at all";
  CHECK_THROWS_WITH_AS(wsi::read_coords(junk), doctest::Contains((junk + ": not an HDF5 file").c_str()), hg::Error);
  const std::string path = temp_path("no_coords.h5");
  {
    wsi::H5Writer w(path);
    const float f[] = {1};
    w.write_dataset<float>("features", f, 1, 1);
    w.commit();
  }
  CHECK_THROWS_WITH_AS(wsi::read_coords(path), doctest::Contains((path + ": no 'coords' dataset").c_str()), hg::Error);
  CHECK_THROWS_WITH_AS(wsi::write_features(path, nullptr, 2, 4, {{0, 0}}, sample_info(), "x"),
                       doctest::Contains(("write_features: " + path + ": 2 feature rows but 1 coordinates").c_str()), hg::Error);
  CHECK_THROWS_WITH_AS(wsi::H5Writer(temp_path("no/such/dir/x.h5")), doctest::Contains("H5Writer: cannot create"),
                       hg::Error);
  {
    wsi::H5Writer w(temp_path("typed.h5"));
    w.create_dataset<int64_t>("coords", 2);
    const float f[] = {1, 2};
    CHECK_THROWS_WITH_AS(w.append<float>("coords", f, 1), doctest::Contains("different element type"), hg::Error);
  }
  fs::remove(junk);
  fs::remove(path);
}
