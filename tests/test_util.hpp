// Shared helpers for the suites: closeness checks and a gradcheck wrapper that prints the
// first mismatching element when it fails.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <histograd/histograd.hpp>
#include <string>
#include <vector>

namespace hg = histograd;

template <class T>
void check_close(const hg::Tensor<T>& actual, const std::vector<double>& expected, double tol = 1e-6) {
  std::vector<T> got = actual.to_vector();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << double(got[i]) << ", expected " << expected[i]);
    CHECK(std::abs(double(got[i]) - expected[i]) <= tol * (1.0 + std::abs(expected[i])));
  }
}

template <class T>
void check_close(const hg::Tensor<T>& actual, const hg::Tensor<T>& expected, double tol = 1e-6) {
  REQUIRE(actual.shape() == expected.shape());
  std::vector<T> e = expected.to_vector();
  check_close(actual, std::vector<double>(e.begin(), e.end()), tol);
}

// Runs gradcheck and reports the first mismatch per input on failure.
inline void check_gradients(const std::function<hg::Tensor<double>(const std::vector<hg::Tensor<double>>&)>& f,
                            std::vector<hg::Tensor<double>> inputs, double atol = 1e-5, double rtol = 1e-4) {
  hg::GradcheckResult r = hg::gradcheck(f, std::move(inputs), 1e-6, atol, rtol);
  INFO(r.report);
  CHECK(r.ok);
}

// A random double tensor, optionally made non-contiguous by building it transposed.
inline hg::Tensor<double> random_input(const hg::Shape& shape, uint64_t seed, bool non_contiguous = false) {
  hg::Generator gen(seed);
  if (!non_contiguous || shape.size() < 2) return hg::randn<double>(shape, gen);
  hg::Shape swapped = shape;
  std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
  return hg::randn<double>(swapped, gen).transpose(-1, -2);
}

// random_input's values as T; `transposed` builds it as the .mT() view of a contiguous tensor.
template <class T>
hg::Tensor<T> random_t(const hg::Shape& shape, uint64_t seed, bool transposed = false) {
  if (!transposed || shape.size() < 2) return random_input(shape, seed).template to<T>();
  hg::Shape swapped = shape;
  std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
  return random_input(swapped, seed).template to<T>().mT();
}

// Exactly `count` little-endian float32 values from a fixture file (fails on a short or long file).
inline std::vector<float> read_floats(const std::string& path, int64_t count) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open fixture ", path);
  std::vector<float> values(static_cast<size_t>(count));
  in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * sizeof(float)));
  REQUIRE_MESSAGE(in.gcount() == static_cast<std::streamsize>(count * sizeof(float)), "short fixture ", path);
  in.peek();
  REQUIRE_MESSAGE(in.eof(), "fixture ", path, " is longer than expected");
  return values;
}

// The case lines of a fixture folder's index.txt (blank lines and # comments skipped).
inline std::vector<std::string> fixture_index_lines(const std::string& dir) {
  std::ifstream index(dir + "index.txt");
  REQUIRE_MESSAGE(index.good(), "cannot open fixture index ", dir, "index.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(index, line);)
    if (!line.empty() && line[0] != '#') lines.push_back(line);
  return lines;
}

// FNV-1a 64 of a byte range as 16 hex digits: the fixture scripts store hashes of images and
// point lists in this form (Python: the same loop over bytes).
inline std::string fnv1a_hex(const void* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// Whether this process can allocate on cuda:0. False in a build without the CUDA backend and on a
// machine without a usable GPU: both make the allocation throw histograd::Error.
inline bool cuda_allocates() {
  try {
    hg::Tensor<float> probe = hg::zeros<float>({1}, hg::Device::cuda());
    return true;
  } catch (const hg::Error&) {
    return false;
  }
}
