// iBOT/DINOv2 block-wise patch masks: BEiT's MaskingGenerator (dinov2/data/masking.py) and the
// per-image mask ratios of DINOv2's collate (dinov2/data/collate.py, collate_data_and_cast), with
// the reference's number types kept (Python floats in the generator, float32 torch scalars in the
// ratio sampling). The random draws come from a MaskDraws source, so a test can replay the draws
// the reference took from Python's `random` and get the same masks bit for bit.
#pragma once
#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "../core/error.hpp"
#include "../core/factories.hpp"
#include "../core/random.hpp"

namespace histograd::ssl {

// The two primitives Python's random.Random builds uniform(), randint() and shuffle() from:
//   uniform(a, b) = a + (b - a) * random();  randint(a, b) = a + randbelow(b - a + 1);
//   shuffle(x): for i = n-1 .. 1: swap(x[i], x[randbelow(i + 1)]).
class MaskDraws {
 public:
  virtual ~MaskDraws() = default;
  virtual double random() = 0;                 // uniform in [0, 1)
  virtual int64_t randbelow(int64_t n) = 0;    // uniform integer in [0, n), n >= 1
};

// Draws from histograd's Philox generator (one block per draw, so a draw's value depends only on
// the generator's seed and how many draws came before).
class GeneratorMaskDraws : public MaskDraws {
 public:
  explicit GeneratorMaskDraws(Generator& gen) : gen_(gen) {}
  double random() override { return gen_.uniforms(gen_.reserve(1), 0)[0]; }
  int64_t randbelow(int64_t n) override {
    HG_CHECK(n >= 1, "GeneratorMaskDraws", "randbelow expects n >= 1, got ", n);
    return std::min<int64_t>(static_cast<int64_t>(random() * static_cast<double>(n)), n - 1);
  }

 private:
  Generator& gen_;
};

// Rectangles of patches placed at random until the requested count is reached (BEiT block
// masking). Masks are row-major height x width bytes (1 = masked).
class MaskingGenerator {
 public:
  // max_num_patches defaults to num_masking_patches and max_aspect to 1 / min_aspect, as in the
  // reference. DINOv2's training passes (grid, grid) and max_num_patches = 0.5 * grid * grid.
  MaskingGenerator(int64_t height, int64_t width, std::optional<double> num_masking_patches = std::nullopt,
                   double min_num_patches = 4, std::optional<double> max_num_patches = std::nullopt,
                   double min_aspect = 0.3, std::optional<double> max_aspect = std::nullopt)
      : height(height), width(width), min_num_patches(min_num_patches) {
    HG_CHECK(height >= 1 && width >= 1, "MaskingGenerator", "expected a positive grid, got ", height, "x", width);
    HG_CHECK(min_aspect > 0 && (!max_aspect || *max_aspect > 0), "MaskingGenerator",
             "expected positive aspect ratios, got min_aspect ", min_aspect);
    HG_CHECK(max_num_patches || num_masking_patches, "MaskingGenerator",
             "expected max_num_patches or num_masking_patches to bound the rectangles, got neither");
    this->max_num_patches = max_num_patches ? *max_num_patches : *num_masking_patches;
    log_aspect_min = std::log(min_aspect);
    log_aspect_max = std::log(max_aspect && *max_aspect != 0 ? *max_aspect : 1.0 / min_aspect);
  }

  // A mask with (at most, when no rectangle fits any more) num_masking_patches masked patches.
  std::vector<uint8_t> operator()(int64_t num_masking_patches, MaskDraws& draws) const {
    std::vector<uint8_t> mask(static_cast<size_t>(height * width), 0);
    int64_t mask_count = 0;
    while (mask_count < num_masking_patches) {
      const double max_mask_patches =
          std::min(static_cast<double>(num_masking_patches - mask_count), max_num_patches);
      const int64_t delta = place_rectangle(mask, max_mask_patches, draws);
      if (delta == 0) break;
      mask_count += delta;
    }
    return mask;
  }

  int64_t height, width;
  double min_num_patches, max_num_patches;
  double log_aspect_min, log_aspect_max;

 private:
  // Up to 10 tries at one rectangle; returns how many patches it newly masked.
  int64_t place_rectangle(std::vector<uint8_t>& mask, double max_mask_patches, MaskDraws& draws) const {
    int64_t delta = 0;
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target_area = min_num_patches + (max_mask_patches - min_num_patches) * draws.random();
      const double aspect_ratio = std::exp(log_aspect_min + (log_aspect_max - log_aspect_min) * draws.random());
      // Python's round() ties to even, as nearbyint does in the default rounding mode.
      const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect_ratio)));
      const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect_ratio)));
      if (w < width && h < height) {
        const int64_t top = draws.randbelow(height - h + 1), left = draws.randbelow(width - w + 1);
        int64_t already = 0;
        for (int64_t i = top; i < top + h; ++i)
          for (int64_t j = left; j < left + w; ++j) already += mask[static_cast<size_t>(i * width + j)];
        const double fresh = static_cast<double>(h * w - already);
        if (0 < fresh && fresh <= max_mask_patches) {
          for (int64_t i = top; i < top + h; ++i)
            for (int64_t j = left; j < left + w; ++j) {
              uint8_t& m = mask[static_cast<size_t>(i * width + j)];
              if (m == 0) {
                m = 1;
                ++delta;
              }
            }
        }
        if (delta > 0) break;
      }
    }
    return delta;
  }
};

// torch.linspace(start, end, steps) in float32 as torch's CPU kernel computes it: the step in
// float, the first half counted up from start and the second half down from end, each value one
// fused multiply-add (the vectorised kernel's fmadd; a separate multiply and add differs in the
// last bit for 21 of the step counts 2..33).
inline std::vector<float> linspace_float32(double start, double end, int64_t steps) {
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(steps, 0)));
  if (steps == 1) out[0] = static_cast<float>(start);
  if (steps <= 1) return out;
  const float a = static_cast<float>(start), b = static_cast<float>(end);
  const float step = (b - a) / static_cast<float>(steps - 1);
  const int64_t halfway = steps / 2;
  for (int64_t i = 0; i < steps; ++i)
    out[static_cast<size_t>(i)] = i < halfway ? std::fma(step, static_cast<float>(i), a)
                                              : std::fma(-step, static_cast<float>(steps - i - 1), b);
  return out;
}

// The masks of one batch of global crops, as collate_data_and_cast returns them.
struct MaskBatch {
  int64_t num_images = 0, num_tokens = 0;
  std::vector<uint8_t> masks;         // [num_images, num_tokens] (collated_masks)
  std::vector<int64_t> mask_indices;  // flat indices of the masked tokens (mask_indices_list)
  std::vector<float> masks_weight;    // 1 / (#masked in the token's image), float32 as the reference
  int64_t upperbound = 0;             // Σ int(N · ratio_max) over the masked images (buffer size)
  int64_t n_masked_patches() const { return static_cast<int64_t>(mask_indices.size()); }

  Tensor<bool> masks_tensor() const {
    Tensor<bool> t = empty<bool>({num_images, num_tokens});
    for (size_t i = 0; i < masks.size(); ++i) t.data()[i] = masks[i] != 0;
    return t;
  }
  Tensor<int64_t> indices_tensor() const {
    return from_vector<int64_t>(mask_indices, {static_cast<int64_t>(mask_indices.size())});
  }
  template <class T> Tensor<T> weight_tensor() const {
    std::vector<T> w(masks_weight.begin(), masks_weight.end());
    return from_vector<T>(w, {static_cast<int64_t>(w.size())});
  }
};

// Builds a MaskBatch from per-image masks in order (the masks_weight/indices part of the collate).
inline MaskBatch collate_masks(const std::vector<std::vector<uint8_t>>& per_image, int64_t num_tokens,
                               int64_t upperbound = 0) {
  MaskBatch batch;
  batch.num_images = static_cast<int64_t>(per_image.size());
  batch.num_tokens = num_tokens;
  batch.upperbound = upperbound;
  for (int64_t i = 0; i < batch.num_images; ++i) {
    const auto& m = per_image[static_cast<size_t>(i)];
    HG_CHECK(static_cast<int64_t>(m.size()) == num_tokens, "collate_masks", "expected masks of ", num_tokens,
             " tokens, got ", m.size(), " for image ", i);
    int64_t count = 0;
    for (uint8_t v : m) count += v != 0;
    const float weight = 1.0f / static_cast<float>(std::max<int64_t>(count, 1));
    for (int64_t j = 0; j < num_tokens; ++j) {
      const bool on = m[static_cast<size_t>(j)] != 0;
      batch.masks.push_back(on ? 1 : 0);
      if (on) {
        batch.mask_indices.push_back(i * num_tokens + j);
        batch.masks_weight.push_back(weight);
      }
    }
  }
  return batch;
}

// collate_data_and_cast's masking for num_images global crops of num_tokens patches each:
// n = int(num_images · mask_probability) images get int(N · U(r_i, r_{i+1})) patches with
// r = linspace(ratio_min, ratio_max, n + 1) (float32), the rest none; the list is then shuffled.
inline MaskBatch sample_masks(int64_t num_images, int64_t num_tokens, const MaskingGenerator& generator,
                              MaskDraws& draws, double mask_ratio_min = 0.1, double mask_ratio_max = 0.5,
                              double mask_probability = 0.5) {
  HG_CHECK(num_images >= 1 && num_tokens == generator.height * generator.width, "sample_masks",
           "expected num_tokens = the generator's grid (", generator.height * generator.width, ") and images >= 1, got ",
           num_tokens, " tokens and ", num_images, " images");
  HG_CHECK(mask_probability >= 0 && mask_probability <= 1, "sample_masks",
           "expected mask_probability in [0, 1], got ", mask_probability);
  const auto n_masked = static_cast<int64_t>(static_cast<double>(num_images) * mask_probability);
  const std::vector<float> probs = linspace_float32(mask_ratio_min, mask_ratio_max, n_masked + 1);
  const float tokens = static_cast<float>(num_tokens);
  std::vector<std::vector<uint8_t>> masks;
  int64_t upperbound = 0;
  for (int64_t i = 0; i < n_masked; ++i) {
    const float lo = probs[static_cast<size_t>(i)], hi = probs[static_cast<size_t>(i + 1)];
    // random.uniform on float32 tensors: lo + (hi - lo) * r evaluated in float32.
    const float ratio = lo + (hi - lo) * static_cast<float>(draws.random());
    masks.push_back(generator(static_cast<int64_t>(tokens * ratio), draws));
    upperbound += static_cast<int64_t>(tokens * hi);
  }
  for (int64_t i = n_masked; i < num_images; ++i) masks.push_back(generator(0, draws));
  for (int64_t i = num_images - 1; i > 0; --i) std::swap(masks[static_cast<size_t>(i)], masks[static_cast<size_t>(draws.randbelow(i + 1))]);
  return collate_masks(masks, num_tokens, upperbound);
}

}  // namespace histograd::ssl
