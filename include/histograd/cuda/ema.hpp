// The teacher's exponential moving average on the GPU (cuda/ema.cu), DINO/DINOv2's update
// teacher = m * teacher + (1 - m) * student, over one flat buffer or over every parameter tensor
// in a few launches (pointer tables passed as kernel arguments, as Apex's multi_tensor_apply).
// fp32 math; a bf16/fp16 student may update an fp32 master teacher. Plain C++, raw device pointers.
#pragma once
#include <cstdint>

#include "../core/dtype.hpp"

namespace histograd::cuda {

// teacher[i] = m * teacher[i] + (1 - m) * student[i] for i < n. Supported (TT, TS): (float, float),
// (float, bfloat16), (float, half), (bfloat16, bfloat16), (half, half).
// stream: a cudaStream_t, nullptr for the current one.
template <class TT, class TS>
void ema_update_flat(TT* teacher, const TS* student, int64_t n, double momentum, void* stream = nullptr);

// The same over `count` tensor pairs: teachers[i] and students[i] (device pointers, held in host
// arrays) of sizes[i] elements each (0 allowed). Up to kEmaTensorsPerLaunch tensors per launch.
template <class TT, class TS>
void ema_update_multi(TT* const* teachers, const TS* const* students, const int64_t* sizes, int64_t count,
                      double momentum, void* stream = nullptr);

inline constexpr int kEmaTensorsPerLaunch = 1000;

}  // namespace histograd::cuda
