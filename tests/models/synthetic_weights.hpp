// Synthetic checkpoints for the ViT parity fixtures: weights that are computed, not stored, so a
// fixture can hold a ViT-g block (~28M values) in a few lines of text. Mirror of the formula in
// scripts/gen_vit_fixtures.py, bit for bit: for a tensor named K and element i (row-major),
//   h = splitmix64(fnv1a64(K) ^ (i * 0x9E3779B97F4A7C15)),  u = (h >> 40) * 2^-24,
//   value = float(base + (u - 0.5) * 2^exp)    (exact in double, then rounded once to float).
// A fixture lists each key as "name \t d0,d1,... \t exp \t base" (one per line).
#pragma once
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <histograd/histograd.hpp>
#include <histograd/nn/module.hpp>

namespace synthetic {

inline uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char byte : text) h = (h ^ byte) * 0x100000001B3ull;
  return h;
}

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The tensor `key` of `shape`, values base + (u - 0.5) * 2^exp.
template <class T = float>
histograd::Tensor<T> tensor(const std::string& key, const histograd::Shape& shape, int exp, double base) {
  histograd::Tensor<float> out = histograd::zeros<float>(shape);
  float* data = out.data();
  const int64_t n = out.numel();
  const uint64_t seed = fnv1a64(key);
  const double scale = std::ldexp(1.0, exp);
  histograd::cpu::parallel_for(n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t h = splitmix64(seed ^ (static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull));
      const double u = static_cast<double>(h >> 40) * 0x1p-24;
      data[i] = static_cast<float>(base + (u - 0.5) * scale);
    }
  });
  if constexpr (std::is_same_v<T, float>) return out;
  else return out.template to<T>();
}

struct KeySpec {
  std::string key;
  histograd::Shape shape;
  int exp = 0;
  double base = 0;
};

inline histograd::Shape parse_shape(const std::string& text) {
  histograd::Shape shape;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) shape.push_back(std::stoll(item));
  return shape;
}

// Parses the fixture's key list (one "name\tshape\texp\tbase" per line).
inline std::vector<KeySpec> parse_spec(const std::string& text) {
  std::vector<KeySpec> specs;
  std::stringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::stringstream in(line);
    for (std::string f; std::getline(in, f, '\t');) fields.push_back(f);
    HG_CHECK(fields.size() == 4, "synthetic::parse_spec", "expected 'name<TAB>shape<TAB>exp<TAB>base', got '", line,
             "'");
    specs.push_back({fields[0], parse_shape(fields[1]), std::stoi(fields[2]), std::stod(fields[3])});
  }
  return specs;
}

// The whole synthetic checkpoint, keyed by the checkpoint's own names.
template <class T = float>
histograd::nn::StateDict<T> state_dict(const std::vector<KeySpec>& specs) {
  histograd::nn::StateDict<T> out;
  for (const auto& s : specs) out.emplace(s.key, tensor<T>(s.key, s.shape, s.exp, s.base));
  return out;
}

}  // namespace synthetic
