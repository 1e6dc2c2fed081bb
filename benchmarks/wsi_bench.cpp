// Whole-slide pipeline throughput on a real slide, beside the same work in Python in one run:
//   tile:     open -> read the segmentation level -> CLAM segmentation -> 20x/256 px grid with
//             four_pt + holes -> read every kept patch at 256 px; one thread; patches/s.
//   features: the whole slide run of wsi::Extractor (tile + DINO transform + ViT-S/16 with random
//             weights, batch 32, 2 reading threads + 2 OpenMP threads, masks/pictures/.h5 written)
//             against openslide-python + cv2 + timm vit_small_patch16_224 on 2 torch threads.
// Segmentation uses CLAM's bwh_biopsy preset: the default preset finds no tissue on the small
// region (a_t = 100 x 512² px exceeds the whole slide). benchmarks/wsi_reference.py is the Python side.
//   OMP_NUM_THREADS=2 build/benchmarks/wsi_bench [slide] [repeats]
#include <cstdio>
#include <filesystem>
#include <histograd/histograd.hpp>
#include <histograd/wsi/wsi.hpp>
#include <string>

#include "bench_util.hpp"

namespace hg = histograd;
namespace wsi = histograd::wsi;

namespace {

void row(const char* what, double hg_rate, double py_rate, const char* unit) {
  if (py_rate > 0)
    std::printf("| %-44s | %9.1f %s | %9.1f %s | %5.2f |\n", what, hg_rate, unit, py_rate, unit, hg_rate / py_rate);
  else
    std::printf("| %-44s | %9.1f %s | %12s | %5s |\n", what, hg_rate, unit, "n/a", "n/a");
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string slide_path =
      argc > 1 ? argv[1] : HISTOGRAD_BENCHMARKS_DIR "/../../shared/data/slides/CMU-1-Small-Region.svs";
  const int repeats = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
  if (!std::filesystem::exists(slide_path)) {
    std::fprintf(stderr, "wsi_bench: %s not found (pass a slide path)\n", slide_path.c_str());
    return 1;
  }
  const wsi::SegmentationParams seg = wsi::SegmentationParams::preset("bwh_biopsy");
  wsi::PatchParams patch;
  patch.magnification = 20;
  patch.patch_size = 256;

  // Tile: one thread end to end.
  int64_t patches = 0;
  const double tile_seconds = bench::time_median(
      [&] {
        wsi::Slide slide(slide_path);
        const auto tissue = wsi::segment_slide(slide, seg);
        const auto [w0, h0] = slide.dimensions(0);
        const auto grid = wsi::patch_grid(tissue.regions, w0, h0, wsi::level0_mpp(slide), patch);
        for (const auto& c : grid.coords)
          (void)wsi::read_region_resized(slide, c.x, c.y, grid.patch_size_level0, grid.patch_size_level0, 256, 256);
        patches = int64_t(grid.coords.size());
      },
      repeats);
  const auto py_tile = bench::run_reference_script("wsi_reference.py", "tile " + slide_path + " " + std::to_string(repeats));

  // Features: the extractor's whole slide run.
  const std::string out = (std::filesystem::temp_directory_path() / "histograd_wsi_bench").string();
  wsi::ExtractOptions o;
  o.model = "dino_vits16";
  o.patch = patch;
  o.segmentation = seg;
  o.out_dir = out;
  o.batch = 32;
  o.threads = 2;
  o.skip_existing = false;
  o.progress = false;
  wsi::Extractor extractor(o);
  const wsi::SlideResult r = extractor.process(slide_path);
  if (r.status != "ok") {
    std::fprintf(stderr, "wsi_bench: extraction failed: %s\n", r.message.c_str());
    return 1;
  }
  std::filesystem::remove_all(out);
  const auto py_feat = bench::run_reference_script("wsi_reference.py", "features " + slide_path + " 32 2");

  const double py_tile_rate = py_tile.count("tile_seconds") ? py_tile.at("tile_patches") / py_tile.at("tile_seconds") : 0;
  const double py_feat_rate =
      py_feat.count("features_seconds") ? py_feat.at("features_patches") / py_feat.at("features_seconds") : 0;
  std::printf("slide %s: %ld patches at 20x/256 px (python: %ld), %d OpenMP threads\n\n", slide_path.c_str(),
              long(patches), long(py_tile.count("tile_patches") ? py_tile.at("tile_patches") : -1), hg::cpu::max_threads());
  std::printf("| %-44s | %14s | %14s | %5s |\n", "stage", "histograd", "python", "ratio");
  std::printf("|---|---:|---:|---:|\n");
  row("open+segment+grid+read patches, 1 thread", double(patches) / tile_seconds, py_tile_rate, "p/s");
  row("whole slide -> ViT-S/16 features, 2 threads", double(r.patches) / r.seconds, py_feat_rate, "p/s");
  std::printf("\nhistograd: tile %.3f s (median of %d); features %.2f s total, of which %.2f s reading + model\n",
              tile_seconds, repeats, r.seconds, r.feature_seconds);
  std::printf("python:    tile %.3f s; features %.2f s (openslide-python + cv2 + timm, torch %s threads)\n",
              py_tile.count("tile_seconds") ? py_tile.at("tile_seconds") : 0.0,
              py_feat.count("features_seconds") ? py_feat.at("features_seconds") : 0.0, "2");
  std::printf("peak RSS %.0f MiB\n", bench::peak_rss_mib());
  return 0;
} catch (const hg::Error& e) {
  std::fprintf(stderr, "wsi_bench: %s\n", e.what());
  return 1;
}
