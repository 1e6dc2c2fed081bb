// The tiny trainer configurations the SSL trainer suites share with the GPU trainer suite
// (tests/cuda/trainers_test.cpp): synthetic tissue tiles and DINO, MAE and DINOv2 models small
// enough that a step takes milliseconds, with every feature that matters for exactness on
// (drop path, LayerScale, registers, masks, warm-ups, the last-layer freeze).
#pragma once
#include <cmath>
#include <memory>
#include <vector>

#include <histograd/data/synthetic_tissue.hpp>
#include <histograd/ssl/dinov2_trainer.hpp>
#include <histograd/ssl/trainer.hpp>

namespace tiny {

inline std::shared_ptr<histograd::data::Dataset> tiles() {
  return std::make_shared<histograd::data::SyntheticTissue>(4, 24, 7);  // 20 tiles of 24 px
}

// A tiny DINO: 16 px global crops, patch 4, width 16, two blocks, drop path 0.1 (so the default
// generator matters), 2 local crops of 8 px; 20 tiles at batch 4 = 5 iterations per epoch.
inline histograd::ssl::DINOTrainerConfig dino() {
  histograd::ssl::DINOTrainerConfig c;
  c.backbone.name = "tiny";
  c.backbone.image_size = 16;
  c.backbone.patch_size = 4;
  c.backbone.embed_dim = 16;
  c.backbone.depth = 2;
  c.backbone.num_heads = 2;
  c.backbone.mlp_hidden = 32;
  c.backbone.drop_path_rate = 0.1;
  c.head.out_dim = 32;
  c.head.hidden_dim = 24;
  c.head.bottleneck_dim = 8;
  c.crops.global_size = 16;
  c.crops.local_size = 8;
  c.crops.local_crops = 2;
  c.epochs = 3;
  c.batch_size = 4;
  c.lr = 0.05;
  c.warmup_epochs = 1;
  c.seed = 3;
  c.num_workers = 2;
  return c;
}

inline histograd::ssl::MAETrainerConfig mae() {
  histograd::ssl::MAETrainerConfig c;
  c.model = histograd::ssl::mae_tiny(true);
  c.epochs = 3;
  c.batch_size = 4;
  c.warmup_epochs = 1;
  c.blr = 0.05;
  c.seed = 5;
  return c;
}

// A tiny DINOv2: 16 px global crops, patch 4 (16 tokens, so masks of up to 8), width 16, two
// blocks with LayerScale and one register, drop path 0.1, 2 local crops of 8 px; 20 tiles at
// batch 4 = 5 iterations per epoch; warm-ups and the last-layer freeze of one epoch each.
inline histograd::ssl::DINOv2TrainerConfig dinov2() {
  histograd::ssl::DINOv2TrainerConfig c;
  c.backbone.name = "tiny_dinov2";
  c.backbone.image_size = 16;
  c.backbone.patch_size = 4;
  c.backbone.embed_dim = 16;
  c.backbone.depth = 2;
  c.backbone.num_heads = 2;
  c.backbone.mlp_hidden = 32;
  c.backbone.num_register_tokens = 1;
  c.backbone.layer_scale_init = 1e-5;
  c.backbone.layout = histograd::models::TokenLayout::ClsRegPatchesPosBeforeReg;
  c.backbone.pos_resample = histograd::models::PosResample::DinoOffset;
  c.backbone.keys = histograd::models::KeyStyle::Dinov2Hub;
  c.backbone.drop_path_rate = 0.1;
  c.head_n_prototypes = 32;
  c.head_hidden_dim = 24;
  c.head_bottleneck_dim = 8;
  c.ibot_head_n_prototypes = 24;
  c.crops.global_size = 16;
  c.crops.local_size = 8;
  c.crops.local_crops = 2;
  c.epochs = 3;
  c.batch_size = 4;
  c.base_lr = 0.2;
  c.warmup_epochs = 1;
  c.warmup_teacher_temp_epochs = 1;
  c.freeze_last_layer_epochs = 1;
  c.seed = 3;
  c.num_workers = 2;
  return c;
}

// `steps` losses of a Trainer built from config, with and without mixed precision (bf16 autocast;
// on the CPU the emulation of its roundings), checked against each other. The first step starts
// from the same weights, so its loss differs only by the forward's roundings (bf16 keeps 8
// mantissa bits): within 1e-2 (measured: DINO 3e-3, MAE 2e-4). Later steps diverge as any two
// runs whose updates differ do (DINO's teacher temperature 0.04 multiplies logit errors by 25;
// Adam's first steps turn the sign noise of tiny gradients into lr-sized moves; measured up to 6%
// at step 2), so they must only stay finite and within 15%. The losses must differ somewhere, or
// autocast did not take effect.
template <class Trainer, class Config>
void check_mixed_precision_near_fp32(Config config, int64_t steps) {
  auto run = [&](bool mixed) {
    config.mixed_precision = mixed;
    Trainer trainer(config, tiles());
    for (int64_t i = 0; i < steps; ++i) trainer.step();
    return trainer.loss_history();
  };
  const std::vector<double> fp32 = run(false), bf16 = run(true);
  REQUIRE(fp32.size() == size_t(steps));
  REQUIRE(bf16.size() == size_t(steps));
  CHECK(std::abs(bf16[0] - fp32[0]) <= 1e-2 * std::abs(fp32[0]));
  bool any_different = false;
  for (int64_t i = 0; i < steps; ++i) {
    INFO("step " << i << ": fp32 " << fp32[size_t(i)] << ", bf16 " << bf16[size_t(i)]);
    CHECK(std::isfinite(bf16[size_t(i)]));
    CHECK(std::abs(bf16[size_t(i)] - fp32[size_t(i)]) <= 0.15 * std::abs(fp32[size_t(i)]));
    any_different = any_different || bf16[size_t(i)] != fp32[size_t(i)];
  }
  CHECK(any_different);
}

}  // namespace tiny
