// The README's main job: self-supervised pretraining of a small ViT with DINO on histology tiles,
// on the CPU, then DINO's k-NN evaluation (k = 20, T = 0.07, cosine, weighted votes) of the trained
// teacher backbone beside a randomly initialised backbone of the same architecture.
// By default the tiles come from the built-in synthetic H&E generator (five tissue classes, no
// download): the pretraining set (labels unused) is the k-NN bank, a held-out set of other tiles
// the queries. --data <folder> trains on your own images (ImageFolder with one sub-folder per
// class, or any folder of images without labels); --eval-train/--eval-test evaluate on yours.
// Checkpoints (--checkpoint-every, --out) are atomic and --resume continues to the same numbers.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <histograd/data/synthetic_tissue.hpp>
#include <histograd/data/transforms.hpp>
#include <histograd/ssl/evaluation.hpp>
#include <histograd/ssl/trainer.hpp>

#include "common/training.hpp"
#ifdef HISTOGRAD_WITH_WSI
#include <histograd/wsi/slide_dataset.hpp>
#endif

namespace hg = histograd;
namespace fs = std::filesystem;

namespace {

hg::training::Flags declare_flags() {
  hg::training::Flags f("train_dino",
                        "DINO self-supervised pretraining of a small ViT, then k-NN evaluation against random init.");
  f.option("data", "synthetic", "'synthetic' (built-in H&E tiles) or a folder of images")
      .option("on-bad-image", "skip", "an image that does not decode: skip (warn, count) or stop")
      .option("tiles-per-class", "1000", "synthetic: pretraining tiles per class (five classes)")
      .option("eval-tiles-per-class", "100", "synthetic: held-out k-NN query tiles per class")
      .option("tile-size", "64", "synthetic: tile side in pixels")
      .option("slide", "", "tiles from whole-slide images instead of --data: a slide, a folder of slides or @list.txt")
      .option("slide-tile-size", "224", "slide: tile side in pixels at --slide-magnification")
      .option("slide-magnification", "20", "slide: magnification of the tiles (mpp = 10 / magnification)")
      .option("slide-max-tiles", "2000", "slide: at most this many tiles per slide, a seeded subsample (0: all)")
      .option("slide-preset", "histograd", "slide: tissue preset: histograd, clam, tcga, bwh_biopsy, bwh_resection")
      .option("slide-min-tissue", "0.25", "slide: minimum tissue fraction of a tile")
      .option("slide-mpp", "", "slide: level-0 microns per pixel, for slides whose metadata has none")
      .option("eval-train", "", "labelled image folder for the k-NN bank (default: --data if it has classes)")
      .option("eval-test", "", "labelled image folder for the k-NN queries")
      .option("out", "dino_run", "output folder: checkpoint, CSV log, loss plot")
      .option("resume", "", "checkpoint to continue from")
      .option("checkpoint-every", "50", "iterations between checkpoints (0: only at the end)")
      .option("epochs", "6", "epochs")
      .option("batch-size", "32", "images per batch")
      .option("lr", "0.004", "learning rate at batch 256 (scaled by batch/256, as main_dino.py)")
      .option("min-lr", "1e-5", "final learning rate")
      .option("warmup-epochs", "1", "linear learning-rate warm-up")
      .option("weight-decay", "0.04", "weight decay at the start (cosine)")
      .option("weight-decay-end", "0.4", "weight decay at the end")
      .option("momentum-teacher", "0.98", "teacher EMA momentum at the start (cosine to 1)")
      .option("teacher-temp", "0.04", "teacher temperature after warm-up")
      .option("warmup-teacher-temp", "0.04", "teacher temperature at the start")
      .option("warmup-teacher-temp-epochs", "0", "teacher temperature warm-up epochs")
      .option("clip-grad", "3.0", "per-parameter gradient norm clip (0: off)")
      .option("freeze-last-layer", "1", "epochs with the head's last layer frozen")
      .option("global-size", "32", "global crop side")
      .option("local-size", "16", "local crop side")
      .option("local-crops", "4", "local crops per image")
      .option("global-scale-min", "0.4", "global crops cover at least this fraction")
      .option("local-scale-max", "0.4", "local crops cover at most this fraction")
      .option("jitter-p", "0.8", "colour jitter probability per view")
      .option("brightness", "0.4", "colour jitter: brightness")
      .option("contrast", "0.4", "colour jitter: contrast")
      .option("saturation", "0.2", "colour jitter: saturation")
      .option("hue", "0.1", "colour jitter: hue")
      .option("grayscale-p", "0.2", "grayscale probability per view")
      .option("solarize-p", "0.2", "solarisation probability of the second global view")
      .option("blur-p", "1.0,0.1,0.5", "Gaussian blur probability: global 1, global 2, local")
      .option("blur-max", "2.0", "largest Gaussian blur radius (pixels of the crop)")
      .option("patch-size", "8", "ViT patch size")
      .option("embed-dim", "96", "ViT width")
      .option("depth", "4", "ViT blocks")
      .option("heads", "3", "attention heads")
      .option("drop-path", "0.1", "stochastic depth rate of the student")
      .option("out-dim", "1024", "DINO head prototypes (K)")
      .option("hidden-dim", "512", "DINO head hidden width")
      .option("bottleneck-dim", "128", "DINO head bottleneck width")
      .option("seed", "0", "seed of the model, data order and augmentations")
      .option("threads", "0", "compute threads (0: OMP_NUM_THREADS or all cores)")
      .option("workers", "1", "data loader threads")
      .option("device", "cpu", "where to train: cpu, cuda or cuda:N (the k-NN features are computed there too)")
      .flag("mixed-precision", "bf16 autocast: bf16 matrix products and attention, fp32 master weights (a GPU speed-up; on the CPU an emulation for checking, slower)")
      .option("bank-tiles-per-class", "0", "synthetic: k-NN bank tiles per class, drawn apart from the pretraining tiles (0: the bank is the pretraining set)")
      .option("features", "cls", "k-NN features: cls (the CLS token) or cls+mean (CLS and the mean patch token, concatenated); a comma-separated list evaluates each")
      .option("eval-every", "0", "iterations between k-NN evaluations of the teacher during training (0: only at the end)")
      .option("knn-k", "20", "k-NN neighbours")
      .option("knn-temperature", "0.07", "k-NN vote temperature")
      .flag("no-eval", "skip the k-NN evaluation");
  return f;
}

// "a,b,c" -> {a, b, c}, exactly `count` numbers.
std::vector<double> parse_list(const std::string& text, size_t count, const char* flag) {
  std::vector<double> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      out.push_back(std::stod(item));
    } catch (const std::exception&) {
      hg::fail("flags", "--", flag, " expects ", count, " comma-separated numbers, got '", text, "'");
    }
  }
  HG_CHECK(out.size() == count, "flags", "--", flag, " expects ", count, " comma-separated numbers, got '", text, "'");
  return out;
}

hg::ssl::DINOTrainerConfig trainer_config(const hg::training::Flags& f) {
  hg::ssl::DINOTrainerConfig c;
  hg::training::read_vit(f, c.backbone, "train_dino");
  c.backbone.drop_path_rate = f.get_double("drop-path");
  c.head.out_dim = f.get_int("out-dim");
  c.head.hidden_dim = f.get_int("hidden-dim");
  c.head.bottleneck_dim = f.get_int("bottleneck-dim");
  hg::training::read_crops(f, c.crops);
  c.crops.jitter_p = f.get_double("jitter-p");
  c.crops.jitter.brightness = f.get_double("brightness");
  c.crops.jitter.contrast = f.get_double("contrast");
  c.crops.jitter.saturation = f.get_double("saturation");
  c.crops.jitter.hue = f.get_double("hue");
  c.crops.grayscale_p = f.get_double("grayscale-p");
  c.crops.global2_solarize_p = f.get_double("solarize-p");
  const std::vector<double> blur = parse_list(f.get_string("blur-p"), 3, "blur-p");
  c.crops.global1_blur_p = blur[0];
  c.crops.global2_blur_p = blur[1];
  c.crops.local_blur_p = blur[2];
  c.crops.blur_radius_max = f.get_double("blur-max");
  c.crops.blur_radius_min = std::min(c.crops.blur_radius_min, c.crops.blur_radius_max);
  hg::training::read_schedule(f, c);
  hg::training::read_teacher_schedule(f, c);
  c.freeze_last_layer = f.get_int("freeze-last-layer");
  hg::training::read_seed_and_threads(f, c);
  hg::training::read_device(f, c);
  return c;
}

// k-NN top-1 (percent) of `backbone` with `bank` as the labelled neighbours and `queries` to classify.
// features "cls": the CLS token after the last norm (DINO's eval_knn.py); "cls+mean": the CLS token
// and the mean of the patch tokens, concatenated (the Virchow/UNI-style slide-tile embedding).
template <class Model>
double knn_top1(Model& backbone, hg::data::Dataset& bank, hg::data::Dataset& queries, const hg::data::Preprocess& pre,
                int64_t k, double temperature, const std::string& features, hg::Device device = hg::kCPU) {
  HG_CHECK(features == "cls" || features == "cls+mean", "flags", "--features expects cls or cls+mean, got '", features,
           "'");
  backbone.train(false);
  auto embed = [&](const hg::Tensor<float>& images) {
    const hg::Tensor<float> tokens = backbone.forward_features(images);
    const hg::Tensor<float> cls = tokens.select(1, 0);
    if (features == "cls") return cls;
    const int64_t prefix = backbone.num_prefix_tokens();
    return hg::cat<float>({cls, hg::mean(tokens.narrow(1, prefix, tokens.size(1) - prefix), {1})}, -1);
  };
  const hg::ssl::FeatureSet train = hg::ssl::extract_features(embed, bank, pre, 64, device);
  const hg::ssl::FeatureSet test = hg::ssl::extract_features(embed, queries, pre, 64, device);
  return hg::ssl::knn_classify(train.features, train.labels, test.features, test.labels, k, temperature).top1;
}

int run(int argc, char** argv) {
  hg::training::Flags flags = declare_flags();
  flags.parse(argc, argv);
  if (flags.help_requested()) {
    std::cout << flags.help();
    return 0;
  }
  const hg::ssl::DINOTrainerConfig config = trainer_config(flags);
  std::stringstream feature_check(flags.get_string("features"));  // refuse a typo before training, not after
  for (std::string f; std::getline(feature_check, f, ',');)
    HG_CHECK(f == "cls" || f == "cls+mean", "flags", "--features expects cls or cls+mean, got '", f, "'");
  const std::string out = flags.get_string("out"), data = flags.get_string("data");
  fs::create_directories(out);
  const auto policy = hg::training::bad_image_policy(flags.get_string("on-bad-image"));
  const bool synthetic = data == "synthetic";
  const int tile = static_cast<int>(flags.get_int("tile-size"));
  const std::string slide = flags.get_string("slide");
  std::shared_ptr<hg::data::Dataset> dataset;
  if (!slide.empty()) {
#ifdef HISTOGRAD_WITH_WSI
    namespace wsi = hg::wsi;
    wsi::SlideTilesOptions so;
    so.patch_size = flags.get_int("slide-tile-size");
    so.magnification = flags.get_double("slide-magnification");
    so.max_tiles_per_slide = flags.get_int("slide-max-tiles");
    so.tissue_preset = flags.get_string("slide-preset");
    so.min_tissue_fraction = flags.get_double("slide-min-tissue");
    if (!flags.get_string("slide-mpp").empty()) so.slide_mpp = flags.get_double("slide-mpp");
    so.seed = config.seed;
    so.skip_slides_without_tiles = true;  // one empty slide in a folder warns; none with tissue is an Error
    so.handles_per_slide = std::max<int>(1, int(flags.get_int("workers")));
    const std::vector<std::string> slides = wsi::expand_slide_inputs({slide});
    HG_CHECK(!slides.empty(), "train_dino", "--slide '", slide, "' names no slide files");
    auto tiles = std::make_shared<wsi::SlideTiles>(slides, so);
    std::printf("slides: %zu tiles of %lld px at %gx from %zu slide(s)\n", tiles->size(), (long long)so.patch_size,
                *so.magnification, tiles->slide_count());
    dataset = tiles;
#else
    hg::fail("train_dino", "--slide needs the whole-slide component (OpenSlide and HDF5): rebuild with "
             "-DHISTOGRAD_WSI=ON where they are installed");
#endif
  } else {
    dataset = hg::training::open_data(flags, config.seed, policy);
  }

  hg::ssl::DINOTrainer trainer(config, dataset);
  const std::string checkpoint = (fs::path(out) / "checkpoint.safetensors").string();
  const std::string resume = flags.get_string("resume");
  hg::training::resume_from(trainer, resume);
  std::printf("DINO: ViT patch %lld, width %lld, depth %lld, heads %lld; %lld images, %lld epochs x %lld iterations; "
              "crops 2x%lld + %lldx%lld px\n",
              (long long)config.backbone.patch_size, (long long)config.backbone.embed_dim,
              (long long)config.backbone.depth, (long long)config.backbone.num_heads, (long long)dataset->size(),
              (long long)config.epochs, (long long)trainer.iterations_per_epoch(), (long long)config.crops.global_size,
              (long long)config.crops.local_crops, (long long)config.crops.local_size);

  // k-NN: the labelled bank and the held-out queries.
  const hg::training::KnnSets sets = hg::training::knn_sets(
      flags, synthetic, dataset, tile, config.seed, policy, synthetic ? flags.get_int("bank-tiles-per-class") : 0);
  const auto& [bank, queries] = sets;
  const bool can_eval = sets.usable();
  hg::data::Preprocess pre;
  pre.resize_size = pre.crop_size = config.crops.global_size;
  const int64_t k = flags.get_int("knn-k");
  const double temperature = flags.get_double("knn-temperature");
  const int64_t eval_every = can_eval ? flags.get_int("eval-every") : 0;
  const std::string first_features = flags.get_string("features").substr(0, flags.get_string("features").find(','));

  const std::string csv = (fs::path(out) / "log.csv").string(), png = (fs::path(out) / "loss.png").string();
  hg::training::CsvLogger log(csv, {"iteration", "epoch", "loss", "lr", "weight_decay", "teacher_momentum"},
                              resume.empty() ? -1 : trainer.iteration());
  const int64_t every = flags.get_int("checkpoint-every");
  const auto started = std::chrono::steady_clock::now();
  {
    hg::training::ProgressBar bar(trainer.total_iterations(), trainer.iteration());
    while (!trainer.done()) {
      const hg::ssl::StepResult r = trainer.step();
      log.log({double(r.iteration), double(r.epoch), r.loss, r.lr, r.weight_decay, r.teacher_momentum});
      bar.update(r.iteration + 1, r.loss, r.images);
      if (every > 0 && trainer.iteration() % every == 0 && !trainer.done()) trainer.save(checkpoint);
      if (eval_every > 0 && trainer.iteration() % eval_every == 0 && !trainer.done())
        std::fprintf(stderr, "\nk-NN of the teacher at iteration %lld: %.1f%%\n", (long long)trainer.iteration(),
                     knn_top1(trainer.dino().teacher.backbone, *bank, *queries, pre, k, temperature, first_features,
                              config.device));
    }
    bar.finish();
  }
  trainer.save(checkpoint);
  hg::training::plot_csv(csv, png);
  const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() / 60;
  const auto& losses = trainer.loss_history();
  if (!losses.empty())
    std::printf("pretraining: loss %.4f -> %.4f in %.1f min; checkpoint %s, log %s, plot %s\n", losses.front(),
                losses.back(), minutes, checkpoint.c_str(), csv.c_str(), png.c_str());
  if (flags.get_bool("no-eval")) return 0;
  if (!can_eval) {
    std::printf("k-NN: skipped (give labelled folders with --eval-train/--eval-test)\n");
    return 0;
  }

  hg::models::VisionTransformer<float> random_backbone(config.backbone, config.seed);  // the student's initial weights
  std::stringstream feature_list(flags.get_string("features"));
  for (std::string features; std::getline(feature_list, features, ',');) {
    const double random_top1 = knn_top1(random_backbone, *bank, *queries, pre, k, temperature, features);
    const double dino_top1 =
        knn_top1(trainer.dino().teacher.backbone, *bank, *queries, pre, k, temperature, features, config.device);
    std::printf("k-NN (k=%lld, T=%.2f, %s features) on %zu held-out tiles, %zu in the bank, %zu classes\n",
                (long long)k, temperature, features.c_str(), queries->size(), bank->size(), bank->classes().size());
    std::printf("k-NN top-1: random init %.1f%% -> DINO %.1f%%\n", random_top1, dino_top1);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return hg::training::run_main(run, argc, argv); }
