// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3", SC'11). Element i of a draw depends only on (seed, offset + i), so
// the same seed gives the same tensor on any thread count, and a GPU kernel can reproduce
// it. A Generator is (seed, offset); every draw advances the offset by what it consumed.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <mutex>

#include "host_device.hpp"

namespace histograd {

struct Philox4x32 {
  static constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  static constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;

  // Returns the four 32-bit outputs for a 128-bit counter and a 64-bit key (also called by
  // cuda/random.cu's kernels, so CPU and GPU draws share this one definition).
  HG_HOST_DEVICE static std::array<uint32_t, 4> block(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
    uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
    uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
      uint64_t p0 = static_cast<uint64_t>(kMul0) * c0, p1 = static_cast<uint64_t>(kMul1) * c2;
      uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0, n1 = static_cast<uint32_t>(p1);
      uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1, n3 = static_cast<uint32_t>(p0);
      c0 = n0; c1 = n1; c2 = n2; c3 = n3;
      k0 += kWeyl0; k1 += kWeyl1;
    }
    return {c0, c1, c2, c3};
  }
};

// Uniform in [0, 1) from 24 random bits (exactly representable in float and double).
HG_HOST_DEVICE inline double uniform_from_bits(uint32_t bits) { return static_cast<double>(bits >> 8) * (1.0 / 16777216.0); }

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x853c49e6748fea9bull) : seed_(seed) {}
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  // Reserves `blocks` Philox blocks for one draw and returns the first block's counter.
  uint64_t reserve(uint64_t blocks) {
    std::lock_guard<std::mutex> lock(mutex_);
    uint64_t start = offset_;
    offset_ += blocks;
    return start;
  }
  // Four uniforms in [0,1) for block `index` of a draw that started at `start`.
  std::array<double, 4> uniforms(uint64_t start, uint64_t index) const {
    auto bits = Philox4x32::block(start + index, 0, seed_);
    return {uniform_from_bits(bits[0]), uniform_from_bits(bits[1]), uniform_from_bits(bits[2]),
            uniform_from_bits(bits[3])};
  }
  // Four standard normals (Box-Muller on two pairs) for block `index`.
  std::array<double, 4> normals(uint64_t start, uint64_t index) const {
    auto u = uniforms(start, index);
    std::array<double, 4> out;
    for (int pair = 0; pair < 2; ++pair) {
      double u1 = 1.0 - u[2 * pair];  // (0, 1], so log is finite
      double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u[2 * pair + 1];
      out[2 * pair] = radius * std::cos(angle);
      out[2 * pair + 1] = radius * std::sin(angle);
    }
    return out;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
  std::mutex mutex_;
};

inline Generator& default_generator() {
  static Generator generator;
  return generator;
}
inline void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace histograd
