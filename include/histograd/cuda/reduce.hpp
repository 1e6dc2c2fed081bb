// Row reductions on the GPU (cuda/reduce.cu). ops/reduce.hpp permutes the reduced dims
// innermost and makes that contiguous, so every reduction here is over rows of `length`
// contiguous elements: one block per row (warp shuffles, then shared memory) for long rows,
// one thread per row for short ones. Float sums accumulate in double, as the CPU's do.
#pragma once
#include <cstdint>

namespace histograd::cuda {

enum class ReduceOp {
  Sum,
  Max,        // NaN wins (amax)
  Min,        // NaN wins
  LogSumExp,  // m + log Σ exp(x - m), m the row max; -inf/inf rows give m
};

// out[r] = op(in[r * length : (r + 1) * length]); T ∈ {float, double}. length 0 gives 0 for Sum.
template <class T>
void reduce_rows(ReduceOp op, const T* in, int64_t rows, int64_t length, T* out, void* stream = nullptr);
// values[r], indices[r] = the first largest (smallest) element of row r; NaN counts as extreme
// (the first NaN wins), as ops/reduce.hpp's max/min. length must be > 0.
template <class T>
void arg_extreme_rows(bool largest, const T* in, int64_t rows, int64_t length, T* values, int64_t* indices,
                      void* stream = nullptr);
// out[(o * length + indices[r]) * inner + i] += source[r] with r = o * inner + i (max/min's backward).
template <class T>
void scatter_add_rows(const T* source, const int64_t* indices, int64_t outer, int64_t length, int64_t inner, T* out,
                      void* stream = nullptr);

}  // namespace histograd::cuda
