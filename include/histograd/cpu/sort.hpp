// Sorting and top-k along one dim of a contiguous tensor seen as [outer, n, inner]: each
// lane (o, ·, c) is ordered on its own. Ties keep their original order and NaN counts as
// larger than every number (torch.sort's conventions), so the result is one fixed order.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "parallel.hpp"

namespace histograd::cpu {

// Up to this k, top-k is one insertion pass per lane rather than a partial sort.
constexpr int64_t kSmallTopk = 16;

// Writes the first k of each lane's order (ascending, or descending when `descending`) to
// values/indices [outer, k, inner]; with !sorted those k keep their original order instead.
template <class T>
void select_along(const T* x, int64_t outer, int64_t n, int64_t inner, int64_t k, bool descending, bool sorted,
                  T* values, int64_t* indices) {
  const int64_t lanes = outer * inner;
  const int64_t cost = n * std::max<int64_t>(1, static_cast<int64_t>(std::log2(static_cast<double>(n) + 1)));
  const bool small_k = k > 0 && k <= kSmallTopk && k < n;
  parallel_for(lanes, cost, [&](int64_t begin, int64_t end) {
    std::vector<T> buffer(inner == 1 ? 0 : static_cast<size_t>(n));
    std::vector<int64_t> order(static_cast<size_t>(k));
    std::vector<std::pair<T, int64_t>> pairs(small_k ? 0 : static_cast<size_t>(n));
    const T* lane = nullptr;  // the current lane, contiguous
    // Value a ranks strictly before value b (NaN largest); equal values fall back to position.
    auto value_before = [&](T a, T b) {
      if (descending ? a > b : a < b) return true;
      if constexpr (std::is_floating_point_v<T>)
        return descending ? std::isnan(a) && !std::isnan(b) : std::isnan(b) && !std::isnan(a);
      return false;
    };
    // A strict total order on positions: by value, then by position, so ties stay stable.
    auto before = [&](int64_t a, int64_t b) {
      const T va = lane[a], vb = lane[b];
      if (value_before(va, vb)) return true;
      return !value_before(vb, va) && a < b;
    };
    auto pair_before = [&](const std::pair<T, int64_t>& a, const std::pair<T, int64_t>& b) {
      if (value_before(a.first, b.first)) return true;
      return !value_before(b.first, a.first) && a.second < b.second;
    };
    for (int64_t l = begin; l < end; ++l) {
      const int64_t o = l / inner, c = l % inner;
      const T* src = x + o * n * inner + c;
      if (inner == 1) {
        lane = src;
      } else {
        for (int64_t j = 0; j < n; ++j) buffer[static_cast<size_t>(j)] = src[j * inner];
        lane = buffer.data();
      }
      if (small_k) {
        // Small k: one pass keeping the best k in insertion order; a later element enters
        // only by beating the current k-th outright, and most lose that one comparison.
        int64_t held = 0;
        for (int64_t j = 0; j < n; ++j) {
          if (held == k && !value_before(lane[j], lane[order[static_cast<size_t>(k - 1)]])) continue;
          int64_t slot = held < k ? held++ : k - 1;
          for (; slot > 0 && before(j, order[static_cast<size_t>(slot - 1)]); --slot)
            order[static_cast<size_t>(slot)] = order[static_cast<size_t>(slot - 1)];
          order[static_cast<size_t>(slot)] = j;
        }
        if (!sorted) std::sort(order.begin(), order.begin() + k);
      } else {
        // (value, position) pairs sort in cache instead of chasing positions into the lane.
        for (int64_t j = 0; j < n; ++j) pairs[static_cast<size_t>(j)] = {lane[j], j};
        const auto pair_end = pairs.begin() + n, top_end = pairs.begin() + k;
        if (!sorted) {
          if (k < n) std::nth_element(pairs.begin(), top_end, pair_end, pair_before);
          std::sort(pairs.begin(), top_end, [](const auto& a, const auto& b) { return a.second < b.second; });
        } else if (k == n) {
          std::sort(pairs.begin(), pair_end, pair_before);
        } else {
          std::partial_sort(pairs.begin(), top_end, pair_end, pair_before);
        }
        for (int64_t j = 0; j < k; ++j) order[static_cast<size_t>(j)] = pairs[static_cast<size_t>(j)].second;
      }
      T* value_out = values + o * k * inner + c;
      int64_t* index_out = indices + o * k * inner + c;
      for (int64_t j = 0; j < k; ++j) {
        index_out[j * inner] = order[static_cast<size_t>(j)];
        value_out[j * inner] = lane[order[static_cast<size_t>(j)]];
      }
    }
  });
}

}  // namespace histograd::cpu
