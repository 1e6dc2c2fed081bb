// The registry of published ViT configurations, named as their users know them, each with
// its input normalisation and native resolution. Facts: MODELS.md §1.1 (DINO), §2.1 (DINOv2),
// §4.1-4.2 (HIPT), §9 (UNI, UNI2-h), §10 (H-optimus-0), §11 (Virchow, Virchow2), §12 (Hibou),
// §13 (RudolfV), §15 (timm). models::vit("uni") builds one.
#pragma once
#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "vit.hpp"

namespace histograd::models {

namespace detail {

inline ViTConfig vit_shape(const std::string& name, int64_t patch, int64_t dim, int64_t depth, int64_t heads,
                           int64_t mlp_hidden) {
  ViTConfig c;
  c.name = name;
  c.patch_size = patch;
  c.embed_dim = dim;
  c.depth = depth;
  c.num_heads = heads;
  c.mlp_hidden = mlp_hidden;
  return c;
}

// DINO v1 (facebookresearch/dino vision_transformer.py): img 224, no LayerScale, pos variant A;
// the eval transform resizes to 256 and center-crops 224 (bicubic), ImageNet statistics.
inline ViTConfig dino(const std::string& name, int64_t patch, int64_t dim, int64_t heads) {
  ViTConfig c = vit_shape(name, patch, dim, 12, heads, 4 * dim);
  c.pos_resample = PosResample::DinoOffset;
  c.resize_size = 256;
  c.crop_size = 224;
  return c;
}

// DINOv2 hub backbones (dinov2/hub/backbones.py): img 518, LayerScale (the hub passes 1.0; the
// checkpoint overwrites it), hub key names incl. mask_token. Without registers: pos variant A;
// with 4 registers: inserted after the position add, variant B. Eval transform 256 / 224.
inline ViTConfig dinov2(const std::string& name, int64_t dim, int64_t depth, int64_t heads, bool registers) {
  ViTConfig c = vit_shape(name, 14, dim, depth, heads, 4 * dim);
  c.image_size = 518;
  c.layer_scale_init = 1.0;
  c.keys = KeyStyle::Dinov2Hub;
  c.resize_size = 256;
  c.crop_size = 224;
  if (dim == 1536) {  // vit_giant2: SwiGLUFFNFused, hidden (int(6144·2/3)+7)//8·8 = 4096
    c.ffn = FfnKind::SwiGLUFused;
    c.mlp_hidden = 4096;
  }
  if (registers) {
    c.num_register_tokens = 4;
    c.layout = TokenLayout::ClsRegPatchesPosBeforeReg;
    c.pos_resample = PosResample::Antialias;
  } else {
    c.pos_resample = PosResample::DinoOffset;
  }
  return c;
}

inline std::map<std::string, ViTConfig> build_presets() {
  std::map<std::string, ViTConfig> p;
  auto add = [&p](const ViTConfig& c) { p.emplace(c.name, c); };
  add(dino("dino_vits16", 16, 384, 6));
  add(dino("dino_vits8", 8, 384, 6));
  add(dino("dino_vitb16", 16, 768, 12));
  add(dino("dino_vitb8", 8, 768, 12));
  for (bool reg : {false, true}) {
    const std::string suffix = reg ? "_reg4" : "";
    add(dinov2("dinov2_vits14" + suffix, 384, 12, 6, reg));
    add(dinov2("dinov2_vitb14" + suffix, 768, 12, 12, reg));
    add(dinov2("dinov2_vitl14" + suffix, 1024, 24, 16, reg));
    add(dinov2("dinov2_vitg14" + suffix, 1536, 40, 24, reg));
  }
  {  // UNI: timm vit_large_patch16_224, init_values 1e-5, dynamic_img_size; Resize(224) + CenterCrop(224)
    ViTConfig c = vit_shape("uni", 16, 1024, 24, 16, 4096);
    c.layer_scale_init = 1e-5;
    add(c);
  }
  {  // UNI2-h: timm vit_giant_patch14_224 variant, SwiGLUPacked int(1536·5.33334) = 8192 = 2·4096,
     // 8 registers with no_embed_class (pos covers patches only), pos [1, 256, 1536]
    ViTConfig c = vit_shape("uni2_h", 14, 1536, 24, 24, 4096);
    c.layer_scale_init = 1e-5;
    c.ffn = FfnKind::SwiGLUPacked;
    c.num_register_tokens = 8;
    c.layout = TokenLayout::ClsRegPatchesPosPatchesOnly;
    add(c);
  }
  {  // H-optimus-0: vit_giant_patch14_reg4_dinov2 at img 224 (bioptimus README, HF config.json);
     // the model card builds it with dynamic_img_size=False and its transform is ToTensor +
     // Normalize only (224 x 224 tiles at 0.5 µm/px), so resize and crop are the identity at 224.
    ViTConfig c = vit_shape("h_optimus_0", 14, 1536, 40, 24, 4096);
    c.layer_scale_init = 1e-5;
    c.ffn = FfnKind::SwiGLUPacked;
    c.num_register_tokens = 4;
    c.layout = TokenLayout::ClsRegPatchesPosPatchesOnly;
    c.dynamic_img_size = false;
    c.mean = {0.707223, 0.578729, 0.703617};
    c.std = {0.211883, 0.230117, 0.177517};
    add(c);
  }
  {  // Virchow: vit_huge_patch14_224, SwiGLUPacked int(1280·5.3375) = 6832 = 2·3416, init_values
     // 1e-5, global_pool "" and the embedding cat(CLS, mean of patches) -> 2560. Transform:
     // bicubic, crop_pct 1.0, 224. (Reported through third-party copies of the HF card, §11.)
    ViTConfig c = vit_shape("virchow", 14, 1280, 32, 16, 3416);
    c.layer_scale_init = 1e-5;
    c.ffn = FfnKind::SwiGLUPacked;
    c.pooling = Pooling::ClsMeanPatches;
    add(c);
  }
  {  // Virchow2: Virchow plus 4 registers, no_embed_class False: pos covers CLS + 4 REG + 256 patches
    ViTConfig c = vit_shape("virchow2", 14, 1280, 32, 16, 3416);
    c.layer_scale_init = 1e-5;
    c.ffn = FfnKind::SwiGLUPacked;
    c.pooling = Pooling::ClsMeanPatches;
    c.num_register_tokens = 4;
    c.layout = TokenLayout::ClsRegPatchesPosAll;
    add(c);
  }
  // Hibou (HistAI/hibou build_model): DINOv2 ViTs at img 224 with LayerScale 1e-5, swiglufused
  // FFN, 4 registers, interpolate_offset 0 with antialias. Transform (example.ipynb):
  // Resize((224, 224), bicubic) — a squash to the square, not a short-side resize — then
  // CenterCrop(224), with Hibou's own mean/std.
  auto hibou = [&](const char* name, int64_t dim, int64_t depth, int64_t heads, int64_t swiglu_hidden) {
    ViTConfig c = vit_shape(name, 14, dim, depth, heads, swiglu_hidden);
    c.layer_scale_init = 1e-5;
    c.ffn = FfnKind::SwiGLUFused;
    c.num_register_tokens = 4;
    c.layout = TokenLayout::ClsRegPatchesPosBeforeReg;
    c.keys = KeyStyle::Dinov2Hub;
    c.resize_to_square = true;
    c.mean = {0.7068, 0.5755, 0.7220};
    c.std = {0.1950, 0.2316, 0.1816};
    add(c);
  };
  hibou("hibou_b", 768, 12, 12, 2048);  // hidden (int(3072·2/3)+7)//8·8 = 2048
  // Hibou-L: UNVERIFIED fields (its HF config.json was not read, MODELS.md appendix): assumed a
  // ViT-L/14 built like Hibou-B, with hidden (int(4096·2/3)+7)//8·8 = 2736.
  hibou("hibou_l", 1024, 24, 16, 2736);
  {  // RudolfV: configuration only; its weights are not public and its backbone is known only from
     // the paper (arXiv 2401.04079) as a DINOv2-trained ViT-L/14. Assumed: DINOv2 ViT-L/14 without
     // registers at 224, LayerScale, hub names, ImageNet statistics. Unverified.
    ViTConfig c = dinov2("rudolfv", 1024, 24, 16, false);
    c.image_size = 224;
    c.resize_size = 224;
    c.crop_size = 224;
    c.layer_scale_init = 1e-5;
    add(c);
  }
  {  // HIPT ViT_256-16: DINO ViT-S/16 with pos_embed for 224 (197 rows), used on 256 x 256
     // patches (variant A, 14 -> 16); ToTensor + Normalize(0.5, 0.5), no resize.
    ViTConfig c = dino("hipt_vit256_16", 16, 384, 6);
    c.mean = {0.5, 0.5, 0.5};
    c.std = {0.5, 0.5, 0.5};
    c.resize_size = 256;
    c.crop_size = 256;
    add(c);
  }
  {  // HIPT ViT_4K-256 (vit4k_xs): input [B, 384, h, w] ViT_256 CLS features, phi = Linear(384,
     // 192) + GELU, pos_embed [1, 197, 192] for a 14 x 14 grid (variant A, e.g. 14 -> 16 for 4096²).
    ViTConfig c = vit_shape("hipt_vit4k_256", 1, 192, 6, 6, 768);
    c.image_size = 14;
    c.in_channels = 384;
    c.input_is_feature_grid = true;
    c.feature_dim = 384;
    c.pos_resample = PosResample::DinoOffset;
    c.mean = {0.5, 0.5, 0.5};  // of the 4096² region fed to ViT_256 first
    c.std = {0.5, 0.5, 0.5};
    c.resize_size = 4096;
    c.crop_size = 4096;
    add(c);
  }
  return p;
}

inline const std::map<std::string, ViTConfig>& presets() {
  static const std::map<std::string, ViTConfig> registry = build_presets();
  return registry;
}

}  // namespace detail

// The names of every preset, sorted.
inline std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, config] : detail::presets()) names.push_back(name);
  return names;
}

// The configuration registered under `name`; an Error listing the known names otherwise.
inline const ViTConfig& preset(const std::string& name) {
  const auto& registry = detail::presets();
  auto it = registry.find(name);
  if (it == registry.end()) {
    std::ostringstream known;
    for (const auto& [n, config] : registry) known << (known.tellp() > 0 ? ", " : "") << n;
    fail("models::preset", "unknown preset '", name, "'; known presets: ", known.str());
  }
  return it->second;
}

template <class T = float>
VisionTransformer<T> vit(const std::string& preset_name, uint64_t seed = 0) {
  return VisionTransformer<T>(preset(preset_name), seed);
}

}  // namespace histograd::models
