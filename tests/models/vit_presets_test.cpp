// The preset registry: every published configuration by name, its state_dict keys and shapes
// against the key lists of MODELS.md (§1.1 DINO, §2.1 DINOv2, §4.2 HIPT, §9 UNI/UNI2-h, §10
// H-optimus-0, §11 Virchow, §12 Hibou, §15 timm), its normalisation, and a forward at depth 1.
#include <histograd/models/presets.hpp>

#include "test_util.hpp"

namespace {

using Shapes = std::map<std::string, hg::Shape>;

// The preset's state_dict at depth `depth` as key -> shape.
Shapes key_shapes(const std::string& name, int64_t depth = 1) {
  hg::models::ViTConfig c = hg::models::preset(name);
  c.depth = depth;
  hg::models::VisionTransformer<float> model(c);
  Shapes out;
  for (auto& [key, t] : model.state_dict()) out[key] = t.shape();
  return out;
}

// The keys of block 0 with the given FFN and LayerScale (MODELS.md's per-block lists).
Shapes block0(int64_t d, int64_t fc1_rows, int64_t fc2_cols, bool layer_scale, const std::string& fc1 = "fc1",
              const std::string& fc2 = "fc2") {
  Shapes s{{"blocks.0.norm1.weight", {d}},
           {"blocks.0.norm1.bias", {d}},
           {"blocks.0.attn.qkv.weight", {3 * d, d}},
           {"blocks.0.attn.qkv.bias", {3 * d}},
           {"blocks.0.attn.proj.weight", {d, d}},
           {"blocks.0.attn.proj.bias", {d}},
           {"blocks.0.norm2.weight", {d}},
           {"blocks.0.norm2.bias", {d}},
           {"blocks.0.mlp." + fc1 + ".weight", {fc1_rows, d}},
           {"blocks.0.mlp." + fc1 + ".bias", {fc1_rows}},
           {"blocks.0.mlp." + fc2 + ".weight", {d, fc2_cols}},
           {"blocks.0.mlp." + fc2 + ".bias", {d}},
           {"norm.weight", {d}},
           {"norm.bias", {d}}};
  if (layer_scale) {
    s["blocks.0.ls1.gamma"] = {d};
    s["blocks.0.ls2.gamma"] = {d};
  }
  return s;
}

Shapes merged(Shapes a, const Shapes& b) {
  a.insert(b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("the registry holds every published configuration by its user-facing name") {
  CHECK(hg::models::preset_names() ==
        std::vector<std::string>{"dino_vitb16",        "dino_vitb8",         "dino_vits16",     "dino_vits8",
                                 "dinov2_vitb14",      "dinov2_vitb14_reg4", "dinov2_vitg14",   "dinov2_vitg14_reg4",
                                 "dinov2_vitl14",      "dinov2_vitl14_reg4", "dinov2_vits14",   "dinov2_vits14_reg4",
                                 "h_optimus_0",        "hibou_b",            "hibou_l",         "hipt_vit256_16",
                                 "hipt_vit4k_256",     "rudolfv",            "uni",             "uni2_h",
                                 "virchow",            "virchow2"});
  for (const auto& name : hg::models::preset_names()) CHECK(hg::models::preset(name).name == name);
  CHECK_THROWS_WITH_AS(hg::models::preset("uni3"),
                       doctest::Contains("models::preset: unknown preset 'uni3'; known presets: dino_vitb16, dino_vitb8, "),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::models::vit("vit_huge"), doctest::Contains("virchow, virchow2"), hg::Error);
}

TEST_CASE("DINO and HIPT ViT_256 keys (MODELS.md §1.1, §4.1)") {
  const Shapes tokens16{{"cls_token", {1, 1, 384}}, {"pos_embed", {1, 197, 384}},
                        {"patch_embed.proj.weight", {384, 3, 16, 16}}, {"patch_embed.proj.bias", {384}}};
  CHECK(key_shapes("dino_vits16") == merged(tokens16, block0(384, 1536, 1536, false)));
  CHECK(key_shapes("hipt_vit256_16") == merged(tokens16, block0(384, 1536, 1536, false)));
  Shapes s8 = key_shapes("dino_vits8");
  CHECK(s8.at("pos_embed") == hg::Shape{1, 785, 384});
  CHECK(s8.at("patch_embed.proj.weight") == hg::Shape{384, 3, 8, 8});
  CHECK(key_shapes("dino_vitb16").at("blocks.0.mlp.fc1.weight") == hg::Shape{3072, 768});
  CHECK(key_shapes("dino_vitb8").at("pos_embed") == hg::Shape{1, 785, 768});
  CHECK(key_shapes("dino_vits16", 12).count("blocks.11.mlp.fc2.bias") == 1);
}

TEST_CASE("DINOv2 hub keys, with and without registers (MODELS.md §2.1)") {
  const Shapes small_tokens{{"cls_token", {1, 1, 384}},
                            {"pos_embed", {1, 1370, 384}},
                            {"mask_token", {1, 384}},
                            {"patch_embed.proj.weight", {384, 3, 14, 14}},
                            {"patch_embed.proj.bias", {384}}};
  CHECK(key_shapes("dinov2_vits14") == merged(small_tokens, block0(384, 1536, 1536, true)));
  CHECK(key_shapes("dinov2_vits14_reg4") ==
        merged(merged(small_tokens, {{"register_tokens", {1, 4, 384}}}), block0(384, 1536, 1536, true)));
  CHECK(key_shapes("dinov2_vitb14").at("blocks.0.attn.qkv.weight") == hg::Shape{2304, 768});
  CHECK(key_shapes("dinov2_vitl14_reg4").at("register_tokens") == hg::Shape{1, 4, 1024});
  const Shapes giant{{"cls_token", {1, 1, 1536}},
                     {"pos_embed", {1, 1370, 1536}},
                     {"mask_token", {1, 1536}},
                     {"register_tokens", {1, 4, 1536}},
                     {"patch_embed.proj.weight", {1536, 3, 14, 14}},
                     {"patch_embed.proj.bias", {1536}}};
  CHECK(key_shapes("dinov2_vitg14_reg4") == merged(giant, block0(1536, 8192, 4096, true, "w12", "w3")));
  CHECK(key_shapes("dinov2_vitg14").count("register_tokens") == 0);
  CHECK(hg::models::preset("dinov2_vitg14").depth == 40);
  CHECK(hg::models::preset("dinov2_vitl14").depth == 24);
  CHECK(hg::models::preset("dinov2_vits14").pos_resample == hg::models::PosResample::DinoOffset);
  CHECK(hg::models::preset("dinov2_vits14_reg4").pos_resample == hg::models::PosResample::Antialias);
  CHECK(hg::models::preset("dinov2_vits14_reg4").layout == hg::models::TokenLayout::ClsRegPatchesPosBeforeReg);
}

TEST_CASE("UNI, UNI2-h, H-optimus-0 and Virchow timm keys (MODELS.md §9-11, §15)") {
  CHECK(key_shapes("uni") == merged(Shapes{{"cls_token", {1, 1, 1024}},
                                           {"pos_embed", {1, 197, 1024}},
                                           {"patch_embed.proj.weight", {1024, 3, 16, 16}},
                                           {"patch_embed.proj.bias", {1024}}},
                                    block0(1024, 4096, 4096, true)));
  const Shapes giant_reg8{{"cls_token", {1, 1, 1536}},
                          {"reg_token", {1, 8, 1536}},
                          {"pos_embed", {1, 256, 1536}},
                          {"patch_embed.proj.weight", {1536, 3, 14, 14}},
                          {"patch_embed.proj.bias", {1536}}};
  CHECK(key_shapes("uni2_h") == merged(giant_reg8, block0(1536, 8192, 4096, true)));
  Shapes hopt = key_shapes("h_optimus_0");
  CHECK(hopt.at("reg_token") == hg::Shape{1, 4, 1536});
  CHECK(hopt.at("pos_embed") == hg::Shape{1, 256, 1536});
  CHECK(hopt.at("blocks.0.mlp.fc1.weight") == hg::Shape{8192, 1536});
  CHECK(hopt.at("blocks.0.mlp.fc2.weight") == hg::Shape{1536, 4096});
  CHECK(hg::models::preset("h_optimus_0").depth == 40);
  CHECK(key_shapes("virchow") == merged(Shapes{{"cls_token", {1, 1, 1280}},
                                               {"pos_embed", {1, 257, 1280}},
                                               {"patch_embed.proj.weight", {1280, 3, 14, 14}},
                                               {"patch_embed.proj.bias", {1280}}},
                                        block0(1280, 6832, 3416, true)));
  Shapes v2 = key_shapes("virchow2");
  CHECK(v2.at("pos_embed") == hg::Shape{1, 261, 1280});
  CHECK(v2.at("reg_token") == hg::Shape{1, 4, 1280});
  CHECK(hg::models::preset("virchow").depth == 32);
}

TEST_CASE("Hibou, RudolfV and HIPT ViT_4K keys (MODELS.md §12, §13, §4.2)") {
  CHECK(key_shapes("hibou_b") == merged(Shapes{{"cls_token", {1, 1, 768}},
                                               {"pos_embed", {1, 257, 768}},
                                               {"register_tokens", {1, 4, 768}},
                                               {"mask_token", {1, 768}},
                                               {"patch_embed.proj.weight", {768, 3, 14, 14}},
                                               {"patch_embed.proj.bias", {768}}},
                                        block0(768, 4096, 2048, true, "w12", "w3")));
  CHECK(key_shapes("hibou_l").at("blocks.0.mlp.w12.weight") == hg::Shape{5472, 1024});
  CHECK(key_shapes("rudolfv").at("pos_embed") == hg::Shape{1, 257, 1024});
  Shapes hipt4k = key_shapes("hipt_vit4k_256", 6);
  CHECK(hipt4k.at("phi.0.weight") == hg::Shape{192, 384});
  CHECK(hipt4k.at("phi.0.bias") == hg::Shape{192});
  CHECK(hipt4k.at("pos_embed") == hg::Shape{1, 197, 192});
  CHECK(hipt4k.at("blocks.5.mlp.fc1.weight") == hg::Shape{768, 192});
  CHECK(hipt4k.count("patch_embed.proj.weight") == 0);
  CHECK(hipt4k.size() == 2 + 2 + 12 * 6 + 2);
}

TEST_CASE("published input normalisation and resolution") {
  using A = std::array<double, 3>;
  const A imagenet_mean{0.485, 0.456, 0.406}, imagenet_std{0.229, 0.224, 0.225};
  for (const char* name : {"dino_vits16", "dinov2_vitl14_reg4", "uni", "uni2_h", "virchow", "virchow2"}) {
    CHECK(hg::models::preset(name).mean == imagenet_mean);
    CHECK(hg::models::preset(name).std == imagenet_std);
  }
  CHECK(hg::models::preset("h_optimus_0").mean == A{0.707223, 0.578729, 0.703617});
  CHECK(hg::models::preset("h_optimus_0").std == A{0.211883, 0.230117, 0.177517});
  CHECK(!hg::models::preset("h_optimus_0").dynamic_img_size);
  CHECK(hg::models::preset("hibou_b").mean == A{0.7068, 0.5755, 0.7220});
  CHECK(hg::models::preset("hibou_b").std == A{0.1950, 0.2316, 0.1816});
  CHECK(hg::models::preset("hipt_vit256_16").mean == A{0.5, 0.5, 0.5});
  CHECK(hg::models::preset("dino_vitb8").resize_size == 256);
  CHECK(hg::models::preset("dino_vitb8").crop_size == 224);
  CHECK(hg::models::preset("dinov2_vitb14").image_size == 518);
  CHECK(hg::models::preset("uni").image_size == 224);
  CHECK(hg::models::preset("virchow").pooling == hg::models::Pooling::ClsMeanPatches);
}

TEST_CASE("every preset embeds a small input (depth 1, narrow width, its own layout and pooling)") {
  // Full widths are built by the key tests above; a narrow copy keeps this forward fast.
  hg::NoGradGuard no_grad;
  for (const auto& name : hg::models::preset_names()) {
    INFO(name);
    hg::models::ViTConfig c = hg::models::preset(name);
    c.depth = 1;
    c.embed_dim = 4 * c.num_heads;
    c.mlp_hidden = 8;
    hg::models::VisionTransformer<float> model = hg::models::vit<float>(c, 1);
    model.eval();
    const int64_t side = c.dynamic_img_size ? 2 * c.patch_size + (c.input_is_feature_grid ? 1 : 0) : c.image_size;
    hg::Tensor<float> input = random_t<float>({1, c.in_channels, side, side}, 2);
    hg::Tensor<float> embedding = model.forward(input);
    const int64_t width = c.pooling == hg::models::Pooling::ClsMeanPatches ? 2 * c.embed_dim : c.embed_dim;
    CHECK(embedding.shape() == hg::Shape{1, width});
    CHECK(std::isfinite(double(hg::sum(embedding).item())));
  }
}
