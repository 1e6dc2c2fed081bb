#include "test_util.hpp"

#include <histograd/optim/clip.hpp>
#include <histograd/optim/ema.hpp>
#include <histograd/optim/optimizer.hpp>
#include <histograd/optim/schedule.hpp>

// Parity with torch.optim and the DINO / DINOv2 reference functions, through the fixtures of
// scripts/gen_optim_fixtures.py (tests/fixtures/optim/). Tolerances: float32 1e-5 relative (a few
// ulps of rounding-order differences accumulated over 5 steps); float64 1e-12 (the schedules,
// computed with the same formulas in the same order, to 1e-14).

namespace {

std::string fixture(const std::string& name) { return std::string(HISTOGRAD_FIXTURES_DIR) + "/optim/" + name; }

std::vector<double> doubles(const hg::io::SafetensorsFile& file, const std::string& key) {
  return file.get<double>(key).to_vector();
}

void check_values(const std::vector<double>& got, const std::vector<double>& expected, double tol) {
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", expected " << expected[i]);
    CHECK(std::abs(got[i] - expected[i]) <= tol * std::max(1.0, std::abs(expected[i])));
  }
}

struct ParamSpec {
  const char* name;
  int group;
};
const ParamSpec kParams[] = {{"head.mlp.weight", 0}, {"head.last_layer.weight", 0}, {"head.mlp.bias", 1}, {"norm.weight", 1}};

// main_dino.py's loop with the fixture's gradients; `make` builds the optimizer from the groups.
template <class T, class Make>
void run_dino_loop(const std::string& file_name, Make make, double tol) {
  hg::io::SafetensorsFile file(fixture(file_name));
  hg::optim::NamedParameters<T> named;
  std::vector<hg::optim::ParamGroup<T>> groups(2);
  for (const auto& spec : kParams) {
    auto p = file.get<T>(std::string("init.") + spec.name).clone().requires_grad_();
    named.emplace_back(spec.name, p);
    groups[size_t(spec.group)].params.push_back(p);
    groups[size_t(spec.group)].names.push_back(spec.name);
  }
  groups[0].weight_decay = 0.04;  // non-zero: set_weight_decay drives this group only
  groups[1].lr_multiplier = 0.5;
  auto optimizer = make(groups);

  const auto lr_schedule = hg::optim::cosine_schedule(0.1, 1e-3, 3, 2, 1);
  const auto wd_schedule = hg::optim::cosine_schedule(0.04, 0.4, 3, 2);
  check_values(std::vector<double>(lr_schedule.begin(), lr_schedule.begin() + 5), doubles(file, "lr"), 1e-14);
  check_values(std::vector<double>(wd_schedule.begin(), wd_schedule.begin() + 5), doubles(file, "wd"), 1e-14);
  for (int it = 0; it < 5; ++it) {
    CAPTURE(it);
    optimizer.set_lr(lr_schedule[size_t(it)]);
    optimizer.set_weight_decay(wd_schedule[size_t(it)]);
    CHECK(optimizer.groups()[1].weight_decay == 0);
    optimizer.zero_grad();
    for (auto& [name, p] : named) p.set_grad(file.get<T>("grad." + std::to_string(it) + "." + name).clone());
    auto norms = hg::optim::clip_gradients(named, 3.0);
    check_values(norms, doubles(file, "norms." + std::to_string(it)), tol);
    hg::optim::cancel_gradients_last_layer(it / 2, named, 1);
    CHECK(named[1].second.grad().defined() == (it >= 2));
    optimizer.step();
    for (auto& [name, p] : named) {
      CAPTURE(name);
      check_close(p, file.get<T>("after." + std::to_string(it) + "." + name), tol);
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("AdamW with two groups, schedules, clipping and a frozen last layer matches torch", T, float,
                   double) {
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  run_dino_loop<T>(std::is_same_v<T, float> ? "adamw_f32.safetensors" : "adamw_f64.safetensors",
                   [](auto groups) { return hg::optim::AdamW<T>(groups); }, tol);
}

TEST_CASE_TEMPLATE("SGD (Nesterov) with two groups, schedules, clipping and a frozen last layer matches torch", T, float,
                   double) {
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  run_dino_loop<T>(std::is_same_v<T, float> ? "sgd_f32.safetensors" : "sgd_f64.safetensors",
                   [](auto groups) { return hg::optim::SGD<T>(groups, 0.9, true); }, tol);
}

TEST_CASE_TEMPLATE("clip_grad_norm matches torch.nn.utils.clip_grad_norm_", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-13;
  hg::io::SafetensorsFile file(fixture(std::is_same_v<T, float> ? "clip_f32.safetensors" : "clip_f64.safetensors"));
  for (std::string c : {"clipped", "unclipped"}) {
    CAPTURE(c);
    std::vector<hg::Tensor<T>> params;
    for (int i = 0; i < 3; ++i) {
      auto grad = file.get<T>(c + ".grad." + std::to_string(i)).clone();
      params.push_back(hg::zeros<T>(grad.shape()).requires_grad_());
      params.back().set_grad(grad);
    }
    double total = hg::optim::clip_grad_norm(params, doubles(file, c + ".max_norm")[0]);
    check_values({total}, doubles(file, c + ".total"), tol);
    for (int i = 0; i < 3; ++i) check_close(params[size_t(i)].grad(), file.get<T>(c + ".clipped." + std::to_string(i)), tol);
  }
}

TEST_CASE("cosine_schedule matches dino utils.cosine_scheduler") {
  hg::io::SafetensorsFile file(fixture("schedules.safetensors"));
  check_values(hg::optim::cosine_schedule(5e-4 * 64 / 256, 1e-6, 7, 13, 2), doubles(file, "dino.lr"), 1e-14);
  check_values(hg::optim::cosine_schedule(0.04, 0.4, 7, 13), doubles(file, "dino.wd"), 1e-14);
  check_values(hg::optim::cosine_schedule(0.996, 1.0, 7, 13), doubles(file, "dino.momentum"), 1e-14);
  check_values(hg::optim::cosine_schedule(0.3, 0.01, 4, 5, 1, 0.05), doubles(file, "dino.warm_start"), 1e-14);
  check_values(hg::optim::cosine_schedule(1.0, 0.5, 3, 1, 1, 0.2), doubles(file, "dino.one_iter_warmup"), 1e-14);
}

TEST_CASE("CosineScheduler and the teacher temperature match dinov2 and DINOLoss") {
  hg::io::SafetensorsFile file(fixture("schedules.safetensors"));
  auto values = [](const hg::optim::CosineScheduler& s, int64_t count) {
    std::vector<double> out;
    for (int64_t i = 0; i < count; ++i) out.push_back(s[i]);
    return out;
  };
  check_values(values(hg::optim::CosineScheduler(0.004, 1e-6, 40, 7), 43), doubles(file, "dinov2.lr"), 1e-14);
  check_values(values(hg::optim::CosineScheduler(0.004, 1e-6, 40, 7, 0.001, 5), 43), doubles(file, "dinov2.freeze"),
               1e-14);
  check_values(values(hg::optim::teacher_temperature_scheduler(0.04, 0.07, 12), 15), doubles(file, "dinov2.teacher_temp"),
               1e-14);
  check_values(values(hg::optim::CosineScheduler(0.004, 1e-6, 40, 7).zero_first(6), 40),
               doubles(file, "dinov2.last_layer_lr"), 1e-14);
  check_values(hg::optim::teacher_temperature_schedule(0.04, 0.07, 30, 100), doubles(file, "dino.teacher_temp"), 1e-14);
  check_values(hg::optim::teacher_temperature_schedule(0.04, 0.04, 0, 10), doubles(file, "dino.teacher_temp_no_warmup"),
               1e-14);
}

TEST_CASE("ema_update matches main_dino.py's teacher update") {
  hg::io::SafetensorsFile file(fixture("ema_f32.safetensors"));
  std::vector<hg::Tensor<float>> teacher, student;
  for (int i = 0; i < 3; ++i) {
    teacher.push_back(file.get<float>("teacher." + std::to_string(i)).clone());
    student.push_back(file.get<float>("student." + std::to_string(i)).clone());
  }
  hg::optim::ema_update(teacher, student, doubles(file, "momentum")[0]);
  // Same operations in the same order in float: within an ulp or two of torch (FMA contraction).
  for (int i = 0; i < 3; ++i) check_close(teacher[size_t(i)], file.get<float>("updated." + std::to_string(i)), 1e-6);
}
