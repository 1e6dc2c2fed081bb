// The bodies of the checkpoint-reader fuzzers, shared by the libFuzzer harnesses in this folder
// and tests/io/fuzz_corpus_test.cpp (which replays the seed corpus in the normal test build).
// The property under test: any byte string either parses or throws histograd::Error; nothing
// else may escape, and sanitizers must stay quiet while every returned tensor is read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

#include <histograd/io/pth.hpp>
#include <histograd/io/safetensors.hpp>

namespace histograd::fuzz {

// Reads every element, so an out-of-bounds view shows up under AddressSanitizer. Tensors that
// legitimately expand a few stored elements to a huge size (stride 0) are only spot-checked.
template <class T> double touch(const Tensor<T>& t) {
  if (t.numel() > (int64_t(1) << 20)) return static_cast<double>(t.data()[0]);
  double sum = 0;
  for (T v : t.to_vector()) sum += static_cast<double>(v);
  return sum;
}

inline void parse_safetensors(const uint8_t* data, size_t size) {
  try {
    io::SafetensorsFile file(std::span<const unsigned char>(data, size), "fuzz.safetensors");
    for (const auto& name : file.keys()) {
      try { touch(file.get<float>(name)); } catch (const Error&) {}
      try { touch(file.get<int64_t>(name)); } catch (const Error&) {}
    }
  } catch (const Error&) {
  }
}

inline void parse_pth(const uint8_t* data, size_t size) {
  try {
    for (const auto& [name, tensor] : io::read_pth<float>(std::span<const unsigned char>(data, size), "fuzz.pth"))
      touch(tensor);
  } catch (const Error&) {
  }
}

}  // namespace histograd::fuzz
