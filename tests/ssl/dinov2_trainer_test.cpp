// The DINOv2 training loop (ssl/dinov2_trainer.hpp): a run resumed from a checkpoint continues to
// the same bits as an uninterrupted one (student, teacher, both centres, optimizer, every loss
// term), across an epoch boundary, with drop path, masks and both centrings; bad checkpoints
// (truncated, another model, another objective, another batch size) are refused and leave the
// trainer as it was; a non-finite loss stops before the update; the schedules follow train.py.
#include "test_util.hpp"
#include "ssl/tiny_trainers.hpp"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include <histograd/data/synthetic_tissue.hpp>
#include <histograd/ssl/dinov2_trainer.hpp>

namespace {

namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("hg_dinov2_trainer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

bool any_difference(const hg::Tensor<float>& a, const hg::Tensor<float>& b) {
  hg::Tensor<float> x = a.contiguous(), y = b.contiguous();
  REQUIRE(x.shape() == y.shape());
  return std::memcmp(x.data(), y.data(), sizeof(float) * size_t(x.numel())) != 0;
}

template <class Module>
void check_same_bits(Module& a, Module& b, const std::string& what) {
  auto da = a.state_dict(), db = b.state_dict();
  REQUIRE(da.size() == db.size());
  for (auto& [name, ta] : da) {
    INFO(what << " " << name);
    REQUIRE(db.count(name));
    CHECK_FALSE(any_difference(ta, db.at(name)));
  }
}

const char* const kTerms[] = {"loss", "dino_local", "dino_global", "koleo", "ibot"};

}  // namespace

TEST_CASE("DINOv2Trainer: resume continues to the same bits as an uninterrupted run") {
  for (const bool sinkhorn : {false, true}) {
    CAPTURE(sinkhorn);
    const std::string dir = temp_dir(sinkhorn ? "resume_sk" : "resume_centering");
    auto config = tiny::dinov2();
    if (sinkhorn) {  // the other path of the loss: SK targets and a separate iBOT head
      config.centering = hg::ssl::Centering::SinkhornKnopp;
      config.ibot_separate_head = true;
    }
    const int64_t total = 8, half = 4;  // the resumed part crosses the epoch boundary at 5

    hg::ssl::DINOv2Trainer straight(config, tiny::tiles());
    CHECK(straight.iterations_per_epoch() == 5);
    const hg::Tensor<float> initial_teacher = straight.teacher().state_dict().at("backbone.blocks.0.attn.qkv.weight").clone();
    int64_t masked = 0;
    for (int64_t i = 0; i < total; ++i) masked += straight.step().masked_patches;
    // Not a vacuous comparison: the teacher moved, iBOT had masked tokens, the centres moved.
    CHECK(any_difference(initial_teacher, straight.teacher().state_dict().at("backbone.blocks.0.attn.qkv.weight")));
    CHECK(masked > 0);
    for (double v : straight.loss_history("ibot")) CHECK(std::isfinite(v));
    if (!sinkhorn) {
      CHECK(hg::sum(hg::abs(straight.loss().dino_center)).item() > 0);
      CHECK(hg::sum(hg::abs(straight.loss().ibot_center)).item() > 0);
    }

    {
      hg::ssl::DINOv2Trainer first(config, tiny::tiles());
      for (int64_t i = 0; i < half; ++i) first.step();
      first.save(dir + "/ckpt.safetensors");
      for (int64_t i = 0; i < 2; ++i) first.step();  // runs on past the checkpoint: must not matter
    }
    hg::ssl::DINOv2Trainer resumed(config, tiny::tiles());
    hg::manual_seed(999);  // the checkpoint must restore the default generator, not rely on it
    resumed.load(dir + "/ckpt.safetensors");
    CHECK(resumed.iteration() == half);
    for (int64_t i = half; i < total; ++i) resumed.step();

    for (const char* term : kTerms) {
      REQUIRE(resumed.loss_history(term).size() == size_t(total));
      for (int64_t i = 0; i < total; ++i) {
        INFO(term << " at iteration " << i);
        CHECK(resumed.loss_history(term)[size_t(i)] == straight.loss_history(term)[size_t(i)]);
      }
    }
    check_same_bits(straight.student(), resumed.student(), "student");
    check_same_bits(straight.teacher(), resumed.teacher(), "teacher");
    CHECK_FALSE(any_difference(straight.loss().dino_center, resumed.loss().dino_center));
    CHECK_FALSE(any_difference(straight.loss().ibot_center, resumed.loss().ibot_center));
    auto sa = straight.optimizer().state(), sb = resumed.optimizer().state();
    REQUIRE(sa.tensors.size() == sb.tensors.size());
    for (auto& [k, t] : sa.tensors) {
      INFO(k);
      CHECK_FALSE(any_difference(t, sb.tensors.at(k)));
    }
    CHECK(sa.scalars == sb.scalars);
    fs::remove_all(dir);
  }
}

TEST_CASE("DINOv2Trainer: bad checkpoints are refused and leave the trainer as it was") {
  const std::string dir = temp_dir("bad");
  const std::string good = dir + "/ckpt.safetensors";
  auto config = tiny::dinov2();
  hg::ssl::DINOv2Trainer trainer(config, tiny::tiles());
  trainer.step();
  trainer.save(good);

  SUBCASE("truncated") {
    const std::string cut = dir + "/cut.safetensors";
    fs::copy_file(good, cut);
    fs::resize_file(cut, fs::file_size(good) / 2);
    hg::ssl::DINOv2Trainer other(config, tiny::tiles());
    const hg::Tensor<float> before = other.student().state_dict().at("dino_head.mlp.0.weight").clone();
    CHECK_THROWS_WITH_AS(other.load(cut), doctest::Contains("load_training_state: cannot resume from"), hg::Error);
    CHECK(other.iteration() == 0);
    CHECK_FALSE(any_difference(before, other.student().state_dict().at("dino_head.mlp.0.weight")));
  }
  SUBCASE("another model") {
    auto wider = config;
    wider.backbone.embed_dim = 24;
    wider.backbone.num_heads = 3;
    hg::ssl::DINOv2Trainer other(wider, tiny::tiles());
    CHECK_THROWS_WITH_AS(other.load(good), doctest::Contains("check_compatible: the checkpoint was written by model"),
                         hg::Error);
    CHECK(other.iteration() == 0);
  }
  SUBCASE("a separate iBOT head") {
    auto separate = config;
    separate.ibot_separate_head = true;
    hg::ssl::DINOv2Trainer other(separate, tiny::tiles());
    CHECK_THROWS_WITH_AS(other.load(good), doctest::Contains("check_compatible: the checkpoint was written by model"),
                         hg::Error);
  }
  SUBCASE("another objective, both ways") {
    hg::ssl::DINOTrainerConfig dino_config;
    dino_config.backbone = config.backbone;
    dino_config.backbone.keys = hg::models::KeyStyle::Timm;
    dino_config.head.out_dim = 32;
    dino_config.head.hidden_dim = 24;
    dino_config.head.bottleneck_dim = 8;
    dino_config.crops = config.crops;
    dino_config.epochs = 3;
    dino_config.batch_size = 4;
    dino_config.warmup_epochs = 1;
    hg::ssl::DINOTrainer dino(dino_config, tiny::tiles());
    CHECK_THROWS_WITH_AS(dino.load(good), doctest::Contains(("load: " + good + ": a checkpoint of objective 'dinov2'").c_str()),
                         hg::Error);
    dino.step();
    dino.save(dir + "/dino.safetensors");
    hg::ssl::DINOv2Trainer other(config, tiny::tiles());
    CHECK_THROWS_WITH_AS(other.load(dir + "/dino.safetensors"), doctest::Contains("a checkpoint of objective 'dino'"),
                         hg::Error);
    CHECK(other.iteration() == 0);
  }
  SUBCASE("another batch size") {
    auto other_config = config;
    other_config.batch_size = 5;
    hg::ssl::DINOv2Trainer other(other_config, tiny::tiles());
    CHECK_THROWS_WITH_AS(other.load(good), doctest::Contains("batches per epoch"), hg::Error);
  }
  SUBCASE("a save that fails leaves the old checkpoint") {
    const auto good_size = fs::file_size(good);
    trainer.step();
    // save_training_state writes <path>.tmp<pid> first; a folder in its place makes the write fail.
    const std::string blocker = good + ".tmp" + std::to_string(::getpid());
    fs::create_directories(blocker);
    CHECK_THROWS_AS(trainer.save(good), hg::Error);
    fs::remove_all(blocker);
    CHECK(fs::file_size(good) == good_size);
    hg::ssl::DINOv2Trainer other(config, tiny::tiles());
    other.load(good);
    CHECK(other.iteration() == 1);
    CHECK(other.loss_history("koleo").size() == 1);
  }
  fs::remove_all(dir);
}

TEST_CASE("DINOv2Trainer: a non-finite loss stops before the update") {
  hg::ssl::DINOv2Trainer trainer(tiny::dinov2(), tiny::tiles());
  trainer.step();
  {
    hg::NoGradGuard no_grad;
    trainer.student().dino_head.mlp[0].weight.fill_(std::nanf(""));
  }
  const auto student_before = trainer.student().state_dict(), teacher_before = trainer.teacher().state_dict();
  std::map<std::string, hg::Tensor<float>> student_copy, teacher_copy;
  for (auto& [k, t] : student_before) student_copy[k] = t.clone();
  for (auto& [k, t] : teacher_before) teacher_copy[k] = t.clone();
  const hg::Tensor<float> dino_center = trainer.loss().dino_center.clone(), ibot_center = trainer.loss().ibot_center.clone();
  CHECK_THROWS_WITH_AS(trainer.step(), doctest::Contains("DINOv2Trainer: non-finite loss (nan) at iteration 1"),
                       hg::Error);
  CHECK(trainer.iteration() == 1);
  CHECK(trainer.loss_history().size() == 1);
  // Compared bit for bit (NaN included): no optimizer step, no EMA, no centre update.
  for (auto& [k, t] : trainer.student().state_dict()) {
    INFO("student " << k);
    CHECK_FALSE(any_difference(student_copy.at(k), t));
  }
  for (auto& [k, t] : trainer.teacher().state_dict()) {
    INFO("teacher " << k);
    CHECK_FALSE(any_difference(teacher_copy.at(k), t));
  }
  CHECK_FALSE(any_difference(dino_center, trainer.loss().dino_center));
  CHECK_FALSE(any_difference(ibot_center, trainer.loss().ibot_center));
}

TEST_CASE("DINOv2Trainer: schedules follow train.py build_schedulers") {
  const auto config = tiny::dinov2();
  hg::ssl::DINOv2Trainer trainer(config, tiny::tiles());
  CHECK(trainer.base_lr() == doctest::Approx(0.2 * std::sqrt(4.0 / 1024.0)));  // sqrt_wrt_1024
  const hg::Tensor<float> v0 = trainer.student().dino_head.weight_v.clone();
  const hg::Tensor<float> qkv0 = trainer.student().backbone.blocks[0].attn.qkv.weight.clone();
  const auto first = trainer.step();
  CHECK(first.lr == 0.0);  // linear warm-up from 0
  CHECK(first.last_layer_lr == 0.0);
  CHECK(first.weight_decay == doctest::Approx(0.04));
  CHECK(first.teacher_momentum == doctest::Approx(0.992));
  CHECK(first.teacher_temp == doctest::Approx(0.04));  // warmup_teacher_temp
  CHECK(first.images == 4);
  // Parts of the total: dino_local + dino_global + koleo + ibot (weights 1, 1, in koleo, 1).
  CHECK(first.loss == doctest::Approx(first.dino_local + first.dino_global + first.koleo + first.ibot).epsilon(1e-5));
  std::vector<hg::ssl::DINOv2StepResult> steps{first};
  for (int i = 0; i < 4; ++i) steps.push_back(trainer.step());
  CHECK(steps[2].lr == doctest::Approx(trainer.base_lr() * 2 / 4));
  CHECK(steps[2].teacher_temp == doctest::Approx(0.04 + (0.07 - 0.04) * 2 / 4));
  // The last layer's lr is 0 through epoch 0 (freeze_last_layer_epochs = 1): weight_v did not
  // move, while the backbone did.
  for (const auto& s : steps) CHECK(s.last_layer_lr == 0.0);
  CHECK_FALSE(any_difference(v0, trainer.student().dino_head.weight_v));
  CHECK(any_difference(qkv0, trainer.student().backbone.blocks[0].attn.qkv.weight));
  const auto after_warmup = trainer.step();  // iteration 5: the cosine's start
  CHECK(after_warmup.lr == doctest::Approx(trainer.base_lr()));
  CHECK(after_warmup.last_layer_lr == doctest::Approx(trainer.base_lr()));
  CHECK(after_warmup.teacher_temp == doctest::Approx(0.07));
  CHECK(after_warmup.weight_decay > 0.04);
  CHECK(any_difference(v0, trainer.student().dino_head.weight_v));
}

TEST_CASE("DINOv2Trainer: configuration mistakes are named") {
  auto config = tiny::dinov2();
  config.backbone.keys = hg::models::KeyStyle::Timm;
  CHECK_THROWS_WITH_AS(hg::ssl::DINOv2Trainer(config, tiny::tiles()),
                       doctest::Contains("DINOv2Trainer: expected a DINOv2 backbone (keys KeyStyle::Dinov2Hub"),
                       hg::Error);
  config = tiny::dinov2();
  config.crops.global_size = 18;
  CHECK_THROWS_WITH_AS(hg::ssl::DINOv2Trainer(config, tiny::tiles()),
                       doctest::Contains("DINOv2Trainer: expected a global crop size divisible by the patch size 4"),
                       hg::Error);
  config = tiny::dinov2();
  config.warmup_epochs = 3;
  CHECK_THROWS_WITH_AS(hg::ssl::DINOv2Trainer(config, tiny::tiles()),
                       doctest::Contains("DINOv2Trainer: expected warmup_epochs + freeze_last_layer_epochs <= epochs"),
                       hg::Error);
}

TEST_CASE("DINOv2Trainer with mixed_precision: bf16 roundings (CPU emulation), near the fp32 run") {
  tiny::check_mixed_precision_near_fp32<hg::ssl::DINOv2Trainer>(tiny::dinov2(), 3);
}
