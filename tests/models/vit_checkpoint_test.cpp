// Checkpoint key mapping on hand-built key sets: a DINO training dict (teacher/student,
// module./backbone., heads), DINOv2 block chunks and heads, Hugging Face Dinov2 names (old and
// transformers-v5 spellings), DINOv2 hub <-> timm names with the CLS/register position folding
// (a converted model must give the same numbers), and strict loading's error listing.
#include <histograd/models/presets.hpp>

#include "test_util.hpp"

namespace {

using hg::models::KeyStyle;
using hg::models::PosResample;
using hg::models::TokenLayout;
using hg::models::ViTConfig;
using SD = hg::nn::StateDict<float>;

ViTConfig tiny(TokenLayout layout, int64_t registers, KeyStyle keys, hg::models::FfnKind ffn) {
  ViTConfig c;
  c.name = "tiny";
  c.image_size = 8;
  c.patch_size = 2;
  c.embed_dim = 6;
  c.depth = 4;
  c.num_heads = 2;
  c.mlp_hidden = 4;
  c.num_register_tokens = registers;
  c.layout = layout;
  c.keys = keys;
  c.ffn = ffn;
  c.layer_scale_init = 0.5;
  c.pos_resample = PosResample::Antialias;
  return c;
}

void randomize(hg::nn::Module<float>& module, uint64_t seed) {
  hg::NoGradGuard no_grad;
  for (auto& [name, p] : module.named_parameters()) p.copy_(random_t<float>(p.shape(), seed++) * 0.5f);
}

std::vector<std::string> keys_of(const SD& sd) {
  std::vector<std::string> out;
  for (const auto& [k, v] : sd) out.push_back(k);
  return out;
}

// Loads through the translation hook, as io::load_weights does.
void load(hg::nn::Module<float>& model, SD raw) { model.load_state_dict(model.translate_checkpoint(std::move(raw))); }

}  // namespace

TEST_CASE("a DINO training dict: the teacher is kept, module./backbone. stripped, heads dropped") {
  hg::models::VisionTransformer<float> source(tiny(TokenLayout::ClsPatches, 0, KeyStyle::Timm, hg::models::FfnKind::Mlp), 1);
  randomize(source, 10);
  SD raw;
  for (auto& [k, v] : source.state_dict()) {
    raw["teacher.backbone." + k] = v;
    raw["student.module.backbone." + k] = v * 2.0f;  // the student must not be picked
  }
  raw["teacher.head.mlp.0.weight"] = hg::zeros<float>({8, 6});
  raw["teacher.head.last_layer.weight_g"] = hg::zeros<float>({16, 1});
  raw["student.module.head.last_layer.weight_v"] = hg::zeros<float>({16, 8});
  raw["dino_loss.center"] = hg::zeros<float>({1, 16});
  hg::models::VisionTransformer<float> target(source.config(), 2);
  SD translated = target.translate_checkpoint(raw);
  CHECK(keys_of(translated) == keys_of(source.state_dict()));
  target.load_state_dict(translated);
  hg::Tensor<float> images = random_t<float>({1, 3, 8, 8}, 3);
  check_close(target.forward(images), source.forward(images), 0);

  // A hub-style file with DDP's module. prefix and no teacher.
  SD ddp;
  for (auto& [k, v] : source.state_dict()) ddp["module." + k] = v;
  CHECK(keys_of(target.translate_checkpoint(ddp)) == keys_of(source.state_dict()));
}

TEST_CASE("a DINOv2 teacher with block chunks and dino/ibot heads") {
  ViTConfig c = tiny(TokenLayout::ClsPatches, 0, KeyStyle::Dinov2Hub, hg::models::FfnKind::SwiGLUFused);
  hg::models::VisionTransformer<float> source(c, 1);
  randomize(source, 20);
  SD raw;
  for (auto& [k, v] : source.state_dict()) {
    std::string key = k;
    if (key.rfind("blocks.", 0) == 0) {  // block_chunks=2 over 4 blocks: blocks.{i/2}.{i}.*
      const int64_t i = std::stoll(key.substr(7));
      key = "blocks." + std::to_string(i / 2) + "." + key.substr(7);
    }
    raw["teacher.backbone." + key] = v;
  }
  CHECK(raw.count("teacher.backbone.blocks.1.3.mlp.w12.weight") == 1);
  raw["teacher.dino_head.mlp.0.weight"] = hg::zeros<float>({4, 6});
  raw["teacher.ibot_head.last_layer.weight_g"] = hg::zeros<float>({4, 1});
  hg::models::VisionTransformer<float> target(c, 2);
  SD translated = target.translate_checkpoint(raw);
  CHECK(keys_of(translated) == keys_of(source.state_dict()));
  CHECK(translated.count("mask_token") == 1);
  target.load_state_dict(translated);
  hg::Tensor<float> images = random_t<float>({2, 3, 8, 6}, 4);
  check_close(target.forward(images), source.forward(images), 0);
}

TEST_CASE("Hugging Face Dinov2WithRegisters names (Hibou on HF), old and transformers-v5 spellings") {
  ViTConfig c = tiny(TokenLayout::ClsRegPatchesPosBeforeReg, 2, KeyStyle::Dinov2Hub, hg::models::FfnKind::SwiGLUFused);
  hg::models::VisionTransformer<float> source(c, 1);
  randomize(source, 30);
  const int64_t d = 6, hidden = 4;
  for (bool v5 : {false, true}) {
    INFO("v5 names: " << v5);
    SD hf;
    hf["embeddings.cls_token"] = source.cls_token;
    hf["embeddings.mask_token"] = source.mask_token;
    hf["embeddings.register_tokens"] = source.reg_token;
    hf["embeddings.position_embeddings"] = source.pos_embed;
    hf["embeddings.patch_embeddings.projection.weight"] = source.patch_embed.proj.weight;
    hf["embeddings.patch_embeddings.projection.bias"] = source.patch_embed.proj.bias;
    for (size_t i = 0; i < source.blocks.size(); ++i) {
      const auto& b = source.blocks[i];
      const auto& mlp = std::get<hg::nn::SwiGLU<float>>(b.mlp);
      const std::string p = "encoder.layer." + std::to_string(i) + ".";
      hf[p + "norm1.weight"] = b.norm1.weight;
      hf[p + "norm1.bias"] = b.norm1.bias;
      const char* qkv_names[3] = {"query", "key", "value"};
      const char* qkv_v5[3] = {"q_proj", "k_proj", "v_proj"};
      for (int j = 0; j < 3; ++j) {
        const std::string name = v5 ? p + "attention." + qkv_v5[j] : p + "attention.attention." + qkv_names[j];
        hf[name + ".weight"] = b.attn.qkv.weight.narrow(0, j * d, d).contiguous();
        hf[name + ".bias"] = b.attn.qkv.bias.narrow(0, j * d, d).contiguous();
      }
      const std::string out = v5 ? p + "attention.o_proj" : p + "attention.output.dense";
      hf[out + ".weight"] = b.attn.proj.weight;
      hf[out + ".bias"] = b.attn.proj.bias;
      hf[p + "layer_scale1.lambda1"] = b.ls1.gamma;
      hf[p + "norm2.weight"] = b.norm2.weight;
      hf[p + "norm2.bias"] = b.norm2.bias;
      if (v5) {
        hf[p + "mlp.gate_proj.weight"] = mlp.fc1.weight.narrow(0, 0, hidden).contiguous();
        hf[p + "mlp.gate_proj.bias"] = mlp.fc1.bias.narrow(0, 0, hidden).contiguous();
        hf[p + "mlp.up_proj.weight"] = mlp.fc1.weight.narrow(0, hidden, hidden).contiguous();
        hf[p + "mlp.up_proj.bias"] = mlp.fc1.bias.narrow(0, hidden, hidden).contiguous();
        hf[p + "mlp.down_proj.weight"] = mlp.fc2.weight;
        hf[p + "mlp.down_proj.bias"] = mlp.fc2.bias;
      } else {
        hf[p + "mlp.weights_in.weight"] = mlp.fc1.weight;
        hf[p + "mlp.weights_in.bias"] = mlp.fc1.bias;
        hf[p + "mlp.weights_out.weight"] = mlp.fc2.weight;
        hf[p + "mlp.weights_out.bias"] = mlp.fc2.bias;
      }
      hf[p + "layer_scale2.lambda1"] = b.ls2.gamma;
    }
    hf["layernorm.weight"] = source.norm.weight;
    hf["layernorm.bias"] = source.norm.bias;
    hg::models::VisionTransformer<float> target(c, 2);
    SD translated = target.translate_checkpoint(hf);
    CHECK(keys_of(translated) == keys_of(source.state_dict()));
    target.load_state_dict(translated);
    hg::Tensor<float> images = random_t<float>({2, 3, 8, 8}, 5);
    check_close(target.forward(images), source.forward(images), 0);

    // Dinov2ForImageClassification nests the same names under "dinov2."; a missing value
    // projection leaves query and key under their own names for strict loading to report.
    SD nested;
    for (auto& [k, v] : hf) nested["dinov2." + k] = v;
    nested.erase(v5 ? "dinov2.encoder.layer.1.attention.v_proj.weight" : "dinov2.encoder.layer.1.attention.attention.value.weight");
    SD partial = target.translate_checkpoint(nested);
    CHECK(partial.count("blocks.1.attn.qkv.weight") == 0);
    CHECK(partial.count(v5 ? "encoder.layer.1.attention.q_proj.weight" : "encoder.layer.1.attention.attention.query.weight") == 1);
    CHECK(partial.count("blocks.1.attn.qkv.bias") == 1);
    CHECK_THROWS_WITH_AS(target.load_state_dict(partial), doctest::Contains("missing keys (1):\n    blocks.1.attn.qkv.weight"),
                         hg::Error);
  }
}

TEST_CASE("DINOv2 hub <-> timm names and position layouts convert exactly") {
  // The same network in three spellings: hub with registers (pos before registers, w12/w3,
  // mask_token), timm no_embed_class (pos on patches only, fc1/fc2, reg_token) and timm with
  // pos on every token (Virchow2's layout).
  ViTConfig hub_config = tiny(TokenLayout::ClsRegPatchesPosBeforeReg, 2, KeyStyle::Dinov2Hub, hg::models::FfnKind::SwiGLUFused);
  ViTConfig timm_config = tiny(TokenLayout::ClsRegPatchesPosPatchesOnly, 2, KeyStyle::Timm, hg::models::FfnKind::SwiGLUPacked);
  ViTConfig all_config = tiny(TokenLayout::ClsRegPatchesPosAll, 2, KeyStyle::Timm, hg::models::FfnKind::SwiGLUPacked);
  hg::models::VisionTransformer<float> hub(hub_config, 1), timm(timm_config, 2), all(all_config, 3), back(hub_config, 4);
  randomize(hub, 40);
  SD from_hub = timm.translate_checkpoint(hub.state_dict());
  CHECK(from_hub.count("mask_token") == 0);
  CHECK(from_hub.count("reg_token") == 1);
  CHECK(from_hub.count("blocks.2.mlp.fc1.weight") == 1);
  CHECK(from_hub.at("pos_embed").shape() == hg::Shape{1, 16, 6});
  timm.load_state_dict(from_hub);
  load(all, hub.state_dict());
  for (auto shape : {hg::Shape{2, 3, 8, 8}, hg::Shape{1, 3, 6, 10}}) {  // native, and resampled non-square
    hg::Tensor<float> images = random_t<float>(shape, 6);
    hg::Tensor<float> expected = hub.forward_features(images);
    check_close(timm.forward_features(images), expected, 0);
    check_close(all.forward_features(images), expected, 0);
  }
  // And back: timm -> hub puts a zero CLS position row (mask_token is not invented: strict
  // loading reports it, non-strict keeps the model's).
  SD to_hub = back.translate_checkpoint(timm.state_dict());
  CHECK(to_hub.at("pos_embed").shape() == hg::Shape{1, 17, 6});
  CHECK(to_hub.count("register_tokens") == 1);
  CHECK(to_hub.count("blocks.0.mlp.w12.weight") == 1);
  CHECK_THROWS_WITH_AS(back.load_state_dict(to_hub), doctest::Contains("missing keys (1):\n    mask_token"), hg::Error);
  back.load_state_dict(to_hub, false);
  hg::Tensor<float> images = random_t<float>({1, 3, 10, 8}, 7);
  check_close(back.forward_features(images), hub.forward_features(images), 0);
}

TEST_CASE("strict loading lists every missing, unexpected and mis-shaped key") {
  ViTConfig c = tiny(TokenLayout::ClsPatches, 0, KeyStyle::Timm, hg::models::FfnKind::Mlp);
  hg::models::VisionTransformer<float> model(c, 1);
  SD sd = model.state_dict();
  sd.erase("blocks.3.attn.qkv.weight");
  sd.erase("norm.bias");
  sd["blocks.0.attn.q_norm.weight"] = hg::zeros<float>({3});
  sd["pos_embed"] = hg::zeros<float>({1, 10, 6});  // a grid of 3x3 (no resampling in the mapping)
  SD translated = model.translate_checkpoint(sd);
  CHECK_THROWS_WITH_AS(model.load_state_dict(translated),
                       doctest::Contains("load_state_dict: the checkpoint does not match the model:\n"
                                         "  missing keys (2):\n    blocks.3.attn.qkv.weight\n    norm.bias\n"
                                         "  unexpected keys (1):\n    blocks.0.attn.q_norm.weight\n"
                                         "  shape mismatches (1):\n    pos_embed (model [1, 17, 6], checkpoint [1, 10, 6])"),
                       hg::Error);
  // mask_token is dropped for a model without one; a timm head too.
  SD extra = model.state_dict();
  extra["mask_token"] = hg::zeros<float>({1, 6});
  extra["head.weight"] = hg::zeros<float>({10, 6});
  extra["head.bias"] = hg::zeros<float>({10});
  CHECK(keys_of(model.translate_checkpoint(extra)) == keys_of(model.state_dict()));
}
