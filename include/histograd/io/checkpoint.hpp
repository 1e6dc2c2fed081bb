// One entry point for published weights: read_checkpoint tells safetensors from a torch.save
// zip by their first bytes (not the extension: hubs name both ".bin" or ".pth"), and
// load_weights puts a checkpoint into a model through the model's own key translation and a
// strict load_state_dict that shares the file's memory where it can.
#pragma once
#include <cstdio>
#include <map>
#include <string>

#include "../nn/module.hpp"
#include "mapped_file.hpp"
#include "pth.hpp"
#include "safetensors.hpp"

namespace histograd::io {

enum class CheckpointFormat { Safetensors, TorchZip, TorchLegacy, Unknown };

// safetensors: u64 header length, then '{'. torch.save: a zip ("PK\3\4"); before torch 1.6 a
// stream of pickles (protocol byte 0x80).
inline CheckpointFormat detect_checkpoint_format(const unsigned char* head, size_t size) {
  if (size >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) return CheckpointFormat::TorchZip;
  if (size >= 9 && head[8] == '{') return CheckpointFormat::Safetensors;
  if (size >= 2 && head[0] == 0x80 && head[1] <= 5) return CheckpointFormat::TorchLegacy;
  return CheckpointFormat::Unknown;
}

// Every tensor of a checkpoint (safetensors, or torch.save's zip) as T, keyed as in its state dict.
template <class T>
std::map<std::string, Tensor<T>> read_checkpoint(const std::string& path) {
  unsigned char head[9] = {};
  size_t got = 0;
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    got = std::fread(head, 1, sizeof head, f);
    std::fclose(f);
  } else {
    fail("read_checkpoint", "cannot open '", path, "'");
  }
  switch (detect_checkpoint_format(head, got)) {
    case CheckpointFormat::Safetensors: return load_safetensors<T>(path);
    case CheckpointFormat::TorchZip:
    case CheckpointFormat::TorchLegacy: return read_pth<T>(path);  // zip, or the pre-1.6 pickle stream
    case CheckpointFormat::Unknown: break;
  }
  fail("read_checkpoint", path, ": neither a safetensors file nor a torch.save checkpoint (first bytes unknown)");
}

// Reads `path` and loads it into `model`: keys pass through model.translate_checkpoint (prefixes,
// another codebase's names), then load_state_dict(strict, assign=true) so contiguous tensors share
// the mapped file instead of being copied. strict: any missing, unexpected or mis-shaped key throws.
template <class T>
void load_weights(nn::Module<T>& model, const std::string& path, bool strict = true) {
  model.load_state_dict(model.translate_checkpoint(read_checkpoint<T>(path)), strict, /*assign=*/true);
}

}  // namespace histograd::io
