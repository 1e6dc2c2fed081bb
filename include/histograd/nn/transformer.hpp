// The pre-LN transformer block of every ViT here (MODELS.md §0.1: x += drop_path(ls1(attn(
// norm1(x)))); x += drop_path(ls2(mlp(norm2(x))))) and the patch stem (§1.1: a conv with
// kernel == stride, flattened row-major to tokens). References: timm/models/vision_transformer.py
// Block/PatchEmbed, dinov2/layers/{block,patch_embed}.py.
#pragma once
#include <variant>

#include "../ops/random.hpp"
#include "attention.hpp"
#include "layers.hpp"

namespace histograd::nn {

// The feed-forward of a block: GELU Mlp, or SwiGLU under timm's packed names (mlp.fc1 [2H, D],
// mlp.fc2), DINOv2's fused names (mlp.w12, mlp.w3) or timm's unpacked SwiGLU (fc1_g, fc1_x).
enum class FfnKind { Mlp, SwiGLUPacked, SwiGLUFused, SwiGLUUnpacked };

struct BlockOptions {
  int64_t dim = 768, num_heads = 12;
  int64_t mlp_hidden = 3072;  // for SwiGLU: the width of one half
  bool qkv_bias = true;
  FfnKind ffn = FfnKind::Mlp;
  double layer_scale_init = 0;  // 0: no LayerScale (no ls1/ls2 keys)
  double norm_eps = 1e-6;
  double drop_path = 0;  // this block's stochastic-depth rate, used in training mode only
};

template <class T>
class Block : public Module<T> {
 public:
  using FeedForward = std::variant<Mlp<T>, SwiGLU<T>>;

  Block() = default;
  Block(const BlockOptions& options, Generator& gen)
      : norm1(options.dim, options.norm_eps),
        attn(options.dim, options.num_heads, options.qkv_bias, gen),
        ls1(options.dim, options.layer_scale_init),
        norm2(options.dim, options.norm_eps),
        mlp(make_feed_forward(options, gen)),
        ls2(options.dim, options.layer_scale_init),
        drop_path_rate(options.drop_path) {}

  // x [B, N, D] -> [B, N, D]. Training draws drop_path masks from default_generator(); DINOv2's
  // variant for rates > 0.1 (the residual of a random batch subset, rescaled) is not replicated:
  // it has the same expectation but different draws.
  Tensor<T> forward(const Tensor<T>& x) const {
    Tensor<T> y = x + drop_path(ls1.forward(attn.forward(norm1.forward(x))), drop_path_rate, this->training());
    return y + drop_path(ls2.forward(feed_forward(norm2.forward(y))), drop_path_rate, this->training());
  }
  // The block's softmax attention [B, heads, N, N] (DINO's return_attention).
  Tensor<T> attention_map(const Tensor<T>& x) const { return attn.attention_map(norm1.forward(x)); }
  Tensor<T> feed_forward(const Tensor<T>& x) const {
    return std::visit([&x](const auto& m) { return m.forward(x); }, mlp);
  }

  void visit(ModuleVisitor<T>& v) override {
    v.module("norm1", norm1);
    v.module("attn", attn);
    v.module("ls1", ls1);
    v.module("norm2", norm2);
    std::visit([&v](auto& m) { v.module("mlp", m); }, mlp);
    v.module("ls2", ls2);
  }

  LayerNorm<T> norm1;
  Attention<T> attn;
  LayerScale<T> ls1;
  LayerNorm<T> norm2;
  FeedForward mlp;
  LayerScale<T> ls2;
  double drop_path_rate = 0;

 private:
  static FeedForward make_feed_forward(const BlockOptions& o, Generator& gen) {
    switch (o.ffn) {
      case FfnKind::SwiGLUPacked: return SwiGLU<T>(o.dim, o.mlp_hidden, SwiGLUStyle::Packed, gen);
      case FfnKind::SwiGLUFused: return SwiGLU<T>(o.dim, o.mlp_hidden, SwiGLUStyle::Fused, gen);
      case FfnKind::SwiGLUUnpacked: return SwiGLU<T>(o.dim, o.mlp_hidden, SwiGLUStyle::Unpacked, gen);
      case FfnKind::Mlp: break;
    }
    return Mlp<T>(o.dim, o.mlp_hidden, gen);
  }
};

// images [B, C, H, W] -> patch tokens [B, (H/p)·(W/p), D], row-major over the patch grid.
// A size that is not a multiple of p drops the remainder, as the strided conv does.
template <class T>
class PatchEmbed : public Module<T> {
 public:
  PatchEmbed() = default;
  PatchEmbed(int64_t in_channels, int64_t dim, int64_t patch_size, Generator& gen)
      : proj(in_channels, dim, patch_size, patch_size, true, gen), patch_size(patch_size) {}
  Tensor<T> forward(const Tensor<T>& images) const { return proj.forward(images).flatten(2).transpose(1, 2); }
  void visit(ModuleVisitor<T>& v) override { v.module("proj", proj); }

  Conv2d<T> proj;
  int64_t patch_size = 16;
};

}  // namespace histograd::nn
