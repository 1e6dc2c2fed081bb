// The DINO and MAE training loops (ssl/trainer.hpp): a run resumed from a checkpoint continues to
// the same bits as an uninterrupted one (student, teacher, centre, optimizer, losses), across an
// epoch boundary and with drop path on; bad checkpoints (truncated, another model, another
// objective) are refused with a clear Error and a failed save leaves the old file intact; a
// non-finite loss stops the run before the update.
#include "test_util.hpp"
#include "ssl/tiny_trainers.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <histograd/data/synthetic_tissue.hpp>
#include <histograd/ssl/trainer.hpp>

namespace {

namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("hg_trainer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

template <class Module>
void check_same_bits(Module& a, Module& b, const std::string& what) {
  auto da = a.state_dict(), db = b.state_dict();
  REQUIRE(da.size() == db.size());
  for (auto& [name, ta] : da) {
    INFO(what << " " << name);
    REQUIRE(db.count(name));
    hg::Tensor<float> x = ta.contiguous(), y = db.at(name).contiguous();
    REQUIRE(x.shape() == y.shape());
    CHECK(std::memcmp(x.data(), y.data(), sizeof(float) * size_t(x.numel())) == 0);
  }
}

bool any_difference(const hg::Tensor<float>& a, const hg::Tensor<float>& b) {
  hg::Tensor<float> x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data(), y.data(), sizeof(float) * size_t(x.numel())) != 0;
}

}  // namespace

TEST_CASE("DINOTrainer: resume continues to the same bits as an uninterrupted run") {
  const std::string dir = temp_dir("dino_resume");
  const auto config = tiny::dino();
  const int64_t total = 8, half = 4;  // crosses the epoch boundary at 5 after the resume

  hg::ssl::DINOTrainer straight(config, tiny::tiles());
  CHECK(straight.iterations_per_epoch() == 5);
  hg::Tensor<float> initial_teacher = straight.dino().teacher.state_dict().at("head.mlp.0.weight").clone();
  for (int64_t i = 0; i < total; ++i) straight.step();
  // Not a vacuous comparison: the teacher moved and the centre left zero.
  CHECK(any_difference(initial_teacher, straight.dino().teacher.state_dict().at("head.mlp.0.weight")));
  CHECK(hg::sum(hg::abs(straight.dino().loss.center)).item() > 0);

  {
    hg::ssl::DINOTrainer first(config, tiny::tiles());
    for (int64_t i = 0; i < half; ++i) first.step();
    first.save(dir + "/ckpt.safetensors");
    for (int64_t i = 0; i < 2; ++i) first.step();  // runs on past the checkpoint: must not matter
  }
  hg::ssl::DINOTrainer resumed(config, tiny::tiles());
  hg::manual_seed(999);  // the checkpoint must restore the default generator, not rely on it
  resumed.load(dir + "/ckpt.safetensors");
  CHECK(resumed.iteration() == half);
  for (int64_t i = half; i < total; ++i) resumed.step();

  REQUIRE(resumed.loss_history().size() == size_t(total));
  for (int64_t i = 0; i < total; ++i) {
    INFO("iteration " << i);
    CHECK(resumed.loss_history()[size_t(i)] == straight.loss_history()[size_t(i)]);
  }
  check_same_bits(straight.dino().student, resumed.dino().student, "student");
  check_same_bits(straight.dino().teacher, resumed.dino().teacher, "teacher");
  CHECK_FALSE(any_difference(straight.dino().loss.center, resumed.dino().loss.center));
  auto sa = straight.optimizer().state(), sb = resumed.optimizer().state();
  for (auto& [k, t] : sa.tensors) CHECK_FALSE(any_difference(t, sb.tensors.at(k)));
  CHECK(sa.scalars == sb.scalars);
  fs::remove_all(dir);
}

TEST_CASE("DINOTrainer: bad checkpoints are refused, a failed save keeps the good one") {
  const std::string dir = temp_dir("dino_bad");
  const std::string good = dir + "/ckpt.safetensors";
  auto config = tiny::dino();
  config.epochs = 1;
  hg::ssl::DINOTrainer trainer(config, tiny::tiles());
  trainer.step();
  trainer.save(good);
  const auto good_size = fs::file_size(good);

  SUBCASE("truncated") {
    const std::string cut = dir + "/cut.safetensors";
    fs::copy_file(good, cut);
    fs::resize_file(cut, good_size / 2);
    hg::ssl::DINOTrainer other(config, tiny::tiles());
    CHECK_THROWS_WITH_AS(other.load(cut), doctest::Contains("load_training_state: cannot resume from"), hg::Error);
    CHECK(other.iteration() == 0);
  }
  SUBCASE("another model") {
    auto wider = config;
    wider.backbone.embed_dim = 24;
    wider.backbone.num_heads = 3;
    hg::ssl::DINOTrainer other(wider, tiny::tiles());
    CHECK_THROWS_WITH_AS(other.load(good), doctest::Contains("check_compatible: the checkpoint was written by model"),
                         hg::Error);
    CHECK(other.iteration() == 0);
  }
  SUBCASE("another objective") {
    hg::ssl::MAETrainer other(tiny::mae(), tiny::tiles());
    CHECK_THROWS_WITH_AS(other.load(good), doctest::Contains(("load: " + good + ": a checkpoint of objective 'dino'").c_str()),
                         hg::Error);
  }
  SUBCASE("another batch size") {
    auto other_config = config;
    other_config.batch_size = 5;
    hg::ssl::DINOTrainer other(other_config, tiny::tiles());
    CHECK_THROWS_WITH_AS(other.load(good), doctest::Contains("batches per epoch"), hg::Error);
  }
  SUBCASE("a save that fails leaves the old checkpoint") {
    trainer.step();
    // save_training_state writes <path>.tmp<pid> first; a folder in its place makes the write fail.
    const std::string blocker = good + ".tmp" + std::to_string(::getpid());
    fs::create_directories(blocker);
    CHECK_THROWS_AS(trainer.save(good), hg::Error);
    fs::remove_all(blocker);
    CHECK(fs::file_size(good) == good_size);
    hg::ssl::DINOTrainer other(config, tiny::tiles());
    other.load(good);
    CHECK(other.iteration() == 1);
  }
  fs::remove_all(dir);
}

TEST_CASE("DINOTrainer: a non-finite loss stops before the update") {
  auto config = tiny::dino();
  config.epochs = 1;
  hg::ssl::DINOTrainer trainer(config, tiny::tiles());
  trainer.step();
  {
    hg::NoGradGuard no_grad;
    trainer.dino().student.head.mlp[0].weight.fill_(std::nanf(""));
  }
  hg::Tensor<float> teacher_before = trainer.dino().teacher.state_dict().at("head.mlp.2.weight").clone();
  CHECK_THROWS_WITH_AS(trainer.step(), doctest::Contains("DINOTrainer: non-finite loss (nan) at iteration 1"),
                       hg::Error);
  CHECK(trainer.iteration() == 1);
  CHECK_FALSE(any_difference(teacher_before, trainer.dino().teacher.state_dict().at("head.mlp.2.weight")));
}

TEST_CASE("DINOTrainer: schedules follow main_dino.py") {
  auto config = tiny::dino();
  hg::ssl::DINOTrainer trainer(config, tiny::tiles());
  const auto first = trainer.step();
  CHECK(first.lr == 0.0);  // linear warm-up from 0
  CHECK(first.weight_decay == doctest::Approx(0.04));
  CHECK(first.teacher_momentum == doctest::Approx(0.996));
  for (int i = 0; i < 4; ++i) trainer.step();
  const auto after_warmup = trainer.step();  // iteration 5: the cosine's start, lr · 4 / 256
  CHECK(after_warmup.lr == doctest::Approx(0.05 * 4 / 256));
  // The last layer is frozen in epoch 0 (freeze_last_layer = 1): weight_v did not move until then.
  hg::ssl::DINOTrainer fresh(config, tiny::tiles());
  hg::Tensor<float> v0 = fresh.dino().student.head.last_layer.weight_v.clone();
  for (int i = 0; i < 5; ++i) fresh.step();
  CHECK_FALSE(any_difference(v0, fresh.dino().student.head.last_layer.weight_v));
  fresh.step();
  CHECK(any_difference(v0, fresh.dino().student.head.last_layer.weight_v));
}

TEST_CASE("MAETrainer: resume is exact; the loss falls; a reconstruction PNG is written") {
  const std::string dir = temp_dir("mae_resume");
  const auto config = tiny::mae();
  const int64_t total = 8, half = 3;
  hg::ssl::MAETrainer straight(config, tiny::tiles());
  for (int64_t i = 0; i < total; ++i) straight.step();
  straight.write_reconstruction(dir + "/recon.png", 2);
  CHECK(fs::file_size(dir + "/recon.png") > 100);
  {
    hg::ssl::MAETrainer first(config, tiny::tiles());
    for (int64_t i = 0; i < half; ++i) first.step();
    first.save(dir + "/ckpt.safetensors");
  }
  hg::ssl::MAETrainer resumed(config, tiny::tiles());
  resumed.load(dir + "/ckpt.safetensors");
  for (int64_t i = half; i < total; ++i) resumed.step();
  REQUIRE(resumed.loss_history().size() == size_t(total));
  for (int64_t i = 0; i < total; ++i) CHECK(resumed.loss_history()[size_t(i)] == straight.loss_history()[size_t(i)]);
  check_same_bits(straight.model(), resumed.model(), "mae");
  // lr_sched.adjust_learning_rate: warm-up over epoch 0 (5 iterations), fractional epochs.
  CHECK(straight.learning_rate(0) == 0.0);
  CHECK(straight.learning_rate(2) == doctest::Approx(0.05 * 4 / 256 * 0.4));
  CHECK(straight.learning_rate(5) == doctest::Approx(0.05 * 4 / 256));

  auto dino_config = tiny::dino();
  hg::ssl::DINOTrainer dino(dino_config, tiny::tiles());
  CHECK_THROWS_WITH_AS(dino.load(dir + "/ckpt.safetensors"), doctest::Contains("a checkpoint of objective 'mae'"),
                       hg::Error);
  fs::remove_all(dir);
}

TEST_CASE("MAETrainer: a non-finite loss stops the run") {
  auto config = tiny::mae();
  config.epochs = 1;
  hg::ssl::MAETrainer trainer(config, tiny::tiles());
  {
    hg::NoGradGuard no_grad;
    trainer.model().decoder_pred.weight.fill_(std::numeric_limits<float>::infinity());
  }
  CHECK_THROWS_WITH_AS(trainer.step(), doctest::Contains("MAETrainer: non-finite loss"), hg::Error);
  CHECK(trainer.iteration() == 0);
}

TEST_CASE("DINOTrainer and MAETrainer with mixed_precision: bf16 roundings (CPU emulation), near the fp32 run") {
  SUBCASE("DINO") { tiny::check_mixed_precision_near_fp32<hg::ssl::DINOTrainer>(tiny::dino(), 4); }
  SUBCASE("MAE") { tiny::check_mixed_precision_near_fp32<hg::ssl::MAETrainer>(tiny::mae(), 4); }
}

TEST_CASE("DINOTrainer and MAETrainer on a device this build or machine cannot use: a clear Error") {
  auto dino_config = tiny::dino();
  dino_config.device = hg::Device::cuda();
  auto mae_config = tiny::mae();
  mae_config.device = hg::Device::cuda();
  if (cuda_allocates()) {  // tests/cuda covers training on the device
    MESSAGE("a GPU is present: the refusal is not exercised");
    return;
  }
  CHECK_THROWS_AS(hg::ssl::DINOTrainer(dino_config, tiny::tiles()), hg::Error);
  CHECK_THROWS_AS(hg::ssl::MAETrainer(mae_config, tiny::tiles()), hg::Error);
}
