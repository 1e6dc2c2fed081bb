// Where a tensor's storage lives: the CPU, or a CUDA device when histograd::cuda is linked.
// Ops check it, so a mixed-device call, or a CUDA tensor reaching an op that has no CUDA
// kernel yet, fails with a clear message.
#pragma once
#include <ostream>
#include <string>

namespace histograd {

enum class DeviceType { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return Device{}; }
  static Device cuda(int index = 0) { return Device{DeviceType::CUDA, index}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& other) const = default;
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

inline const Device kCPU{};
inline std::ostream& operator<<(std::ostream& out, const Device& d) { return out << d.str(); }

}  // namespace histograd
