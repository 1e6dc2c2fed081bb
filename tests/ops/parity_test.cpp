// Parity with PyTorch on a small transformer-block graph (scripts/gen_parity_fixtures.py):
// layer_norm, linear/matmul, scaled dot-product attention, GELU, mean, cross-entropy with
// label smoothing and DINO's soft-target H(t, s). Forward intermediates, the loss and every
// gradient must match torch in float32 to a relative error of 1e-5, measured per tensor as
// max|ours - torch| / max|torch| (element-wise ratios are meaningless for entries near 0).
#include "test_util.hpp"

namespace {

double relative_error(const hg::Tensor<float>& ours, const hg::Tensor<float>& reference) {
  REQUIRE(ours.shape() == reference.shape());
  std::vector<float> a = ours.to_vector(), b = reference.to_vector();
  double max_diff = 0, max_ref = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double(a[i]) - double(b[i])));
    max_ref = std::max(max_ref, std::abs(double(b[i])));
  }
  return max_diff / max_ref;
}

}  // namespace

TEST_CASE("a transformer block, its loss and its gradients match PyTorch in float32") {
  hg::io::SafetensorsFile file(std::string(HISTOGRAD_FIXTURES_DIR) + "/parity/block_graph.safetensors");
  std::map<std::string, hg::Tensor<float>> t;
  for (const char* name : {"x", "ln1.weight", "ln1.bias", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias",
                                  "ln2.weight", "ln2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                  "head.weight", "head.bias"})
    t[name] = file.get<float>(name).requires_grad_();
  auto labels = file.get<int64_t>("labels");
  auto teacher_logits = file.get<float>("teacher_logits");
  const int64_t B = 2, N = 7, D = 16, H = 2;

  auto h = hg::layer_norm(t["x"], t["ln1.weight"], t["ln1.bias"], 1e-6);
  auto qkv = hg::linear(h, t["qkv.weight"], t["qkv.bias"]).reshape({B, N, 3, H, D / H}).permute({2, 0, 3, 1, 4});
  auto attn = hg::scaled_dot_product_attention(qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2));
  auto x2 = t["x"] + hg::linear(attn.transpose(1, 2).reshape({B, N, D}), t["proj.weight"], t["proj.bias"]);
  auto mlp_hidden = hg::gelu(hg::linear(hg::layer_norm(x2, t["ln2.weight"], t["ln2.bias"], 1e-6), t["fc1.weight"], t["fc1.bias"]));
  auto x3 = x2 + hg::linear(mlp_hidden, t["fc2.weight"], t["fc2.bias"]);
  auto logits = hg::linear(hg::mean(x3, {1}), t["head.weight"], t["head.bias"]);
  auto hard = hg::cross_entropy(logits, labels, -100, 0.1);
  auto teacher = hg::softmax(teacher_logits / 0.04f, -1);
  auto soft = hg::cross_entropy(logits / 0.1f, teacher);
  auto loss = hard + soft;
  loss.backward();

  const double tolerance = 1e-5;
  std::map<std::string, hg::Tensor<float>> outputs{{"h", h},   {"attn", attn},     {"x2", x2},       {"mlp_hidden", mlp_hidden},
                                                   {"x3", x3}, {"logits", logits}, {"loss_hard", hard}, {"loss_soft", soft},
                                                   {"loss", loss}};
  for (auto& [name, value] : outputs) {
    double err = relative_error(value.detach(), file.get<float>("out." + name));
    INFO("output " << name << " relative error " << err);
    CHECK(err <= tolerance);
  }
  for (auto& [name, value] : t) {
    REQUIRE(value.grad().defined());
    double err = relative_error(value.grad(), file.get<float>("grad." + name));
    INFO("gradient of " << name << " relative error " << err);
    CHECK(err <= tolerance);
  }
}
