#include "test_util.hpp"

#include <histograd/optim/clip.hpp>
#include <histograd/optim/ema.hpp>
#include <histograd/optim/optimizer.hpp>
#include <histograd/optim/schedule.hpp>

// Parameter groups, optimizer state export/import, and the error paths of schedules, clipping
// and the EMA update. Numbers against torch live in optim_parity_test.cpp.

namespace {

// A tiny model with what the decay rules tell apart: a weight, a bias, a norm, a token
// listed in no_weight_decay() and a head "last_layer".
template <class T>
struct TinyModel : hg::nn::Module<T> {
  hg::Generator gen{3};
  hg::Tensor<T> cls_token = hg::randn<T>({1, 1, 4}, gen).requires_grad_();
  hg::nn::Linear<T> proj{4, 4, true, gen};
  hg::nn::LayerNorm<T> norm{4};
  hg::nn::Linear<T> last_layer{4, 3, false, gen};
  void visit(hg::nn::ModuleVisitor<T>& v) override {
    v.parameter("cls_token", cls_token);
    v.module("proj", proj);
    v.module("norm", norm);
    v.module("last_layer", last_layer);
  }
  std::set<std::string> no_weight_decay() const override { return {"cls_token"}; }
};

template <class T>
void set_grads(const std::vector<hg::Tensor<T>>& params, uint64_t seed) {
  for (size_t i = 0; i < params.size(); ++i) {
    auto p = params[i];
    p.set_grad(random_t<T>(p.shape(), seed + i));
  }
}

}  // namespace

TEST_CASE("make_param_groups gives DINO's regularized / not_regularized groups") {
  TinyModel<double> model;
  auto groups = hg::optim::make_param_groups(model, 0.04, 1e-3);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].names == std::vector<std::string>{"proj.weight", "last_layer.weight"});
  CHECK(groups[1].names == std::vector<std::string>{"cls_token", "proj.bias", "norm.weight", "norm.bias"});
  CHECK(groups[0].weight_decay == 0.04);
  CHECK(groups[1].weight_decay == 0);
  CHECK(groups[0].lr == 1e-3);
  CHECK(groups[0].params[0].is_same(model.proj.weight));

  // DINO's own rule regularizes every parameter of 2+ dims that is not a bias, tokens included.
  auto reference = hg::optim::make_param_groups(model, 0.04, 0.0, hg::optim::DecayRule::dino_reference);
  CHECK(reference[0].names == std::vector<std::string>{"cls_token", "proj.weight", "last_layer.weight"});
  CHECK(reference[1].names == std::vector<std::string>{"proj.bias", "norm.weight", "norm.bias"});

  // Frozen parameters are left out, as get_params_groups skips requires_grad=False.
  model.norm.requires_grad_(false);
  CHECK(hg::optim::make_param_groups(model, 0.04)[1].names == std::vector<std::string>{"cls_token", "proj.bias"});
}

TEST_CASE("set_lr and set_weight_decay follow the documented rules") {
  TinyModel<double> model;
  auto groups = hg::optim::make_param_groups(model, 0.04);
  hg::optim::ParamGroup<double> head;
  head.params = {hg::zeros<double>({2}).requires_grad_()};
  head.names = {"head.last_layer.g"};
  head.weight_decay = 0.04;
  head.wd_multiplier = 0;
  head.lr_multiplier = 0.2;
  head.is_last_layer = true;
  groups.push_back(head);
  hg::optim::AdamW<double> opt(groups);
  opt.set_lr(0.5);
  for (const auto& g : opt.groups()) CHECK(g.lr == 0.5);
  opt.set_lr(0.5, 0.0);
  CHECK(opt.groups()[0].lr == 0.5);
  CHECK(opt.groups()[2].lr == 0.0);
  opt.set_weight_decay(0.3);
  CHECK(opt.groups()[0].weight_decay == 0.3);
  CHECK(opt.groups()[1].weight_decay == 0);  // built with 0: stays 0 (DINO's not_regularized group)
  CHECK(opt.groups()[2].weight_decay == 0.3);
  CHECK(opt.groups()[2].effective_weight_decay() == 0);
  opt.groups()[2].lr = 1.0;
  CHECK(opt.groups()[2].effective_lr() == doctest::Approx(0.2));
  CHECK(opt.params().size() == 7);
}

TEST_CASE("a parameter without a gradient keeps AdamW's bias correction and SGD's buffer start of its own") {
  // Two parameters with equal values and gradients; the second misses the first step. After its
  // first step it must equal what the first parameter got from its first step.
  for (int kind = 0; kind < 2; ++kind) {
    CAPTURE(kind);
    auto a = hg::tensor<double>({1.0, -2.0}).requires_grad_();
    auto b = hg::tensor<double>({1.0, -2.0}).requires_grad_();
    std::vector<hg::optim::ParamGroup<double>> groups(1);
    groups[0].params = {a, b};
    groups[0].lr = 0.1;
    std::unique_ptr<hg::optim::Optimizer<double>> opt;
    if (kind == 0) opt = std::make_unique<hg::optim::AdamW<double>>(groups);
    else opt = std::make_unique<hg::optim::SGD<double>>(groups, 0.9);
    a.set_grad(hg::tensor<double>({0.5, 0.25}));
    opt->step();
    const std::vector<double> a_after_first = a.to_vector();
    b.set_grad(hg::tensor<double>({0.5, 0.25}));
    a.zero_grad();
    opt->step();
    CHECK(b.to_vector() == a_after_first);
  }
}

TEST_CASE_TEMPLATE("optimizer state round trip continues to the same numbers", T, float, double) {
  for (int kind = 0; kind < 2; ++kind) {
    CAPTURE(kind);
    auto build = [kind](std::vector<hg::Tensor<T>> params) -> std::unique_ptr<hg::optim::Optimizer<T>> {
      std::vector<hg::optim::ParamGroup<T>> groups(2);
      groups[0].params = {params[0]};
      groups[0].names = {"w"};
      groups[1].params = {params[1]};  // unnamed: keys "group1.0.*"
      groups[0].lr = groups[1].lr = 0.05;
      groups[0].weight_decay = 0.1;
      if (kind == 0) return std::make_unique<hg::optim::AdamW<T>>(groups);
      return std::make_unique<hg::optim::SGD<T>>(groups, 0.9, true);
    };
    auto fresh = [] {
      return std::vector<hg::Tensor<T>>{random_t<T>({3, 2}, 1).requires_grad_(), random_t<T>({2}, 2).requires_grad_()};
    };
    auto run_params = fresh(), resumed_params = fresh();
    auto run = build(run_params), resumed = build(resumed_params);
    for (uint64_t step = 0; step < 3; ++step) {
      set_grads(run_params, 10 * step);
      run->set_lr(0.05 + 0.01 * double(step));
      run->step();
    }
    // "Resume": the parameters and the optimizer state after 3 steps go into a fresh pair.
    {
      hg::NoGradGuard no_grad;
      for (size_t i = 0; i < 2; ++i) resumed_params[i].copy_(run_params[i]);
    }
    auto state = run->state();
    CHECK(state.tensors.count(kind == 0 ? "w.exp_avg" : "w.momentum_buffer"));
    CHECK(state.tensors.count(kind == 0 ? "group1.0.exp_avg_sq" : "group1.0.momentum_buffer"));
    CHECK(state.scalars.at("group0.lr") == doctest::Approx(0.07));
    resumed->load_state(state);
    CHECK(resumed->groups()[0].lr == doctest::Approx(0.07));
    for (uint64_t step = 3; step < 5; ++step) {
      set_grads(run_params, 10 * step);
      set_grads(resumed_params, 10 * step);
      run->step();
      resumed->step();
    }
    for (size_t i = 0; i < 2; ++i) CHECK(resumed_params[i].to_vector() == run_params[i].to_vector());
  }
}

TEST_CASE("load_state names the entry that does not fit") {
  auto w = hg::zeros<double>({3, 2}).requires_grad_();
  std::vector<hg::optim::ParamGroup<double>> groups(1);
  groups[0].params = {w};
  groups[0].names = {"w"};
  hg::optim::AdamW<double> opt(groups);
  auto good = opt.state();

  auto missing = good;
  missing.tensors.erase("w.exp_avg_sq");
  CHECK_THROWS_WITH_AS(opt.load_state(missing), doctest::Contains("AdamW: load_state: missing tensor 'w.exp_avg_sq'"),
                       hg::Error);
  auto reshaped = good;
  reshaped.tensors["w.exp_avg"] = hg::zeros<double>({2, 3});
  CHECK_THROWS_WITH_AS(opt.load_state(reshaped),
                       doctest::Contains("tensor 'w.exp_avg' has shape [2, 3], expected [3, 2]"), hg::Error);
  auto extra = good;
  extra.scalars["v.step"] = 1;
  CHECK_THROWS_WITH_AS(opt.load_state(extra), doctest::Contains("unexpected scalar 'v.step'"), hg::Error);
  auto fractional = good;
  fractional.scalars["w.step"] = 1.5;
  CHECK_THROWS_WITH_AS(opt.load_state(fractional), doctest::Contains("'w.step' must be a non-negative integer"),
                       hg::Error);
  // A failed load leaves the optimizer untouched.
  CHECK(opt.state().scalars.at("w.step") == 0);

  hg::optim::SGD<double> sgd(groups, 0.9);
  CHECK_THROWS_WITH_AS(sgd.load_state(good), doctest::Contains("SGD: load_state: missing tensor 'w.momentum_buffer'"),
                       hg::Error);
}

TEST_CASE("optimizer construction and step reject mistakes") {
  auto w = hg::zeros<double>({2}).requires_grad_();
  std::vector<hg::optim::ParamGroup<double>> groups(1);
  groups[0].params = {w, w * 2.0};
  CHECK_THROWS_WITH_AS(hg::optim::AdamW<double>{groups}, doctest::Contains("AdamW: parameters must be defined contiguous leaf"),
                       hg::Error);
  groups[0].params = {w};
  groups[0].names = {"a", "b"};
  CHECK_THROWS_WITH_AS(hg::optim::SGD<double>{groups}, doctest::Contains("SGD: group 0 has 1 parameters but 2 names"),
                       hg::Error);
  std::vector<hg::optim::ParamGroup<double>> twice(2);
  twice[0].params = {w};
  twice[0].names = {"a"};
  twice[1].params = {hg::zeros<double>({2}).requires_grad_()};
  twice[1].names = {"a"};
  CHECK_THROWS_WITH_AS(hg::optim::SGD<double>{twice}, doctest::Contains("parameter name 'a' appears twice"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::optim::SGD<double>(std::vector<hg::Tensor<double>>{w}, 0.1, 0.0, 0.0, true),
                       doctest::Contains("Nesterov momentum requires momentum > 0"), hg::Error);

  hg::optim::AdamW<double> opt(std::vector<hg::Tensor<double>>{w}, 0.1);
  w.set_grad(hg::zeros<double>({3}));
  CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("AdamW: gradient of 'group0.0' has shape [3]"), hg::Error);
  w.zero_grad();
  opt.groups()[0].params.push_back(hg::zeros<double>({1}).requires_grad_());
  CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("group 0 had 1 parameters at construction, now 2"), hg::Error);
}

TEST_CASE("linspace and the schedules agree with hand values and reject bad arguments") {
  CHECK(hg::optim::linspace(0, 1, 5) == std::vector<double>{0, 0.25, 0.5, 0.75, 1});
  CHECK(hg::optim::linspace(2, 3, 1) == std::vector<double>{2});
  CHECK(hg::optim::linspace(2, 3, 0).empty());
  auto s = hg::optim::cosine_schedule(1.0, 0.0, 2, 2);  // cos over 4 iterations: 1, (1+√½)/2, ½, (1-√½)/2
  check_close(hg::from_vector<double>(s, {4}), {1.0, (1 + std::sqrt(0.5)) / 2, 0.5, (1 - std::sqrt(0.5)) / 2}, 1e-15);
  CHECK(hg::optim::cosine_schedule(1.0, 0.0, 0, 5).empty());
  CHECK_THROWS_WITH_AS(hg::optim::cosine_schedule(1, 0, 2, 3, 3), doctest::Contains("cosine_schedule: expected warmup_epochs in [0, 2], got 3"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::optim::CosineScheduler(1, 0, 10, 8, 0, 3),
                       doctest::Contains("CosineScheduler: expected warmup_iters + freeze_iters <= total_iters"), hg::Error);
  hg::optim::CosineScheduler scheduler(1, 0.25, 4);
  CHECK(scheduler[100] == 0.25);
  CHECK_THROWS_WITH_AS(scheduler[-1], doctest::Contains("non-negative iteration"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::optim::teacher_temperature_schedule(0.04, 0.07, 30, 10),
                       doctest::Contains("teacher_temperature_schedule: expected warmup_epochs in [0, epochs = 10], got 30"),
                       hg::Error);
}

TEST_CASE_TEMPLATE("clip_gradients scales only the parameters above the clip", T, float, double) {
  auto a = hg::zeros<T>({2}).requires_grad_(), b = hg::zeros<T>({2}).requires_grad_(), c = hg::zeros<T>({3}).requires_grad_();
  a.set_grad(hg::tensor<T>({T(3), T(4)}));  // norm 5 > 2: scaled by 2 / (5 + 1e-6)
  b.set_grad(hg::tensor<T>({T(0.6), T(0.8)}).expand({2}));  // norm 1: kept
  hg::optim::NamedParameters<T> named{{"a", a}, {"b", b}, {"c", c}};  // c has no grad: skipped
  auto norms = hg::optim::clip_gradients(named, 2.0);
  REQUIRE(norms.size() == 2);
  CHECK(norms[0] == doctest::Approx(5.0));
  CHECK(norms[1] == doctest::Approx(1.0));
  check_close(a.grad(), {3 * 2 / (5 + 1e-6), 4 * 2 / (5 + 1e-6)}, 1e-6);
  check_close(b.grad(), {0.6, 0.8}, 1e-7);
  CHECK_FALSE(c.grad().defined());
  CHECK_THROWS_WITH_AS(hg::optim::clip_gradients(named, 0.0), doctest::Contains("clip_gradients: expected a positive clip"),
                       hg::Error);

  // A strided gradient (a user's set_grad of a view) is replaced by a scaled contiguous copy.
  auto m = hg::zeros<T>({2, 2}).requires_grad_();
  auto base = hg::tensor<T>({T(3), T(0), T(4), T(0)}).reshape({2, 2});
  m.set_grad(base.mT());
  hg::optim::clip_grad_norm(std::vector<hg::Tensor<T>>{m}, 1.0);
  check_close(m.grad(), {3 / (5 + 1e-6), 4 / (5 + 1e-6), 0, 0}, 1e-6);
  check_close(base, {3, 0, 4, 0}, 0);

  hg::optim::cancel_gradients_last_layer<T>(0, {{"head.last_layer.weight_g", a}, {"head.mlp.0.weight", b}}, 1);
  CHECK_FALSE(a.grad().defined());
  CHECK(b.grad().defined());
  hg::optim::cancel_gradients_last_layer<T>(1, {{"head.last_layer.weight_v", b}}, 1);
  CHECK(b.grad().defined());
}

TEST_CASE_TEMPLATE("ema_update over several tensors, modules, and its errors", T, float, double) {
  // 3 tensors, one large enough to span several chunks; reference: a naive loop in double.
  std::vector<hg::Tensor<T>> teacher{random_t<T>({3, 5}, 1), random_t<T>({40000}, 2), random_t<T>({1}, 3)};
  // the first student is a non-contiguous view
  std::vector<hg::Tensor<T>> student{random_t<T>({3, 5}, 4, true), random_t<T>({40000}, 5), random_t<T>({1}, 6)};
  std::vector<std::vector<double>> expected;
  for (size_t i = 0; i < 3; ++i) {
    auto t = teacher[i].to_vector();
    auto s = student[i].to_vector();
    std::vector<double> e;
    for (size_t k = 0; k < t.size(); ++k) e.push_back(0.99 * double(t[k]) + 0.01 * double(s[k]));
    expected.push_back(e);
  }
  hg::optim::ema_update(teacher, student, 0.99);
  for (size_t i = 0; i < 3; ++i) check_close(teacher[i], expected[i], std::is_same_v<T, float> ? 1e-6 : 1e-14);

  CHECK_THROWS_WITH_AS(hg::optim::ema_update(teacher, {student[0]}, 0.9),
                       doctest::Contains("ema_update: expected as many teacher as student parameters, got 3 and 1"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::optim::ema_update(teacher, {student[0], student[2], student[1]}, 0.9),
                       doctest::Contains("ema_update: parameter 1: teacher shape [40000] differs from student shape [1]"),
                       hg::Error);

  TinyModel<T> teacher_model, student_model;
  hg::NoGradGuard no_grad;
  for (auto& [name, p] : student_model.named_parameters()) p.fill_(T(1));
  for (auto& [name, p] : teacher_model.named_parameters()) p.fill_(T(0));
  hg::optim::ema_update(teacher_model, student_model, 0.75);
  for (auto& [name, p] : teacher_model.named_parameters()) check_close(p, std::vector<double>(size_t(p.numel()), 0.25), 1e-7);
}

namespace {
// Parameter names as a DINOv2 backbone (2 blocks) and head spell them.
struct Dinov2Like : hg::nn::Module<double> {
  std::vector<std::pair<std::string, hg::Tensor<double>>> params;
  Dinov2Like() {
    const std::vector<std::pair<std::string, hg::Shape>> specs{
        {"cls_token", {1, 1, 4}}, {"pos_embed", {1, 5, 4}}, {"register_tokens", {1, 2, 4}},
        {"patch_embed.proj.weight", {4, 3, 2, 2}}, {"patch_embed.proj.bias", {4}}, {"blocks.0.norm1.weight", {4}},
        {"blocks.0.attn.qkv.weight", {12, 4}}, {"blocks.0.attn.qkv.bias", {12}}, {"blocks.1.ls1.gamma", {4}},
        {"blocks.1.mlp.fc1.weight", {8, 4}}, {"norm.weight", {4}}, {"norm.bias", {4}}, {"head.last_layer.weight", {3, 4}}};
    for (const auto& [name, shape] : specs) params.emplace_back(name, hg::zeros<double>(shape).requires_grad_());
  }
  void visit(hg::nn::ModuleVisitor<double>& v) override {
    for (auto& [name, p] : params) v.parameter(name, p);
  }
};
}  // namespace

TEST_CASE("make_dinov2_param_groups matches dinov2's get_params_groups_with_decay + fuse_params_groups") {
  // Expected groups printed by dinov2/utils/param_groups.py (lr_decay_rate 0.9, patch_embed_lr_mult
  // 0.2) on the same names, with 2 blocks.
  Dinov2Like model;
  auto groups = hg::optim::make_dinov2_param_groups(model, 2, 0.9, 0.2, 0.04);
  struct Expected {
    double lr_multiplier, wd_multiplier;
    bool is_last_layer;
    std::vector<std::string> names;
  };
  const std::vector<Expected> expected{
      {0.7290000000000001, 1, false, {"cls_token", "pos_embed", "register_tokens"}},
      {0.1458, 1, false, {"patch_embed.proj.weight"}},
      {0.1458, 0, false, {"patch_embed.proj.bias"}},
      {0.81, 0, false, {"blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"}},
      {0.81, 1, false, {"blocks.0.attn.qkv.weight"}},
      {0.9, 0, false, {"blocks.1.ls1.gamma"}},
      {0.9, 1, false, {"blocks.1.mlp.fc1.weight"}},
      {1.0, 0, false, {"norm.weight", "norm.bias"}},
      {1.0, 1, true, {"head.last_layer.weight"}}};
  REQUIRE(groups.size() == expected.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    CAPTURE(i);
    CHECK(groups[i].lr_multiplier == doctest::Approx(expected[i].lr_multiplier).epsilon(1e-15));
    CHECK(groups[i].wd_multiplier == expected[i].wd_multiplier);
    CHECK(groups[i].is_last_layer == expected[i].is_last_layer);
    CHECK(groups[i].names == expected[i].names);
    CHECK(groups[i].weight_decay == 0.04);
  }
  // DINOv2's apply_optim_scheduler: lr (last_layer_lr for the last layer) and wd, times the multipliers.
  hg::optim::AdamW<double> opt(groups);
  opt.set_lr(1e-3, 0.0);
  opt.set_weight_decay(0.1);
  CHECK(opt.groups()[1].effective_lr() == doctest::Approx(1e-3 * 0.1458));
  CHECK(opt.groups()[8].effective_lr() == 0);
  CHECK(opt.groups()[2].effective_weight_decay() == 0);
  CHECK(opt.groups()[4].effective_weight_decay() == doctest::Approx(0.1));
  // A head (no blocks): every multiplier is 1.
  for (const auto& g : hg::optim::make_dinov2_param_groups(model, 0, 0.9, 1.0)) CHECK(g.lr_multiplier == 1);
}
