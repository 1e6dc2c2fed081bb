// The DINOv2 training loop (dinov2/train/train.py do_train with SSLMetaArch.forward_backward and
// update_teacher) as library code, in the shape of ssl/trainer.hpp's DINOTrainer: one step() is
// one iteration in the reference's order, and save()/load() carry every piece of state an
// iteration depends on (student, teacher, AdamW moments, both centres, iteration, data position,
// the drop-path and mask generators), so a resumed run continues to the same bits.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../core/autocast.hpp"
#include "../core/error.hpp"
#include "../core/factories.hpp"
#include "../data/augment.hpp"
#include "../data/dataset.hpp"
#include "../data/loader.hpp"
#include "../io/training_state.hpp"
#include "../optim/clip.hpp"
#include "../optim/ema.hpp"
#include "../optim/optimizer.hpp"
#include "../optim/schedule.hpp"
#include "dinov2.hpp"
#include "masking.hpp"
#include "trainer.hpp"

namespace histograd::ssl {

// What one DINOv2 iteration did: StepResult's fields (loss is the total) and each term as
// dinov2_forward_loss returns it (koleo with its weight, the others before theirs; the
// reference's log shows koleo / 2 and ibot / 2 instead).
struct DINOv2StepResult : StepResult {
  double dino_local = 0, dino_global = 0, koleo = 0, ibot = 0;
  double teacher_temp = 0, last_layer_lr = 0;
  int64_t masked_patches = 0;  // iBOT tokens masked in this batch's global crops
};

// Defaults are dinov2/configs/ssl_default_config.yaml's, except the sizes, which the caller sets.
struct DINOv2TrainerConfig {
  // The student's backbone: DINOv2's token layout (ClsPatches, or ClsRegPatchesPosBeforeReg with
  // registers) and mask_token (keys = KeyStyle::Dinov2Hub). drop_path_rate is the student's; the
  // teacher gets none.
  models::ViTConfig backbone;
  bool drop_path_uniform = true;  // student.drop_path_uniform: every block at drop_path_rate
  int64_t head_n_prototypes = 65536, head_hidden_dim = 2048, head_bottleneck_dim = 256, head_nlayers = 3;
  bool ibot_separate_head = false;
  int64_t ibot_head_n_prototypes = 65536;  // used with ibot_separate_head (same hidden/bottleneck/layers)
  Centering centering = Centering::Softmax;
  double dino_loss_weight = 1.0, koleo_loss_weight = 0.1, ibot_loss_weight = 1.0;
  double mask_ratio_min = 0.1, mask_ratio_max = 0.5, mask_sample_probability = 0.5;
  // 2 global + crops.local_crops local views; the reference's scales (0.32, 1) and (0.05, 0.32).
  data::MultiCropConfig crops = default_crops();
  int64_t epochs = 100, batch_size = 64;
  double base_lr = 0.004;  // at batch 1024; lr = base_lr · sqrt(batch_size / 1024) (sqrt_wrt_1024) unless lr > 0
  double lr = 0, min_lr = 1e-6;
  int64_t warmup_epochs = 10;
  double weight_decay = 0.04, weight_decay_end = 0.4;
  double momentum_teacher = 0.992, final_momentum_teacher = 1.0;
  double warmup_teacher_temp = 0.04, teacher_temp = 0.07;
  int64_t warmup_teacher_temp_epochs = 30;
  double clip_grad = 3.0;  // clip_grad_norm_ per student submodule; 0: off
  int64_t freeze_last_layer_epochs = 1;
  double layerwise_decay = 0.9, patch_embed_lr_mult = 0.2;
  double adamw_beta1 = 0.9, adamw_beta2 = 0.999;
  uint64_t seed = 0;
  int threads = 0, num_workers = 2;
  Device device = kCPU;          // as DINOTrainerConfig
  bool mixed_precision = false;  // as DINOTrainerConfig: autocast around the forward and the loss

  static data::MultiCropConfig default_crops() {
    data::MultiCropConfig c;
    c.global_scale = {0.32, 1.0};
    c.local_scale = {0.05, 0.32};
    return c;
  }
};

// Owns student and teacher (DINOv2Networks), the loss with its centres, AdamW over DINOv2's
// parameter groups, the five schedules, the block-mask generator and the data loader over
// `dataset`. Requires a dataset of at least batch_size images. Drop path draws from
// default_generator() (seeded with config.seed by the constructor), masks from the trainer's own
// generator; checkpoints carry both.
class DINOv2Trainer {
 public:
  DINOv2Trainer(const DINOv2TrainerConfig& config, std::shared_ptr<data::Dataset> dataset)
      : config_(checked(config)),
        student_(config.backbone, config.head_n_prototypes, ibot_dim(config), config.seed, config.head_nlayers,
                 config.head_hidden_dim, config.head_bottleneck_dim),
        teacher_(teacher_backbone(config.backbone), config.head_n_prototypes, ibot_dim(config), config.seed,
                 config.head_nlayers, config.head_hidden_dim, config.head_bottleneck_dim),
        loss_(loss_config(config)),
        mask_generator_(mask_seed(config.seed)),
        masking_(grid(config), grid(config), std::nullopt, 4, max_mask_patches(config)) {
    detail::set_threads(config.threads);
    manual_seed(config.seed);
    if (config.drop_path_uniform)
      for (auto& block : student_.backbone.blocks) block.drop_path_rate = config.backbone.drop_path_rate;
    // prepare_for_distributed_training: the teacher starts as the student; SSLMetaArch.train()
    // keeps the teacher in eval mode.
    teacher_.load_state_dict(student_.state_dict());
    teacher_.requires_grad_(false);
    teacher_.eval();
    student_.train();
    student_.to(config.device);  // before the optimizer takes its handles, as in PyTorch
    teacher_.to(config.device);
    loss_.dino_center = loss_.dino_center.to(config.device);
    loss_.ibot_center = loss_.ibot_center.to(config.device);

    data::DataLoaderOptions options;
    options.batch_size = config.batch_size;
    options.num_workers = config.num_workers;
    options.seed = config.seed;
    loader_ = std::make_unique<data::DataLoader>(std::move(dataset), data::MultiCropAugmentation(config.crops), options);
    per_epoch_ = loader_->batches_per_epoch();

    // train.py build_schedulers, with our epoch length in place of OFFICIAL_EPOCH_LENGTH.
    const int64_t total = config.epochs * per_epoch_;
    base_lr_ = config.lr > 0 ? config.lr : config.base_lr * std::sqrt(double(config.batch_size) / 1024.0);
    lr_schedule_.emplace(base_lr_, config.min_lr, total, config.warmup_epochs * per_epoch_, 0.0);
    wd_schedule_.emplace(config.weight_decay, config.weight_decay_end, total);
    momentum_schedule_.emplace(config.momentum_teacher, config.final_momentum_teacher, total);
    teacher_temp_schedule_.emplace(optim::teacher_temperature_scheduler(
        config.warmup_teacher_temp, config.teacher_temp, config.warmup_teacher_temp_epochs * per_epoch_));
    last_layer_lr_schedule_.emplace(base_lr_, config.min_lr, total, config.warmup_epochs * per_epoch_, 0.0);
    last_layer_lr_schedule_->zero_first(config.freeze_last_layer_epochs * per_epoch_);

    // SSLMetaArch.get_params_groups: each student submodule's fused groups, backbone first. Names
    // keep the submodule prefix so the optimizer's state keys are unique.
    std::vector<optim::ParamGroup<float>> groups;
    for (auto& [name, module, blocks] : submodules()) {
      for (auto& group : optim::make_dinov2_param_groups(*module, blocks, config.layerwise_decay,
                                                         config.patch_embed_lr_mult, config.weight_decay)) {
        for (auto& n : group.names) n = name + "." + n;
        groups.push_back(std::move(group));
      }
    }
    optimizer_ = std::make_unique<optim::AdamW<float>>(std::move(groups), config.adamw_beta1, config.adamw_beta2);
  }

  int64_t total_iterations() const { return config_.epochs * per_epoch_; }
  int64_t iterations_per_epoch() const { return per_epoch_; }
  int64_t iteration() const { return iteration_; }  // iterations done
  bool done() const { return iteration_ >= total_iterations(); }
  const std::vector<double>& loss_history() const { return history_[0]; }  // the totals
  // Per term, as in DINOv2StepResult: "loss", "dino_local", "dino_global", "koleo", "ibot".
  const std::vector<double>& loss_history(const std::string& term) const { return history_[term_index(term)]; }
  DINOv2Networks<float>& student() { return student_; }
  DINOv2Networks<float>& teacher() { return teacher_; }
  DINOv2Loss<float>& loss() { return loss_; }
  optim::AdamW<float>& optimizer() { return *optimizer_; }
  const DINOv2TrainerConfig& config() const { return config_; }
  double base_lr() const { return base_lr_; }

  // One iteration of do_train, in its order: schedules, zero_grad, forward_backward (masks as the
  // collate draws them), clip per submodule, AdamW, EMA teacher.
  DINOv2StepResult step() {
    const char* op = "DINOv2Trainer";
    HG_CHECK(!done(), op, "all ", total_iterations(), " iterations are done");
    const int64_t it = iteration_, epoch = it / per_epoch_;
    data::Batch batch = detail::next_batch(*loader_, it, per_epoch_, op);
    const double lr = (*lr_schedule_)[it], wd = (*wd_schedule_)[it], momentum = (*momentum_schedule_)[it];
    const double teacher_temp = (*teacher_temp_schedule_)[it], last_layer_lr = (*last_layer_lr_schedule_)[it];
    // apply_optim_scheduler: lr (or the last layer's) and wd times each group's multipliers.
    optimizer_->set_lr(lr, last_layer_lr);
    for (auto& group : optimizer_->groups()) group.weight_decay = wd;

    // collate_data_and_cast: crops stacked crop-major, then the masks of the 2b global crops.
    const int64_t images = static_cast<int64_t>(batch.labels.size());
    for (auto& view : batch.views) view = view.to(config_.device);
    const Tensor<float> global_crops = cat<float>({batch.views[0], batch.views[1]}, 0);
    Tensor<float> local_crops;
    if (batch.views.size() > 2)
      local_crops = cat<float>(std::vector<Tensor<float>>(batch.views.begin() + 2, batch.views.end()), 0);
    GeneratorMaskDraws draws(mask_generator_);
    const int64_t tokens = grid(config_) * grid(config_);
    const MaskBatch masks = sample_masks(2 * images, tokens, masking_, draws, config_.mask_ratio_min,
                                         config_.mask_ratio_max, config_.mask_sample_probability);

    optimizer_->zero_grad();
    // teacher_targets moves the softmax centres: kept so a non-finite loss leaves them as they were.
    const Tensor<float> dino_center = loss_.dino_center, ibot_center = loss_.ibot_center;
    DINOv2LossTerms<float> terms;
    {
      AutocastGuard autocast(config_.mixed_precision);
      terms = dinov2_forward_loss(student_, teacher_, loss_, global_crops, local_crops, masks, teacher_temp);
    }
    const double value = double(terms.total.item());
    if (!std::isfinite(value)) {
      loss_.dino_center = dino_center;
      loss_.ibot_center = ibot_center;
      detail::check_finite_loss(op, value, it, epoch);
    }
    terms.total.backward();
    if (config_.clip_grad > 0)
      for (auto& [name, module, blocks] : submodules()) optim::clip_grad_norm(module->parameters(), config_.clip_grad);
    optimizer_->step();
    optim::ema_update(teacher_, student_, momentum);

    DINOv2StepResult r;
    r.iteration = it;
    r.epoch = epoch;
    r.loss = value;
    r.lr = lr;
    r.weight_decay = wd;
    r.teacher_momentum = momentum;
    r.images = images;
    r.dino_local = scalar(terms.dino_local);
    r.dino_global = scalar(terms.dino_global);
    r.koleo = scalar(terms.koleo);
    r.ibot = scalar(terms.ibot);
    r.teacher_temp = teacher_temp;
    r.last_layer_lr = last_layer_lr;
    r.masked_patches = masks.n_masked_patches();
    const double values[] = {r.loss, r.dino_local, r.dino_global, r.koleo, r.ibot};
    for (size_t i = 0; i < kTerms.size(); ++i) history_[i].push_back(values[i]);
    ++iteration_;
    return r;
  }

  // The architecture and objective options, as recorded in checkpoints; another one is refused.
  std::string model_name() const {
    const DINOv2TrainerConfig& c = config_;
    std::ostringstream s;
    s << "dinov2 " << detail::describe_vit(c.backbone) << " head(prototypes " << c.head_n_prototypes << ", hidden "
      << c.head_hidden_dim << ", bottleneck " << c.head_bottleneck_dim << ", layers " << c.head_nlayers << ")";
    if (c.ibot_separate_head) s << " ibot_head(prototypes " << c.ibot_head_n_prototypes << ")";
    return s.str();
  }

  // Writes every piece of state atomically (io::save_training_state): a failure leaves the file
  // already at `path` as it was.
  void save(const std::string& path) {
    io::TrainingState<float> state;
    state.put_state_dict("student.", student_.state_dict());
    state.put_state_dict("teacher.", teacher_.state_dict());
    state.put_optimizer(optimizer_->state());
    state.tensors["loss.dino_center"] = loss_.dino_center.clone();
    state.tensors["loss.ibot_center"] = loss_.ibot_center.clone();
    if (!history_[0].empty())
      for (size_t i = 0; i < kTerms.size(); ++i)
        state.tensors[std::string("history.") + kTerms[i]] = detail::history_tensor(history_[i]);
    detail::put_progress(state, "dinov2", model_name(), iteration_, per_epoch_, config_.seed);
    state.put_generator(mask_generator_, "rng.mask");
    io::save_training_state(path, state);
  }

  // Restores a checkpoint written by save() of the same architecture and data. Everything is
  // checked before anything is changed; an Error leaves the trainer as it was.
  void load(const std::string& path) {
    const io::TrainingState<float> state = io::load_training_state<float>(path);
    detail::check_objective(state, "dinov2", path);
    io::check_compatible(state, model_name(), student_, "student.");
    io::check_compatible(state, "", teacher_, "teacher.");
    const int64_t iteration = detail::check_progress(state, per_epoch_, total_iterations(), path);
    auto dino_center = state.tensors.find("loss.dino_center"), ibot_center = state.tensors.find("loss.ibot_center");
    HG_CHECK(dino_center != state.tensors.end() && dino_center->second.shape() == loss_.dino_center.shape(), "load",
             path, ": expected 'loss.dino_center' of shape ", to_string(loss_.dino_center.shape()));
    HG_CHECK(ibot_center != state.tensors.end() && ibot_center->second.shape() == loss_.ibot_center.shape(), "load",
             path, ": expected 'loss.ibot_center' of shape ", to_string(loss_.ibot_center.shape()));
    std::vector<std::vector<double>> history(kTerms.size());
    for (size_t i = 0; i < kTerms.size(); ++i) {
      auto h = state.tensors.find(std::string("history.") + kTerms[i]);
      if (h != state.tensors.end()) history[i] = to_doubles(h->second);
      HG_CHECK(int64_t(history[i].size()) == iteration, "load", path, ": 'history.", kTerms[i], "' has ",
               history[i].size(), " values for ", iteration, " iterations");
    }
    state.get_uint("rng.mask.seed");  // present, or an Error before anything changes
    state.get_uint("rng.mask.offset");
    optimizer_->load_state(state.get_optimizer());  // validates every entry before it copies
    student_.load_state_dict(state.get_state_dict("student."));
    teacher_.load_state_dict(state.get_state_dict("teacher."));
    loss_.dino_center = dino_center->second.clone().to(config_.device);
    loss_.ibot_center = ibot_center->second.clone().to(config_.device);
    history_ = std::move(history);
    iteration_ = iteration;
    state.restore_generator(default_generator(), "rng.default");
    state.restore_generator(mask_generator_, "rng.mask");
    if (!done()) loader_->start_at(iteration_ / per_epoch_, iteration_ % per_epoch_);
  }

 private:
  static constexpr std::array<const char*, 5> kTerms{"loss", "dino_local", "dino_global", "koleo", "ibot"};

  static const DINOv2TrainerConfig& checked(const DINOv2TrainerConfig& c) {
    const char* op = "DINOv2Trainer";
    HG_CHECK(c.epochs >= 1 && c.batch_size >= 1, op, "expected epochs >= 1 and batch_size >= 1, got ", c.epochs,
             " and ", c.batch_size);
    HG_CHECK(c.warmup_epochs >= 0 && c.freeze_last_layer_epochs >= 0 && c.warmup_teacher_temp_epochs >= 0 &&
                 c.warmup_epochs + c.freeze_last_layer_epochs <= c.epochs,
             op, "expected warmup_epochs + freeze_last_layer_epochs <= epochs (", c.epochs, "), got ", c.warmup_epochs,
             " + ", c.freeze_last_layer_epochs);
    HG_CHECK(c.backbone.keys == models::KeyStyle::Dinov2Hub &&
                 (c.backbone.layout == models::TokenLayout::ClsPatches ||
                  c.backbone.layout == models::TokenLayout::ClsRegPatchesPosBeforeReg),
             op, "expected a DINOv2 backbone (keys KeyStyle::Dinov2Hub for the mask token, layout ClsPatches or ",
             "ClsRegPatchesPosBeforeReg), got config '", c.backbone.name, "'");
    HG_CHECK(c.crops.global_size >= c.backbone.patch_size && c.crops.global_size % c.backbone.patch_size == 0, op,
             "expected a global crop size divisible by the patch size ", c.backbone.patch_size, ", got ",
             c.crops.global_size);
    HG_CHECK(c.mask_ratio_min >= 0 && c.mask_ratio_min <= c.mask_ratio_max && c.mask_ratio_max < 1, op,
             "expected 0 <= mask_ratio_min <= mask_ratio_max < 1, got ", c.mask_ratio_min, " and ", c.mask_ratio_max);
    return c;
  }
  static std::optional<int64_t> ibot_dim(const DINOv2TrainerConfig& c) {
    if (c.ibot_separate_head) return c.ibot_head_n_prototypes;
    return std::nullopt;
  }
  static models::ViTConfig teacher_backbone(models::ViTConfig c) {
    c.drop_path_rate = 0;  // build_model(only_teacher=True) passes no drop path
    return c;
  }
  static DINOv2LossConfig loss_config(const DINOv2TrainerConfig& c) {
    DINOv2LossConfig l;
    l.dino_out_dim = c.head_n_prototypes;
    l.ibot_out_dim = c.ibot_separate_head ? c.ibot_head_n_prototypes : c.head_n_prototypes;
    l.n_global_crops = 2;
    l.n_local_crops = c.crops.local_crops;
    l.centering = c.centering;
    l.dino_loss_weight = c.dino_loss_weight;
    l.ibot_loss_weight = c.ibot_loss_weight;
    l.koleo_loss_weight = c.koleo_loss_weight;
    return l;
  }
  static int64_t grid(const DINOv2TrainerConfig& c) { return c.crops.global_size / c.backbone.patch_size; }
  // train.py: max_num_patches = 0.5 * img_size // patch_size * img_size // patch_size (Python's
  // left-to-right floor divisions on floats).
  static double max_mask_patches(const DINOv2TrainerConfig& c) {
    const double size = double(c.crops.global_size), patch = double(c.backbone.patch_size);
    return std::floor(std::floor(0.5 * size / patch) * size / patch);
  }
  static uint64_t mask_seed(uint64_t seed) { return seed ^ 0x69424F5469424F54ull; }  // "iBOTiBOT"
  static size_t term_index(const std::string& term) {
    for (size_t i = 0; i < kTerms.size(); ++i)
      if (term == kTerms[i]) return i;
    fail("DINOv2Trainer", "no loss term '", term, "' (expected loss, dino_local, dino_global, koleo or ibot)");
  }
  static double scalar(const Tensor<float>& t) { return t.defined() ? double(t.item()) : 0.0; }
  static std::vector<double> to_doubles(const Tensor<float>& t) {
    const Tensor<float> c = t.contiguous();
    return std::vector<double>(c.data(), c.data() + c.numel());
  }

  struct Submodule {
    std::string name;
    nn::Module<float>* module;
    int64_t blocks;
  };
  // The student's submodules in SSLMetaArch's order (model.student.values()).
  std::vector<Submodule> submodules() {
    std::vector<Submodule> out{{"backbone", &student_.backbone, config_.backbone.depth},
                               {"dino_head", &student_.dino_head, 0}};
    if (student_.separate_ibot_head()) out.push_back({"ibot_head", &student_.ibot_head, 0});
    return out;
  }

  DINOv2TrainerConfig config_;
  DINOv2Networks<float> student_, teacher_;
  DINOv2Loss<float> loss_;
  Generator mask_generator_;  // the collate's Python random draws (block positions, ratios, shuffle)
  MaskingGenerator masking_;
  std::unique_ptr<data::DataLoader> loader_;
  std::unique_ptr<optim::AdamW<float>> optimizer_;
  std::optional<optim::CosineScheduler> lr_schedule_, wd_schedule_, momentum_schedule_, teacher_temp_schedule_,
      last_layer_lr_schedule_;
  double base_lr_ = 0;
  std::vector<std::vector<double>> history_ = std::vector<std::vector<double>>(kTerms.size());
  int64_t per_epoch_ = 1, iteration_ = 0;
};

}  // namespace histograd::ssl
