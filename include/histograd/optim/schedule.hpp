// Per-iteration schedules of self-supervised training, value for value as the references
// compute them: DINO's utils.cosine_scheduler (lr, weight decay, teacher momentum), DINOv2's
// dinov2/utils/utils.py CosineScheduler (with freeze iterations), and the teacher-temperature
// warmup of DINO's DINOLoss (main_dino.py; per epoch) and of DINOv2 (per iteration).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"

namespace histograd::optim {

// numpy.linspace(start, stop, count) with its arithmetic: start + i·((stop-start)/(count-1)),
// the last value set to stop exactly; one value gives [start], zero gives [].
inline std::vector<double> linspace(double start, double stop, int64_t count) {
  HG_CHECK(count >= 0, "linspace", "expected a non-negative count, got ", count);
  std::vector<double> out(static_cast<size_t>(count));
  if (count == 0) return out;
  const double delta = stop - start;
  const double step = count > 1 ? delta / double(count - 1) : delta;
  for (int64_t i = 0; i < count; ++i)
    out[size_t(i)] = step == 0 ? double(i) / double(count > 1 ? count - 1 : 1) * delta + start : double(i) * step + start;
  if (count > 1) out.back() = stop;
  return out;
}

namespace detail {
// final + ½(base − final)(1 + cos(π·i/count)) for i in [0, count), appended to `out`.
inline void append_cosine(std::vector<double>& out, double base, double final_value, int64_t count) {
  const double pi = 3.141592653589793;
  for (int64_t i = 0; i < count; ++i)
    out.push_back(final_value + 0.5 * (base - final_value) * (1 + std::cos(pi * double(i) / double(count))));
}
}  // namespace detail

// DINO utils.cosine_scheduler: epochs·iters_per_epoch values, a linear warmup of
// warmup_epochs·iters_per_epoch values from start_warmup_value to base (numpy.linspace, so the
// warmup ends on base exactly), then a cosine from base towards final (never reaching it).
inline std::vector<double> cosine_schedule(double base, double final_value, int64_t epochs, int64_t iters_per_epoch,
                                           int64_t warmup_epochs = 0, double start_warmup_value = 0) {
  HG_CHECK(epochs >= 0 && iters_per_epoch >= 0, "cosine_schedule", "expected non-negative epochs and iters_per_epoch, got ",
           epochs, " and ", iters_per_epoch);
  HG_CHECK(warmup_epochs >= 0 && warmup_epochs <= epochs, "cosine_schedule", "expected warmup_epochs in [0, ", epochs,
           "], got ", warmup_epochs);
  const int64_t warmup_iters = warmup_epochs * iters_per_epoch;
  std::vector<double> schedule = warmup_epochs > 0 ? linspace(start_warmup_value, base, warmup_iters) : std::vector<double>{};
  detail::append_cosine(schedule, base, final_value, epochs * iters_per_epoch - warmup_iters);
  return schedule;
}

// DINOv2's CosineScheduler: freeze_iters zeros, warmup_iters of linear warmup, then the cosine;
// indexing at or past total_iters gives final_value (so a warmup-only schedule such as the
// teacher temperature's stays at its last value).
class CosineScheduler {
 public:
  CosineScheduler(double base, double final_value, int64_t total_iters, int64_t warmup_iters = 0,
                  double start_warmup_value = 0, int64_t freeze_iters = 0)
      : final_value_(final_value), total_iters_(total_iters) {
    HG_CHECK(warmup_iters >= 0 && freeze_iters >= 0 && warmup_iters + freeze_iters <= total_iters, "CosineScheduler",
             "expected warmup_iters + freeze_iters <= total_iters, got ", warmup_iters, " + ", freeze_iters, " > ",
             total_iters);
    schedule_.assign(static_cast<size_t>(freeze_iters), 0.0);
    for (double v : linspace(start_warmup_value, base, warmup_iters)) schedule_.push_back(v);
    detail::append_cosine(schedule_, base, final_value, total_iters - warmup_iters - freeze_iters);
  }
  double operator[](int64_t iteration) const {
    HG_CHECK(iteration >= 0, "CosineScheduler", "expected a non-negative iteration, got ", iteration);
    return iteration >= total_iters_ ? final_value_ : schedule_[static_cast<size_t>(iteration)];
  }
  // DINOv2's last-layer lr: the first `iterations` values set to 0 (train.py, freeze_last_layer_epochs).
  CosineScheduler& zero_first(int64_t iterations) {
    for (int64_t i = 0; i < iterations && i < total_iters_; ++i) schedule_[static_cast<size_t>(i)] = 0;
    return *this;
  }
  int64_t total_iters() const { return total_iters_; }
  const std::vector<double>& values() const { return schedule_; }

 private:
  double final_value_;
  int64_t total_iters_;
  std::vector<double> schedule_;
};

// DINO's DINOLoss teacher temperature, one value per epoch: linspace(warmup_teacher_temp,
// teacher_temp, warmup_epochs) then teacher_temp for the remaining epochs.
inline std::vector<double> teacher_temperature_schedule(double warmup_teacher_temp, double teacher_temp,
                                                        int64_t warmup_epochs, int64_t epochs) {
  HG_CHECK(warmup_epochs >= 0 && warmup_epochs <= epochs, "teacher_temperature_schedule",
           "expected warmup_epochs in [0, epochs = ", epochs, "], got ", warmup_epochs);
  std::vector<double> schedule = linspace(warmup_teacher_temp, teacher_temp, warmup_epochs);
  schedule.resize(static_cast<size_t>(epochs), teacher_temp);
  return schedule;
}

// DINOv2's teacher temperature, per iteration: linear from warmup_teacher_temp to teacher_temp
// over warmup_iters, then teacher_temp (train.py builds it as a CosineScheduler of base = final).
inline CosineScheduler teacher_temperature_scheduler(double warmup_teacher_temp, double teacher_temp,
                                                     int64_t warmup_iters) {
  return CosineScheduler(teacher_temp, teacher_temp, warmup_iters, warmup_iters, warmup_teacher_temp);
}

}  // namespace histograd::optim
