// Sort and top-k along one dim on the GPU (cuda/sort.cu), the CUDA side of cpu/sort.hpp, with the
// same order: by value (NaN largest), ties by position, so the result is the CPU's exactly.
// A rank sort: each element counts the elements that order before it in its lane (O(n²) per
// lane, every comparison independent), then writes itself at its rank. Meant for the lanes
// MAE's random masking sorts (n = patches, up to a few thousand), not for long vectors.
#pragma once
#include <cstdint>

namespace histograd::cuda {

// x contiguous [outer, n, inner]; values/indices contiguous [outer, k, inner] receive the first k
// of each lane in ascending (descending) order, or, with !sorted, those k in input order.
// T ∈ {float, double, int64_t}.
template <class T>
void select_along(const T* x, int64_t outer, int64_t n, int64_t inner, int64_t k, bool descending, bool sorted,
                  T* values, int64_t* indices, void* stream = nullptr);

}  // namespace histograd::cuda
