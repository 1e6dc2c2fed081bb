// Where a tensor's storage lives. Only the CPU executes today; the CUDA backend plugs
// into the same tag, and ops check it so a mixed-device call fails with a clear message.
#pragma once
#include <ostream>
#include <string>

namespace histograd {

enum class DeviceType { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& other) const = default;
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

inline const Device kCPU{};
inline std::ostream& operator<<(std::ostream& out, const Device& d) { return out << d.str(); }

}  // namespace histograd
