// 2-D convolution on the GPU through cuDNN (NCHW, groups 1): forward with bias, and backward
// to input, weight and bias. ViTs use it once, as the patch embedding (kernel = stride = patch);
// the general strides and paddings are here because cuDNN gives them for free. Defined in
// cuda/conv.cu when cuDNN was found (HISTOGRAD_WITH_CUDNN); otherwise each call is an Error.
#pragma once
#include <cstdint>

namespace histograd::cuda {

struct Conv2dArgs {
  int64_t batch = 0, in_channels = 0, height = 0, width = 0;
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  bool allow_tf32 = false;  // fp32 operands on the tensor cores (~3e-4); off = FMA-exact fp32
  int64_t out_height() const { return (height + 2 * pad_h - kernel_h) / stride_h + 1; }
  int64_t out_width() const { return (width + 2 * pad_w - kernel_w) / stride_w + 1; }
};

bool cudnn_available();

// y[N,O,H',W'] = conv(x[N,C,H,W], w[O,C,kh,kw]) + bias[O] (bias may be nullptr).
template <class T>
void conv2d_forward(const Conv2dArgs& args, const T* x, const T* weight, const T* bias, T* y, void* stream = nullptr);

// Any of dx, dweight, dbias may be nullptr (not wanted). dweight and dbias are overwritten.
template <class T>
void conv2d_backward(const Conv2dArgs& args, const T* x, const T* weight, const T* dy, T* dx, T* dweight, T* dbias,
                     void* stream = nullptr);

}  // namespace histograd::cuda
