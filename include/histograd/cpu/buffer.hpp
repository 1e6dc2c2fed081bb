// Scratch buffers for kernels. Eigen's vectorised reductions peel elements until the data is
// packet-aligned, so the summation order (and the rounding) of a reduction over a scratch
// buffer depends on its address. Packet-aligned scratch makes every run, on every thread,
// round the same way.
#pragma once
#include <Eigen/Core>
#include <vector>

namespace histograd::cpu {

template <class T>
using AlignedBuffer = std::vector<T, Eigen::aligned_allocator<T>>;

}  // namespace histograd::cpu
