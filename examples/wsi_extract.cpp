// wsi_extract: whole-slide images -> tissue mask, patch coordinates and one embedding per patch.
//
//   wsi_extract --model dino_vits16 --weights dino.pth --magnification 20 --out run/  slides/  @more.txt
//
// Per slide (name = file name without extension), under --out:
//   masks/<name>.png                  the tissue mask (white tissue)
//   patches/<name>_patches.h5         `coords` (N, 2) level-0 top-left, TRIDENT's attributes + CLAM's patch_level
//   features_<model>/<name>.h5        `features` (N, D) float32 and `coords` (TRIDENT's layout); .npy with --npy
//   visualization/<name>.png          thumbnail with tissue outlines (green), holes (blue), patches (red)
//   failures.csv                      slide,status,message for every slide that failed in this run
// Slides whose features file exists are skipped, so an interrupted run resumes where it stopped.
#include <algorithm>
#include <cstdio>
#include <histograd/histograd.hpp>
#include <histograd/wsi/wsi.hpp>
#include <string>
#include <vector>

namespace hg = histograd;
namespace wsi = histograd::wsi;

namespace {

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: wsi_extract [--model PRESET] [--weights FILE] [--magnification X | --mpp M]\n"
               "                   [--patch-size 256] [--overlap 0] [--preset histograd] [--keep four_pt]\n"
               "                   [--min-tissue 0] [--keep-holes] [--no-edge] [--slide-mpp M] [--mpp-csv FILE]\n"
               "                   [--out DIR] [--batch 32] [--threads N] [--npy] [--redo] [--quiet]\n"
               "                   [--device cpu|cuda|cuda:N] [--mixed-precision] SLIDES...\n"
               "  SLIDES: slide files, folders of them, or @file with one path per line\n"
               "  --magnification/--mpp: the target resolution (default 20x); --slide-mpp or --mpp-csv (columns\n"
               "  wsi,mpp) give the level-0 mpp of slides whose metadata has none\n"
               "  --preset: histograd (default: CLAM's segmentation with a_t = a_h = 1, pen filter, blur QC), or CLAM's\n"
               "  own: clam_default, tcga, bwh_biopsy, bwh_resection\n"
               "  --device: where the encoder runs; --mixed-precision: bf16 autocast for its matrix products\n"
               "  and attention (fp32 weights; on the CPU an emulation, slower)\n");
  std::exit(code);
}

struct Cli {
  wsi::ExtractOptions options;
  std::vector<std::string> inputs;
  bool quiet = false;
};

Cli parse(int argc, char** argv) {
  Cli cli;
  wsi::ExtractOptions& o = cli.options;
  o.out_dir = "wsi_out";
  o.threads = 2;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "wsi_extract: %s needs a value\n", argv[i]);
      usage(2);
    }
    return argv[++i];
  };
  auto number = [&](int& i) {
    const std::string flag = argv[i], v = value(i);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (!end || *end || v.empty()) {
      std::fprintf(stderr, "wsi_extract: %s expects a number, got '%s'\n", flag.c_str(), v.c_str());
      usage(2);
    }
    return x;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model") o.model = value(i);
    else if (arg == "--weights") o.weights = value(i);
    else if (arg == "--magnification") o.patch.magnification = number(i), o.patch.mpp.reset();
    else if (arg == "--mpp") o.patch.mpp = number(i), o.patch.magnification.reset();
    else if (arg == "--patch-size") o.patch.patch_size = int64_t(number(i));
    else if (arg == "--overlap") o.patch.overlap = int64_t(number(i));
    else if (arg == "--preset") {
      std::string name = value(i);
      if (name == "clam_default") name = "clam";
      if (name.size() > 4 && name.substr(name.size() - 4) == ".csv") name = name.substr(0, name.size() - 4);
      o.segmentation = wsi::SegmentationParams::preset(name);
    } else if (arg == "--keep") o.patch.rule = wsi::keep_rule_from_name(value(i));
    else if (arg == "--min-tissue") o.patch.min_tissue_fraction = number(i);
    else if (arg == "--keep-holes") o.patch.reject_holes = false;
    else if (arg == "--no-edge") o.patch.edge_patches = false;
    else if (arg == "--slide-mpp") o.mpp = number(i);
    else if (arg == "--mpp-csv") o.mpp_table = wsi::read_mpp_csv(value(i));
    else if (arg == "--out") o.out_dir = value(i);
    else if (arg == "--batch") o.batch = std::max<int64_t>(1, int64_t(number(i)));
    else if (arg == "--threads") o.threads = std::max(1, int(number(i)));
    else if (arg == "--npy") o.npy = true;
    else if (arg == "--device") o.device = hg::Device::parse(value(i));
    else if (arg == "--mixed-precision") o.mixed_precision = true;
    else if (arg == "--redo") o.skip_existing = false;
    else if (arg == "--quiet") cli.quiet = true;
    else if (arg == "--help" || arg == "-h") usage(0);
    else if (arg.rfind("--", 0) == 0) {
      std::fprintf(stderr, "wsi_extract: unknown option %s\n", arg.c_str());
      usage(2);
    } else cli.inputs.push_back(arg);
  }
  if (cli.inputs.empty()) usage(2);
  o.progress = !cli.quiet;
  return cli;
}

}  // namespace

int main(int argc, char** argv) try {
  Cli cli = parse(argc, argv);
  const std::vector<std::string> slides = wsi::expand_slide_inputs(cli.inputs);
  HG_CHECK(!slides.empty(), "wsi_extract", "no slides found in the inputs");
  if (cli.options.weights.empty())
    std::fprintf(stderr, "wsi_extract: no --weights given: %s has random weights (useful for testing only)\n",
                 cli.options.model.c_str());
  wsi::Extractor extractor(cli.options);
  const auto& p = cli.options.patch;
  char target[64];
  if (p.mpp) std::snprintf(target, sizeof target, "%g mpp", *p.mpp);
  else std::snprintf(target, sizeof target, "%gx", p.magnification.value_or(20));
  std::printf("model %s (%ld-d), target %s, %ld px patches, overlap %ld, %d reading threads, %zu slide(s)\n",
              cli.options.model.c_str(), long(extractor.feature_dim()), target, long(p.patch_size), long(p.overlap),
              cli.options.threads, slides.size());
  std::fflush(stdout);
  const auto results = extractor.run(slides);
  int failed = 0, skipped = 0;
  std::printf("%-32s %-8s %8s %9s %10s\n", "slide", "status", "patches", "seconds", "patches/s");
  for (const auto& r : results) {
    std::printf("%-32s %-8s %8ld %9.2f %10.1f\n", r.name.c_str(), r.status.c_str(), long(r.patches), r.seconds,
                r.seconds > 0 ? double(r.patches) / r.seconds : 0.0);
    if (r.status == "failed") ++failed;
    if (!r.message.empty() && r.status != "skipped") std::printf("    %s\n", r.message.c_str());
    skipped += r.status == "skipped";
  }
  std::printf("%zu slides: %zu done, %d skipped (outputs exist), %d failed (%s/failures.csv)\n", results.size(),
              results.size() - size_t(failed) - size_t(skipped), skipped, failed, cli.options.out_dir.c_str());
  return failed ? 3 : 0;  // 3: finished, but some slides failed
} catch (const hg::Error& e) {
  std::fprintf(stderr, "wsi_extract: %s\n", e.what());
  return 1;
}
