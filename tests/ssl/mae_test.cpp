// MAE (ssl/mae.hpp): sin-cos tables, patchify, masking, init, the loss's gradients, the
// reconstruction PNG, and one full pretraining step against facebookresearch/mae's code run by
// scripts/gen_mae_fixtures.py (models_mae.py + timm Block/PatchEmbed, AdamW over timm's
// weight-decay groups, at the lr of the reference's lr_sched).
//
// Tolerances of the step (max|ours - reference| / max|reference| per tensor, since element-wise
// ratios mean nothing near 0):
//   float32 loss, pred, every gradient: 1e-5. The reference's own float32 step differs from its
//     float64 step by up to 2.3e-6 in these measures (printed by the script), so 1e-5 leaves
//     room for our different but equally exact summation order, and no more.
//   float64: 1e-12 (measured ~2e-15: rounding of ~1e-16 through two blocks; the margin allows
//     another summation order, e.g. a different GEMM blocking, without hiding a real bug).
//   AdamW on the reference's gradients: 1e-6 in float32 (one rounded update per element).
//   AdamW on our own gradients: per element, 1e-6·max|p| plus the provable propagation of our
//     gradient error δ through the first Adam step, lr·δ·eps/(|g| + eps)², because for |g|
//     near eps (the attention's k-bias gradient is 0 exactly, ~1e-11 in float32 rounding) the
//     step g/(|g| + eps) turns rounding noise into an O(lr) difference in either implementation.
#include "test_util.hpp"

#include <algorithm>
#include <filesystem>
#include <histograd/ssl/mae.hpp>
#include <map>
#include <set>

namespace {

const std::string kDir = std::string(HISTOGRAD_FIXTURES_DIR) + "/mae/";

// The fixture script's settings (scripts/gen_mae_fixtures.py).
constexpr double kMaskRatio = 0.75, kWeightDecay = 0.05, kBeta1 = 0.9, kBeta2 = 0.95, kAdamEps = 1e-8;

template <class T>
double relative_error(const hg::Tensor<T>& ours, const hg::Tensor<T>& reference) {
  REQUIRE(ours.shape() == reference.shape());
  const auto a = ours.contiguous().to_vector(), b = reference.contiguous().to_vector();
  double diff = 0, scale = 1e-300;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / scale;
}

template <class T>
hg::nn::StateDict<T> load_weights_as(const std::string& path) {
  hg::nn::StateDict<T> out;
  for (auto& [name, t] : hg::io::load_safetensors<float>(path)) out.emplace(name, t.template to<T>());
  return out;
}

// The reference's two AdamW groups (timm param_groups_weight_decay): no decay, then decay.
template <class T>
struct TwoGroupAdamW {
  hg::optim::AdamW<T> no_decay, decay;
  TwoGroupAdamW(hg::nn::ParameterGroups<T> groups, double lr)
      : no_decay(groups.no_decay, lr, kBeta1, kBeta2, kAdamEps, 0.0),
        decay(groups.decay, lr, kBeta1, kBeta2, kAdamEps, kWeightDecay) {}
  void step() {
    no_decay.step();
    decay.step();
  }
};

hg::nn::ParameterGroups<float> groups_of(hg::ssl::MaskedAutoencoderViT<float>& m) { return m.parameter_groups(); }

}  // namespace

TEST_CASE("get_2d_sincos_pos_embed matches util/pos_embed.py and its layout") {
  hg::io::SafetensorsFile file(kDir + "pos_embed.safetensors");
  const auto reference = file.get<double>("sincos_48_5_cls");
  const auto ours = hg::ssl::get_2d_sincos_pos_embed<double>(48, 5, true);
  CHECK(ours.shape() == hg::Shape{26, 48});
  CHECK(relative_error(ours, reference) <= 1e-15);
  // Hand values: the CLS row is 0; token (row 1, col 2) of a 8-wide table is
  // [sin 2, sin 0.02, cos 2, cos 0.02, sin 1, sin 0.01, cos 1, cos 0.01] (omega 1, 1/100).
  const auto small = hg::ssl::get_2d_sincos_pos_embed<double>(8, 3, true);
  for (int64_t k = 0; k < 8; ++k) CHECK(small.at({0, k}) == 0.0);
  check_close(small.select(0, 1 + 1 * 3 + 2),
              {std::sin(2.0), std::sin(0.02), std::cos(2.0), std::cos(0.02), std::sin(1.0), std::sin(0.01),
               std::cos(1.0), std::cos(0.01)},
              1e-15);
  CHECK(hg::ssl::get_2d_sincos_pos_embed<float>(8, 3, false).shape() == hg::Shape{9, 8});
  CHECK_THROWS_WITH_AS(hg::ssl::get_2d_sincos_pos_embed<float>(6, 3), doctest::Contains("get_2d_sincos_pos_embed: expected an embedding dim divisible by 4"),
                       hg::Error);
}

TEST_CASE_TEMPLATE("patchify and unpatchify follow 'nchpwq->nhwpqc'", T, float, double) {
  const int64_t n = 2, c = 3, p = 4, h = 3, side = h * p;
  const auto imgs = random_t<T>({n, c, side, side}, 11);
  const auto patches = hg::ssl::patchify(imgs, p);
  REQUIRE(patches.shape() == hg::Shape{n, h * h, p * p * c});
  for (int64_t s = 0; s < n; ++s)
    for (int64_t ph = 0; ph < h; ++ph)
      for (int64_t pw = 0; pw < h; ++pw)
        for (int64_t r = 0; r < p; ++r)
          for (int64_t q = 0; q < p; ++q)
            for (int64_t ch = 0; ch < c; ++ch)
              CHECK(patches.at({s, ph * h + pw, (r * p + q) * c + ch}) == imgs.at({s, ch, ph * p + r, pw * p + q}));
  const auto back = hg::ssl::unpatchify(patches, p, c);
  CHECK(relative_error(back, imgs) == 0.0);
  // A non-contiguous input gives the same patches.
  const auto transposed = random_t<T>({n, c, side, side}, 11, true);
  CHECK(relative_error(hg::ssl::patchify(transposed, p), hg::ssl::patchify(transposed.contiguous(), p)) == 0.0);
  CHECK_THROWS_WITH_AS(hg::ssl::patchify(random_t<T>({1, 3, 12, 8}, 1), 4), doctest::Contains("patchify: expected square images"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::unpatchify(random_t<T>({1, 8, 48}, 1), 4, 3),
                       doctest::Contains("unpatchify: expected a square number of patches, got 8"), hg::Error);
}

TEST_CASE_TEMPLATE("random_masking keeps the smallest noise, restores order, and gathers", T, float, double) {
  // One sample, L = 5, mask ratio 0.6 keeps int(5 * 0.4) = 2 tokens: the two smallest noises
  // (tokens 3 and 1). ids_shuffle = [3, 1, 4, 0, 2], so ids_restore = [3, 1, 4, 0, 2]^-1.
  const auto noise = hg::from_vector<T>({0.7, 0.2, 0.9, 0.1, 0.5}, {1, 5});
  const auto x = hg::arange<T>(0, 10).reshape({1, 5, 2});
  const auto masking = hg::ssl::random_masking(x, 0.6, noise);
  CHECK(masking.ids_keep.to_vector() == std::vector<int64_t>{3, 1});
  CHECK(masking.ids_restore.to_vector() == std::vector<int64_t>{3, 1, 4, 0, 2});
  check_close(masking.mask, {1, 0, 1, 0, 1}, 0);
  check_close(masking.x_masked, {6, 7, 2, 3}, 0);
  // The kept tokens carry the gradient back to their positions.
  auto leaf = hg::randn<double>({2, 6, 3});
  const auto noise2 = hg::rand<double>({2, 6});
  check_gradients([&](const std::vector<hg::Tensor<double>>& in) {
    return hg::ssl::random_masking(in[0], 0.5, noise2).x_masked * in[0].narrow(1, 0, 3);
  }, {leaf});
  CHECK_THROWS_WITH_AS(hg::ssl::random_masking(x, 0.6, hg::rand<T>({1, 4})),
                       doctest::Contains("random_masking: expected noise of shape [1, 5], got [1, 4]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::random_masking(x, 1.0, noise), doctest::Contains("random_masking: expected a mask ratio in [0, 1)"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::random_masking(x, 0.9, noise), doctest::Contains("random_masking: mask ratio 0.9 keeps no token of 5"),
                       hg::Error);
}

TEST_CASE("MaskedAutoencoderViT: the reference's keys, groups and init distributions") {
  hg::ssl::MaskedAutoencoderViT<float> model(hg::ssl::mae_tiny(), 7);
  // Strict load of the reference's state dict: every key and shape is the reference's.
  const auto weights = load_weights_as<float>(kDir + "weights.safetensors");
  auto ours = model.state_dict();
  std::set<std::string> our_keys, their_keys;
  for (const auto& kv : ours) our_keys.insert(kv.first);
  for (const auto& kv : weights) their_keys.insert(kv.first);
  CHECK(our_keys == their_keys);
  // The fixed sin-cos embeddings are the reference's init (float64 rounded once to float32).
  CHECK(relative_error(model.pos_embed, weights.at("pos_embed")) <= 1e-7);
  CHECK(relative_error(model.decoder_pos_embed, weights.at("decoder_pos_embed")) <= 1e-7);
  // ... and not trainable.
  for (const auto& [name, p] : model.named_parameters()) CHECK(name.find("pos_embed") == std::string::npos);

  // timm's add_weight_decay: 31 tensors without decay (1-D, *.bias), 17 with (incl. the tokens).
  const auto groups = groups_of(model);
  CHECK(groups.no_decay.size() == 31);
  CHECK(groups.decay.size() == 17);
  CHECK(std::count(groups.decay_names.begin(), groups.decay_names.end(), "cls_token") == 1);
  CHECK(std::count(groups.decay_names.begin(), groups.decay_names.end(), "mask_token") == 1);

  // Init distributions (initialize_weights) on a wider model so the statistics mean something.
  hg::ssl::MAEConfig config = hg::ssl::mae_tiny();
  config.embed_dim = 64;
  config.decoder_embed_dim = 32;
  hg::ssl::MaskedAutoencoderViT<double> wide(config, 3);
  auto check_uniform = [](const hg::Tensor<double>& w, double bound) {
    const auto v = w.to_vector();
    double sq = 0, top = 0;
    for (double x : v) {
      sq += x * x;
      top = std::max(top, std::abs(x));
    }
    CHECK(top <= bound);
    CHECK(top >= 0.9 * bound);
    CHECK(std::sqrt(sq / double(v.size())) == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.08));
  };
  check_uniform(wide.blocks[0].attn.qkv.weight, std::sqrt(6.0 / (64 + 192)));
  check_uniform(wide.decoder_pred.weight, std::sqrt(6.0 / (32 + 192)));
  check_uniform(wide.patch_embed.proj.weight, std::sqrt(6.0 / (192 + 64)));
  check_uniform(wide.patch_embed.proj.bias, 1.0 / std::sqrt(192.0));
  for (double b : std::get<hg::nn::Mlp<double>>(wide.blocks[0].mlp).fc1.bias.to_vector()) CHECK(b == 0.0);
  for (double g : wide.decoder_norm.weight.to_vector()) CHECK(g == 1.0);
  const auto tokens = hg::cat<double>({wide.cls_token.flatten(), wide.mask_token.flatten()});
  double sq = 0;
  for (double t : tokens.to_vector()) sq += t * t;
  CHECK(std::sqrt(sq / double(tokens.numel())) == doctest::Approx(0.02).epsilon(0.3));
  // The same seed gives the same model.
  hg::ssl::MaskedAutoencoderViT<double> again(config, 3);
  CHECK(relative_error(again.decoder_pred.weight, wide.decoder_pred.weight) == 0.0);
  // Presets.
  CHECK(hg::ssl::mae_vit_base_patch16().embed_dim == 768);
  CHECK(hg::ssl::mae_vit_large_patch16(true).norm_pix_loss);
  CHECK(hg::ssl::mae_vit_huge_patch14().patch_size == 14);
  CHECK(hg::ssl::mae_vit_huge_patch14().decoder_num_heads == 16);
}

namespace {

// One reference step: load, forward with the reference's noise, backward, AdamW; compare.
template <class T>
void check_step(const std::string& step_file, bool norm_pix_loss, const hg::Tensor<float>& imgs32,
                const hg::Tensor<float>& noise32, double tol) {
  INFO("fixture " << step_file);
  hg::io::SafetensorsFile ref(kDir + step_file);
  hg::ssl::MaskedAutoencoderViT<T> model(hg::ssl::mae_tiny(norm_pix_loss));
  model.load_state_dict(load_weights_as<T>(kDir + "weights.safetensors"));
  const auto imgs = imgs32.template to<T>(), noise = noise32.template to<T>();

  model.train();
  const auto out = model.forward(imgs, kMaskRatio, noise);
  hg::io::SafetensorsFile inputs(kDir + "step_normpix1_f32.safetensors");
  CHECK(out.ids_restore.to_vector() == inputs.get<int64_t>("ids_restore").to_vector());
  CHECK(relative_error(out.mask, inputs.get<T>("mask")) == 0.0);
  const double loss_error = relative_error(out.loss.reshape({1}), ref.get<T>("loss"));
  const double pred_error = relative_error(out.pred, ref.get<T>("pred"));
  MESSAGE(step_file << ": loss " << double(out.loss.item()) << ", relative errors loss " << loss_error << ", pred "
                    << pred_error);
  CHECK(loss_error <= tol);
  CHECK(pred_error <= tol);

  out.loss.backward();
  const double lr = ref.get<double>("lr").item();
  double worst_grad = 0;
  std::map<std::string, hg::Tensor<T>> ours_grad, before;
  for (auto& [name, p] : model.named_parameters()) {
    INFO("grad." << name);
    REQUIRE(p.grad().defined());
    const double e = relative_error(p.grad(), ref.get<T>("grad." + name));
    worst_grad = std::max(worst_grad, e);
    CHECK(e <= tol);
    ours_grad[name] = p.grad().clone();
    before[name] = p.detach().clone();
  }
  MESSAGE(step_file << ": worst gradient relative error " << worst_grad);

  // AdamW, end to end on our gradients.
  {
    TwoGroupAdamW<T> optimizer(model.parameter_groups(), lr);
    optimizer.step();
    for (auto& [name, p] : model.named_parameters()) {
      INFO("updated." << name);
      const auto expected = ref.get<T>("updated." + name).contiguous().to_vector();
      const auto got = p.contiguous().to_vector(), g_ours = ours_grad[name].to_vector();
      const auto g_ref = ref.get<T>("grad." + name).contiguous().to_vector();
      double scale = 0;
      for (T v : expected) scale = std::max(scale, std::abs(double(v)));
      const double rounding = (std::is_same_v<T, float> ? 1e-6 : 1e-13) * scale;
      size_t bad = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const double a = double(g_ours[i]), b = double(g_ref[i]), small = std::min(std::abs(a), std::abs(b)) + kAdamEps;
        const double bound = rounding + lr * std::abs(a - b) * kAdamEps / (small * small) * 1.01;
        if (std::abs(double(got[i]) - double(expected[i])) > bound) ++bad;
      }
      CHECK(bad == 0);
    }
  }
  // AdamW alone, from the reference's gradients and the loaded weights.
  {
    hg::NoGradGuard no_grad;
    for (auto& [name, p] : model.named_parameters()) {
      p.copy_(before[name]);
      p.set_grad(ref.get<T>("grad." + name).clone());
    }
    TwoGroupAdamW<T> optimizer(model.parameter_groups(), lr);
    optimizer.step();
    const double adam_tol = std::is_same_v<T, float> ? 1e-6 : 1e-13;
    for (auto& [name, p] : model.named_parameters()) {
      INFO("updated from reference grads: " << name);
      CHECK(relative_error(p, ref.get<T>("updated." + name)) <= adam_tol);
    }
  }
}

}  // namespace

TEST_CASE("one MAE pretraining step matches facebookresearch/mae (float32, norm_pix_loss off and on)") {
  for (bool norm_pix : {false, true}) {
    const std::string file = norm_pix ? "step_normpix1_f32.safetensors" : "step_normpix0_f32.safetensors";
    hg::io::SafetensorsFile ref(kDir + file);
    check_step<float>(file, norm_pix, ref.get<float>("imgs"), ref.get<float>("noise"), 1e-5);
  }
}

TEST_CASE("one MAE pretraining step matches facebookresearch/mae in float64") {
  hg::io::SafetensorsFile ref(kDir + "step_normpix1_f32.safetensors");
  check_step<double>("step_normpix1_f64.safetensors", true, ref.get<float>("imgs"), ref.get<float>("noise"), 1e-12);
}

TEST_CASE("mae_loss: values, and gradcheck w.r.t. pred (and imgs through the norm-pix target)") {
  const int64_t n = 2, p = 2, side = 6, length = 9, width = p * p * 3;
  const auto imgs = random_input({n, 3, side, side}, 21);
  const auto mask = hg::from_vector<double>({1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0}, {n, length});
  const auto pred = random_input({n, length, width}, 22);
  // A naive loop of the reference's forward_loss.
  for (bool norm_pix : {false, true}) {
    double total = 0, count = 0;
    const auto target = hg::ssl::patchify(imgs, p);
    for (int64_t s = 0; s < n; ++s)
      for (int64_t l = 0; l < length; ++l) {
        double mu = 0, var = 0, err = 0;
        for (int64_t k = 0; k < width; ++k) mu += target.at({s, l, k}) / width;
        for (int64_t k = 0; k < width; ++k) var += (target.at({s, l, k}) - mu) * (target.at({s, l, k}) - mu) / (width - 1);
        for (int64_t k = 0; k < width; ++k) {
          const double t = norm_pix ? (target.at({s, l, k}) - mu) / std::sqrt(var + 1e-6) : target.at({s, l, k});
          err += (pred.at({s, l, k}) - t) * (pred.at({s, l, k}) - t) / width;
        }
        total += err * mask.at({s, l});
        count += mask.at({s, l});
      }
    check_close(hg::ssl::mae_loss(imgs, pred, mask, p, norm_pix), {total / count}, 1e-13);
    check_gradients([&](const std::vector<hg::Tensor<double>>& in) { return hg::ssl::mae_loss(in[1], in[0], mask, p, norm_pix); },
                    {random_input({n, length, width}, 23, true), random_input({n, 3, side, side}, 24)});
  }
  CHECK_THROWS_WITH_AS(hg::ssl::mae_loss(imgs, pred.narrow(1, 0, 4), mask, p, false),
                       doctest::Contains("mae_loss: expected pred of shape [2, 9, 12]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::mae_loss(imgs, pred, mask.narrow(1, 0, 4), p, false),
                       doctest::Contains("mae_loss: expected a mask of shape [2, 9], got [2, 4]"), hg::Error);
}

TEST_CASE("gradcheck of a tiny MAE's whole forward (double)") {
  hg::ssl::MAEConfig config;
  config.name = "mae_gradcheck";
  config.img_size = 8;
  config.patch_size = 4;
  config.embed_dim = 8;
  config.depth = 1;
  config.num_heads = 2;
  config.decoder_embed_dim = 4;
  config.decoder_depth = 1;
  config.decoder_num_heads = 2;
  config.mlp_ratio = 2;
  config.norm_pix_loss = true;
  hg::ssl::MaskedAutoencoderViT<double> model(config, 5);
  const auto noise = hg::rand<double>({2, 4});
  const auto imgs = random_input({2, 3, 8, 8}, 31);
  // Through the images (encoder, masking, decoder, and the norm-pix target) and a weight on
  // each side of the mask-token insertion.
  check_gradients([&](const std::vector<hg::Tensor<double>>& in) {
    model.mask_token = in[1];
    model.blocks[0].attn.qkv.weight = in[2];
    model.decoder_embed.bias = in[3];
    return model.forward(in[0], 0.5, noise).loss;
  }, {imgs, model.mask_token.detach().clone(), model.blocks[0].attn.qkv.weight.detach().clone(),
      model.decoder_embed.bias.detach().clone() + 0.1});
}

TEST_CASE("MaskedAutoencoderViT forward: masks from the generator, shapes, errors") {
  hg::ssl::MaskedAutoencoderViT<float> model(hg::ssl::mae_tiny(), 1);
  const auto imgs = random_t<float>({3, 3, 32, 32}, 41);
  hg::Generator a(9), b(9);
  const auto first = model.forward(imgs, 0.75, a), second = model.forward(imgs, 0.75, b);
  CHECK(first.pred.shape() == hg::Shape{3, 16, 192});
  CHECK(first.mask.to_vector() == second.mask.to_vector());
  CHECK(first.loss.item() == second.loss.item());
  for (int64_t s = 0; s < 3; ++s) CHECK(hg::sum(first.mask.select(0, s)).item() == 12.0f);
  CHECK_THROWS_WITH_AS(model.forward(random_t<float>({1, 3, 16, 16}, 1)),
                       doctest::Contains("MaskedAutoencoderViT: 'mae_tiny' expected images [N, 3, 32, 32], got [1, 3, 16, 16]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(model.forward(imgs, 0.75, hg::rand<float>({3, 15})),
                       doctest::Contains("random_masking: expected noise of shape [3, 16], got [3, 15]"), hg::Error);
  hg::ssl::MAEConfig bad = hg::ssl::mae_tiny();
  bad.img_size = 30;
  CHECK_THROWS_WITH_AS(hg::ssl::MaskedAutoencoderViT<float>{bad},
                       doctest::Contains("MaskedAutoencoderViT: config 'mae_tiny': expected img_size a multiple of patch_size"),
                       hg::Error);
}

TEST_CASE("save_reconstruction_png draws input | masked | pasted reconstruction | reconstruction") {
  const std::array<double, 3> mean{0.485, 0.456, 0.406}, stdev{0.229, 0.224, 0.225};
  const int64_t n = 2, p = 8, side = 32, length = 16;
  // Images whose pixels stay inside [0, 1] once un-normalised, so no clamping hides an error.
  hg::Generator gen(4);
  auto unit = hg::rand<double>({n, 3, side, side}, gen) * 0.8 + 0.1;
  auto imgs = unit.clone();
  for (int64_t c = 0; c < 3; ++c) {
    auto plane = imgs.narrow(1, c, 1);
    plane.copy_((unit.narrow(1, c, 1) - mean[size_t(c)]) / stdev[size_t(c)]);
  }
  auto mask = hg::zeros<double>({n, length});
  for (int64_t l = 0; l < length; l += 3) {
    mask.at({0, l}) = 1;
    mask.at({1, (l + 1) % length}) = 1;
  }
  // With norm_pix_loss, predicting the standardised target exactly must give the input back.
  const auto target = hg::ssl::patchify(imgs, p);
  const auto pred = (target - hg::mean(target, {-1}, true)) / hg::sqrt(hg::var(target, {-1}, 1, true) + 1e-6);
  const std::string path = (std::filesystem::temp_directory_path() / "histograd_mae_reconstruction.png").string();
  hg::ssl::save_reconstruction_png(path, imgs, mask, pred, mean, stdev, true);
  const auto picture = hg::io::read_image(path);
  std::filesystem::remove(path);
  REQUIRE(picture.width == 4 * side + 3 * 2);
  REQUIRE(picture.height == n * side + 2);
  auto pixel = [&](int64_t row, int64_t panel, int64_t y, int64_t x, int64_t c) {
    return int(picture.pixels[size_t(((row * (side + 2) + y) * picture.width + panel * (side + 2) + x) * 3 + c)]);
  };
  int64_t checked_grey = 0;
  for (int64_t s = 0; s < n; ++s)
    for (int64_t y = 0; y < side; ++y)
      for (int64_t x = 0; x < side; ++x) {
        const bool removed = mask.at({s, (y / p) * 4 + x / p}) != 0;
        for (int64_t c = 0; c < 3; ++c) {
          const int expected = int(std::lround(unit.at({s, c, y, x}) * 255));
          CHECK(pixel(s, 0, y, x, c) == expected);
          if (removed) {
            CHECK(pixel(s, 1, y, x, c) == 128);
            ++checked_grey;
          } else {
            CHECK(pixel(s, 1, y, x, c) == expected);
          }
          CHECK(std::abs(pixel(s, 2, y, x, c) - expected) <= 1);  // the reconstruction is exact up to 1e-6
          CHECK(std::abs(pixel(s, 3, y, x, c) - expected) <= 1);
        }
      }
  CHECK(checked_grey == 2 * 6 * p * p * 3);
  CHECK_THROWS_WITH_AS(hg::ssl::save_reconstruction_png(path, imgs, mask.narrow(1, 0, 8), pred, mean, stdev, true),
                       doctest::Contains("save_reconstruction_png: expected a mask of shape [2, 16]"), hg::Error);
  CHECK(!std::filesystem::exists(path));
}
