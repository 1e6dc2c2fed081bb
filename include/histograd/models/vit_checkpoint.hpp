// Checkpoint key mapping for the ViTs: turns the key sets the published files use into our
// state_dict()'s. Handles DINO/DINOv2 training dicts (teacher., module., backbone., heads;
// MODELS.md §1.1, §2.1), DINOv2 block chunks, Hugging Face Dinov2Model / Dinov2WithRegisters
// names (transformers' modeling_dinov2*.py, old and v5 spellings; Hibou on HF), and DINOv2-hub
// vs timm naming incl. timm's checkpoint_filter_fn folding of the CLS position (§15).
// A key it does not recognise is passed through, so strict loading names it.
#pragma once
#include <array>
#include <cctype>
#include <map>
#include <string>

#include "../autograd/grad_mode.hpp"
#include "../core/factories.hpp"
#include "../nn/module.hpp"
#include "../ops/indexing.hpp"

namespace histograd::models {

// What the mapping needs to know about the model it loads into.
struct ViTCheckpointTarget {
  std::string reg_key = "reg_token";               // "register_tokens" in DINOv2 hub naming
  std::string fc1_key = "fc1", fc2_key = "fc2";   // "w12"/"w3" for DINOv2's fused SwiGLU
  bool has_mask_token = false;
  int64_t num_patches = 0;          // patch rows of pos_embed at the native size
  int64_t num_register_tokens = 0;
  int64_t pos_prefix_rows = 1;      // pos_embed rows before the patch rows: 0, 1 (CLS) or 1 + R
};

namespace detail {

inline bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// The digits at the start of s (empty when none).
inline std::string leading_number(const std::string& s) {
  size_t n = 0;
  while (n < s.size() && std::isdigit(static_cast<unsigned char>(s[n]))) ++n;
  return s.substr(0, n);
}

// Drops leading "module." / "backbone." (DDP and DINO's MultiCropWrapper), in any order.
inline std::string strip_wrappers(std::string key) {
  for (bool again = true; again;) {
    again = false;
    for (const char* prefix : {"module.", "backbone."})
      if (starts_with(key, prefix)) {
        key = key.substr(std::string(prefix).size());
        again = true;
      }
  }
  return key;
}

// "blocks.{chunk}.{i}.rest" (DINOv2 BlockChunk; i is already the global index) -> "blocks.{i}.rest".
inline std::string unchunk_block(const std::string& key) {
  if (!starts_with(key, "blocks.")) return key;
  const std::string rest = key.substr(7), chunk = leading_number(rest);
  if (chunk.empty() || rest.size() <= chunk.size() + 1 || rest[chunk.size()] != '.') return key;
  const std::string inner = rest.substr(chunk.size() + 1), index = leading_number(inner);
  if (index.empty() || inner.size() <= index.size() || inner[index.size()] != '.') return key;
  return "blocks." + inner;
}

inline bool is_hf_dinov2(const std::string& key) {
  return starts_with(key, "embeddings.") || starts_with(key, "encoder.layer.") || starts_with(key, "layernorm.");
}

// Hugging Face Dinov2 names -> DINOv2 hub names. The separate q/k/v (and v5's gate/up)
// projections are stacked into the fused matrices in q;k;v (gate;up) row order.
template <class T>
nn::StateDict<T> from_hugging_face_dinov2(const nn::StateDict<T>& in) {
  static const std::map<std::string, std::string> embedding_names = {
      {"embeddings.cls_token", "cls_token"},
      {"embeddings.mask_token", "mask_token"},
      {"embeddings.register_tokens", "register_tokens"},
      {"embeddings.position_embeddings", "pos_embed"},
      {"embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"},
      {"embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"},
      {"layernorm.weight", "norm.weight"},
      {"layernorm.bias", "norm.bias"}};
  // (HF suffix inside a layer, our suffix, slot in a stacked matrix or -1)
  struct LayerName {
    const char* hf;
    const char* ours;
    int slot;
  };
  static const LayerName layer_names[] = {
      {"attention.attention.query.", "attn.qkv.", 0}, {"attention.attention.key.", "attn.qkv.", 1},
      {"attention.attention.value.", "attn.qkv.", 2}, {"attention.q_proj.", "attn.qkv.", 0},
      {"attention.k_proj.", "attn.qkv.", 1},          {"attention.v_proj.", "attn.qkv.", 2},
      {"attention.output.dense.", "attn.proj.", -1},  {"attention.o_proj.", "attn.proj.", -1},
      {"layer_scale1.lambda1", "ls1.gamma", -1},      {"layer_scale2.lambda1", "ls2.gamma", -1},
      {"norm1.", "norm1.", -1},                       {"norm2.", "norm2.", -1},
      {"mlp.fc1.", "mlp.fc1.", -1},                   {"mlp.fc2.", "mlp.fc2.", -1},
      {"mlp.weights_in.", "mlp.w12.", -1},            {"mlp.weights_out.", "mlp.w3.", -1},
      {"mlp.gate_proj.", "mlp.w12.", 0},              {"mlp.up_proj.", "mlp.w12.", 1},
      {"mlp.down_proj.", "mlp.w3.", -1}};
  nn::StateDict<T> out;
  struct Stack {
    std::array<Tensor<T>, 3> parts;
    std::array<std::string, 3> sources;
    int needed = 0;
  };
  std::map<std::string, Stack> stacks;
  for (const auto& [key, value] : in) {
    if (auto it = embedding_names.find(key); it != embedding_names.end()) {
      out[it->second] = value;
      continue;
    }
    if (starts_with(key, "encoder.layer.")) {
      const std::string after = key.substr(14), index = leading_number(after);
      if (!index.empty() && after.size() > index.size() && after[index.size()] == '.') {
        const std::string suffix = after.substr(index.size() + 1);
        bool mapped = false;
        for (const auto& name : layer_names) {
          const std::string hf = name.hf;
          if (!starts_with(suffix, hf)) continue;
          const std::string ours = "blocks." + index + "." + name.ours + suffix.substr(hf.size());
          if (name.slot < 0) {
            out[ours] = value;
          } else {
            Stack& stack = stacks[ours];
            stack.parts[static_cast<size_t>(name.slot)] = value;
            stack.sources[static_cast<size_t>(name.slot)] = key;
            stack.needed = std::string(name.ours) == "attn.qkv." ? 3 : 2;
          }
          mapped = true;
          break;
        }
        if (mapped) continue;
      }
    }
    out[key] = value;
  }
  NoGradGuard no_grad;
  for (auto& [ours, stack] : stacks) {
    bool complete = true;
    for (int i = 0; i < stack.needed; ++i) complete = complete && stack.parts[static_cast<size_t>(i)].defined();
    if (complete) {
      out[ours] = cat<T>(std::vector<Tensor<T>>(stack.parts.begin(), stack.parts.begin() + stack.needed), 0);
    } else {  // an incomplete set stays under its own names, so strict loading lists it
      for (int i = 0; i < 3; ++i)
        if (stack.parts[static_cast<size_t>(i)].defined())
          out[stack.sources[static_cast<size_t>(i)]] = stack.parts[static_cast<size_t>(i)];
    }
  }
  return out;
}

// Moves the position rows of CLS (and registers) between layouts: a prefix row of pos_embed is
// folded into its token (cls + pos[0]: timm's DINOv2 conversion) or a zero row is inserted
// where our pos_embed has one. Exact: the forward adds the same two numbers either way, or
// adds 0. Only when the patch rows already match our native grid.
template <class T>
void convert_position_layout(nn::StateDict<T>& sd, const ViTCheckpointTarget& target) {
  auto pos_it = sd.find("pos_embed"), cls_it = sd.find("cls_token");
  if (pos_it == sd.end() || cls_it == sd.end() || pos_it->second.dim() != 3) return;
  const Tensor<T> pos = pos_it->second;
  const int64_t rows = pos.size(1), dim = pos.size(2), registers = target.num_register_tokens;
  const int64_t source_prefix = rows - target.num_patches;
  if (source_prefix == target.pos_prefix_rows) return;
  const bool folds_registers = registers > 0 && source_prefix == 1 + registers;
  if (!(source_prefix == 0 || source_prefix == 1 || folds_registers)) return;
  auto reg_it = sd.find(target.reg_key);
  if (folds_registers && (reg_it == sd.end() || reg_it->second.dim() != 3 || reg_it->second.size(1) != registers)) return;
  NoGradGuard no_grad;
  if (source_prefix >= 1) cls_it->second = cls_it->second + pos.narrow(1, 0, 1);
  if (folds_registers) reg_it->second = reg_it->second + pos.narrow(1, 1, registers);
  Tensor<T> patches = pos.narrow(1, source_prefix, target.num_patches);
  pos_it->second = target.pos_prefix_rows == 0
                       ? patches.contiguous()
                       : cat<T>({zeros<T>({1, target.pos_prefix_rows, dim}), patches}, 1);
}

}  // namespace detail

// The whole mapping, in order: keep the teacher of a training dict; strip module./backbone.;
// drop SSL heads; Hugging Face Dinov2 names -> hub names; unchunk blocks; drop mask_token when
// the model has none; token and FFN names to the target's spelling; CLS/register position rows
// to the target's layout.
template <class T>
nn::StateDict<T> translate_vit_checkpoint(nn::StateDict<T> raw, const ViTCheckpointTarget& target) {
  bool has_teacher = false;
  for (const auto& [key, value] : raw) has_teacher = has_teacher || detail::starts_with(key, "teacher.");
  nn::StateDict<T> sd;
  for (const auto& [key, value] : raw) {
    if (has_teacher && !detail::starts_with(key, "teacher.")) continue;
    std::string name = detail::strip_wrappers(has_teacher ? key.substr(8) : key);
    // Dinov2ForImageClassification nests the backbone under "dinov2."
    if (detail::starts_with(name, "dinov2.") && detail::is_hf_dinov2(name.substr(7))) name = name.substr(7);
    if (detail::starts_with(name, "head.") || detail::starts_with(name, "dino_head.") ||
        detail::starts_with(name, "ibot_head."))
      continue;
    sd[name] = value;
  }
  bool hugging_face = false;
  for (const auto& [key, value] : sd) hugging_face = hugging_face || detail::is_hf_dinov2(key);
  if (hugging_face) sd = detail::from_hugging_face_dinov2(sd);

  const std::string other_reg = target.reg_key == "reg_token" ? "register_tokens" : "reg_token";
  const std::string other_fc1 = target.fc1_key == "fc1" ? "w12" : "fc1";
  const std::string other_fc2 = target.fc2_key == "fc2" ? "w3" : "fc2";
  nn::StateDict<T> out;
  for (auto& [key, value] : sd) {
    std::string name = detail::unchunk_block(key);
    if (name == "mask_token" && !target.has_mask_token) continue;
    if (name == other_reg) name = target.reg_key;
    if (detail::starts_with(name, "blocks.")) {
      for (auto [from, to] : {std::pair{other_fc1, target.fc1_key}, std::pair{other_fc2, target.fc2_key}}) {
        const std::string needle = ".mlp." + from + ".";
        if (auto at = name.find(needle); at != std::string::npos)
          name = name.substr(0, at) + ".mlp." + to + "." + name.substr(at + needle.size());
      }
    }
    out[name] = value;
  }
  detail::convert_position_layout(out, target);
  return out;
}

}  // namespace histograd::models
