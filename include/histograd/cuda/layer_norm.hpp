// Layer norm over the last dim on the GPU (cuda/layer_norm.cu), the CUDA side of
// cpu/layer_norm.hpp: same math (biased variance, dx = rstd (dy w - mean(dy w) - xhat mean(dy w xhat))),
// fp32 statistics and accumulation for every storage type. Launchers take raw device pointers to
// contiguous [rows, cols] data; plain C++ (no CUDA headers) so the header-only ops can call them.
#pragma once
#include <cstdint>

#include "../core/dtype.hpp"

namespace histograd::cuda {

// y = (x - mean) * rstd * weight + bias per row; mean and rstd (fp32, [rows]) are saved for the
// backward. weight and bias may be nullptr (ones and zeros). T: float, bfloat16 or half.
// Nothing is written when rows or cols is 0. stream: a cudaStream_t, nullptr for the current one.
template <class T>
void layer_norm_forward(const T* x, const T* weight, const T* bias, T* y, float* mean, float* rstd, int64_t rows,
                        int64_t cols, double eps, void* stream = nullptr);

// dx, dweight = Σ_rows dy * xhat and dbias = Σ_rows dy; each output may be nullptr when not wanted,
// weight may be nullptr (ones). The weight/bias sums go through per-block fp32 partials in scratch
// from histograd::cuda::allocate and a second fixed-order reduction kernel (no atomics), so they are
// bit-reproducible run to run on one device.
template <class T>
void layer_norm_backward(const T* x, const T* dy, const T* weight, const float* mean, const float* rstd, T* dx,
                         T* dweight, T* dbias, int64_t rows, int64_t cols, void* stream = nullptr);

// Which kernels the launchers use (process-wide): 2, the default, takes one warp per row for
// 16-byte-aligned rows of up to 512 vectors forward (2048 fp32 / 4096 16-bit columns) and 256
// (fp32) or 192 (16-bit) backward, i.e. 1024 / 1536 columns; other rows, and everything under 1, go to the block-per-row kernels of GPU run 1,
// kept so tests and benchmarks can compare the two.
void set_layer_norm_kernel_version(int version);
int layer_norm_kernel_version();

}  // namespace histograd::cuda
