// Writes the built-in synthetic H&E tiles to disk as two image folders, <out>/train and
// <out>/test (one sub-folder per tissue class, PNG), drawn with the same seeds train_dino uses
// for its pretraining set and its held-out k-NN queries. For looking at the tiles, for training
// other tools on exactly the quickstart's data (scripts/reference_dino_quickstart.py runs the
// reference DINO on them), or as a small labelled folder to try --data with.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>

#include <histograd/data/synthetic_tissue.hpp>

#include "common/training.hpp"

namespace hg = histograd;

int main(int argc, char** argv) {
  try {
    hg::training::Flags flags("synthetic_tiles", "Write the built-in synthetic H&E tiles as image folders <out>/train and <out>/test.");
    flags.option("out", "synthetic_tiles", "output folder (train/ and test/ are created in it)")
        .option("tiles-per-class", "1000", "tiles per class in train/ (train_dino's pretraining set)")
        .option("eval-tiles-per-class", "100", "tiles per class in test/ (train_dino's k-NN queries)")
        .option("tile-size", "64", "tile side in pixels")
        .option("seed", "0", "train_dino's --seed: the same seed gives the same tiles");
    flags.parse(argc, argv);
    if (flags.help_requested()) {
      std::cout << flags.help();
      return 0;
    }
    for (const char* name : {"tiles-per-class", "eval-tiles-per-class"})
      HG_CHECK(flags.get_int(name) > 0, "synthetic_tiles", "--", name, " expects a positive count, got ", flags.get_int(name));
    const auto seed = static_cast<uint64_t>(flags.get_int("seed"));
    const int tile = static_cast<int>(flags.get_int("tile-size"));
    const std::filesystem::path out = flags.get_string("out");
    hg::data::SyntheticTissue train(static_cast<size_t>(flags.get_int("tiles-per-class")), tile, seed);
    hg::data::SyntheticTissue test(static_cast<size_t>(flags.get_int("eval-tiles-per-class")), tile, seed + 1000003);
    const size_t written = hg::data::write_image_folder(train, (out / "train").string()) +
                           hg::data::write_image_folder(test, (out / "test").string());
    std::printf("wrote %zu tiles of %d px to %s/{train,test}\n", written, tile, out.string().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
