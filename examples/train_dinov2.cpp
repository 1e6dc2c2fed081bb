// DINOv2 self-supervised pretraining of a small ViT on histology tiles, on the CPU: the DINO
// CLS loss, the iBOT masked-patch loss and KoLeo (dinov2/train/train.py with SSLMetaArch), then
// DINO's k-NN evaluation (k = 20, T = 0.07, cosine, weighted votes) of the trained teacher
// backbone beside a randomly initialised backbone of the same architecture.
// By default the tiles come from the built-in synthetic H&E generator (five tissue classes, no
// download); --data <folder> trains on your own images (ImageFolder with one sub-folder per
// class, or any folder of images without labels), --eval-train/--eval-test evaluate on yours.
// Checkpoints (--checkpoint-every, --out) are atomic and --resume continues to the same numbers.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <histograd/data/synthetic_tissue.hpp>
#include <histograd/data/transforms.hpp>
#include <histograd/ssl/dinov2_trainer.hpp>
#include <histograd/ssl/evaluation.hpp>

#include "common/training.hpp"

namespace hg = histograd;
namespace fs = std::filesystem;

namespace {

hg::training::Flags declare_flags() {
  hg::training::Flags f("train_dinov2",
                        "DINOv2 (DINO + iBOT + KoLeo) pretraining of a small ViT, then k-NN evaluation against random "
                        "init.");
  f.option("data", "synthetic", "'synthetic' (built-in H&E tiles) or a folder of images")
      .option("on-bad-image", "skip", "an image that does not decode: skip (warn, count) or stop")
      .option("tiles-per-class", "120", "synthetic: pretraining tiles per class (five classes)")
      .option("eval-tiles-per-class", "40", "synthetic: held-out k-NN query tiles per class")
      .option("tile-size", "64", "synthetic: tile side in pixels")
      .option("eval-train", "", "labelled image folder for the k-NN bank (default: --data if it has classes)")
      .option("eval-test", "", "labelled image folder for the k-NN queries")
      .option("out", "dinov2_run", "output folder: checkpoint, CSV log, loss plot")
      .option("resume", "", "checkpoint to continue from")
      .option("checkpoint-every", "50", "iterations between checkpoints (0: only at the end)")
      .option("epochs", "12", "epochs")
      .option("batch-size", "32", "images per batch")
      .option("base-lr", "0.004", "learning rate at batch 1024 (scaled by sqrt(batch/1024), as DINOv2)")
      .option("lr", "0", "learning rate used as is instead of the scaled base-lr (0: scale base-lr)")
      .option("min-lr", "1e-6", "final learning rate")
      .option("warmup-epochs", "1", "linear learning-rate warm-up")
      .option("weight-decay", "0.04", "weight decay at the start (cosine)")
      .option("weight-decay-end", "0.4", "weight decay at the end")
      .option("momentum-teacher", "0.992", "teacher EMA momentum at the start (cosine to final-momentum-teacher)")
      .option("final-momentum-teacher", "1.0", "teacher EMA momentum at the end")
      .option("teacher-temp", "0.07", "teacher temperature after warm-up")
      .option("warmup-teacher-temp", "0.04", "teacher temperature at the start")
      .option("warmup-teacher-temp-epochs", "1", "teacher temperature warm-up epochs")
      .option("clip-grad", "3.0", "gradient norm clip per student part (backbone, heads; 0: off)")
      .option("freeze-last-layer-epochs", "1", "epochs with the head's last layer at lr 0")
      .option("layerwise-decay", "0.9", "lr multiplier per block counted from the top")
      .option("patch-embed-lr-mult", "0.2", "extra lr multiplier of the patch embedding")
      .option("centering", "centering", "teacher centring: centering (softmax, EMA centres) or sinkhorn_knopp")
      .option("dino-weight", "1.0", "weight of the DINO CLS loss")
      .option("ibot-weight", "1.0", "weight of the iBOT masked-patch loss (0: off)")
      .option("koleo-weight", "0.1", "weight of the KoLeo regulariser (0: off)")
      .option("mask-ratio-min", "0.1", "iBOT: smallest masked fraction of a masked global crop")
      .option("mask-ratio-max", "0.5", "iBOT: largest masked fraction")
      .option("mask-probability", "0.5", "iBOT: fraction of global crops that are masked")
      .option("global-size", "32", "global crop side")
      .option("local-size", "16", "local crop side")
      .option("local-crops", "4", "local crops per image")
      .option("global-scale-min", "0.32", "global crops cover at least this fraction")
      .option("local-scale-max", "0.32", "local crops cover at most this fraction")
      .option("patch-size", "4", "ViT patch size")
      .option("embed-dim", "96", "ViT width")
      .option("depth", "4", "ViT blocks")
      .option("heads", "3", "attention heads")
      .option("registers", "0", "register tokens")
      .option("layerscale", "1e-5", "LayerScale init (0: none)")
      .option("drop-path", "0.1", "stochastic depth rate of the student (every block)")
      .option("out-dim", "1024", "DINO head prototypes (K)")
      .option("hidden-dim", "512", "head hidden width")
      .option("bottleneck-dim", "128", "head bottleneck width")
      .option("head-layers", "3", "head MLP layers")
      .option("ibot-out-dim", "1024", "iBOT head prototypes, with --separate-ibot-head")
      .flag("separate-ibot-head", "give iBOT its own head (default: shared with DINO)")
      .option("seed", "0", "seed of the model, data order, augmentations and masks")
      .option("threads", "0", "compute threads (0: OMP_NUM_THREADS or all cores)")
      .option("workers", "1", "data loader threads")
      .option("device", "cpu", "where to train: cpu, cuda or cuda:N (the k-NN features are computed there too)")
      .flag("mixed-precision", "bf16 autocast: bf16 matrix products and attention, fp32 master weights (a GPU speed-up; on the CPU an emulation for checking, slower)")
      .option("knn-k", "20", "k-NN neighbours")
      .option("knn-temperature", "0.07", "k-NN vote temperature")
      .flag("no-eval", "skip the k-NN evaluation");
  return f;
}

hg::ssl::DINOv2TrainerConfig trainer_config(const hg::training::Flags& f) {
  hg::ssl::DINOv2TrainerConfig c;
  hg::models::ViTConfig& b = c.backbone;
  hg::training::read_vit(f, b, "train_dinov2");
  b.num_register_tokens = f.get_int("registers");
  b.layer_scale_init = f.get_double("layerscale");
  b.layout = b.num_register_tokens > 0 ? hg::models::TokenLayout::ClsRegPatchesPosBeforeReg
                                       : hg::models::TokenLayout::ClsPatches;
  b.pos_resample = hg::models::PosResample::DinoOffset;  // training: offset 0.1, no antialias
  b.keys = hg::models::KeyStyle::Dinov2Hub;
  b.drop_path_rate = f.get_double("drop-path");
  c.head_n_prototypes = f.get_int("out-dim");
  c.head_hidden_dim = f.get_int("hidden-dim");
  c.head_bottleneck_dim = f.get_int("bottleneck-dim");
  c.head_nlayers = f.get_int("head-layers");
  c.ibot_separate_head = f.get_bool("separate-ibot-head");
  c.ibot_head_n_prototypes = f.get_int("ibot-out-dim");
  const std::string centering = f.get_string("centering");
  HG_CHECK(centering == "centering" || centering == "sinkhorn_knopp", "flags",
           "--centering expects centering or sinkhorn_knopp, got '", centering, "'");
  c.centering = centering == "centering" ? hg::ssl::Centering::Softmax : hg::ssl::Centering::SinkhornKnopp;
  c.dino_loss_weight = f.get_double("dino-weight");
  c.ibot_loss_weight = f.get_double("ibot-weight");
  c.koleo_loss_weight = f.get_double("koleo-weight");
  c.mask_ratio_min = f.get_double("mask-ratio-min");
  c.mask_ratio_max = f.get_double("mask-ratio-max");
  c.mask_sample_probability = f.get_double("mask-probability");
  hg::training::read_crops(f, c.crops);
  hg::training::read_schedule(f, c);
  hg::training::read_teacher_schedule(f, c);
  c.base_lr = f.get_double("base-lr");
  c.final_momentum_teacher = f.get_double("final-momentum-teacher");
  c.freeze_last_layer_epochs = f.get_int("freeze-last-layer-epochs");
  c.layerwise_decay = f.get_double("layerwise-decay");
  c.patch_embed_lr_mult = f.get_double("patch-embed-lr-mult");
  hg::training::read_seed_and_threads(f, c);
  hg::training::read_device(f, c);
  return c;
}

// k-NN top-1 (percent) of `backbone` with `bank` as the labelled neighbours and `queries` to classify.
template <class Model>
double knn_top1(Model& backbone, hg::data::Dataset& bank, hg::data::Dataset& queries, const hg::data::Preprocess& pre,
                int64_t k, double temperature, hg::Device device = hg::kCPU) {
  backbone.train(false);
  const hg::ssl::FeatureSet train = hg::ssl::extract_features(backbone, bank, pre, 64, device);
  const hg::ssl::FeatureSet test = hg::ssl::extract_features(backbone, queries, pre, 64, device);
  return hg::ssl::knn_classify(train.features, train.labels, test.features, test.labels, k, temperature).top1;
}

int run(int argc, char** argv) {
  hg::training::Flags flags = declare_flags();
  flags.parse(argc, argv);
  if (flags.help_requested()) {
    std::cout << flags.help();
    return 0;
  }
  const hg::ssl::DINOv2TrainerConfig config = trainer_config(flags);
  const std::string out = flags.get_string("out"), data = flags.get_string("data");
  fs::create_directories(out);
  const auto policy = hg::training::bad_image_policy(flags.get_string("on-bad-image"));
  const bool synthetic = data == "synthetic";
  const int tile = static_cast<int>(flags.get_int("tile-size"));
  const std::shared_ptr<hg::data::Dataset> dataset = hg::training::open_data(flags, config.seed, policy);

  hg::ssl::DINOv2Trainer trainer(config, dataset);
  const std::string checkpoint = (fs::path(out) / "checkpoint.safetensors").string();
  const std::string resume = flags.get_string("resume");
  hg::training::resume_from(trainer, resume);
  std::printf("DINOv2: ViT patch %lld, width %lld, depth %lld, heads %lld, registers %lld; %lld images, %lld epochs x "
              "%lld iterations; crops 2x%lld + %lldx%lld px; lr %.3g\n",
              (long long)config.backbone.patch_size, (long long)config.backbone.embed_dim,
              (long long)config.backbone.depth, (long long)config.backbone.num_heads,
              (long long)config.backbone.num_register_tokens, (long long)dataset->size(), (long long)config.epochs,
              (long long)trainer.iterations_per_epoch(), (long long)config.crops.global_size,
              (long long)config.crops.local_crops, (long long)config.crops.local_size, trainer.base_lr());

  const std::string csv = (fs::path(out) / "log.csv").string(), png = (fs::path(out) / "loss.png").string();
  hg::training::CsvLogger log(csv,
                              {"iteration", "epoch", "loss", "dino_local", "dino_global", "koleo", "ibot", "lr",
                               "last_layer_lr", "weight_decay", "teacher_momentum", "teacher_temp", "masked_patches"},
                              resume.empty() ? -1 : trainer.iteration());
  const int64_t every = flags.get_int("checkpoint-every");
  const auto started = std::chrono::steady_clock::now();
  {
    hg::training::ProgressBar bar(trainer.total_iterations(), trainer.iteration());
    while (!trainer.done()) {
      const hg::ssl::DINOv2StepResult r = trainer.step();
      log.log({double(r.iteration), double(r.epoch), r.loss, r.dino_local, r.dino_global, r.koleo, r.ibot, r.lr,
               r.last_layer_lr, r.weight_decay, r.teacher_momentum, r.teacher_temp, double(r.masked_patches)});
      bar.update(r.iteration + 1, r.loss, r.images);
      if (every > 0 && trainer.iteration() % every == 0 && !trainer.done()) trainer.save(checkpoint);
    }
    bar.finish();
  }
  trainer.save(checkpoint);
  hg::training::plot_csv(csv, png);
  const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() / 60;
  const auto& losses = trainer.loss_history();
  if (!losses.empty())
    std::printf("pretraining: loss %.4f -> %.4f (dino_local %.4f, dino_global %.4f, koleo %.4f, ibot %.4f at the end) "
                "in %.1f min; checkpoint %s, log %s, plot %s\n",
                losses.front(), losses.back(), trainer.loss_history("dino_local").back(),
                trainer.loss_history("dino_global").back(), trainer.loss_history("koleo").back(),
                trainer.loss_history("ibot").back(), minutes, checkpoint.c_str(), csv.c_str(), png.c_str());
  if (flags.get_bool("no-eval")) return 0;

  // k-NN: the labelled bank and the held-out queries.
  const hg::training::KnnSets sets = hg::training::knn_sets(flags, synthetic, dataset, tile, config.seed, policy);
  const auto& [bank, queries] = sets;
  if (!sets.usable()) {
    std::printf("k-NN: skipped (give labelled folders with --eval-train/--eval-test)\n");
    return 0;
  }
  hg::data::Preprocess pre;
  pre.resize_size = pre.crop_size = config.crops.global_size;
  const int64_t k = flags.get_int("knn-k");
  const double temperature = flags.get_double("knn-temperature");
  // The student's initial weights (DINOv2Networks builds its backbone with the run's seed).
  hg::models::VisionTransformer<float> random_backbone(config.backbone, config.seed);
  const double random_top1 = knn_top1(random_backbone, *bank, *queries, pre, k, temperature);
  const double dinov2_top1 = knn_top1(trainer.teacher().backbone, *bank, *queries, pre, k, temperature, config.device);
  std::printf("k-NN (k=%lld, T=%.2f) on %zu held-out tiles, %zu in the bank, %zu classes\n", (long long)k, temperature,
              queries->size(), bank->size(), bank->classes().size());
  std::printf("k-NN top-1: random init %.1f%% -> DINOv2 %.1f%%\n", random_top1, dinov2_top1);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return hg::training::run_main(run, argc, argv); }
