// The synthetic H&E generator: deterministic per (seed, index), balanced, any tile size, classes
// that differ in morphology (nuclear density) but are not told apart by mean colour alone, and a
// written image folder that ImageFolder reads back to the same tiles and labels.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <histograd/data/dataset.hpp>
#include <histograd/data/synthetic_tissue.hpp>
#include <unistd.h>

#include "test_util.hpp"

namespace {

using hg::data::SyntheticTissue;
using hg::data::TissueClass;

// Fraction of pixels whose red-channel optical density exceeds 0.2: haematoxylin absorbs red
// (Ruifrok H = 0.65 in red) and eosin barely does (0.07), so this counts nuclear pixels.
double nuclear_fraction(const hg::io::Image& image) {
  size_t nuclear = 0;
  const size_t pixels = image.pixels.size() / 3;
  for (size_t i = 0; i < pixels; ++i) {
    const double red = std::max<double>(image.pixels[i * 3], 1.0);
    if (-std::log10(red / 255.0) > 0.2) ++nuclear;
  }
  return double(nuclear) / double(pixels);
}

std::array<double, 3> mean_colour(const hg::io::Image& image) {
  std::array<double, 3> mean{0, 0, 0};
  const size_t pixels = image.pixels.size() / 3;
  for (size_t i = 0; i < pixels; ++i)
    for (size_t c = 0; c < 3; ++c) mean[c] += image.pixels[i * 3 + c];
  for (double& m : mean) m /= double(pixels);
  return mean;
}

}  // namespace

TEST_CASE("synthetic tissue: labels are balanced, class-major, named as sorted folders") {
  SyntheticTissue tiles(7, 64, 3);
  CHECK(tiles.size() == 35);
  CHECK(tiles.classes() == std::vector<std::string>{"adipose", "background", "lymphocytes", "stroma", "tumour"});
  std::vector<int> counts(5, 0);
  for (size_t i = 0; i < tiles.size(); ++i) {
    ++counts[static_cast<size_t>(tiles.label(i))];
    CHECK(tiles.label(i) == static_cast<int>(i / 7));
  }
  CHECK(counts == std::vector<int>{7, 7, 7, 7, 7});
  CHECK(tiles.label(14) == static_cast<int>(TissueClass::Lymphocytes));
  const std::vector<std::string> names = tiles.classes();
  CHECK(std::is_sorted(names.begin(), names.end()));
}

TEST_CASE("synthetic tissue: tiles depend on (seed, index) only") {
  SyntheticTissue a(4, 64, 11), b(4, 64, 11), other_seed(4, 64, 12);
  const hg::io::Image late_first = b.load(17);  // loading order does not matter
  for (size_t i = 0; i < a.size(); ++i) {
    const hg::io::Image x = a.load(i), y = b.load(i);
    CHECK(x.pixels == y.pixels);
    CHECK(x.pixels != other_seed.load(i).pixels);
  }
  CHECK(late_first.pixels == a.load(17).pixels);
  CHECK(a.load(0).pixels != a.load(1).pixels);
  // tile i is the same draw in a dataset of another size when its class is the same
  CHECK(SyntheticTissue(5, 64, 11).load(0).pixels == a.load(0).pixels);
  // the free function is the pure core
  CHECK(hg::data::synthetic_tissue_tile(TissueClass::Stroma, 48, 99).pixels ==
        hg::data::synthetic_tissue_tile(TissueClass::Stroma, 48, 99).pixels);
}

TEST_CASE("synthetic tissue: any tile size") {
  for (int size : {8, 33, 64, 96, 224}) {
    SyntheticTissue tiles(1, size, 5);
    for (size_t i = 0; i < tiles.size(); ++i) {
      const hg::io::Image image = tiles.load(i);
      CHECK(image.width == size);
      CHECK(image.height == size);
      CHECK(image.pixels.size() == static_cast<size_t>(size * size * 3));
    }
  }
  // to_tensor takes them as they are: [3, H, W] in [0, 1]
  const hg::Tensor<float> x = hg::data::to_tensor<float>(SyntheticTissue(1, 40, 0).load(3));
  CHECK(x.shape() == hg::Shape{3, 40, 40});
}

TEST_CASE("synthetic tissue: nuclear density separates lymphocytes from adipose and background") {
  SyntheticTissue tiles(40, 64, 21);
  std::array<double, 5> lowest{1, 1, 1, 1, 1}, highest{0, 0, 0, 0, 0}, mean{0, 0, 0, 0, 0};
  for (size_t i = 0; i < tiles.size(); ++i) {
    const double f = nuclear_fraction(tiles.load(i));
    const auto c = static_cast<size_t>(tiles.label(i));
    lowest[c] = std::min(lowest[c], f);
    highest[c] = std::max(highest[c], f);
    mean[c] += f / 40;
  }
  const auto adipose = size_t(TissueClass::Adipose), background = size_t(TissueClass::Background),
             lymphocytes = size_t(TissueClass::Lymphocytes), stroma = size_t(TissueClass::Stroma),
             tumour = size_t(TissueClass::Tumour);
  INFO("nuclear fraction per class: min " << lowest[0] << " " << lowest[1] << " " << lowest[2] << " " << lowest[3] << " "
                                          << lowest[4] << ", max " << highest[0] << " " << highest[1] << " " << highest[2]
                                          << " " << highest[3] << " " << highest[4]);
  CHECK(lowest[lymphocytes] > highest[adipose]);
  CHECK(lowest[lymphocytes] > highest[background]);
  CHECK(lowest[tumour] > highest[background]);
  // cellular tissue is cellular on average, stroma is sparse
  CHECK(mean[lymphocytes] > 4 * mean[stroma]);
  CHECK(mean[tumour] > 4 * mean[stroma]);
}

TEST_CASE("synthetic tissue: mean colour alone does not classify every tile") {
  // Leave-one-out nearest neighbour on the mean RGB of each tile: the per-tile stain variation
  // makes some tiles closer to another class's tiles, so a k-NN task on these tiles needs texture.
  SyntheticTissue tiles(40, 64, 8);
  std::vector<std::array<double, 3>> means;
  for (size_t i = 0; i < tiles.size(); ++i) means.push_back(mean_colour(tiles.load(i)));
  size_t correct = 0;
  for (size_t i = 0; i < means.size(); ++i) {
    double best = 1e300;
    size_t nearest = 0;
    for (size_t j = 0; j < means.size(); ++j) {
      if (j == i) continue;
      double d = 0;
      for (size_t c = 0; c < 3; ++c) d += (means[i][c] - means[j][c]) * (means[i][c] - means[j][c]);
      if (d < best) { best = d; nearest = j; }
    }
    correct += tiles.label(nearest) == tiles.label(i);
  }
  const double accuracy = double(correct) / double(means.size());
  INFO("1-NN accuracy on mean colour: " << accuracy);
  CHECK(accuracy < 0.95);
  CHECK(accuracy > 0.3);  // but colour is not meaningless either (chance is 0.2)
}

TEST_CASE("synthetic tissue: written image folder reads back as the same dataset") {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("histograd_synthetic_tissue_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  SyntheticTissue tiles(3, 32, 4);
  CHECK(hg::data::write_image_folder(tiles, dir.string()) == 15);
  CHECK(std::filesystem::exists(dir / "stroma" / "09.png"));
  hg::data::ImageFolder folder(dir.string());
  REQUIRE(folder.size() == tiles.size());
  CHECK(folder.classes() == tiles.classes());
  for (size_t i = 0; i < tiles.size(); ++i) {
    CHECK(folder.label(i) == tiles.label(i));
    CHECK(folder.load(i).pixels == tiles.load(i).pixels);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("synthetic tissue: bad arguments") {
  CHECK_THROWS_WITH_AS(SyntheticTissue(0, 64, 0), doctest::Contains("SyntheticTissue: expected at least one tile"), hg::Error);
  CHECK_THROWS_WITH_AS(SyntheticTissue(2, 4, 0), doctest::Contains("SyntheticTissue: expected a tile size in [8, 4096], got 4"),
                       hg::Error);
  SyntheticTissue tiles(2, 16, 0);
  CHECK_THROWS_WITH_AS(tiles.load(10), doctest::Contains("SyntheticTissue: index 10 out of range for 10 tiles"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::data::synthetic_tissue_tile(static_cast<TissueClass>(7), 64, 0),
                       doctest::Contains("synthetic_tissue_tile: expected a tissue class in [0, 4], got 7"), hg::Error);
}
