// DINO: the head, the multi-crop wrapper, the loss, and one complete training step against the
// reference repository's own train_one_epoch (scripts/gen_dino_fixtures.py; fixtures in float64).
//
// Tolerances, as norm-wise relative errors ||ours - ref||₂ / ||ref||₂ per tensor (element-wise
// ratios are meaningless near 0), on outputs, loss, centre, every gradient, the clip norms, and
// the student's and teacher's parameters after the step and their updates (after - before):
//  - the step in double against the float64 fixture: 1e-10. Both sides evaluate the same
//    formulas in double and differ only in summation order (GEMM blocking; our loss folds the
//    pairs sharing a student view into one fused cross-entropy); measured: <= 1e-14 on values
//    and gradients, <= 5e-13 on updates (AdamW's first step divides by |g| + 1e-8).
//  - the step in float32 from the same weights rounded to float: 1e-5; measured: <= 3e-7 on
//    outputs, loss and centre, <= 2e-6 on gradients and parameters. Updates get 1e-4 (AdamW's
//    first step amplifies the error of tiny gradients; see tol_update), and, as an update of a
//    float32 parameter is resolved only to the storage's rounding (~6e-8 of a LayerNorm weight
//    of ~1, against updates of ~1e-4), check_update allows 4·2^-24 of the values beside that.
#include "test_util.hpp"

#include <cmath>
#include <cstdlib>
#include <type_traits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <histograd/io/safetensors.hpp>
#include <histograd/optim/clip.hpp>
#include <histograd/optim/ema.hpp>
#include <histograd/optim/optimizer.hpp>
#include <histograd/optim/schedule.hpp>
#include <histograd/ssl/dino.hpp>

namespace {

namespace ssl = hg::ssl;
namespace models = hg::models;

const std::string kDir = std::string(HISTOGRAD_FIXTURES_DIR) + "/dino/";

template <class T>
double relative_error(const hg::Tensor<T>& actual, const hg::Tensor<T>& expected) {
  std::vector<T> a = actual.contiguous().to_vector(), e = expected.contiguous().to_vector();
  REQUIRE(a.size() == e.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - double(e[i])) * (double(a[i]) - double(e[i]));
    ref += double(e[i]) * double(e[i]);
  }
  return ref == 0 ? std::sqrt(diff) : std::sqrt(diff / ref);
}

template <class T>
void check_relative(const std::string& what, const hg::Tensor<T>& actual, const hg::Tensor<T>& expected, double tol) {
  REQUIRE_MESSAGE(actual.shape() == expected.shape(), what, ": shape ", hg::to_string(actual.shape()), " vs ",
                  hg::to_string(expected.shape()));
  const double err = relative_error(actual, expected);
  INFO(what << ": relative error " << err << " (tolerance " << tol << ")");
  if (std::getenv("HG_DINO_VERBOSE")) MESSAGE(what << ": relative error " << err);
  CHECK(err <= tol);
}

// An update (after - before) of a float32 parameter cannot be resolved below the storage's own
// rounding: before and after are each rounded to 2^-24 of the value, so the check allows that
// beside `tol` of the update's norm.
template <class T>
void check_update(const std::string& what, const hg::Tensor<T>& after, const hg::Tensor<T>& before,
                  const hg::Tensor<T>& expected_after, double tol) {
  const hg::Tensor<T> ours = after - before, expected = expected_after - before;
  const double resolution = std::is_same_v<T, float> ? 4.0 * std::ldexp(1.0, -24) : 0.0;
  const double norm_expected = relative_error(expected, hg::zeros<T>(expected.shape()));
  const double norm_values = relative_error(expected_after, hg::zeros<T>(expected.shape()));
  const double err = relative_error(ours, expected) * norm_expected;
  const double allowed = tol * norm_expected + resolution * norm_values;
  INFO(what << ": |ours - ref| = " << err << ", |ref| = " << norm_expected << ", allowed " << allowed);
  if (std::getenv("HG_DINO_VERBOSE")) MESSAGE(what << ": update error " << err / norm_expected << " of the update");
  CHECK(err <= allowed);
}

// The tiny DINO of the fixtures: ViT embed 16, depth 2, heads 2, patch 8 at 32 px.
models::ViTConfig tiny_vit() {
  models::ViTConfig c;
  c.name = "dino_tiny";
  c.image_size = 32;
  c.patch_size = 8;
  c.embed_dim = 16;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_hidden = 64;
  c.pos_resample = models::PosResample::DinoOffset;
  return c;
}

// The fixture's __metadata__ values are JSON: numbers, booleans and lists of names.
struct Meta {
  std::map<std::string, std::string> raw;
  double number(const std::string& key) const { return std::stod(raw.at(key)); }
  int64_t integer(const std::string& key) const { return std::stoll(raw.at(key)); }
  bool flag(const std::string& key) const { return raw.at(key) == "true"; }
  std::vector<std::string> names(const std::string& key) const {
    std::vector<std::string> out;
    const std::string& s = raw.at(key);
    for (size_t i = 0; (i = s.find('"', i)) != std::string::npos;) {
      const size_t end = s.find('"', i + 1);
      out.push_back(s.substr(i + 1, end - i - 1));
      i = end + 1;
    }
    return out;
  }
};

template <class T>
void run_fixture_step(const std::string& case_name, bool float_run) {
  // One tolerance per precision (see the header); float32 updates add the storage resolution
  // (check_update).
  const double tol = float_run ? 1e-5 : 1e-10;
  // AdamW's first step maps g to lr·g/(|g| + 1e-8): for entries with |g| below ~1e-7, float32's
  // absolute gradient error (~1e-6 of the tensor's norm, ~1e-9 here) moves the update by a
  // visible fraction of lr, so float32 updates are held to 1e-4 (measured <= 9e-5 on fc1 of
  // case0); the parameter values themselves stay within 1e-5.
  const double tol_update = float_run ? 1e-4 : 1e-10;
  hg::io::SafetensorsFile file(kDir + case_name + ".safetensors");
  Meta meta{file.metadata()};
  auto get = [&](const std::string& key) { return file.get<double>(key).template to<T>().contiguous(); };

  models::ViTConfig vit = tiny_vit();
  REQUIRE(meta.integer("embed_dim") == vit.embed_dim);
  REQUIRE(meta.integer("depth") == vit.depth);
  ssl::DINOHeadConfig head;
  head.out_dim = meta.integer("out_dim");
  head.hidden_dim = meta.integer("hidden_dim");
  head.bottleneck_dim = meta.integer("bottleneck_dim");
  head.nlayers = meta.integer("nlayers");
  head.norm_last_layer = meta.flag("norm_last_layer");
  const int64_t local_crops = meta.integer("local_crops"), ncrops = 2 + local_crops;
  ssl::DINOLossConfig loss_config;
  loss_config.ncrops = ncrops;
  loss_config.warmup_teacher_temp = meta.number("warmup_teacher_temp");
  loss_config.teacher_temp = meta.number("teacher_temp");
  loss_config.warmup_teacher_temp_epochs = meta.integer("warmup_teacher_temp_epochs");
  loss_config.nepochs = meta.integer("epochs");
  ssl::DINO<T> dino = ssl::build_dino<T>(vit, head, loss_config, 3);

  hg::nn::StateDict<T> initial;
  for (const auto& key : file.keys())
    if (key.rfind("before/", 0) == 0) initial.emplace(key.substr(7), get(key));
  dino.student.load_state_dict(initial);  // strict: every key of the reference, and no other
  dino.teacher.load_state_dict(initial);
  dino.loss.center.copy_(get("center_before"));

  // Schedules at this iteration, as train_dino builds them.
  const int64_t epoch = meta.integer("epoch"), it = meta.integer("global_iteration");
  const int64_t epochs = meta.integer("epochs"), niter = meta.integer("niter_per_ep"), batch = meta.integer("batch");
  const auto at = [it](const std::vector<double>& schedule) { return schedule.at(static_cast<size_t>(it)); };
  const double lr = at(hg::optim::cosine_schedule(meta.number("lr") * double(batch) / 256.0, meta.number("min_lr"),
                                                  epochs, niter, meta.integer("warmup_epochs")));
  const double wd = at(hg::optim::cosine_schedule(meta.number("weight_decay"), meta.number("weight_decay_end"), epochs, niter));
  const double momentum = at(hg::optim::cosine_schedule(meta.number("momentum_teacher"), 1.0, epochs, niter));
  CHECK(std::abs(lr - meta.number("lr_value")) <= 1e-15);
  CHECK(std::abs(wd - meta.number("wd_value")) <= 1e-15);
  CHECK(std::abs(momentum - meta.number("momentum_value")) <= 1e-15);
  CHECK(dino.loss.teacher_temperature(epoch) == doctest::Approx(meta.number("teacher_temp_value")).epsilon(1e-15));

  // Parameter groups: the same decayed names as utils.get_params_groups.
  hg::optim::AdamW<T> optimizer(hg::optim::make_param_groups(dino.student, meta.number("weight_decay"), 0.0,
                                                              hg::optim::DecayRule::dino_reference));
  REQUIRE(optimizer.groups().size() == 2);
  CHECK(optimizer.groups()[0].names == meta.names("decay_names"));

  std::vector<hg::Tensor<T>> crops, globals;
  for (int64_t i = 0; i < ncrops; ++i) crops.push_back(get("crop/" + std::to_string(i)));
  globals = {crops[0], crops[1]};

  // Forward: teacher on the two global views, student on all, loss (moves the centre).
  hg::Tensor<T> teacher_output;
  {
    hg::NoGradGuard no_grad;
    teacher_output = dino.teacher.forward(globals);
  }
  hg::Tensor<T> student_output = dino.student.forward(crops);
  hg::Tensor<T> loss = dino.loss.forward(student_output, teacher_output, epoch);
  check_relative("teacher_output", teacher_output, get("teacher_output"), tol);
  check_relative("student_output", student_output, get("student_output"), tol);
  check_relative("loss", loss.reshape({1}), get("loss"), tol);
  check_relative("center_after", dino.loss.center, get("center_after"), tol);

  // Backward: every gradient the reference had, and no other.
  dino.student.zero_grad();
  loss.backward();
  std::vector<std::string> with_grad;
  for (auto& [name, p] : dino.student.named_parameters()) {
    if (!p.grad().defined()) continue;
    with_grad.push_back(name);
    REQUIRE_MESSAGE(file.contains("grad/" + name), "no reference gradient for ", name);
    check_relative("grad/" + name, p.grad(), get("grad/" + name), tol);
  }
  CHECK(with_grad == meta.names("clip_names"));

  // clip_gradients(clip), then cancel_gradients_last_layer(epoch, freeze_last_layer).
  std::vector<double> norms = hg::optim::clip_gradients(dino.student.named_parameters(), meta.number("clip_grad"));
  check_relative("clip_norms", hg::from_vector<double>(norms, {int64_t(norms.size())}).template to<T>(),
                 get("clip_norms"), tol);
  hg::optim::cancel_gradients_last_layer(epoch, dino.student.named_parameters(), meta.integer("freeze_last_layer"));

  // AdamW over get_params_groups' two groups; the schedule sets lr on both, weight decay on
  // group 0 only.
  optimizer.set_lr(lr);
  optimizer.set_weight_decay(wd);
  optimizer.step();
  CHECK(optimizer.groups()[1].weight_decay == 0.0);

  // EMA of every teacher parameter (head included) toward the student.
  hg::optim::ema_update(dino.teacher, dino.student, momentum);

  // Parameters after the step, and the update itself (after - before), which is small beside
  // the values and would hide in them.
  for (auto& [name, p] : dino.student.named_parameters()) {
    const hg::Tensor<T> expected = get("student_after/" + name), before = get("before/" + name);
    check_relative("student_after/" + name, p, expected, tol);
    if (relative_error(expected, before) > 0)
      check_update("student update " + name, p, before, expected, tol_update);
    else
      CHECK_MESSAGE(relative_error(p, before) == 0, name, " moved but the reference's did not");
  }
  for (auto& [name, p] : dino.teacher.named_parameters()) {
    const hg::Tensor<T> expected = get("teacher_after/" + name), before = get("before/" + name);
    check_relative("teacher_after/" + name, p, expected, tol);
    if (relative_error(expected, before) > 0)
      check_update("teacher update " + name, p, before, expected, tol_update);
  }
}

}  // namespace

TEST_CASE("DINO parity: one training step matches main_dino.train_one_epoch (float64)") {
  for (const char* c : {"case0", "case1"}) {
    SUBCASE(c) { run_fixture_step<double>(c, false); }
  }
}

TEST_CASE("DINO parity: the same step in float32") {
  for (const char* c : {"case0", "case1"}) {
    SUBCASE(c) { run_fixture_step<float>(c, true); }
  }
}

namespace {

// The reference's loss written out per pair (main_dino.py DINOLoss.forward) with plain loops.
double naive_dino_loss(const std::vector<double>& student, const std::vector<double>& teacher,
                       const std::vector<double>& center, int64_t ncrops, int64_t batch, int64_t classes,
                       double teacher_temp, double student_temp) {
  auto row_softmax = [&](const double* x, const double* shift, double temp, bool log) {
    std::vector<double> y(static_cast<size_t>(classes));
    double mx = -1e300;
    for (int64_t k = 0; k < classes; ++k) mx = std::max(mx, (x[k] - (shift ? shift[k] : 0)) / temp);
    double total = 0;
    for (int64_t k = 0; k < classes; ++k) total += std::exp((x[k] - (shift ? shift[k] : 0)) / temp - mx);
    for (int64_t k = 0; k < classes; ++k) {
      const double z = (x[k] - (shift ? shift[k] : 0)) / temp - mx;
      y[size_t(k)] = log ? z - std::log(total) : std::exp(z) / total;
    }
    return y;
  };
  double total = 0;
  int64_t terms = 0;
  for (int64_t iq = 0; iq < 2; ++iq)
    for (int64_t v = 0; v < ncrops; ++v) {
      if (v == iq) continue;
      double mean = 0;
      for (int64_t b = 0; b < batch; ++b) {
        auto q = row_softmax(&teacher[size_t((iq * batch + b) * classes)], center.data(), teacher_temp, false);
        auto ls = row_softmax(&student[size_t((v * batch + b) * classes)], nullptr, student_temp, true);
        double h = 0;
        for (int64_t k = 0; k < classes; ++k) h -= q[size_t(k)] * ls[size_t(k)];
        mean += h / double(batch);
      }
      total += mean;
      ++terms;
    }
  return total / double(terms);
}

ssl::DINOLossConfig loss_config(int64_t ncrops) {
  ssl::DINOLossConfig c;
  c.ncrops = ncrops;
  c.warmup_teacher_temp = 0.04;
  c.teacher_temp = 0.07;
  c.warmup_teacher_temp_epochs = 3;
  c.nepochs = 5;
  return c;
}

}  // namespace

TEST_CASE("DINOLoss: the reference's per-pair average, the centre update, and the gradient") {
  for (int64_t ncrops : {2, 3, 6}) {
    CAPTURE(ncrops);
    const int64_t batch = 3, classes = 7;
    ssl::DINOLoss<double> loss(classes, loss_config(ncrops));
    loss.center.copy_(random_input({1, classes}, 5) * 0.3);
    const std::vector<double> center = loss.center.to_vector();
    hg::Tensor<double> student = random_input({ncrops * batch, classes}, 11), teacher = random_input({2 * batch, classes}, 12);
    for (int64_t epoch = 0; epoch < 5; ++epoch) {
      const double expected = naive_dino_loss(student.to_vector(), teacher.to_vector(), center, ncrops, batch, classes,
                                              loss.teacher_temperature(epoch), 0.1);
      CHECK(loss.compute(student, teacher, epoch).item() == doctest::Approx(expected).epsilon(1e-13));
    }
    // forward also moves the centre: 0.9 c + 0.1 mean over the teacher's rows.
    const std::vector<double> t = teacher.to_vector();
    loss.forward(student, teacher, 1);
    std::vector<double> expected_center(size_t(classes), 0.0);
    for (int64_t k = 0; k < classes; ++k) {
      double mean = 0;
      for (int64_t r = 0; r < 2 * batch; ++r) mean += t[size_t(r * classes + k)];
      expected_center[size_t(k)] = center[size_t(k)] * 0.9 + mean / double(2 * batch) * 0.1;
    }
    check_close(loss.center, expected_center, 1e-14);
    // Differentiable in the student only (the teacher's distribution is a constant target);
    // gradcheck on a non-contiguous student.
    hg::Tensor<double> strided = random_input({ncrops * batch, classes}, 13, true);
    check_gradients([&](const std::vector<hg::Tensor<double>>& in) { return loss.compute(in[0], teacher, 2); },
                    {strided});
    hg::Tensor<double> teacher_leaf = teacher.detach().requires_grad_(true);
    loss.compute(strided.detach().requires_grad_(true), teacher_leaf, 0).backward();
    CHECK_FALSE(teacher_leaf.grad().defined());
  }
}

TEST_CASE("DINOLoss: teacher temperature warm-up per epoch as np.linspace, then constant") {
  ssl::DINOLoss<float> loss(4, loss_config(4));
  // np.linspace(0.04, 0.07, 3) = [0.04, 0.055, 0.07], then 0.07 for epochs 3 and 4.
  CHECK(loss.teacher_temperature(0) == 0.04);
  CHECK(loss.teacher_temperature(1) == doctest::Approx(0.055).epsilon(1e-15));
  CHECK(loss.teacher_temperature(2) == 0.07);
  CHECK(loss.teacher_temperature(4) == 0.07);
  CHECK_THROWS_WITH_AS(loss.teacher_temperature(5), doctest::Contains("DINOLoss: expected epoch in [0, 5)"), hg::Error);
  CHECK(loss.state_dict().count("center") == 1);
}

TEST_CASE("DINOLoss: shape mistakes are named") {
  ssl::DINOLoss<float> loss(8, loss_config(4));
  hg::Tensor<float> teacher = hg::zeros<float>({4, 8});
  CHECK_THROWS_WITH_AS(loss.forward(hg::zeros<float>({6, 8}), teacher, 0),
                       doctest::Contains("DINOLoss: expected student_output [4·2, 8]"), hg::Error);
  CHECK_THROWS_WITH_AS(loss.forward(hg::zeros<float>({8, 8}), hg::zeros<float>({3, 8}), 0),
                       doctest::Contains("DINOLoss: expected teacher_output [2·B, 8]"), hg::Error);
  CHECK_THROWS_WITH_AS(loss.forward(hg::zeros<float>({8, 8}), teacher, 9),
                       doctest::Contains("DINOLoss: expected epoch in [0, 5)"), hg::Error);
  CHECK_THROWS_WITH_AS(ssl::DINOLoss<float>(8, loss_config(1)), doctest::Contains("DINOLoss: expected out_dim > 0 and ncrops >= 2"),
                       hg::Error);
}

TEST_CASE("WeightNormLinear: rows of norm g, gradients to v and g") {
  hg::Generator gen(4);
  ssl::WeightNormLinear<double> layer(5, 3, gen);
  layer.weight_g = hg::abs(random_input({3, 1}, 21)).detach().requires_grad_(true);
  const std::vector<double> w = layer.weight().to_vector(), g = layer.weight_g.to_vector();
  for (int64_t r = 0; r < 3; ++r) {
    double sq = 0;
    for (int64_t c = 0; c < 5; ++c) sq += w[size_t(r * 5 + c)] * w[size_t(r * 5 + c)];
    CHECK(std::sqrt(sq) == doctest::Approx(g[size_t(r)]).epsilon(1e-14));
  }
  check_gradients(
      [&](const std::vector<hg::Tensor<double>>& in) {
        ssl::WeightNormLinear<double> l = layer;
        l.weight_g = in[1];
        l.weight_v = in[2];
        return l.forward(in[0]);
      },
      {random_input({4, 5}, 22, true), layer.weight_g.detach(), random_input({3, 5}, 23)});
}

TEST_CASE("DINOHead: the reference's keys and shapes, frozen g, one-layer form, no BatchNorm") {
  hg::Generator gen(1);
  ssl::DINOHeadConfig config{.out_dim = 10, .norm_last_layer = true, .nlayers = 3, .hidden_dim = 6, .bottleneck_dim = 4};
  ssl::DINOHead<float> head(8, config, gen);
  std::map<std::string, hg::Shape> shapes;
  for (auto& [name, t] : head.state_dict()) shapes[name] = t.shape();
  const std::map<std::string, hg::Shape> expected{
      {"mlp.0.weight", {6, 8}}, {"mlp.0.bias", {6}},   {"mlp.2.weight", {6, 6}},
      {"mlp.2.bias", {6}},      {"mlp.4.weight", {4, 6}}, {"mlp.4.bias", {4}},
      {"last_layer.weight_g", {10, 1}}, {"last_layer.weight_v", {10, 4}}};
  CHECK(shapes == expected);
  CHECK_FALSE(head.last_layer.weight_g.requires_grad());
  for (float v : head.mlp[1].bias.to_vector()) CHECK(v == 0.0f);
  // Unit-norm prototypes while g is 1: the logits of a unit input are cosines, within [-1, 1].
  hg::Tensor<float> out = head.forward(hg::randn<float>({5, 8}, gen));
  CHECK(out.shape() == hg::Shape{5, 10});
  for (float v : out.to_vector()) CHECK(std::abs(v) <= 1.0f + 1e-6f);

  config.nlayers = 1;
  config.norm_last_layer = false;
  ssl::DINOHead<float> single(8, config, gen);
  CHECK(single.state_dict().count("mlp.weight") == 1);
  CHECK(single.last_layer.weight_g.requires_grad());
  config.use_bn = true;
  CHECK_THROWS_WITH_AS(ssl::DINOHead<float>(8, config, gen), doctest::Contains("DINOHead: use_bn=true"), hg::Error);
  CHECK_THROWS_WITH_AS(head.forward(hg::zeros<float>({2, 7})), doctest::Contains("DINOHead: expected input [N, 8]"),
                       hg::Error);
}

TEST_CASE("MultiCropWrapper: one backbone pass per run of equal widths, rows crop-major, head once") {
  ssl::DINOHeadConfig head{.out_dim = 12, .hidden_dim = 8, .bottleneck_dim = 4};
  ssl::DINO<double> dino = ssl::build_dino<double>(tiny_vit(), head, loss_config(5), 9);
  hg::Generator gen(2);
  auto crop = [&](int64_t side) { return hg::randn<double>({2, 3, side, side}, gen); };
  for (std::vector<int64_t> sides : {std::vector<int64_t>{32, 32, 16, 16, 16}, std::vector<int64_t>{32, 16, 32}}) {
    std::vector<hg::Tensor<double>> crops;
    for (int64_t s : sides) crops.push_back(crop(s));
    hg::Tensor<double> out = dino.student.forward(crops);
    std::vector<hg::Tensor<double>> one_by_one;
    for (const auto& c : crops) one_by_one.push_back(dino.student.backbone.forward(c));
    check_close(out, dino.student.head.forward(hg::cat<double>(one_by_one, 0)), 1e-12);
  }
  CHECK_THROWS_WITH_AS(dino.student.forward(std::vector<hg::Tensor<double>>{}),
                       doctest::Contains("MultiCropWrapper: expected at least one crop"), hg::Error);
}

TEST_CASE("build_dino: teacher starts as the student, without gradients, drop-path or a trainable g") {
  models::ViTConfig vit = tiny_vit();
  vit.drop_path_rate = 0.1;
  ssl::DINOHeadConfig head{.out_dim = 12, .norm_last_layer = false, .hidden_dim = 8, .bottleneck_dim = 4};
  ssl::DINO<float> dino = ssl::build_dino<float>(vit, head, loss_config(4), 5);
  auto student = dino.student.state_dict(), teacher = dino.teacher.state_dict();
  REQUIRE(student.size() == teacher.size());
  for (auto& [name, t] : student) check_close(teacher.at(name), t, 0.0);
  for (auto& [name, p] : dino.teacher.named_parameters()) CHECK_FALSE(p.requires_grad());
  CHECK(dino.student.head.last_layer.weight_g.requires_grad());
  CHECK(dino.student.backbone.config().drop_path_rate == 0.1);
  CHECK(dino.teacher.backbone.config().drop_path_rate == 0.0);
  CHECK(dino.loss.center.shape() == hg::Shape{1, 12});
  CHECK(student.count("head.last_layer.weight_v") == 1);
  CHECK(student.count("backbone.blocks.1.mlp.fc2.weight") == 1);
}

TEST_CASE("the DINO fixtures can fail: wrong teacher temperature, timm's decay split") {
  hg::io::SafetensorsFile file(kDir + "case1.safetensors");
  Meta meta{file.metadata()};
  ssl::DINOLossConfig config = loss_config(2 + meta.integer("local_crops"));
  config.nepochs = meta.integer("epochs");
  ssl::DINOLoss<double> loss(meta.integer("out_dim"), config);
  loss.center.copy_(file.get<double>("center_before"));
  const hg::Tensor<double> s = file.get<double>("student_output"), t = file.get<double>("teacher_output");
  const hg::Tensor<double> reference = file.get<double>("loss");
  const int64_t epoch = meta.integer("epoch");
  CHECK(relative_error(loss.compute(s, t, epoch).reshape({1}), reference) <= 1e-12);
  CHECK(relative_error(loss.compute(s, t, epoch + 1).reshape({1}), reference) > 1e-3);
  // Module::parameter_groups (timm's rule) exempts pos_embed and cls_token; DINO decays them.
  ssl::DINOHeadConfig head{.out_dim = 64, .hidden_dim = 32, .bottleneck_dim = 16};
  ssl::DINO<double> dino = ssl::build_dino<double>(tiny_vit(), head, config, 1);
  CHECK(dino.student.parameter_groups().decay_names != meta.names("decay_names"));
}
