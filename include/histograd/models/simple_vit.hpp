// A plain pre-LN Vision Transformer over the engine's ops (Dosovitskiy et al. 2021; the
// timm/DINO block of MODELS.md §0.1: x += attn(norm1(x)); x += mlp(norm2(x)), CLS token,
// learned absolute position embeddings, exact-erf GELU, LayerNorm eps 1e-6). Parameters
// are plain tensors in a struct; the module system and checkpoint loading build on this.
#pragma once
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/factories.hpp"
#include "../ops/attention.hpp"
#include "../ops/conv.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/indexing.hpp"
#include "../ops/matmul.hpp"
#include "../ops/norm.hpp"

namespace histograd::models {

struct SimpleViTConfig {
  int64_t image_size = 224, patch_size = 16, in_channels = 3, width = 384, depth = 12, heads = 6;
  int64_t mlp_hidden = 1536, num_classes = 0;  // 0: forward returns the normalised CLS embedding
  double norm_eps = 1e-6;
  int64_t tokens() const { return (image_size / patch_size) * (image_size / patch_size) + 1; }
};

template <class T>
struct SimpleViTBlock {
  Tensor<T> norm1_weight, norm1_bias, qkv_weight, qkv_bias, proj_weight, proj_bias;
  Tensor<T> norm2_weight, norm2_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias;
};

template <class T>
class SimpleViT {
 public:
  // Initial weights in timm's spirit: a normal of std 0.02 clipped at ±2 std (timm truncates
  // rather than clips) for linears and tokens, zeros for biases, ones for norm scales.
  SimpleViT(const SimpleViTConfig& config, Generator& gen) : config_(config) {
    HG_CHECK(config.width % config.heads == 0, "SimpleViT", "width ", config.width, " is not divisible by ", config.heads,
             " heads");
    const int64_t d = config.width, p = config.patch_size;
    auto init = [&](Shape shape, T std) { return clamp(randn<T>(shape, gen) * std, -2 * std, 2 * std); };
    patch_weight = init({d, config.in_channels, p, p}, T(0.02));
    patch_bias = zeros<T>({d});
    cls_token = init({1, 1, d}, T(0.02));
    pos_embed = init({1, config.tokens(), d}, T(0.02));
    for (int64_t i = 0; i < config.depth; ++i)
      blocks.push_back({ones<T>({d}), zeros<T>({d}), init({3 * d, d}, T(0.02)), zeros<T>({3 * d}), init({d, d}, T(0.02)),
                        zeros<T>({d}), ones<T>({d}), zeros<T>({d}), init({config.mlp_hidden, d}, T(0.02)),
                        zeros<T>({config.mlp_hidden}), init({d, config.mlp_hidden}, T(0.02)), zeros<T>({d})});
    norm_weight = ones<T>({d});
    norm_bias = zeros<T>({d});
    if (config.num_classes > 0) {
      head_weight = init({config.num_classes, d}, T(0.02));
      head_bias = zeros<T>({config.num_classes});
    }
  }

  std::vector<Tensor<T>*> parameters() {
    std::vector<Tensor<T>*> out{&patch_weight, &patch_bias, &cls_token, &pos_embed, &norm_weight, &norm_bias};
    if (head_weight.defined()) out.insert(out.end(), {&head_weight, &head_bias});
    for (auto& b : blocks)
      out.insert(out.end(), {&b.norm1_weight, &b.norm1_bias, &b.qkv_weight, &b.qkv_bias, &b.proj_weight, &b.proj_bias,
                             &b.norm2_weight, &b.norm2_bias, &b.fc1_weight, &b.fc1_bias, &b.fc2_weight, &b.fc2_bias});
    return out;
  }

  // images [B, C, H, W] -> logits [B, classes] (or the normalised CLS token [B, width]).
  Tensor<T> forward(const Tensor<T>& images) const {
    HG_CHECK(images.dim() == 4 && images.size(1) == config_.in_channels && images.size(2) == config_.image_size &&
                 images.size(3) == config_.image_size,
             "SimpleViT", "expected images [B, ", config_.in_channels, ", ", config_.image_size, ", ", config_.image_size,
             "], got ", to_string(images.shape()));
    const int64_t batch = images.size(0), d = config_.width, n = config_.tokens(), heads = config_.heads;
    Tensor<T> patches = patch_embed(images, patch_weight, patch_bias).flatten(2).transpose(1, 2);
    Tensor<T> x = cat<T>({cls_token.expand({batch, 1, d}), patches}, 1) + pos_embed;
    for (const auto& b : blocks) {
      Tensor<T> qkv = linear(layer_norm(x, b.norm1_weight, b.norm1_bias, config_.norm_eps), b.qkv_weight, b.qkv_bias)
                          .reshape({batch, n, 3, heads, d / heads})
                          .permute({2, 0, 3, 1, 4});
      Tensor<T> attended = scaled_dot_product_attention(qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2));
      x = x + linear(attended.transpose(1, 2).reshape({batch, n, d}), b.proj_weight, b.proj_bias);
      Tensor<T> hidden = gelu(linear(layer_norm(x, b.norm2_weight, b.norm2_bias, config_.norm_eps), b.fc1_weight, b.fc1_bias));
      x = x + linear(hidden, b.fc2_weight, b.fc2_bias);
    }
    Tensor<T> cls = layer_norm(x, norm_weight, norm_bias, config_.norm_eps).select(1, 0);
    return head_weight.defined() ? linear(cls, head_weight, head_bias) : cls;
  }

  const SimpleViTConfig& config() const { return config_; }

  Tensor<T> patch_weight, patch_bias, cls_token, pos_embed, norm_weight, norm_bias, head_weight, head_bias;
  std::vector<SimpleViTBlock<T>> blocks;

 private:
  SimpleViTConfig config_;
};

}  // namespace histograd::models
