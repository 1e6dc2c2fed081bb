// Where a tensor's storage lives: the CPU, or a CUDA device when histograd::cuda is linked.
// Ops check it, so a mixed-device call, or a CUDA tensor reaching an op that has no CUDA
// kernel yet, fails with a clear message.
#pragma once
#include <ostream>
#include <string>

#include "error.hpp"

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
  // The inverse of str(), plus "cuda" for cuda:0 (what a --device flag takes).
  static Device parse(const std::string& text) {
    if (text == "cpu") return cpu();
    if (text == "cuda") return cuda(0);
    const std::string index = text.rfind("cuda:", 0) == 0 ? text.substr(5) : "";
    HG_CHECK(!index.empty() && index.size() <= 4 && index.find_first_not_of("0123456789") == std::string::npos,
             "Device", "expected cpu, cuda or cuda:N, got '", text, "'");
    return cuda(std::stoi(index));
  }
};

inline const Device kCPU{};
inline std::ostream& operator<<(std::ostream& out, const Device& d) { return out << d.str(); }

}  // namespace histograd
