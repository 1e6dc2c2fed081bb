// VisionTransformer: one configurable ViT for DINO, DINOv2, UNI/UNI2-h, H-optimus-0, Virchow,
// Hibou, RudolfV and HIPT (MODELS.md §1.1, §2.1, §4.1-4.2, §9-13, §15). The configuration picks
// the token layout (§0.3), the position-embedding resampling (§0.2), the feed-forward, the
// pooling and the key names, so each family's published checkpoint loads key for key and gives
// the reference's numbers. The registry of named configurations is in presets.hpp.
#pragma once
#include <array>
#include <set>
#include <string>
#include <vector>

#include "../nn/transformer.hpp"
#include "../ops/interpolate.hpp"
#include "../ops/reduce.hpp"
#include "vit_checkpoint.hpp"

namespace histograd::models {

// Order of the tokens and what pos_embed covers (§0.3).
enum class TokenLayout {
  ClsPatches,                 // [CLS, patches]; pos covers both (DINO, UNI, Virchow, timm default)
  ClsRegPatchesPosBeforeReg,  // DINOv2 hub reg, Hibou: pos covers CLS + patches, registers inserted after adding it
  ClsRegPatchesPosPatchesOnly,  // timm no_embed_class=True (UNI2-h, H-optimus-0): pos covers patches only
  ClsRegPatchesPosAll         // timm reg tokens with no_embed_class=False (Virchow2): pos covers every token
};
// How pos_embed is resampled to another patch grid (§0.2).
enum class PosResample {
  DinoOffset,  // (A) bicubic, no antialias, scale factors (n + 0.1) / M: DINO, HIPT, DINOv2 without registers
  Antialias    // (B) bicubic with antialias to the new size: timm, DINOv2 with registers
};
using FfnKind = nn::FfnKind;  // Mlp (GELU), SwiGLUPacked (timm fc1/fc2), SwiGLUFused (DINOv2 w12/w3)
enum class Pooling {
  Cls,             // the normalised CLS token
  MeanPatches,     // mean of the normalised patch tokens (prefix excluded; timm's fc_norm variant is not this)
  ClsMeanPatches,  // Virchow: cat(CLS, mean of patch tokens without registers)
  None             // every token [B, prefix + N, D]
};
// Spelling of our own state_dict(): timm (reg_token) or DINOv2 hub (register_tokens, mask_token).
// The FFN's names follow FfnKind: SwiGLUFused is mlp.w12/mlp.w3, the others mlp.fc1/mlp.fc2.
enum class KeyStyle { Timm, Dinov2Hub };

struct ViTConfig {
  std::string name;
  int64_t image_size = 224, patch_size = 16, in_channels = 3, embed_dim = 768, depth = 12, num_heads = 12;
  int64_t mlp_hidden = 3072;  // for SwiGLU: the width of one half (fc2's input)
  int64_t num_register_tokens = 0;
  bool qkv_bias = true;
  double layer_scale_init = 0;  // 0: no LayerScale
  double norm_eps = 1e-6;
  FfnKind ffn = FfnKind::Mlp;
  TokenLayout layout = TokenLayout::ClsPatches;
  PosResample pos_resample = PosResample::Antialias;
  Pooling pooling = Pooling::Cls;
  KeyStyle keys = KeyStyle::Timm;
  bool dynamic_img_size = true;  // false: inputs must be image_size x image_size
  // The published input transform: resize the short side to resize_size (bicubic), center-crop
  // crop_size, then (x - mean) / std per channel.
  std::array<double, 3> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};
  int64_t resize_size = 224, crop_size = 224;
  bool resize_to_square = false;  // resize to resize_size x resize_size (Hibou), not the short side
  // HIPT ViT_4K: the input is a [B, feature_dim, h, w] grid of ViT_256 features; tokens are
  // phi(x) = GELU(Linear(feature_dim, D)(x)) per cell (patch size 1, image_size = grid side).
  bool input_is_feature_grid = false;
  int64_t feature_dim = 0;
  double drop_path_rate = 0;  // stochastic depth, linear over the blocks from 0 to this rate
};

template <class T = float>
class VisionTransformer : public nn::Module<T> {
 public:
  explicit VisionTransformer(const ViTConfig& config, uint64_t seed = 0) : config_(config) {
    const ViTConfig& c = config_;
    const char* op = "VisionTransformer";
    HG_CHECK(c.embed_dim > 0 && c.num_heads > 0 && c.embed_dim % c.num_heads == 0, op, "config '", c.name,
             "': expected embed_dim divisible by num_heads, got ", c.embed_dim, " and ", c.num_heads);
    HG_CHECK(c.patch_size > 0 && c.image_size >= c.patch_size && c.depth >= 1 && c.mlp_hidden > 0 &&
                 c.num_register_tokens >= 0,
             op, "config '", c.name, "': expected positive sizes, got image_size ", c.image_size, ", patch_size ",
             c.patch_size, ", depth ", c.depth, ", mlp_hidden ", c.mlp_hidden, ", registers ", c.num_register_tokens);
    HG_CHECK(c.num_register_tokens == 0 || c.layout != TokenLayout::ClsPatches, op, "config '", c.name, "': ",
             c.num_register_tokens, " register tokens need a layout with registers, got ClsPatches");
    HG_CHECK(!c.input_is_feature_grid || (c.feature_dim > 0 && c.patch_size == 1), op, "config '", c.name,
             "': a feature-grid input needs feature_dim > 0 and patch_size 1, got ", c.feature_dim, " and ", c.patch_size);
    Generator gen(seed);
    const int64_t dim = c.embed_dim;
    grid_ = c.image_size / c.patch_size;
    // timm's init: tokens N(0, 1e-6²), pos_embed and Linear weights N(0, .02²), zero biases.
    if (c.input_is_feature_grid)
      phi = nn::Linear<T>(c.feature_dim, dim, true, gen);
    else
      patch_embed = nn::PatchEmbed<T>(c.in_channels, dim, c.patch_size, gen);
    cls_token = nn::normal_parameter<T>({1, 1, dim}, 1e-6, gen);
    if (c.num_register_tokens > 0) reg_token = nn::normal_parameter<T>({1, c.num_register_tokens, dim}, 1e-6, gen);
    if (c.keys == KeyStyle::Dinov2Hub) mask_token = nn::constant_parameter<T>({1, dim}, 0.0);
    pos_embed = nn::normal_parameter<T>({1, pos_prefix_rows() + grid_ * grid_, dim}, 0.02, gen);
    nn::BlockOptions options;
    options.dim = dim;
    options.num_heads = c.num_heads;
    options.mlp_hidden = c.mlp_hidden;
    options.qkv_bias = c.qkv_bias;
    options.ffn = c.ffn;
    options.layer_scale_init = c.layer_scale_init;
    options.norm_eps = c.norm_eps;
    for (int64_t i = 0; i < c.depth; ++i) {
      options.drop_path = c.depth > 1 ? c.drop_path_rate * static_cast<double>(i) / static_cast<double>(c.depth - 1) : 0.0;
      blocks.items.emplace_back(options, gen);
    }
    norm = nn::LayerNorm<T>(dim, c.norm_eps);
  }

  // The pooled embedding [B, E] chosen by config().pooling ([B, tokens, D] for Pooling::None).
  Tensor<T> forward(const Tensor<T>& images) const { return pool(forward_features(images)); }

  // Every token after the final norm: [B, prefix + N, D].
  Tensor<T> forward_features(const Tensor<T>& images) const {
    Tensor<T> x = prepare_tokens(images);
    for (const auto& block : blocks) x = block.forward(x);
    return norm.forward(x);
  }

  // The outputs of the last n blocks (full sequences, oldest first), each through the final
  // norm when `apply_norm` (DINO's get_intermediate_layers; DINOv2's with norm=True).
  std::vector<Tensor<T>> get_intermediate_layers(const Tensor<T>& images, int64_t n, bool apply_norm = true) const {
    const int64_t depth = static_cast<int64_t>(blocks.size());
    HG_CHECK(n >= 1 && n <= depth, "VisionTransformer", "get_intermediate_layers: expected 1 <= n <= ", depth,
             " (the depth), got ", n);
    std::vector<Tensor<T>> out;
    Tensor<T> x = prepare_tokens(images);
    for (int64_t i = 0; i < depth; ++i) {
      x = blocks[static_cast<size_t>(i)].forward(x);
      if (i >= depth - n) out.push_back(apply_norm ? norm.forward(x) : x);
    }
    return out;
  }

  // The softmax attention of the last block, [B, heads, tokens, tokens] (DINO's heat maps).
  Tensor<T> last_self_attention(const Tensor<T>& images) const {
    Tensor<T> x = prepare_tokens(images);
    for (size_t i = 0; i + 1 < blocks.size(); ++i) x = blocks[i].forward(x);
    return blocks[blocks.size() - 1].attention_map(x);
  }

  // The pooling of config().pooling applied to forward_features' output.
  Tensor<T> pool(const Tensor<T>& features) const {
    const int64_t prefix = num_prefix_tokens(), patches = features.size(1) - prefix;
    switch (config_.pooling) {
      case Pooling::Cls: return features.select(1, 0);
      case Pooling::MeanPatches: return mean(features.narrow(1, prefix, patches), {1});
      case Pooling::ClsMeanPatches:
        return cat<T>({features.select(1, 0), mean(features.narrow(1, prefix, patches), {1})}, -1);
      case Pooling::None: break;
    }
    return features;
  }

  // Tokens before the patches: CLS and the registers.
  int64_t num_prefix_tokens() const { return 1 + config_.num_register_tokens; }
  const ViTConfig& config() const { return config_; }

  void visit(nn::ModuleVisitor<T>& v) override {
    v.parameter("cls_token", cls_token);
    if (config_.keys == KeyStyle::Timm) v.parameter("reg_token", reg_token);
    v.parameter("pos_embed", pos_embed);
    if (config_.keys == KeyStyle::Dinov2Hub) {
      v.parameter("register_tokens", reg_token);
      v.parameter("mask_token", mask_token);
    }
    if (config_.input_is_feature_grid)
      v.module("phi.0", phi);
    else
      v.module("patch_embed", patch_embed);
    blocks.visit(v, "blocks");
    v.module("norm", norm);
  }

  std::set<std::string> no_weight_decay() const override {
    std::set<std::string> names{"pos_embed", "cls_token"};
    if (reg_token.defined()) names.insert(config_.keys == KeyStyle::Dinov2Hub ? "register_tokens" : "reg_token");
    if (mask_token.defined()) names.insert("mask_token");
    return names;
  }

  nn::StateDict<T> translate_checkpoint(nn::StateDict<T> raw) const override {
    return translate_vit_checkpoint(std::move(raw), checkpoint_target());
  }
  ViTCheckpointTarget checkpoint_target() const {
    ViTCheckpointTarget target;
    target.reg_key = config_.keys == KeyStyle::Dinov2Hub ? "register_tokens" : "reg_token";
    if (config_.ffn == FfnKind::SwiGLUFused) {
      target.fc1_key = "w12";
      target.fc2_key = "w3";
    }
    target.has_mask_token = mask_token.defined();
    target.num_patches = grid_ * grid_;
    target.num_register_tokens = config_.num_register_tokens;
    target.pos_prefix_rows = pos_prefix_rows();
    return target;
  }

  // Public members named as the reference's (keys: cls_token, reg_token or register_tokens,
  // mask_token, pos_embed, patch_embed.proj.*, phi.0.*, blocks.{i}.*, norm.*).
  nn::PatchEmbed<T> patch_embed;  // image input
  nn::Linear<T> phi;              // feature-grid input (HIPT ViT_4K), key "phi.0"
  Tensor<T> cls_token;            // [1, 1, D]
  Tensor<T> reg_token;            // [1, R, D]; "register_tokens" in the Dinov2Hub key style
  Tensor<T> mask_token;           // [1, D], Dinov2Hub key style only (iBOT masking; unused in forward)
  Tensor<T> pos_embed;            // [1, pos_prefix_rows() + M², D]
  nn::ModuleList<nn::Block<T>> blocks;
  nn::LayerNorm<T> norm;

  // pos_embed rows before the patch rows (§0.3).
  int64_t pos_prefix_rows() const {
    switch (config_.layout) {
      case TokenLayout::ClsRegPatchesPosPatchesOnly: return 0;
      case TokenLayout::ClsRegPatchesPosAll: return 1 + config_.num_register_tokens;
      default: return 1;
    }
  }

  // pos_embed for a grid_h x grid_w patch grid cut from an in_h x in_w input: the patch rows
  // resampled by the configured variant, the prefix rows unchanged.
  Tensor<T> position_embedding(int64_t grid_h, int64_t grid_w, int64_t in_h, int64_t in_w) const {
    const int64_t prefix = pos_prefix_rows(), dim = config_.embed_dim, m = grid_;
    const bool dino = config_.pos_resample == PosResample::DinoOffset;
    // DINO/DINOv2 return pos_embed as is when npatch == N and the input is square; timm when the
    // grid is unchanged (the antialias resampling is then the identity anyway).
    if (grid_h == m && grid_w == m && (!dino || in_h == in_w)) return pos_embed;
    Tensor<T> grid = pos_embed.narrow(1, prefix, m * m).reshape({1, m, m, dim}).permute({0, 3, 1, 2});
    Tensor<T> resized =
        dino ? interpolate_bicubic(grid, grid_h, grid_w, false, false, (static_cast<double>(grid_h) + 0.1) / double(m),
                                   (static_cast<double>(grid_w) + 0.1) / double(m))
             : interpolate_bicubic(grid, grid_h, grid_w, false, true);
    Tensor<T> rows = resized.permute({0, 2, 3, 1}).reshape({1, grid_h * grid_w, dim});
    return prefix == 0 ? rows : cat<T>({pos_embed.narrow(1, 0, prefix), rows}, 1);
  }

  // Input -> the token sequence that enters the first block, [B, prefix + N, D].
  Tensor<T> prepare_tokens(const Tensor<T>& images) const {
    check_input(images);
    const int64_t in_h = images.size(2), in_w = images.size(3), dim = config_.embed_dim;
    Tensor<T> x;
    int64_t grid_h = in_h, grid_w = in_w;
    if (config_.input_is_feature_grid) {
      x = gelu(phi.forward(images.flatten(2).transpose(1, 2)));
    } else {
      x = patch_embed.forward(images);
      grid_h = in_h / config_.patch_size;
      grid_w = in_w / config_.patch_size;
    }
    const Tensor<T> pos = position_embedding(grid_h, grid_w, in_h, in_w);
    const int64_t batch = x.size(0), registers = config_.num_register_tokens;
    const Tensor<T> cls = cls_token.expand({batch, 1, dim});
    auto with_registers = [&](const Tensor<T>& first, const Tensor<T>& rest) {
      return registers == 0 ? cat<T>({first, rest}, 1)
                            : cat<T>({first, reg_token.expand({batch, registers, dim}), rest}, 1);
    };
    switch (config_.layout) {
      case TokenLayout::ClsPatches: return cat<T>({cls, x}, 1) + pos;
      case TokenLayout::ClsRegPatchesPosBeforeReg: {
        Tensor<T> with_pos = cat<T>({cls, x}, 1) + pos;
        return with_registers(with_pos.narrow(1, 0, 1), with_pos.narrow(1, 1, with_pos.size(1) - 1));
      }
      case TokenLayout::ClsRegPatchesPosPatchesOnly: return with_registers(cls, x + pos);
      case TokenLayout::ClsRegPatchesPosAll: break;
    }
    return with_registers(cls, x) + pos;
  }

 private:
  void check_input(const Tensor<T>& images) const {
    const ViTConfig& c = config_;
    if (c.input_is_feature_grid) {
      HG_CHECK(images.dim() == 4 && images.size(1) == c.feature_dim && images.size(2) >= 1 && images.size(3) >= 1,
               "VisionTransformer", "'", c.name, "' expected a feature grid [B, ", c.feature_dim, ", h, w], got ",
               to_string(images.shape()));
      HG_CHECK(c.dynamic_img_size || (images.size(2) == c.image_size && images.size(3) == c.image_size),
               "VisionTransformer", "'", c.name, "' expected a feature grid [B, ", c.feature_dim, ", ", c.image_size,
               ", ", c.image_size, "] (dynamic_img_size is off), got ", to_string(images.shape()));
      return;
    }
    HG_CHECK(images.dim() == 4 && images.size(1) == c.in_channels && images.size(2) >= c.patch_size &&
                 images.size(3) >= c.patch_size,
             "VisionTransformer", "'", c.name, "' expected images [B, ", c.in_channels, ", H, W] with H, W >= ",
             c.patch_size, " (the patch size), got ", to_string(images.shape()));
    HG_CHECK(c.dynamic_img_size || (images.size(2) == c.image_size && images.size(3) == c.image_size),
             "VisionTransformer", "'", c.name, "' expected images [B, ", c.in_channels, ", ", c.image_size, ", ",
             c.image_size, "] (dynamic_img_size is off), got ", to_string(images.shape()));
  }

  ViTConfig config_;
  int64_t grid_ = 0;  // M: the native patch grid side
};

template <class T = float>
VisionTransformer<T> vit(const ViTConfig& config, uint64_t seed = 0) {
  return VisionTransformer<T>(config, seed);
}

}  // namespace histograd::models
