// DINOv2 objective: block masks replayed from the reference's recorded draws, Sinkhorn-Knopp,
// centring, the DINO/iBOT/KoLeo losses, and one complete training step (loss terms, every
// gradient, clipping, AdamW on DINOv2's parameter groups, EMA teacher, centres) against
// scripts/gen_dinov2_fixtures.py, which runs the reference modules of facebookresearch/dinov2.
//
// Errors are per tensor: max|ours - reference| / max|reference| (a gradient's small elements are
// judged against the tensor's scale, as an update would see them). The reference step runs in
// float64 from float32 weights and inputs; parameters and gradients are stored rounded to float32.
#include <histograd/io/safetensors.hpp>
#include <histograd/ssl/dinov2.hpp>

#include "test_util.hpp"

namespace ssl = hg::ssl;

namespace {

const std::string kDir = std::string(HISTOGRAD_FIXTURES_DIR) + "/dinov2/";

// Python's random draws as the fixture recorded them, handed out in the same order.
class ReplayDraws : public ssl::MaskDraws {
 public:
  ReplayDraws(std::vector<double> uniforms, std::vector<int64_t> below, std::vector<int64_t> bounds = {})
      : uniforms_(std::move(uniforms)), below_(std::move(below)), bounds_(std::move(bounds)) {}
  ReplayDraws(const hg::io::SafetensorsFile& f, const std::string& prefix)
      : ReplayDraws(f.get<double>(prefix + "draws_random").to_vector(),
                    f.contains(prefix + "draws_randbelow") ? f.get<int64_t>(prefix + "draws_randbelow").to_vector()
                                                           : std::vector<int64_t>{},
                    f.contains(prefix + "draws_randbelow_bounds")
                        ? f.get<int64_t>(prefix + "draws_randbelow_bounds").to_vector()
                        : std::vector<int64_t>{}) {}
  double random() override {
    REQUIRE_MESSAGE(next_uniform_ < uniforms_.size(), "the C++ generator asked for more random() draws than Python");
    return uniforms_[next_uniform_++];
  }
  int64_t randbelow(int64_t n) override {
    REQUIRE_MESSAGE(next_below_ < below_.size(), "the C++ generator asked for more randbelow() draws than Python");
    if (!bounds_.empty()) CHECK(bounds_[next_below_] == n);
    return below_[next_below_++];
  }
  bool exhausted() const { return next_uniform_ == uniforms_.size() && next_below_ == below_.size(); }

 private:
  std::vector<double> uniforms_;
  std::vector<int64_t> below_, bounds_;
  size_t next_uniform_ = 0, next_below_ = 0;
};

template <class T>
double relative_error(const hg::Tensor<T>& got, const hg::Tensor<double>& expected) {
  REQUIRE(got.shape() == expected.shape());
  const std::vector<T> g = got.contiguous().to_vector();
  const std::vector<double> e = expected.contiguous().to_vector();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    diff = std::max(diff, std::abs(double(g[i]) - e[i]));
    scale = std::max(scale, std::abs(e[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

template <class T>
void check_relative(const std::string& what, const hg::Tensor<T>& got, const hg::Tensor<double>& expected, double tol,
                    double* worst = nullptr) {
  const double err = relative_error(got, expected);
  if (worst) *worst = std::max(*worst, err);
  INFO(what << ": relative error " << err << " (tolerance " << tol << ")");
  CHECK(err <= tol);
}

}  // namespace

// ----------------------------------------------------------------------------------- masks

TEST_CASE("dinov2 masks: collate_data_and_cast and MaskingGenerator replayed from the reference's draws") {
  hg::io::SafetensorsFile f(kDir + "masking.safetensors");
  int cases = 0;
  for (const auto& key : f.keys()) {
    const std::string suffix = "masks_weight";
    if (key.rfind("collate_", 0) != 0 || key.size() < suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string prefix = key.substr(0, key.size() - suffix.size());
    CAPTURE(prefix);
    const hg::Tensor<uint8_t> expected_masks = f.get<uint8_t>(prefix + "masks");
    const int64_t images = expected_masks.size(0), tokens = expected_masks.size(1);
    const auto grid = static_cast<int64_t>(std::lround(std::sqrt(double(tokens))));
    ssl::MaskingGenerator generator(grid, grid, std::nullopt, 4, 0.5 * double(grid * grid));
    ReplayDraws draws(f, prefix);
    const ssl::MaskBatch batch = ssl::sample_masks(images, tokens, generator, draws);
    CHECK(draws.exhausted());
    CHECK(batch.masks == expected_masks.to_vector());
    CHECK(batch.mask_indices == f.get<int64_t>(prefix + "mask_indices").to_vector());
    CHECK(batch.masks_weight == f.get<float>(prefix + "masks_weight").to_vector());  // bit for bit (float32)
    CHECK(batch.upperbound == f.get<int64_t>(prefix + "upperbound").to_vector()[0]);
    ++cases;
  }
  CHECK(cases == 13);

  for (int i = 0; i < 4; ++i) {
    const std::string prefix = "generator_" + std::to_string(i) + "_";
    CAPTURE(prefix);
    const std::vector<double> a = f.get<double>(prefix + "args").to_vector();
    const auto grid = static_cast<int64_t>(a[0]), target = static_cast<int64_t>(a[1]);
    ssl::MaskingGenerator generator(grid, grid, double(target), 4,
                                    a[2] < 0 ? std::nullopt : std::optional<double>(a[2]));
    ReplayDraws draws(f, prefix);
    CHECK(generator(target, draws) == f.get<uint8_t>(prefix + "mask").to_vector());
    CHECK(draws.exhausted());
  }

  for (int n = 1; n <= 32; ++n) {
    CAPTURE(n);
    CHECK(ssl::linspace_float32(0.1, 0.5, n + 1) == f.get<float>("linspace_" + std::to_string(n)).to_vector());
  }
}

TEST_CASE("dinov2 masks: histograd's generator source is deterministic and respects the bounds") {
  ssl::MaskingGenerator generator(14, 14, std::nullopt, 4, 98);
  hg::Generator a(7), b(7);
  ssl::GeneratorMaskDraws draws_a(a), draws_b(b);
  const ssl::MaskBatch first = ssl::sample_masks(32, 196, generator, draws_a);
  const ssl::MaskBatch second = ssl::sample_masks(32, 196, generator, draws_b);
  CHECK(first.masks == second.masks);
  // 16 of 32 images masked with ratios in [0.1, 0.5]; block masking may fall short, never over.
  int64_t masked_images = 0;
  for (int64_t i = 0; i < 32; ++i) {
    int64_t count = 0;
    for (int64_t j = 0; j < 196; ++j) count += first.masks[static_cast<size_t>(i * 196 + j)];
    masked_images += count > 0;
    CHECK(count <= 98);
  }
  CHECK(masked_images >= 14);
  CHECK(masked_images <= 16);
  CHECK(first.n_masked_patches() == static_cast<int64_t>(first.masks_weight.size()));
  CHECK(first.upperbound >= first.n_masked_patches());

  CHECK_THROWS_WITH_AS(ssl::sample_masks(4, 100, generator, draws_a), doctest::Contains("sample_masks: expected num_tokens"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(ssl::MaskingGenerator(0, 4, 3.0), doctest::Contains("MaskingGenerator: expected a positive grid"),
                       hg::Error);
}

// ----------------------------------------------------------------------------------- losses

TEST_CASE_TEMPLATE("dinov2 losses: Sinkhorn-Knopp, centring, DINO, iBOT and KoLeo against the reference", T, float,
                   double) {
  hg::io::SafetensorsFile f(kDir + "components.safetensors");
  auto get = [&](const std::string& k) { return f.get<T>(k); };
  auto ref = [&](const std::string& k) { return f.get<double>(k); };
  // The reference's Sinkhorn-Knopp is float32 in both precisions; exp may differ by an ulp.
  const double sk_tol = 2e-6, tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;

  check_relative("sinkhorn dino", ssl::sinkhorn_knopp(get("sk_scores"), 0.07), ref("sk_dino"), sk_tol);
  check_relative("sinkhorn ibot", ssl::sinkhorn_knopp(get("sk_scores"), 0.05, 6.0), ref("sk_ibot"), sk_tol);
  hg::Tensor<T> rows = hg::sum(ssl::sinkhorn_knopp(get("sk_scores"), 0.07), {1});
  check_close(rows, std::vector<double>(6, 1.0), 1e-5);

  hg::Tensor<T> center = get("center_before");
  check_relative("softmax centring", ssl::softmax_center_teacher(get("sk_scores"), center, 0.04), ref("center_probs"),
                 tol);
  ssl::DINOv2LossConfig config;
  config.dino_out_dim = config.ibot_out_dim = 10;
  config.n_local_crops = 0;
  ssl::DINOv2Loss<T> loss(config);
  loss.dino_center = center;
  const hg::Tensor<T> scores = get("sk_scores");
  loss.teacher_targets(scores, hg::Tensor<T>(), 0.04);
  check_relative("centre EMA", loss.dino_center, ref("center_after"), tol);

  hg::Tensor<T> student = get("ce_student").clone().requires_grad_(true);
  const hg::Tensor<T> teacher = get("ce_teacher");
  hg::Tensor<T> ce = ssl::dino_cross_entropy<T>({student.select(0, 0), student.select(0, 1), student.select(0, 2)},
                                                {teacher.select(0, 0), teacher.select(0, 1)});
  ce.backward();
  check_relative("dino cross-entropy", ce, ref("ce_loss"), tol);
  check_relative("dino cross-entropy grad", student.grad(), ref("ce_grad"), tol);

  hg::Tensor<T> patches = get("ibot_student").clone().requires_grad_(true);
  hg::Tensor<T> ibot = ssl::ibot_masked_loss(patches, get("ibot_teacher"), get("ibot_masks_weight"), 3);
  ibot.backward();
  check_relative("ibot forward_masked", ibot, ref("ibot_loss"), tol);
  check_relative("ibot grad", patches.grad(), ref("ibot_grad"), tol);

  hg::Tensor<T> x = get("koleo_x").clone().requires_grad_(true);
  hg::Tensor<T> koleo = ssl::koleo_loss(x);
  koleo.backward();
  check_relative("koleo", koleo, ref("koleo_loss"), tol);
  check_relative("koleo grad", x.grad(), ref("koleo_grad"), std::is_same_v<T, float> ? 1e-5 : 1e-10);
}

TEST_CASE("dinov2 losses: gradcheck of KoLeo, the DINO and iBOT cross-entropies and the head") {
  using D = double;
  // KoLeo on a non-contiguous input (the neighbour choice is fixed near the point).
  check_gradients([](const std::vector<hg::Tensor<D>>& in) { return ssl::koleo_loss(in[0]); },
                  {random_input({6, 5}, 1, true)});
  check_gradients(
      [](const std::vector<hg::Tensor<D>>& in) {
        const hg::Tensor<D> teacher = hg::softmax(random_input({2, 3, 7}, 3), -1);
        return ssl::dino_cross_entropy<D>({in[0].select(0, 0), in[0].select(0, 1)},
                                          {teacher.select(0, 0), teacher.select(0, 1)}, 0.1);
      },
      {random_input({2, 3, 7}, 2)});
  check_gradients(
      [](const std::vector<hg::Tensor<D>>& in) {
        const hg::Tensor<D> teacher = hg::softmax(random_input({5, 7}, 5), -1);
        return ssl::ibot_masked_loss(in[0], teacher, hg::tensor<D>({0.5, 0.5, 1, 1.0 / 3, 1.0 / 3}), 4);
      },
      {random_input({5, 7}, 4, true)});
  hg::Generator gen(3);
  ssl::DINOv2Head<D> head(6, 9, gen, 3, 8, 4);
  check_gradients(
      [&head](const std::vector<hg::Tensor<D>>& in) {
        ssl::DINOv2Head<D> h = head;
        h.weight_g = in[1];
        h.weight_v = in[2];
        return hg::sum(hg::square(h.forward(in[0])));
      },
      {random_input({3, 6}, 6, true), random_input({9, 1}, 7), random_input({9, 4}, 8, true)});
}

TEST_CASE("dinov2 head: keys, shapes and weight norm") {
  hg::Generator gen(1);
  ssl::DINOv2Head<float> head(32, 64, gen, 3, 48, 16);
  std::vector<std::string> names;
  for (auto& [name, p] : head.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight",
                                          "mlp.4.bias", "last_layer.weight_g", "last_layer.weight_v"});
  // With g = 1 every prototype row has unit norm.
  hg::Tensor<float> w = head.last_layer_weight();
  check_close(hg::sum(hg::square(w), {1}), std::vector<double>(64, 1.0), 1e-5);
  CHECK(head.forward(hg::randn<float>({5, 32}, gen)).shape() == hg::Shape{5, 64});
  ssl::DINOv2Head<float> single(32, 8, gen, 1);
  CHECK(single.named_parameters()[0].first == "mlp.weight");
}

TEST_CASE("dinov2 losses: bad input names the op") {
  CHECK_THROWS_WITH_AS(ssl::koleo_loss(hg::randn<float>({1, 4})), doctest::Contains("koleo_loss: expected features [B, D] with B >= 2"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(ssl::sinkhorn_knopp(hg::randn<float>({4}), 0.07),
                       doctest::Contains("sinkhorn_knopp: expected non-empty teacher scores [B, K]"), hg::Error);
  CHECK_THROWS_WITH_AS(ssl::ibot_masked_loss(hg::randn<float>({3, 4}), hg::randn<float>({3, 5}), hg::ones<float>({3}), 2),
                       doctest::Contains("ibot_masked_loss: expected student and teacher [M, K]"), hg::Error);
  ssl::DINOv2LossConfig config;
  config.n_global_crops = 3;
  CHECK_THROWS_WITH_AS(ssl::DINOv2Loss<float>{config}, doctest::Contains("DINOv2Loss: expected 2 global crops"), hg::Error);
  config.n_global_crops = 2;
  config.dino_out_dim = 8;
  ssl::DINOv2Loss<float> loss(config);
  CHECK_THROWS_WITH_AS(loss.teacher_targets(hg::randn<float>({3, 8}), hg::Tensor<float>(), 0.04),
                       doctest::Contains("DINOv2Loss: expected teacher CLS outputs [2·b, 8]"), hg::Error);
}

// ----------------------------------------------------------------------------------- one step

namespace {

hg::models::ViTConfig tiny_dinov2() {
  hg::models::ViTConfig c;
  c.name = "dinov2_tiny";
  c.image_size = 32;
  c.patch_size = 8;
  c.embed_dim = 32;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_hidden = 128;
  c.num_register_tokens = 1;
  c.layer_scale_init = 1e-5;
  c.layout = hg::models::TokenLayout::ClsRegPatchesPosBeforeReg;
  c.pos_resample = hg::models::PosResample::DinoOffset;  // training config: offset 0.1, no antialias
  c.keys = hg::models::KeyStyle::Dinov2Hub;
  return c;
}

template <class T>
hg::nn::StateDict<T> with_prefix(const hg::io::SafetensorsFile& f, const std::string& prefix, bool keep_ibot_head) {
  hg::nn::StateDict<T> out;
  for (const auto& key : f.keys())
    if (key.rfind(prefix, 0) == 0) {
      const std::string name = key.substr(prefix.size());
      if (keep_ibot_head || name.rfind("ibot_head.", 0) != 0) out.emplace(name, f.get<T>(key).clone());
    }
  return out;
}

// clip_grad_norm_(clip) per student submodule (one global norm each), AdamW on DINOv2's fused
// parameter groups (one optimizer per group: Adam is per element), then the EMA teacher
// t = t·m + (1 - m)·s over every parameter.
template <class T>
void dinov2_optimizer_step(ssl::DINOv2Networks<T>& student, ssl::DINOv2Networks<T>& teacher, bool separate_head,
                           double lr, double last_layer_lr, double wd, double momentum, double clip,
                           const std::vector<double>& expected_norms, double tol) {
  std::vector<hg::nn::Module<T>*> submodules{&student.backbone, &student.dino_head};
  if (separate_head) submodules.push_back(&student.ibot_head);
  REQUIRE(expected_norms.size() == submodules.size());
  hg::NoGradGuard no_grad;
  for (size_t s = 0; s < submodules.size(); ++s) {
    double squares = 0;
    for (auto& p : submodules[s]->parameters())
      for (T g : p.grad().to_vector()) squares += double(g) * double(g);
    const double norm = std::sqrt(squares);
    CHECK(std::abs(norm - expected_norms[s]) <= tol * expected_norms[s]);
    const double coefficient = std::min(1.0, clip / (norm + 1e-6));
    for (auto& p : submodules[s]->parameters()) {
      hg::Tensor<T> g = p.grad();
      for (int64_t i = 0; i < g.numel(); ++i) g.data()[i] *= static_cast<T>(coefficient);
    }
  }
  std::vector<hg::optim::AdamW<T>> optimizers;
  for (size_t s = 0; s < submodules.size(); ++s) {
    const int64_t blocks = s == 0 ? 2 : 0;
    for (auto& group : ssl::dinov2_param_groups(*submodules[s], blocks, 0.9, 0.2))
      optimizers.emplace_back(group.params, (group.is_last_layer ? last_layer_lr : lr) * group.lr_multiplier, 0.9,
                              0.999, 1e-8, wd * group.wd_multiplier);
  }
  for (auto& optimizer : optimizers) optimizer.step();
  auto student_params = student.named_parameters();
  auto teacher_params = teacher.named_parameters();
  REQUIRE(student_params.size() == teacher_params.size());
  for (size_t i = 0; i < student_params.size(); ++i) {
    T* t = teacher_params[i].second.data();
    const T* s = student_params[i].second.data();
    for (int64_t k = 0, n = student_params[i].second.numel(); k < n; ++k)
      t[k] = t[k] * static_cast<T>(momentum) + static_cast<T>(1 - momentum) * s[k];
  }
}

template <class T>
void run_step_case(const std::string& fixture, bool separate_head, ssl::Centering centering) {
  CAPTURE(fixture);
  hg::io::SafetensorsFile init(kDir + "step_init.safetensors");
  hg::io::SafetensorsFile f(kDir + fixture + ".safetensors");
  const bool is_float = std::is_same_v<T, float>;
  const int64_t dino_k = 64, ibot_k = separate_head ? 40 : 64, n_local = 2, batch = 4;
  const std::vector<double> hyper = f.get<double>("hyper").to_vector();
  const double lr = hyper[0], last_layer_lr = hyper[1], wd = hyper[2], momentum = hyper[3], teacher_temp = hyper[4],
               clip = hyper[5];

  std::optional<int64_t> ibot_dim;
  if (separate_head) ibot_dim = ibot_k;
  ssl::DINOv2Networks<T> student(tiny_dinov2(), dino_k, ibot_dim, 0, 3, 48, 16);
  ssl::DINOv2Networks<T> teacher(tiny_dinov2(), dino_k, ibot_dim, 0, 3, 48, 16);
  student.load_state_dict(with_prefix<T>(init, "student.", separate_head));
  teacher.load_state_dict(with_prefix<T>(init, "teacher.", separate_head));
  teacher.requires_grad_(false);

  // The masks, rebuilt from the draws the reference's collate took.
  ReplayDraws draws(init, "step_");
  const ssl::MaskingGenerator mask_generator(4, 4, std::nullopt, 4, 0.5 * 32 / 8 * 32 / 8);
  const ssl::MaskBatch masks = ssl::sample_masks(2 * batch, 16, mask_generator, draws);
  CHECK(draws.exhausted());
  REQUIRE(masks.masks == init.get<uint8_t>("step_masks").to_vector());
  REQUIRE(masks.upperbound == init.get<int64_t>("step_upperbound").to_vector()[0]);

  ssl::DINOv2LossConfig config;
  config.dino_out_dim = dino_k;
  config.ibot_out_dim = ibot_k;
  config.n_local_crops = n_local;
  config.centering = centering;
  ssl::DINOv2Loss<T> loss(config);
  if (centering == ssl::Centering::Softmax) {
    loss.dino_center = init.get<T>("dino_center_before").clone();
    loss.ibot_center = init.get<T>("ibot_center_before").clone();
  }

  // Forward and backward (SSLMetaArch.forward_backward).
  const ssl::DINOv2LossTerms<T> terms = ssl::dinov2_forward_loss(
      student, teacher, loss, init.get<T>("global_crops"), init.get<T>("local_crops"), masks, teacher_temp);
  // Loss values are stored in float64. Even in float64 the reference resamples pos_embed for the
  // local crops in float32 (interpolate_pos_encoding) and, with SK, computes the targets in
  // float32 (as ours does): hence 1e-9 and 1e-6 in double.
  const double loss_tol = is_float ? 1e-5 : (centering == ssl::Centering::SinkhornKnopp ? 1e-6 : 1e-9);
  double worst_loss = 0;
  check_relative("total", terms.total, f.get<double>("loss_total").reshape({}), loss_tol, &worst_loss);
  check_relative("dino_local", terms.dino_local, f.get<double>("loss_dino_local").reshape({}), loss_tol, &worst_loss);
  check_relative("dino_global", terms.dino_global, f.get<double>("loss_dino_global").reshape({}), loss_tol, &worst_loss);
  check_relative("koleo", terms.koleo, f.get<double>("loss_koleo_display").reshape({}) * 2.0, loss_tol, &worst_loss);
  check_relative("ibot", terms.ibot, f.get<double>("loss_ibot_display").reshape({}) * 2.0, loss_tol, &worst_loss);
  if (centering == ssl::Centering::Softmax) {
    check_relative("dino centre", loss.dino_center, f.get<double>("dino_center_after"), loss_tol);
    check_relative("ibot centre", loss.ibot_center, f.get<double>("ibot_center_after"), loss_tol);
  }
  terms.total.backward();

  // Every gradient (stored as float32: 1e-6 for the double run covers that rounding).
  const double tensor_tol = is_float ? 1e-5 : 1e-6;
  double worst_grad = 0, worst_param = 0, worst_end_to_end = 0;
  for (auto& [name, p] : student.named_parameters()) {
    REQUIRE_MESSAGE(p.grad().defined(), name);
    check_relative("grad." + name, p.grad(), f.get<double>("grad." + name), tensor_tol, &worst_grad);
  }

  // The optimizer part twice from the same weights: (a) on the reference's gradients, every
  // element compared; (b) on our own gradients, end to end. Adam's first step moves an element by
  // about lr · g / (|g| + 1e-8), so where g is at the round-off floor (the key bias of qkv, whose
  // true gradient is 0 because softmax ignores it, or a |g| near 1e-8) either implementation's
  // update is ±lr by the sign of its noise: (b) skips elements with |g| < 1e-4 · max|g| of their
  // tensor and counts them.
  std::map<std::string, hg::Tensor<T>> our_grads;
  for (auto& [name, p] : student.named_parameters()) our_grads[name] = p.grad().clone();
  const std::vector<double> norms = f.get<double>("grad_norms").to_vector();
  for (const bool reference_grads : {true, false}) {
    CAPTURE(reference_grads);
    ssl::DINOv2Networks<T> s(tiny_dinov2(), dino_k, ibot_dim, 0, 3, 48, 16);
    ssl::DINOv2Networks<T> t(tiny_dinov2(), dino_k, ibot_dim, 0, 3, 48, 16);
    s.load_state_dict(with_prefix<T>(init, "student.", separate_head));
    t.load_state_dict(with_prefix<T>(init, "teacher.", separate_head));
    for (auto& [name, p] : s.named_parameters())
      p.set_grad(reference_grads ? f.get<T>("grad." + name).clone() : our_grads.at(name).clone());
    dinov2_optimizer_step(s, t, separate_head, lr, last_layer_lr, wd, momentum, clip, norms, tensor_tol);

    int64_t skipped = 0, total = 0;
    for (const bool is_teacher : {false, true}) {
      const std::string prefix = is_teacher ? "teacher_after." : "student_after.";
      for (auto& [name, p] : (is_teacher ? t : s).named_parameters()) {
        const hg::Tensor<double> expected = f.get<double>(prefix + name);
        if (reference_grads) {
          check_relative(prefix + name, p, expected, tensor_tol, &worst_param);
          continue;
        }
        const std::vector<double> g = f.get<double>("grad." + name).to_vector(), e = expected.to_vector();
        const std::vector<T> got = p.contiguous().to_vector();
        double g_max = 0, scale = 0, diff = 0;
        for (size_t i = 0; i < g.size(); ++i) g_max = std::max(g_max, std::abs(g[i]));
        for (size_t i = 0; i < e.size(); ++i) {
          scale = std::max(scale, std::abs(e[i]));
          ++total;
          if (std::abs(g[i]) < 1e-4 * g_max) {
            ++skipped;
            continue;
          }
          diff = std::max(diff, std::abs(double(got[i]) - e[i]));
        }
        INFO(prefix << name << " end to end: relative error " << diff / scale << " (tolerance " << tensor_tol << ")");
        CHECK(diff / scale <= tensor_tol);
        worst_end_to_end = std::max(worst_end_to_end, diff / scale);
      }
    }
    if (!reference_grads) {
      MESSAGE(fixture << ": end-to-end step skips " << skipped << " of " << total
                      << " elements whose gradient is below 1e-4 of their tensor's largest");
      CHECK(skipped < total / 50);
    }
  }
  MESSAGE(fixture << " (" << (is_float ? "float" : "double") << "): worst relative error: losses " << worst_loss
                  << ", gradients " << worst_grad << ", parameters after the step " << worst_param
                  << " (reference gradients), " << worst_end_to_end << " (our gradients)");
}

}  // namespace

TEST_CASE_TEMPLATE("dinov2 step: Sinkhorn-Knopp teacher, separate iBOT head, one full training step", T, float,
                   double) {
  run_step_case<T>("step_sk_separate", true, ssl::Centering::SinkhornKnopp);
}

TEST_CASE_TEMPLATE("dinov2 step: softmax centring, shared head, one full training step", T, float, double) {
  run_step_case<T>("step_centering_shared", false, ssl::Centering::Softmax);
}

TEST_CASE("dinov2 param groups follow utils/param_groups.py") {
  ssl::DINOv2Networks<float> net(tiny_dinov2(), 8, 8, 0, 3, 16, 8);
  auto groups = ssl::dinov2_param_groups<float>(net.backbone, 2, 0.9, 0.2);
  std::map<std::string, std::pair<double, double>> by_name;
  for (const auto& g : groups)
    for (const auto& n : g.names) by_name[n] = {g.lr_multiplier, g.wd_multiplier};
  CHECK(by_name.at("pos_embed").first == doctest::Approx(0.9 * 0.9 * 0.9));
  CHECK(by_name.at("pos_embed").second == 1.0);  // tokens decay in DINOv2
  CHECK(by_name.at("patch_embed.proj.weight").first == doctest::Approx(0.729 * 0.2));
  CHECK(by_name.at("blocks.0.attn.qkv.weight").first == doctest::Approx(0.81));
  CHECK(by_name.at("blocks.1.ls1.gamma") == std::pair<double, double>{0.9, 0.0});
  CHECK(by_name.at("blocks.1.norm1.weight").second == 0.0);
  CHECK(by_name.at("norm.weight").first == 1.0);
  auto head_groups = ssl::dinov2_param_groups<float>(net.dino_head, 0);
  int last = 0;
  for (const auto& g : head_groups) {
    CHECK(g.lr_multiplier == 1.0);
    last += g.is_last_layer;
  }
  CHECK(last == 1);
}
