// Shared by the benchmark programs: timing (best of repeated runs after a warm-up), peak
// RSS, and running the PyTorch reference script in the same run to print a ratio.
#pragma once
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>

namespace bench {

// Median of `repeats` timed calls, after one warm-up call, in seconds.
template <class F>
double time_median(F&& f, int repeats) {
  f();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    auto start = std::chrono::steady_clock::now();
    f();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

inline double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// Runs a shell command and parses the "key value" lines it prints; empty when it cannot run.
inline std::map<std::string, double> run_and_parse(const std::string& command) {
  std::map<std::string, double> out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return out;
  std::array<char, 512> line{};
  while (fgets(line.data(), line.size(), pipe)) {
    std::istringstream in(line.data());
    std::string key;
    double value;
    if (in >> key >> value) out[key] = value;
  }
  pclose(pipe);
  return out;
}

// Runs `python3 <script> <args>` from the benchmarks folder; empty when Python or the script's
// imports are missing (the tables then print n/a).
inline std::map<std::string, double> run_reference_script(const std::string& script, const std::string& args) {
  return run_and_parse("python3 " HISTOGRAD_BENCHMARKS_DIR "/" + script + " " + args + " 2>/dev/null");
}

// The same work through PyTorch (torch_reference.py), for the ratio columns.
inline std::map<std::string, double> run_torch_reference(const std::string& args) {
  return run_reference_script("torch_reference.py", args);
}

}  // namespace bench
