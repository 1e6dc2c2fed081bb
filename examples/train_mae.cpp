// Masked-autoencoder pretraining (He et al. 2022, facebookresearch/mae main_pretrain.py) of a small
// ViT on histology tiles, on the CPU: 75% of the patches are removed, the encoder sees the rest,
// the decoder rebuilds the pixels (norm_pix_loss by default). Writes reconstruction PNGs (input |
// masked | reconstruction + visible | reconstruction), a CSV log and a loss plot; checkpoints are
// atomic and --resume continues to the same numbers. Default data: the built-in synthetic H&E tiles.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <histograd/data/synthetic_tissue.hpp>
#include <histograd/ssl/trainer.hpp>

#include "common/training.hpp"

namespace hg = histograd;
namespace fs = std::filesystem;

namespace {

int run(int argc, char** argv) {
  hg::training::Flags f("train_mae", "MAE pretraining of a small ViT with reconstruction pictures.");
  f.option("data", "synthetic", "'synthetic' (built-in H&E tiles) or a folder of images")
      .option("on-bad-image", "skip", "an image that does not decode: skip (warn, count) or stop")
      .option("tiles-per-class", "120", "synthetic: tiles per class (five classes)")
      .option("tile-size", "64", "synthetic: tile side in pixels")
      .option("out", "mae_run", "output folder: checkpoint, CSV log, loss plot, reconstructions")
      .option("resume", "", "checkpoint to continue from")
      .option("checkpoint-every", "50", "iterations between checkpoints (0: only at the end)")
      .option("reconstruction-every", "50", "iterations between reconstruction PNGs (0: only at the end)")
      .option("epochs", "10", "epochs")
      .option("batch-size", "32", "images per batch")
      .option("blr", "1.5e-3", "base learning rate; lr = blr * batch / 256 (main_pretrain.py)")
      .option("min-lr", "0", "final learning rate")
      .option("warmup-epochs", "1", "linear warm-up epochs")
      .option("weight-decay", "0.05", "AdamW weight decay (not on biases and norms)")
      .option("mask-ratio", "0.75", "fraction of patches removed")
      .option("image-size", "32", "input side (random resized crops of the tiles)")
      .option("patch-size", "4", "patch side")
      .option("embed-dim", "96", "encoder width")
      .option("depth", "4", "encoder blocks")
      .option("heads", "3", "encoder heads")
      .option("decoder-dim", "64", "decoder width")
      .option("decoder-depth", "2", "decoder blocks")
      .option("decoder-heads", "4", "decoder heads")
      .option("norm-pix-loss", "true", "per-patch normalised pixel targets")
      .option("seed", "0", "seed of the model, data order, augmentations and masks")
      .option("threads", "0", "compute threads (0: OMP_NUM_THREADS or all cores)")
      .option("workers", "1", "data loader threads")
      .option("device", "cpu", "where to train: cpu, cuda or cuda:N")
      .flag("mixed-precision", "bf16 autocast: bf16 matrix products and attention, fp32 master weights (a GPU speed-up; on the CPU an emulation for checking, slower)");
  f.parse(argc, argv);
  if (f.help_requested()) {
    std::cout << f.help();
    return 0;
  }
  hg::ssl::MAETrainerConfig c;
  c.model.name = "train_mae";
  c.model.img_size = f.get_int("image-size");
  c.model.patch_size = f.get_int("patch-size");
  c.model.embed_dim = f.get_int("embed-dim");
  c.model.depth = f.get_int("depth");
  c.model.num_heads = f.get_int("heads");
  c.model.decoder_embed_dim = f.get_int("decoder-dim");
  c.model.decoder_depth = f.get_int("decoder-depth");
  c.model.decoder_num_heads = f.get_int("decoder-heads");
  c.model.norm_pix_loss = f.get_bool("norm-pix-loss");
  hg::training::read_schedule(f, c);
  c.blr = f.get_double("blr");
  c.mask_ratio = f.get_double("mask-ratio");
  hg::training::read_seed_and_threads(f, c);
  hg::training::read_device(f, c);

  const std::string out = f.get_string("out");
  const auto policy = hg::training::bad_image_policy(f.get_string("on-bad-image"));
  fs::create_directories(out);
  // MAE uses no labels: a folder is every image under it, whatever its layout.
  const std::shared_ptr<hg::data::Dataset> dataset =
      hg::training::open_data(f, c.seed, policy, hg::training::FolderLabels::None);

  hg::ssl::MAETrainer trainer(c, dataset);
  const std::string checkpoint = (fs::path(out) / "checkpoint.safetensors").string();
  const std::string resume = f.get_string("resume");
  hg::training::resume_from(trainer, resume);
  std::printf("MAE: ViT patch %lld, width %lld, depth %lld; decoder %lld x %lld; %zu images, %lld epochs x %lld "
              "iterations, mask ratio %.2f\n",
              (long long)c.model.patch_size, (long long)c.model.embed_dim, (long long)c.model.depth,
              (long long)c.model.decoder_embed_dim, (long long)c.model.decoder_depth, dataset->size(),
              (long long)c.epochs, (long long)trainer.iterations_per_epoch(), c.mask_ratio);
  const std::string csv = (fs::path(out) / "log.csv").string(), png = (fs::path(out) / "loss.png").string();
  hg::training::CsvLogger log(csv, {"iteration", "epoch", "loss", "lr"}, resume.empty() ? -1 : trainer.iteration());
  const int64_t every = f.get_int("checkpoint-every"), picture_every = f.get_int("reconstruction-every");
  const auto started = std::chrono::steady_clock::now();
  {
    hg::training::ProgressBar bar(trainer.total_iterations(), trainer.iteration());
    while (!trainer.done()) {
      const hg::ssl::StepResult r = trainer.step();
      log.log({double(r.iteration), double(r.epoch), r.loss, r.lr});
      bar.update(r.iteration + 1, r.loss, r.images);
      if (picture_every > 0 && trainer.iteration() % picture_every == 0)
        trainer.write_reconstruction((fs::path(out) / ("reconstruction_" + std::to_string(trainer.iteration()) + ".png")).string());
      if (every > 0 && trainer.iteration() % every == 0 && !trainer.done()) trainer.save(checkpoint);
    }
    bar.finish();
  }
  trainer.save(checkpoint);
  hg::training::plot_csv(csv, png);
  const auto& losses = trainer.loss_history();
  if (!losses.empty()) {
    const std::string picture = (fs::path(out) / "reconstruction_final.png").string();
    if (trainer.iteration() > 0 && losses.size() > 0) {
      try {
        trainer.write_reconstruction(picture);
      } catch (const hg::Error&) {  // resumed at the end: no batch was seen in this process
      }
    }
    std::printf("MAE: loss %.4f -> %.4f in %.1f min; checkpoint %s, log %s, plot %s, reconstructions in %s\n",
                losses.front(), losses.back(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() / 60,
                checkpoint.c_str(), csv.c_str(), png.c_str(), out.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return hg::training::run_main(run, argc, argv); }
