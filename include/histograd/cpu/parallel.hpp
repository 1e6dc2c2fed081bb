// OpenMP helpers that compile to serial loops when OpenMP is off (the embedded build).
// parallel_for splits [0, n) into one contiguous range per thread; results never depend
// on how the range is split, which keeps every op deterministic across thread counts.
#pragma once
#include <algorithm>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace histograd::cpu {

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline bool in_parallel_region() {
#ifdef _OPENMP
  return omp_in_parallel();
#else
  return false;
#endif
}

// Runs body(begin, end) over [0, n) split across threads when the work (n * cost_per_item,
// in rough element-operations) is large enough to pay for waking them.
template <class Body>
void parallel_for(int64_t n, int64_t cost_per_item, Body&& body) {
  if (n <= 0) return;
  const int64_t min_work = 32768;
  int threads = max_threads();
  if (threads <= 1 || n == 1 || n * cost_per_item < min_work || in_parallel_region()) {
    body(int64_t(0), n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(threads, n)))
  {
    int64_t count = omp_get_num_threads(), id = omp_get_thread_num();
    int64_t begin = n * id / count, end = n * (id + 1) / count;
    if (begin < end) body(begin, end);
  }
#endif
}

}  // namespace histograd::cpu
