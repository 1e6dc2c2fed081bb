// Mixed precision as torch.autocast(dtype=torch.bfloat16): while an AutocastGuard is alive on this
// thread, matmul, bmm, linear and scaled_dot_product_attention on float tensors round their operands
// to bfloat16 (RNE), accumulate in fp32, round the result to bfloat16 and return it as float; their
// backward does the same to grad_output and to each gradient. Everything else, and the parameters
// (the fp32 master weights), stays in fp32. On CUDA those ops run the bf16 kernels; on the CPU they
// emulate the same roundings around the fp32 kernels — to check mixed-precision runs on any
// machine, not for speed. conv2d follows the same rule. double tensors ignore the flag.
//
// As torch's autocast, a region caches the bf16 form of each weight it multiplies (linear's W,
// when W is a parameter: a leaf that requires grad), so a weight read by several forward passes
// (DINO's two crop resolutions) and by backward is converted once. The cache empties when the
// guard that switched autocast on is destroyed. A weight must not change inside a region: the
// optimizer steps after it, as in torch.
#pragma once
#include <memory>
#include <vector>

namespace histograd {

struct Autocast {
  static bool& enabled_flag() {
    thread_local bool enabled = false;
    return enabled;
  }
  static bool is_enabled() { return enabled_flag(); }
  static void set_enabled(bool enabled) { enabled_flag() = enabled; }

  // The region's weight cache, type-erased (ops/matmul.hpp fills it): `source` keeps the weight's
  // TensorImpl alive, so its address (the key) cannot be reused by another tensor meanwhile.
  struct CachedWeight {
    const void* key = nullptr;
    std::shared_ptr<const void> source, converted;
  };
  static std::vector<CachedWeight>& cache() {
    thread_local std::vector<CachedWeight> entries;
    return entries;
  }
  static const void* find_cached(const void* key) {
    for (const CachedWeight& entry : cache())
      if (entry.key == key) return entry.converted.get();
    return nullptr;
  }
};

// Switches autocast on (or off, with `false`) for a scope; the previous state comes back on exit,
// exceptions included. Ops read the flag when they run forward, so backward() may run outside.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled = true) : previous_(Autocast::is_enabled()) { Autocast::set_enabled(enabled); }
  ~AutocastGuard() {
    Autocast::set_enabled(previous_);
    if (!previous_) Autocast::cache().clear();  // the region this guard opened has ended
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace histograd
