// data/dataset.hpp and data/loader.hpp: torchvision's ImageFolder order on a folder made here,
// the error paths (missing, empty, undecodable files under Skip and Stop), and the DataLoader's
// determinism across worker counts, exact resume, shuffling, drop_last, multi-crop batch shapes
// and errors rethrown in the consumer naming the sample's file.
#include <histograd/data/augment.hpp>
#include <histograd/data/dataset.hpp>
#include <histograd/data/loader.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

#include "test_util.hpp"

namespace data = hg::data;
namespace fs = std::filesystem;

namespace {

doctest::Contains has(const std::string& s) { return doctest::Contains(doctest::String(s.c_str())); }

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("hg_data_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A small image whose pixels encode `value`, so a test can tell samples apart.
hg::io::Image tagged_image(int value, int64_t w = 12, int64_t h = 10) {
  hg::io::Image im{w, h, std::vector<uint8_t>(static_cast<size_t>(w * h * 3))};
  for (size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<uint8_t>((value * 31 + int(i) * 7) % 256);
  return im;
}

void write_image(const fs::path& p, int value) {
  fs::create_directories(p.parent_path());
  hg::io::write_png(p.string(), tagged_image(value));
}

void write_garbage(const fs::path& p) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << "\x89PNG\r\n\x1a\n this is not really a png";
}

// In memory: sample i is tagged_image(i), label i % 3.
class ToyDataset : public data::Dataset {
 public:
  explicit ToyDataset(size_t n) : n_(n) {}
  size_t size() const override { return n_; }
  hg::io::Image load(size_t i) override { return tagged_image(static_cast<int>(i), 12 + static_cast<int64_t>(i % 5), 10); }
  int label(size_t i) const override { return static_cast<int>(i % 3); }
  std::vector<std::string> classes() const override { return {"a", "b", "c"}; }
  std::string path(size_t i) const override { return "toy/" + std::to_string(i); }

 private:
  size_t n_;
};

// Two small views per sample through the real augmentation ops.
data::SampleTransform small_multicrop() {
  data::MultiCropConfig config;
  config.global_size = 8;
  config.local_size = 4;
  config.local_crops = 2;
  return data::MultiCropAugmentation(config);
}

std::vector<data::Batch> drain(data::DataLoader& loader, int epochs) {
  std::vector<data::Batch> out;
  for (int e = 0; e < epochs; ++e)
    while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

void check_same(const data::Batch& a, const data::Batch& b) {
  CHECK(a.epoch == b.epoch);
  CHECK(a.batch_index == b.batch_index);
  CHECK(a.indices == b.indices);
  CHECK(a.labels == b.labels);
  REQUIRE(a.views.size() == b.views.size());
  for (size_t v = 0; v < a.views.size(); ++v) {
    CHECK(a.views[v].shape() == b.views[v].shape());
    CHECK(a.views[v].to_vector() == b.views[v].to_vector());
  }
}

}  // namespace

// The expected order is what torchvision 0.29's ImageFolder gave on the same tree (directories as
// sorted(os.walk) visits them: by their path strings, so "sub-x" comes between "sub" and "sub/deeper").
TEST_CASE("ImageFolder orders classes and files as torchvision does") {
  TempDir dir("folder");
  // class folders out of order, a nested sub-folder, upper-case extensions, a file that is not an image
  write_image(dir.path / "tumour" / "b.png", 1);
  write_image(dir.path / "tumour" / "a.PNG", 2);
  write_image(dir.path / "tumour" / "sub" / "c.png", 3);
  write_image(dir.path / "tumour" / "sub-x" / "d.png", 4);
  write_image(dir.path / "tumour" / "sub" / "deeper" / "e.png", 7);  // directory "tumour/sub-x" < "tumour/sub/deeper"
  write_image(dir.path / "Stroma" / "z.png", 5);            // upper case sorts first
  write_image(dir.path / "adipose" / "y.jpg.png", 6);
  std::ofstream(dir.path / "adipose" / "notes.txt") << "not an image";
  std::ofstream(dir.path / "README") << "a file at the root is not a class";

  data::ImageFolder folder(dir.path.string());
  CHECK(folder.classes() == std::vector<std::string>{"Stroma", "adipose", "tumour"});
  REQUIRE(folder.size() == 7);
  const fs::path r = dir.path;
  const std::vector<std::string> expected{(r / "Stroma/z.png").string(),       (r / "adipose/y.jpg.png").string(),
                                          (r / "tumour/a.PNG").string(),       (r / "tumour/b.png").string(),
                                          (r / "tumour/sub/c.png").string(),   (r / "tumour/sub-x/d.png").string(),
                                          (r / "tumour/sub/deeper/e.png").string()};
  for (size_t i = 0; i < expected.size(); ++i) CHECK(folder.path(i) == expected[i]);
  CHECK(folder.label(0) == 0);
  CHECK(folder.label(1) == 1);
  CHECK(folder.label(6) == 2);
  CHECK(folder.load(3).pixels == tagged_image(1).pixels);

  data::UnlabeledImages all(dir.path.string());
  CHECK(all.size() == 7);
  CHECK(all.label(0) == -1);
  CHECK(all.classes().empty());
  data::UnlabeledImages listed(std::vector<std::string>{expected[2], expected[0]});
  CHECK(listed.path(0) == expected[2]);
  CHECK(listed.load(1).pixels == tagged_image(5).pixels);
}

TEST_CASE("missing, empty and image-less folders are errors naming the path") {
  TempDir dir("empty");
  const std::string missing = (dir.path / "nope").string();
  CHECK_THROWS_WITH_AS(data::ImageFolder{missing}, has("ImageFolder: expected an existing folder, got '" + missing),
                       hg::Error);
  CHECK_THROWS_WITH_AS(data::UnlabeledImages{missing},
                       has("UnlabeledImages: expected an existing folder, got '" + missing), hg::Error);
  CHECK_THROWS_WITH_AS(data::ImageFolder{dir.path.string()},
                       has("ImageFolder: expected one sub-folder per class in '" + dir.path.string()), hg::Error);
  CHECK_THROWS_WITH_AS(data::UnlabeledImages{dir.path.string()},
                       has("UnlabeledImages: expected images (.png, .jpg, .jpeg, .tif) under '" +
                                         dir.path.string()),
                       hg::Error);
  write_image(dir.path / "full" / "a.png", 1);
  fs::create_directories(dir.path / "hollow");
  std::ofstream(dir.path / "hollow" / "x.txt") << "text";
  CHECK_THROWS_WITH_AS(data::ImageFolder{dir.path.string()},
                       has("found none in '" + (dir.path / "hollow").string() + "'"), hg::Error);
  CHECK_THROWS_WITH_AS(data::UnlabeledImages{std::vector<std::string>{}},
                       has("UnlabeledImages: expected a non-empty list of image files"), hg::Error);
}

TEST_CASE("an undecodable image stops with its name, or is skipped, counted and replaced by the next") {
  TempDir dir("bad");
  write_image(dir.path / "c" / "0.png", 0);
  write_garbage(dir.path / "c" / "1.png");
  write_image(dir.path / "c" / "2.png", 2);
  write_image(dir.path / "c" / "3.png", 3);
  const std::string bad = (dir.path / "c" / "1.png").string();

  auto stop = std::make_shared<data::ImageFolder>(dir.path.string(), data::OnBadImage::Stop);
  CHECK_THROWS_WITH_AS(stop->load(1), has("ImageFolder: cannot decode '" + bad + "'"), hg::Error);
  data::DataLoaderOptions options;
  options.batch_size = 2;
  options.shuffle = false;
  options.num_workers = 2;
  {
    data::DataLoader loader(stop, small_multicrop(), options);
    CHECK_THROWS_WITH_AS(loader.next(), has("DataLoader: sample 1 ('" + bad + "')"), hg::Error);
    CHECK_THROWS_WITH_AS(loader.next(), has(bad), hg::Error);  // asking again gives the same error
  }  // the destructor joins the workers after an error

  auto skip = std::make_shared<data::ImageFolder>(dir.path.string(), data::OnBadImage::Skip);
  CHECK_THROWS_AS(skip->load(1), data::SkippedImage);
  CHECK(skip->skipped() == 1);
  for (int workers : {0, 3}) {
    options.num_workers = workers;
    data::DataLoader loader(skip, small_multicrop(), options);
    std::optional<data::Batch> b = loader.next();
    REQUIRE(b.has_value());
    CHECK(b->indices == std::vector<size_t>{0, 2});  // sample 1 replaced by sample 2
    CHECK(loader.next()->indices == std::vector<size_t>{2, 3});
    CHECK(!loader.next().has_value());
  }
  CHECK(skip->skipped() == 1);  // counted once however often it is met
}

TEST_CASE("batches are identical for 0, 1 and 3 workers, and each epoch is a fresh permutation") {
  auto dataset = std::make_shared<ToyDataset>(23);
  data::DataLoaderOptions options;
  options.batch_size = 4;
  options.seed = 11;
  options.drop_last = false;
  std::vector<std::vector<data::Batch>> runs;
  for (int workers : {0, 1, 3}) {
    options.num_workers = workers;
    data::DataLoader loader(dataset, small_multicrop(), options);
    CHECK(loader.batches_per_epoch() == 6);
    runs.push_back(drain(loader, 3));
  }
  REQUIRE(runs[0].size() == 18);
  for (size_t r = 1; r < runs.size(); ++r) {
    REQUIRE(runs[r].size() == runs[0].size());
    for (size_t i = 0; i < runs[0].size(); ++i) check_same(runs[r][i], runs[0][i]);
  }
  std::vector<std::vector<size_t>> orders(3);
  for (const data::Batch& b : runs[0]) {
    orders[static_cast<size_t>(b.epoch)].insert(orders[static_cast<size_t>(b.epoch)].end(), b.indices.begin(), b.indices.end());
    for (size_t s = 0; s < b.indices.size(); ++s) CHECK(b.labels[s] == int(b.indices[s] % 3));
    REQUIRE(b.views.size() == 4);
    const int64_t B = static_cast<int64_t>(b.indices.size());
    CHECK(b.views[0].shape() == hg::Shape{B, 3, 8, 8});
    CHECK(b.views[1].shape() == hg::Shape{B, 3, 8, 8});
    CHECK(b.views[2].shape() == hg::Shape{B, 3, 4, 4});
    CHECK(b.views[3].shape() == hg::Shape{B, 3, 4, 4});
  }
  CHECK(runs[0].back().indices.size() == 3);  // 23 = 5·4 + 3, kept without drop_last
  for (const auto& order : orders) CHECK(std::set<size_t>(order.begin(), order.end()).size() == 23);
  CHECK(orders[0] != orders[1]);
  // the same sample in two epochs is augmented differently
  CHECK(data::sample_seed(11, 0, 5) != data::sample_seed(11, 1, 5));
}

TEST_CASE("start_at resumes with exactly the batches of an uninterrupted run") {
  auto dataset = std::make_shared<ToyDataset>(17);
  data::DataLoaderOptions options;
  options.batch_size = 3;
  options.seed = 5;
  options.num_workers = 3;
  options.prefetch_batches = 2;
  data::DataLoader full(dataset, small_multicrop(), options);
  CHECK(full.batches_per_epoch() == 5);  // drop_last
  const std::vector<data::Batch> reference = drain(full, 3);
  REQUIRE(reference.size() == 15);
  CHECK(full.epoch() == 3);
  CHECK(full.batch_index() == 0);

  // interrupted after epoch 1, batch 2: a new loader (as after a restart), another worker count
  options.num_workers = 1;
  data::DataLoader resumed(dataset, small_multicrop(), options);
  resumed.start_at(1, 2);
  CHECK(resumed.epoch() == 1);
  CHECK(resumed.batch_index() == 2);
  std::vector<data::Batch> rest;
  while (auto b = resumed.next()) rest.push_back(std::move(*b));
  CHECK(resumed.epoch() == 2);
  rest.push_back(*resumed.next());
  REQUIRE(rest.size() == 4);
  for (size_t i = 0; i < rest.size(); ++i) check_same(rest[i], reference[7 + i]);

  // moving back on a loader with batches in flight drops them
  resumed.start_at(0, 4);
  check_same(*resumed.next(), reference[4]);
  CHECK(!resumed.next().has_value());
  check_same(*resumed.next(), reference[5]);

  CHECK_THROWS_WITH_AS(resumed.start_at(0, 5), has("DataLoader::start_at: expected epoch >= 0 and 0 <= batch_index < 5"),
                       hg::Error);
}

TEST_CASE("a failing transform is rethrown in next() naming the sample") {
  auto dataset = std::make_shared<ToyDataset>(10);
  data::DataLoaderOptions options;
  options.batch_size = 5;
  options.shuffle = false;
  options.num_workers = 2;
  auto transform = [](const hg::io::Image& im, hg::Generator&) -> std::vector<hg::Tensor<float>> {
    HG_CHECK(im.width != 15, "picky", "expected no 15-pixel-wide image");  // sample 3 and 8
    return {data::to_tensor<float>(data::resize_bicubic(im, 4, 4))};
  };
  data::DataLoader loader(dataset, transform, options);
  CHECK_THROWS_WITH_AS(loader.next(), has("DataLoader: sample 3 ('toy/3') of epoch 0: picky: expected no"),
                       hg::Error);

  auto ragged = [](const hg::io::Image& im, hg::Generator&) -> std::vector<hg::Tensor<float>> {
    return {data::to_tensor<float>(im)};  // widths differ between samples
  };
  data::DataLoader bad(dataset, ragged, options);
  CHECK_THROWS_WITH_AS(bad.next(), has("DataLoader: expected every sample to give 1 views shaped as the first"),
                       hg::Error);
  options.batch_size = 11;
  CHECK_THROWS_WITH_AS(data::DataLoader(dataset, transform, options),
                       has("DataLoader: expected at least batch_size = 11 samples with drop_last, got 10"),
                       hg::Error);
}
