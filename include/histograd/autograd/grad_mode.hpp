// Whether ops record the graph. NoGradGuard switches recording off for a scope (inference,
// optimizer steps, EMA updates) on the current thread, like torch.no_grad().
#pragma once

namespace histograd {

struct GradMode {
  static bool& enabled_flag() {
    thread_local bool enabled = true;
    return enabled;
  }
  static bool is_enabled() { return enabled_flag(); }
  static void set_enabled(bool enabled) { enabled_flag() = enabled; }
};

class NoGradGuard {
 public:
  NoGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace histograd
