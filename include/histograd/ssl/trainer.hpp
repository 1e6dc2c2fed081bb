// The training loops of DINO (main_dino.py train_one_epoch) and MAE (main_pretrain.py /
// engine_pretrain.py train_one_epoch) as library code: one step() is one iteration in the
// reference's order, and save()/load() write and read every piece of state an iteration
// depends on (weights, teacher, optimizer moments, DINO centre, iteration, data position and
// every random generator), so a resumed run continues to the same bits as an uninterrupted one.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

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
#include "dino.hpp"
#include "mae.hpp"

namespace histograd::ssl {

// What one iteration did, for progress bars and logs.
struct StepResult {
  int64_t iteration = 0, epoch = 0;  // of the step just done
  double loss = 0, lr = 0, weight_decay = 0, teacher_momentum = 0;
  int64_t images = 0;  // source images in the batch
};

namespace detail {
// The thread count of the CPU kernels (0: leave OpenMP's default).
inline void set_threads(int threads) {
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

// main_dino.py / engine_pretrain.py stop the run on a NaN or infinite loss ("Loss is nan,
// stopping training"); the same, before backward, so no update is applied.
inline void check_finite_loss(const char* trainer, double loss, int64_t iteration, int64_t epoch) {
  if (std::isfinite(loss)) return;
  fail(trainer, "non-finite loss (", std::isnan(loss) ? "nan" : (loss > 0 ? "inf" : "-inf"), ") at iteration ",
       iteration, " (epoch ", epoch, "); training stopped before the update, no checkpoint was written (lower the ",
       "learning rate or check the data)");
}

// The next batch of a loader that must deliver global position `iteration` (DataLoader returns
// nullopt once between epochs).
inline data::Batch next_batch(data::DataLoader& loader, int64_t iteration, int64_t per_epoch, const char* trainer) {
  std::optional<data::Batch> batch = loader.next();
  if (!batch) batch = loader.next();
  HG_CHECK(batch.has_value(), trainer, "the data loader delivered no batch");
  const int64_t position = batch->epoch * per_epoch + batch->batch_index;
  HG_CHECK(position == iteration, trainer, "the data loader is at position ", position, ", expected iteration ", iteration);
  return std::move(*batch);
}

inline Tensor<float> history_tensor(const std::vector<double>& history) {
  std::vector<float> values(history.begin(), history.end());  // each was a float loss: exact
  return from_vector<float>(values, Shape{static_cast<int64_t>(values.size())});
}
inline std::vector<double> history_from(const io::TrainingState<float>& state) {
  std::vector<double> out;
  auto it = state.tensors.find("history.loss");
  if (it == state.tensors.end()) return out;
  const Tensor<float> h = it->second.contiguous();
  for (int64_t i = 0; i < h.numel(); ++i) out.push_back(double(h.data()[i]));
  return out;
}

// The metadata every trainer's checkpoint carries beside its own tensors: objective, architecture,
// iteration, data position and the default generator (drop path).
inline void put_progress(io::TrainingState<float>& state, const std::string& objective, const std::string& model,
                         int64_t iteration, int64_t per_epoch, uint64_t seed) {
  state.set_string("objective", objective);
  state.set_string("model", model);
  state.set_int("iteration", iteration);
  state.set_int("epoch", iteration / per_epoch);
  state.set_int("data.batches_per_epoch", per_epoch);
  state.set_int("data.epoch", iteration / per_epoch);
  state.set_int("data.batch", iteration % per_epoch);
  state.set_uint("data.seed", seed);
  state.put_generator(default_generator(), "rng.default");
}

// The parts of a checkpoint every trainer checks before touching its own state: the objective
// first, then (after the trainer's architecture check) the data position and the iteration,
// which check_progress returns.
inline void check_objective(const io::TrainingState<float>& state, const std::string& objective,
                            const std::string& path) {
  const std::string found = state.get_string("objective", "(none)");
  HG_CHECK(found == objective, "load", path, ": a checkpoint of objective '", found, "', this trainer is '", objective,
           "'");
}
inline int64_t check_progress(const io::TrainingState<float>& state, int64_t per_epoch, int64_t total_iterations,
                              const std::string& path) {
  const int64_t saved = state.get_int("data.batches_per_epoch");
  HG_CHECK(saved == per_epoch, "load", path, ": the checkpoint's run had ", saved,
           " batches per epoch, this one has ", per_epoch,
           " (a different dataset or batch size: the schedules and the data order would not continue)");
  const int64_t iteration = state.get_int("iteration");
  HG_CHECK(iteration >= 0 && iteration <= total_iterations, "load", path, ": iteration ", iteration,
           " is outside this run's ", total_iterations, " iterations");
  return iteration;
}

inline std::string describe_vit(const models::ViTConfig& c) {
  std::ostringstream s;
  s << "vit(patch " << c.patch_size << ", image " << c.image_size << ", dim " << c.embed_dim << ", depth " << c.depth
    << ", heads " << c.num_heads << ", mlp " << c.mlp_hidden << ", registers " << c.num_register_tokens << ")";
  return s.str();
}
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// DINO. Defaults are main_dino.py's, except the sizes, which the caller sets.
struct DINOTrainerConfig {
  models::ViTConfig backbone;  // the student's (drop_path_rate included; the teacher gets none)
  DINOHeadConfig head;
  data::MultiCropConfig crops;  // global/local sizes and scales, crops.local_crops local views
  int64_t epochs = 100, batch_size = 64;
  double lr = 0.0005;  // at batch 256; the run uses lr · batch_size / 256 as the reference
  double min_lr = 1e-6;
  int64_t warmup_epochs = 10;
  double weight_decay = 0.04, weight_decay_end = 0.4;
  double momentum_teacher = 0.996;  // cosine to 1
  double warmup_teacher_temp = 0.04, teacher_temp = 0.04;
  int64_t warmup_teacher_temp_epochs = 0;
  double clip_grad = 3.0;  // 0: no clipping
  int64_t freeze_last_layer = 1;
  uint64_t seed = 0;
  int threads = 0;      // OpenMP threads of the kernels; 0 leaves the default
  int num_workers = 2;  // data loader threads (the batches do not depend on it)
  Device device = kCPU;  // where the models, the optimizer state and each batch live
  // bf16 autocast (AutocastGuard) around the forward passes and the loss: bf16 GEMMs and
  // attention, fp32 master weights, optimizer, norms and losses. On the CPU it emulates the
  // roundings (to check a run), on a GPU it runs the bf16 kernels.
  bool mixed_precision = false;
};

// Owns the student/teacher/loss, the optimizer, the schedules and the data loader over `dataset`.
// Requires a dataset of at least batch_size images. Training-mode drop path draws from
// default_generator(), which the constructor seeds with config.seed and the checkpoint carries.
class DINOTrainer {
 public:
  DINOTrainer(const DINOTrainerConfig& config, std::shared_ptr<data::Dataset> dataset)
      : config_(config),
        dino_(build_dino<float>(config.backbone, config.head,
                                DINOLossConfig{2 + config.crops.local_crops, config.warmup_teacher_temp,
                                               config.teacher_temp, config.warmup_teacher_temp_epochs, config.epochs},
                                config.seed)) {
    const char* op = "DINOTrainer";
    HG_CHECK(config.epochs >= 1 && config.batch_size >= 1, op, "expected epochs >= 1 and batch_size >= 1, got ",
             config.epochs, " and ", config.batch_size);
    HG_CHECK(config.warmup_epochs >= 0 && config.warmup_epochs <= config.epochs, op, "expected warmup_epochs in [0, ",
             config.epochs, "], got ", config.warmup_epochs);
    detail::set_threads(config.threads);
    manual_seed(config.seed);
    data::DataLoaderOptions options;
    options.batch_size = config.batch_size;
    options.num_workers = config.num_workers;
    options.seed = config.seed;
    loader_ = std::make_unique<data::DataLoader>(std::move(dataset), data::MultiCropAugmentation(config.crops), options);
    per_epoch_ = loader_->batches_per_epoch();
    const double lr = config.lr * double(config.batch_size) / 256.0;
    lr_schedule_ = optim::cosine_schedule(lr, config.min_lr, config.epochs, per_epoch_, config.warmup_epochs);
    wd_schedule_ = optim::cosine_schedule(config.weight_decay, config.weight_decay_end, config.epochs, per_epoch_);
    momentum_schedule_ = optim::cosine_schedule(config.momentum_teacher, 1.0, config.epochs, per_epoch_);
    dino_.student.to(config.device);  // before the optimizer takes its handles, as in PyTorch
    dino_.teacher.to(config.device);
    dino_.loss.to(config.device);
    // utils.get_params_groups: [regularised, not regularised (weight_decay 0)]; the schedules
    // overwrite lr and group 0's weight decay every iteration.
    optimizer_ = std::make_unique<optim::AdamW<float>>(
        optim::make_param_groups(dino_.student, config.weight_decay, 0.0, optim::DecayRule::dino_reference));
    named_student_ = dino_.student.named_parameters();
  }

  int64_t total_iterations() const { return config_.epochs * per_epoch_; }
  int64_t iterations_per_epoch() const { return per_epoch_; }
  int64_t iteration() const { return iteration_; }  // iterations done
  bool done() const { return iteration_ >= total_iterations(); }
  const std::vector<double>& loss_history() const { return history_; }
  DINO<float>& dino() { return dino_; }
  optim::AdamW<float>& optimizer() { return *optimizer_; }
  const DINOTrainerConfig& config() const { return config_; }

  // One iteration of train_one_epoch, in its order.
  StepResult step() {
    const char* op = "DINOTrainer";
    HG_CHECK(!done(), op, "all ", total_iterations(), " iterations are done");
    const int64_t it = iteration_, epoch = it / per_epoch_;
    data::Batch batch = detail::next_batch(*loader_, it, per_epoch_, op);
    for (auto& group : optimizer_->groups()) group.lr = lr_schedule_[size_t(it)];
    optimizer_->groups()[0].weight_decay = wd_schedule_[size_t(it)];

    for (auto& view : batch.views) view = view.to(config_.device);
    Tensor<float> loss;
    {
      AutocastGuard autocast(config_.mixed_precision);
      Tensor<float> teacher_output;
      {
        NoGradGuard no_grad;
        teacher_output = dino_.teacher.forward(std::vector<Tensor<float>>{batch.views[0], batch.views[1]});
      }
      Tensor<float> student_output = dino_.student.forward(batch.views);
      loss = dino_.loss.forward(student_output, teacher_output, epoch);  // also moves the centre
    }
    const double value = double(loss.item());
    detail::check_finite_loss(op, value, it, epoch);

    optimizer_->zero_grad();
    loss.backward();
    if (config_.clip_grad > 0) optim::clip_gradients(named_student_, config_.clip_grad);
    optim::cancel_gradients_last_layer(epoch, named_student_, config_.freeze_last_layer);
    optimizer_->step();
    const double momentum = momentum_schedule_[size_t(it)];
    optim::ema_update(dino_.teacher, dino_.student, momentum);

    history_.push_back(value);
    ++iteration_;
    return {it, epoch, value, lr_schedule_[size_t(it)], wd_schedule_[size_t(it)], momentum,
            static_cast<int64_t>(batch.labels.size())};
  }

  // The architecture, as recorded in checkpoints; a checkpoint of another one is refused.
  std::string model_name() const {
    std::ostringstream s;
    const DINOHeadConfig& h = config_.head;
    s << "dino " << detail::describe_vit(config_.backbone) << " head(out " << h.out_dim << ", hidden " << h.hidden_dim
      << ", bottleneck " << h.bottleneck_dim << ", layers " << h.nlayers << ", norm_last_layer "
      << (h.norm_last_layer ? 1 : 0) << ")";
    return s.str();
  }

  // Writes every piece of state atomically (io::save_training_state): a failure leaves the file
  // already at `path` as it was.
  void save(const std::string& path) {
    io::TrainingState<float> state;
    state.put_state_dict("student.", dino_.student.state_dict());
    state.put_state_dict("teacher.", dino_.teacher.state_dict());
    state.put_optimizer(optimizer_->state());
    state.tensors["loss.center"] = dino_.loss.center.clone();
    if (!history_.empty()) state.tensors["history.loss"] = detail::history_tensor(history_);
    detail::put_progress(state, "dino", model_name(), iteration_, per_epoch_, config_.seed);
    io::save_training_state(path, state);
  }

  // Restores a checkpoint written by save() of the same architecture and data. Everything is
  // checked before anything is changed; an Error leaves the trainer as it was.
  void load(const std::string& path) {
    const io::TrainingState<float> state = io::load_training_state<float>(path);
    detail::check_objective(state, "dino", path);
    io::check_compatible(state, model_name(), dino_.student, "student.");
    io::check_compatible(state, "", dino_.teacher, "teacher.");
    const int64_t iteration = detail::check_progress(state, per_epoch_, total_iterations(), path);
    auto center = state.tensors.find("loss.center");
    HG_CHECK(center != state.tensors.end() && center->second.shape() == dino_.loss.center.shape(), "load", path,
             ": expected 'loss.center' of shape ", to_string(dino_.loss.center.shape()));
    optimizer_->load_state(state.get_optimizer());  // validates every entry before it copies
    dino_.student.load_state_dict(state.get_state_dict("student."));
    dino_.teacher.load_state_dict(state.get_state_dict("teacher."));
    {
      NoGradGuard no_grad;
      dino_.loss.center.copy_(center->second);
    }
    history_ = detail::history_from(state);
    iteration_ = iteration;
    state.restore_generator(default_generator(), "rng.default");
    if (!done()) loader_->start_at(iteration_ / per_epoch_, iteration_ % per_epoch_);
  }

 private:
  DINOTrainerConfig config_;
  DINO<float> dino_;
  std::unique_ptr<data::DataLoader> loader_;
  std::unique_ptr<optim::AdamW<float>> optimizer_;
  optim::NamedParameters<float> named_student_;
  std::vector<double> lr_schedule_, wd_schedule_, momentum_schedule_;
  std::vector<double> history_;
  int64_t per_epoch_ = 1, iteration_ = 0;
};

// ---------------------------------------------------------------------------------------------
// MAE. Defaults are main_pretrain.py's (blr 1.5e-4, weight decay 0.05, betas (0.9, 0.95),
// mask ratio 0.75, 40 warm-up epochs), sizes set by the caller.
struct MAETrainerConfig {
  MAEConfig model;  // model.norm_pix_loss selects the per-patch normalised target
  int64_t epochs = 400, batch_size = 64;
  double blr = 1.5e-4;  // lr = blr · batch_size / 256 unless lr > 0
  double lr = 0, min_lr = 0;
  int64_t warmup_epochs = 40;
  double weight_decay = 0.05, beta1 = 0.9, beta2 = 0.95;
  double mask_ratio = 0.75;
  double scale_min = 0.2;  // RandomResizedCrop scale (scale_min, 1)
  uint64_t seed = 0;
  int threads = 0, num_workers = 2;
  Device device = kCPU;          // as DINOTrainerConfig
  bool mixed_precision = false;  // as DINOTrainerConfig: autocast around the forward and loss
};

class MAETrainer {
 public:
  MAETrainer(const MAETrainerConfig& config, std::shared_ptr<data::Dataset> dataset)
      : config_(config), model_(config.model, config.seed), mask_generator_(mask_seed(config.seed)) {
    const char* op = "MAETrainer";
    HG_CHECK(config.epochs >= 1 && config.batch_size >= 1, op, "expected epochs >= 1 and batch_size >= 1, got ",
             config.epochs, " and ", config.batch_size);
    HG_CHECK(config.warmup_epochs >= 0 && config.warmup_epochs <= config.epochs, op, "expected warmup_epochs in [0, ",
             config.epochs, "], got ", config.warmup_epochs);
    HG_CHECK(config.mask_ratio > 0 && config.mask_ratio < 1, op, "expected a mask ratio in (0, 1), got ",
             config.mask_ratio);
    detail::set_threads(config.threads);
    manual_seed(config.seed);
    data::MaskedAutoencoderAugmentation augmentation;
    augmentation.size = config.model.img_size;
    augmentation.scale = {config.scale_min, 1.0};
    data::DataLoaderOptions options;
    options.batch_size = config.batch_size;
    options.num_workers = config.num_workers;
    options.seed = config.seed;
    loader_ = std::make_unique<data::DataLoader>(std::move(dataset), augmentation, options);
    per_epoch_ = loader_->batches_per_epoch();
    base_lr_ = config.lr > 0 ? config.lr : config.blr * double(config.batch_size) / 256.0;
    model_.to(config.device);
    // optim_factory.add_weight_decay: no decay on 1-D parameters and biases.
    optimizer_ = std::make_unique<optim::AdamW<float>>(optim::make_param_groups(model_, config.weight_decay),
                                                       config.beta1, config.beta2);
  }

  int64_t total_iterations() const { return config_.epochs * per_epoch_; }
  int64_t iterations_per_epoch() const { return per_epoch_; }
  int64_t iteration() const { return iteration_; }
  bool done() const { return iteration_ >= total_iterations(); }
  const std::vector<double>& loss_history() const { return history_; }
  MaskedAutoencoderViT<float>& model() { return model_; }
  optim::AdamW<float>& optimizer() { return *optimizer_; }
  const MAETrainerConfig& config() const { return config_; }

  // util/lr_sched.adjust_learning_rate at fractional epoch it / per_epoch: linear warm-up, then
  // a half cosine down to min_lr.
  double learning_rate(int64_t it) const {
    const double epoch = double(it) / double(per_epoch_);
    const double warmup = double(config_.warmup_epochs);
    if (epoch < warmup) return base_lr_ * epoch / warmup;
    const double pi = 3.141592653589793;
    return config_.min_lr + (base_lr_ - config_.min_lr) * 0.5 *
                                (1.0 + std::cos(pi * (epoch - warmup) / (double(config_.epochs) - warmup)));
  }

  // One iteration of engine_pretrain.train_one_epoch (accum_iter 1, no gradient clipping).
  StepResult step() {
    const char* op = "MAETrainer";
    HG_CHECK(!done(), op, "all ", total_iterations(), " iterations are done");
    const int64_t it = iteration_, epoch = it / per_epoch_;
    data::Batch batch = detail::next_batch(*loader_, it, per_epoch_, op);
    const double lr = learning_rate(it);
    optimizer_->set_lr(lr);
    const Tensor<float> images = batch.views[0].to(config_.device);
    MAEOutput<float> out;
    {
      AutocastGuard autocast(config_.mixed_precision);
      out = model_.forward(images, config_.mask_ratio, mask_generator_);
    }
    const double value = double(out.loss.item());
    detail::check_finite_loss(op, value, it, epoch);
    out.loss.backward();
    optimizer_->step();
    optimizer_->zero_grad();
    last_images_ = images;
    last_pred_ = out.pred.detach();
    last_mask_ = out.mask.detach();
    history_.push_back(value);
    ++iteration_;
    return {it, epoch, value, lr, config_.weight_decay, 0.0, static_cast<int64_t>(batch.labels.size())};
  }

  // input | masked | reconstruction + visible | reconstruction of the last step's batch.
  void write_reconstruction(const std::string& path, int64_t max_rows = 8) const {
    HG_CHECK(last_images_.defined(), "MAETrainer", "no step has run yet, so there is nothing to reconstruct");
    const std::array<double, 3> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};  // the augmentation's
    save_reconstruction_png(path, last_images_.cpu(), last_mask_.cpu(), last_pred_.cpu(), mean, std,
                            config_.model.norm_pix_loss, max_rows);
  }

  std::string model_name() const {
    const MAEConfig& c = config_.model;
    std::ostringstream s;
    s << "mae(image " << c.img_size << ", patch " << c.patch_size << ", dim " << c.embed_dim << ", depth " << c.depth
      << ", heads " << c.num_heads << ", decoder dim " << c.decoder_embed_dim << ", decoder depth " << c.decoder_depth
      << ", decoder heads " << c.decoder_num_heads << ", mlp_ratio " << c.mlp_ratio << ")";
    return s.str();
  }

  void save(const std::string& path) {
    io::TrainingState<float> state;
    state.put_state_dict("model.", model_.state_dict());
    state.put_optimizer(optimizer_->state());
    if (!history_.empty()) state.tensors["history.loss"] = detail::history_tensor(history_);
    detail::put_progress(state, "mae", model_name(), iteration_, per_epoch_, config_.seed);
    state.put_generator(mask_generator_, "rng.mask");
    io::save_training_state(path, state);
  }

  void load(const std::string& path) {
    const io::TrainingState<float> state = io::load_training_state<float>(path);
    detail::check_objective(state, "mae", path);
    io::check_compatible(state, model_name(), model_, "model.");
    const int64_t iteration = detail::check_progress(state, per_epoch_, total_iterations(), path);
    state.get_uint("rng.mask.seed");  // present, or an Error before anything changes
    state.get_uint("rng.mask.offset");
    optimizer_->load_state(state.get_optimizer());
    model_.load_state_dict(state.get_state_dict("model."));
    history_ = detail::history_from(state);
    iteration_ = iteration;
    state.restore_generator(default_generator(), "rng.default");
    state.restore_generator(mask_generator_, "rng.mask");
    if (!done()) loader_->start_at(iteration_ / per_epoch_, iteration_ % per_epoch_);
  }

 private:
  static uint64_t mask_seed(uint64_t seed) { return seed ^ 0x4D41534B4D41534Bull; }  // "MASKMASK"

  MAETrainerConfig config_;
  MaskedAutoencoderViT<float> model_;
  Generator mask_generator_;  // the per-sample masking noise (torch.rand in random_masking)
  std::unique_ptr<data::DataLoader> loader_;
  std::unique_ptr<optim::AdamW<float>> optimizer_;
  double base_lr_ = 0;
  std::vector<double> history_;
  int64_t per_epoch_ = 1, iteration_ = 0;
  Tensor<float> last_images_, last_pred_, last_mask_;
};

}  // namespace histograd::ssl
