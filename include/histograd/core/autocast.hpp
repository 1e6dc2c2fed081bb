// Mixed precision as torch.autocast(dtype=torch.bfloat16): while an AutocastGuard is alive on this
// thread, matmul, bmm, linear and scaled_dot_product_attention on float tensors round their operands
// to bfloat16 (RNE), accumulate in fp32, round the result to bfloat16 and return it as float; their
// backward does the same to grad_output and to each gradient. Everything else, and the parameters
// (the fp32 master weights), stays in fp32. On CUDA those ops run the bf16 kernels; on the CPU they
// emulate the same roundings around the fp32 kernels — to check mixed-precision runs on any
// machine, not for speed. double tensors ignore the flag.
#pragma once

namespace histograd {

struct Autocast {
  static bool& enabled_flag() {
    thread_local bool enabled = false;
    return enabled;
  }
  static bool is_enabled() { return enabled_flag(); }
  static void set_enabled(bool enabled) { enabled_flag() = enabled; }
};

// Switches autocast on (or off, with `false`) for a scope; the previous state comes back on exit,
// exceptions included. Ops read the flag when they run forward, so backward() may run outside.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled = true) : previous_(Autocast::is_enabled()) { Autocast::set_enabled(enabled); }
  ~AutocastGuard() { Autocast::set_enabled(previous_); }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace histograd
