// Parity of every ViT preset with its reference implementation (scripts/gen_vit_fixtures.py:
// timm, the DINO / DINOv2 / HIPT repositories' model code, transformers' Dinov2WithRegisters for
// Hibou). Each family runs at its real width with 1-2 blocks on weights computed from a formula
// (synthetic_weights.hpp) under the checkpoint's own key names, so the fixtures hold only
// outputs. Tolerance: float32 relative error <= 1e-5 per tensor, measured as
// max|ours - reference| / max|reference| (element-wise ratios are meaningless near 0).
#include "test_util.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "models/synthetic_weights.hpp"

#include <histograd/models/presets.hpp>
#include <histograd/io/checkpoint.hpp>

// Under AddressSanitizer (CI's -O1 sanitizer build runs these ~6x slower, ~7 min for every case)
// only a subset runs that still takes every code path once: each key style and token layout,
// both resampling variants, SwiGLU packed and fused, attention maps, the .pth reader. Memory errors
// do not depend on the width, which is what the skipped cases add. HISTOGRAD_VIT_PARITY_ALL=1 runs all.
#if defined(__SANITIZE_ADDRESS__)
#define HG_PARITY_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HG_PARITY_SANITIZED 1
#endif
#endif

namespace {

#ifdef HG_PARITY_SANITIZED
const std::set<std::string> kSanitizerSubset = {
    "dino_vits16", "dino_vits16_160x208", "dinov2_vits14", "dinov2_vits14_reg4_224x182", "uni_192x256",
    "virchow2", "hibou_b", "hipt_vit256_16", "hipt_vit4k_256", "hipt_vit4k_256_pth"};
#endif

const std::string kDir = std::string(HISTOGRAD_FIXTURES_DIR) + "/vit/";

TEST_CASE("synthetic weights reproduce the generator script's values bit for bit") {
  // Literals printed by scripts/gen_vit_fixtures.py's synthetic() (numpy), and FNV-1a's
  // published test vectors.
  CHECK(synthetic::fnv1a64("") == 0xCBF29CE484222325ull);
  CHECK(synthetic::fnv1a64("a") == 0xAF63DC4C8601EC8Cull);
  auto t = synthetic::tensor<float>("blocks.0.attn.qkv.weight", {5, 7}, -3, 0.0).to_vector();
  CHECK(t[0] == 0.029207251965999603f);
  CHECK(t[1] == 0.0048704445362091064f);
  CHECK(t[34] == -0.03415051847696304f);
  // Rounded once from the exact double: 1 + (u - 0.5) / 4 is not a float in general.
  auto w = synthetic::tensor<float>("norm.weight", {3}, -2, 1.0).to_vector();
  for (float v : w) CHECK((v >= 0.875f && v < 1.125f));
  auto specs = synthetic::parse_spec("a.b\t2,3\t-3\t0\nnorm.weight\t4\t-2\t1\n");
  REQUIRE(specs.size() == 2);
  CHECK(specs[0].shape == hg::Shape{2, 3});
  CHECK(specs[1].exp == -2);
  CHECK(specs[1].base == 1.0);
  CHECK_THROWS_WITH_AS(synthetic::parse_spec("only\tthree\tfields"), doctest::Contains("synthetic::parse_spec"),
                       hg::Error);
}

double relative_error(const std::vector<float>& ours, const std::vector<float>& reference) {
  REQUIRE(ours.size() == reference.size());
  double max_diff = 0, max_ref = 1e-30;
  for (size_t i = 0; i < ours.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double(ours[i]) - double(reference[i])));
    max_ref = std::max(max_ref, std::abs(double(reference[i])));
  }
  return max_diff / max_ref;
}

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  for (int64_t v : synthetic::parse_shape(text)) out.push_back(v);
  return out;
}

// Rows `rows` of dim -2 of a [..., N, D] tensor, as a flat vector in the fixture's layout.
std::vector<float> take_rows(const hg::Tensor<float>& x, const std::vector<int64_t>& rows) {
  const hg::Shape& s = x.shape();
  const int64_t n = s[s.size() - 2], d = s.back(), outer = x.numel() / (n * d);
  std::vector<float> all = x.contiguous().to_vector(), out;
  out.reserve(static_cast<size_t>(outer * int64_t(rows.size()) * d));
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t r : rows) {
      REQUIRE(r < n);
      const float* row = all.data() + (o * n + r) * d;
      out.insert(out.end(), row, row + d);
    }
  return out;
}

// The L2 norm of every token of [B, N, D] (torch's .norm(dim=-1), accumulated in double).
std::vector<float> token_norms(const hg::Tensor<float>& x) {
  const int64_t d = x.shape().back(), count = x.numel() / d;
  std::vector<float> all = x.contiguous().to_vector(), out(static_cast<size_t>(count));
  for (int64_t t = 0; t < count; ++t) {
    double sum = 0;
    for (int64_t j = 0; j < d; ++j) sum += double(all[t * d + j]) * all[t * d + j];
    out[t] = static_cast<float>(std::sqrt(sum));
  }
  return out;
}

struct Outcome {
  std::string name;
  bool expect_match = true;  // false for the negative controls, which must NOT match
  double worst = 0, seconds = 0;
  std::string worst_output;
};

void compare(Outcome& outcome, const std::string& what, const std::vector<float>& ours,
             const hg::io::SafetensorsFile& file, const std::string& key, double tolerance) {
  REQUIRE_MESSAGE(file.contains(key), outcome.name, ": fixture lacks ", key);
  hg::Tensor<float> reference = file.get<float>(key);
  REQUIRE_MESSAGE(int64_t(ours.size()) == reference.numel(), outcome.name, " ", what, ": ", ours.size(),
                  " values, reference ", hg::to_string(reference.shape()));
  const double err = relative_error(ours, reference.to_vector());
  INFO(outcome.name << " " << what << ": relative error " << err);
  if (outcome.expect_match) CHECK(err <= tolerance);
  if (err >= outcome.worst) {
    outcome.worst = err;
    outcome.worst_output = what;
  }
}

using ConfigEdit = std::function<void(hg::models::ViTConfig&)>;
using WeightsEdit = std::function<void(hg::nn::StateDict<float>&)>;

Outcome run_case(const std::string& name, const ConfigEdit& edit_config = {}, const WeightsEdit& edit_weights = {}) {
  const auto start = std::chrono::steady_clock::now();
  Outcome outcome;
  outcome.name = name;
  outcome.expect_match = !edit_config && !edit_weights;
  hg::io::SafetensorsFile file(kDir + name + ".safetensors");
  const auto& meta = file.metadata();
  hg::models::ViTConfig config = hg::models::preset(meta.at("preset"));
  config.depth = std::stoll(meta.at("depth"));
  if (edit_config) edit_config(config);
  hg::models::VisionTransformer<float> model(config);
  model.eval();

  if (meta.count("checkpoint")) {
    // A real torch.save file (DINO training dict, fp16 storage), read by the .pth reader and
    // mapped by the model's translate_checkpoint ("teacher.backbone." prefix, head.* dropped).
    hg::io::load_weights(model, kDir + meta.at("checkpoint"));
  } else {
    auto raw = synthetic::state_dict<float>(synthetic::parse_spec(meta.at("weights")));
    if (edit_weights) edit_weights(raw);
    model.load_state_dict(model.translate_checkpoint(raw), /*strict=*/true);
  }

  const hg::Shape input_shape = synthetic::parse_shape(meta.at("input_shape"));
  hg::Tensor<float> images = synthetic::tensor<float>(meta.at("input_key"), input_shape, std::stoi(meta.at("input_exp")), 0.0);
  const std::vector<int64_t> rows = parse_list(meta.at("token_rows"));
  const std::vector<int64_t> short_rows = parse_list(meta.at("short_rows"));
  const double tolerance = 1e-5;

  hg::NoGradGuard no_grad;
  compare(outcome, "pooled", model.forward(images).contiguous().to_vector(), file, "pooled", tolerance);
  hg::Tensor<float> features = model.forward_features(images);
  compare(outcome, "features.rows", take_rows(features, rows), file, "features.rows", tolerance);
  compare(outcome, "features.norms", token_norms(features), file, "features.norms", tolerance);

  const int64_t n_intermediate = std::stoll(meta.at("intermediate_n"));
  if (n_intermediate > 0) {
    std::vector<hg::Tensor<float>> layers = model.get_intermediate_layers(images, n_intermediate, /*norm=*/true);
    REQUIRE(int64_t(layers.size()) == n_intermediate);
    for (int64_t j = 0; j < n_intermediate; ++j) {
      const std::string key = "intermediate." + std::to_string(j);
      compare(outcome, key + ".rows", take_rows(layers[j], short_rows), file, key + ".rows", tolerance);
      compare(outcome, key + ".norms", token_norms(layers[j]), file, key + ".norms", tolerance);
    }
  }
  if (file.contains("attention.rows")) {
    // [B, heads, N, N]; the fixture holds the query rows attention[:, :, short_rows, :].
    hg::Tensor<float> attention = model.last_self_attention(images);
    compare(outcome, "attention.rows", take_rows(attention, short_rows), file, "attention.rows", tolerance);
  }
  outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return outcome;
}

TEST_CASE("every ViT preset matches its reference implementation in float32") {
  const std::vector<std::string> cases = fixture_index_lines(kDir);
  REQUIRE(cases.size() >= 20);
  std::vector<Outcome> outcomes;
  for (const std::string& name : cases) {
    CAPTURE(name);
#ifdef HG_PARITY_SANITIZED
    const char* all = std::getenv("HISTOGRAD_VIT_PARITY_ALL");
    if (!(all && std::string(all) == "1") && !kSanitizerSubset.count(name)) {
      Outcome skipped;
      skipped.name = name;
      skipped.worst = -1;
      outcomes.push_back(skipped);
      continue;
    }
#endif
    outcomes.push_back(run_case(name));
  }
  // A one-line-per-case summary: the largest relative error of any output of the case.
  std::string table;
  char line[160];
  for (const auto& o : outcomes) {
    if (o.worst < 0) std::snprintf(line, sizeof line, "  %-30s skipped in the sanitizer build\n", o.name.c_str());
    else std::snprintf(line, sizeof line, "  %-30s max relative error %.2e (%s)  %.1f s\n", o.name.c_str(), o.worst,
                       o.worst_output.c_str(), o.seconds);
    table += line;
  }
  MESSAGE("ViT parity, worst output per case:\n" << table);
}

// Negative controls: the fixtures must be able to fail. One weight element off by 2^-8, or the
// other pos-embed resampling variant at a non-native size, each show far above the tolerance.
TEST_CASE("the parity fixtures catch a single wrong weight and the wrong resampling variant") {
  Outcome one_weight = run_case("dino_vits16", {}, [](hg::nn::StateDict<float>& sd) {
    hg::Tensor<float>& w = sd.at("blocks.1.mlp.fc2.weight");
    w.data()[12345] += 1.0f / 256;
  });
  CHECK(one_weight.worst > 1e-4);
  Outcome variant_b_as_a = run_case("dinov2_vits14_reg4_224x182", [](hg::models::ViTConfig& c) {
    c.pos_resample = hg::models::PosResample::DinoOffset;
  });
  CHECK(variant_b_as_a.worst > 1e-4);
  Outcome variant_a_as_b = run_case("dino_vits16_160x208", [](hg::models::ViTConfig& c) {
    c.pos_resample = hg::models::PosResample::Antialias;
  });
  CHECK(variant_a_as_b.worst > 1e-4);
  MESSAGE("negative controls, worst relative error: one weight ", one_weight.worst, ", variant B run as A ",
          variant_b_as_a.worst, ", variant A run as B ", variant_a_as_b.worst);
}

TEST_CASE("a synthetic checkpoint with a missing or mis-shaped key is refused by name") {
  hg::io::SafetensorsFile file(kDir + "dino_vits16.safetensors");
  hg::models::ViTConfig config = hg::models::preset("dino_vits16");
  config.depth = 2;
  hg::models::VisionTransformer<float> model(config);
  auto raw = synthetic::state_dict<float>(synthetic::parse_spec(file.metadata().at("weights")));
  auto missing = raw;
  missing.erase("blocks.1.attn.qkv.bias");
  CHECK_THROWS_WITH_AS(model.load_state_dict(model.translate_checkpoint(missing), true),
                       doctest::Contains("blocks.1.attn.qkv.bias"), hg::Error);
  auto misshaped = raw;
  misshaped["norm.weight"] = hg::zeros<float>({383});
  CHECK_THROWS_WITH_AS(model.load_state_dict(model.translate_checkpoint(misshaped), true),
                       doctest::Contains("norm.weight"), hg::Error);
}

}  // namespace
