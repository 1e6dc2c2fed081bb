// Random masks from the counter-based Philox generator. Element i of a mask reads lane i%4
// of block i/4 of the draw, exactly as core/factories.hpp's rand does, so a mask depends
// on (seed, offset) alone and never on the thread count.
#pragma once
#include <cstdint>

#include "../core/random.hpp"
#include "parallel.hpp"

namespace histograd::cpu {

// keep[i] = (u_i >= p), so each element survives with probability 1 - p; out[i] = keep ?
// x[i] * scale : 0. `start` is the first block gen.reserve((n + 3) / 4) handed out.
template <class T>
void dropout_forward(const T* x, int64_t n, double p, T scale, const Generator& gen, uint64_t start, T* out,
                     bool* keep) {
  const int64_t blocks = (n + 3) / 4;
  parallel_for(blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const auto u = gen.uniforms(start, static_cast<uint64_t>(b));
      for (int64_t lane = 0; lane < 4 && 4 * b + lane < n; ++lane) {
        const int64_t i = 4 * b + lane;
        keep[i] = u[static_cast<size_t>(lane)] >= p;
        out[i] = keep[i] ? x[i] * scale : T(0);
      }
    }
  });
}

}  // namespace histograd::cpu
