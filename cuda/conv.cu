// cuDNN behind include/histograd/cuda/conv.hpp. For each call: describe the tensors, ask cuDNN's
// heuristics (the _v7 getters) for algorithms in order of expected speed, take the first whose
// workspace fits, and run it with a workspace from histograd's caching allocator.
#include <cuda_runtime.h>

#include "check.cuh"
#include "histograd/core/dtype.hpp"
#include "histograd/cuda/conv.hpp"

#ifdef HISTOGRAD_WITH_CUDNN
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudnn.h>

#include <mutex>
#include <unordered_map>

#define HG_CUDNN_CHECK(call)                                                                           \
  do {                                                                                                 \
    cudnnStatus_t hg_status_ = (call);                                                                 \
    if (hg_status_ != CUDNN_STATUS_SUCCESS)                                                            \
      throw ::histograd::Error(std::string(#call) + ": cuDNN error " + cudnnGetErrorString(hg_status_)); \
  } while (0)

namespace histograd::cuda {
namespace {

template <class T> constexpr cudnnDataType_t data_type() {
  if constexpr (std::is_same_v<T, float>) return CUDNN_DATA_FLOAT;
  else if constexpr (std::is_same_v<T, bfloat16>) return CUDNN_DATA_BFLOAT16;
  else return CUDNN_DATA_HALF;
}

cudnnHandle_t handle(cudaStream_t stream) {
  static std::mutex mutex;
  static auto* handles = new std::unordered_map<int, cudnnHandle_t>();
  std::lock_guard<std::mutex> lock(mutex);
  cudnnHandle_t& h = (*handles)[current_device()];
  if (!h) HG_CUDNN_CHECK(cudnnCreate(&h));
  HG_CUDNN_CHECK(cudnnSetStream(h, stream));
  return h;
}

// The descriptors of one convolution, destroyed with it.
template <class T>
struct ConvDescriptors {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  explicit ConvDescriptors(const Conv2dArgs& a) {
    const cudnnDataType_t type = data_type<T>();
    auto i = [](int64_t v) { return static_cast<int>(v); };
    HG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    HG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    HG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&bias));
    HG_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    HG_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    HG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, type, i(a.batch), i(a.in_channels), i(a.height),
                                              i(a.width)));
    HG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, type, i(a.batch), i(a.out_channels),
                                              i(a.out_height()), i(a.out_width())));
    HG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(bias, CUDNN_TENSOR_NCHW, type, 1, i(a.out_channels), 1, 1));
    HG_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, type, CUDNN_TENSOR_NCHW, i(a.out_channels), i(a.in_channels),
                                              i(a.kernel_h), i(a.kernel_w)));
    HG_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, i(a.pad_h), i(a.pad_w), i(a.stride_h), i(a.stride_w), 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    // FMA math keeps fp32 exact; tensor-op math is what bf16/fp16 (and opted-in TF32) want.
    const bool tensor_ops = !std::is_same_v<T, float> || a.allow_tf32;
    HG_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, tensor_ops ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  }
  ~ConvDescriptors() {
    cudnnDestroyConvolutionDescriptor(conv);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyTensorDescriptor(bias);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(x);
  }
};

// A workspace block from the caching allocator, released at scope end.
struct Workspace {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit Workspace(size_t n) : bytes(n) { ptr = n ? allocate(n) : nullptr; }
  ~Workspace() { if (ptr) release(ptr, bytes); }
};
constexpr size_t kWorkspaceLimit = size_t(256) << 20;

// Picks the first algorithm of cuDNN's ranked list that succeeded and fits the workspace limit.
template <class Perf>
const Perf& pick(const Perf* results, int count, const char* what) {
  for (int k = 0; k < count; ++k)
    if (results[k].status == CUDNN_STATUS_SUCCESS && results[k].memory <= kWorkspaceLimit) return results[k];
  throw Error(std::string("cuda::conv2d: cuDNN offers no ") + what + " algorithm within 256 MiB of workspace");
}

void check_args(const Conv2dArgs& a) {
  HG_CHECK(a.batch > 0 && a.in_channels > 0 && a.out_channels > 0 && a.kernel_h > 0 && a.kernel_w > 0 &&
               a.stride_h > 0 && a.stride_w > 0 && a.pad_h >= 0 && a.pad_w >= 0,
           "cuda::conv2d", "expected positive sizes and strides and non-negative padding");
  // Compared directly: out_height() divides a negative numerator toward zero and would say 1.
  HG_CHECK(a.kernel_h <= a.height + 2 * a.pad_h && a.kernel_w <= a.width + 2 * a.pad_w, "cuda::conv2d", "kernel ",
           a.kernel_h, "x", a.kernel_w, " is larger than the padded input ", a.height + 2 * a.pad_h, "x",
           a.width + 2 * a.pad_w);
}

// dbias[o] = Σ over (n, p, q) of dy[n, o, p, q]: one block per output channel, fp32 partial
// sums in a fixed order (cuDNN 9's cudnnConvolutionBackwardBias answers NOT_SUPPORTED for
// these layouts, and a reduction this simple is not worth a library call).
template <class T>
__global__ void conv_bias_grad_kernel(const T* dy, T* dbias, int64_t batch, int64_t channels, int64_t plane) {
  const int64_t channel = blockIdx.x;
  float sum = 0;
  for (int64_t n = 0; n < batch; ++n) {
    const T* row = dy + (n * channels + channel) * plane;
    for (int64_t i = threadIdx.x; i < plane; i += blockDim.x) sum += static_cast<float>(row[i]);
  }
  __shared__ float partial[256];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) dbias[channel] = T(partial[0]);
}

template <class T> struct DeviceType { using type = T; };
template <> struct DeviceType<bfloat16> { using type = __nv_bfloat16; };
template <> struct DeviceType<half> { using type = __half; };

}  // namespace

bool cudnn_available() { return available(); }

template <class T>
void conv2d_forward(const Conv2dArgs& args, const T* x, const T* weight, const T* bias, T* y, void* stream) {
  check_args(args);
  cudnnHandle_t h = handle(stream_or_current(stream));
  ConvDescriptors<T> d(args);
  cudnnConvolutionFwdAlgoPerf_t results[8];
  int count = 0;
  HG_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, 8, &count, results));
  const auto& best = pick(results, count, "forward");
  Workspace workspace(best.memory);
  const float one = 1, zero = 0;
  HG_CUDNN_CHECK(cudnnConvolutionForward(h, &one, d.x, x, d.w, weight, d.conv, best.algo, workspace.ptr, best.memory,
                                         &zero, d.y, y));
  if (bias) HG_CUDNN_CHECK(cudnnAddTensor(h, &one, d.bias, bias, &one, d.y, y));
}

template <class T>
void conv2d_backward(const Conv2dArgs& args, const T* x, const T* weight, const T* dy, T* dx, T* dweight, T* dbias,
                     void* stream) {
  check_args(args);
  cudnnHandle_t h = handle(stream_or_current(stream));
  ConvDescriptors<T> d(args);
  const float one = 1, zero = 0;
  if (dx) {
    cudnnConvolutionBwdDataAlgoPerf_t results[8];
    int count = 0;
    HG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x, 8, &count, results));
    const auto& best = pick(results, count, "backward-data");
    Workspace workspace(best.memory);
    HG_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, d.w, weight, d.y, dy, d.conv, best.algo, workspace.ptr,
                                                best.memory, &zero, d.x, dx));
  }
  if (dweight) {
    cudnnConvolutionBwdFilterAlgoPerf_t results[8];
    int count = 0;
    HG_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w, 8, &count, results));
    const auto& best = pick(results, count, "backward-filter");
    Workspace workspace(best.memory);
    HG_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, d.x, x, d.y, dy, d.conv, best.algo, workspace.ptr,
                                                  best.memory, &zero, d.w, dweight));
  }
  if (dbias) {
    using D = typename DeviceType<T>::type;
    conv_bias_grad_kernel<D><<<static_cast<unsigned>(args.out_channels), 256, 0, stream_or_current(stream)>>>(
        reinterpret_cast<const D*>(dy), reinterpret_cast<D*>(dbias), args.batch, args.out_channels,
        args.out_height() * args.out_width());
    HG_CUDA_CHECK_LAUNCH("conv2d_backward (bias)");
  }
}

#define HG_INSTANTIATE_CONV(T)                                                                            \
  template void conv2d_forward<T>(const Conv2dArgs&, const T*, const T*, const T*, T*, void*);            \
  template void conv2d_backward<T>(const Conv2dArgs&, const T*, const T*, const T*, T*, T*, T*, void*);
HG_INSTANTIATE_CONV(float)
HG_INSTANTIATE_CONV(bfloat16)
HG_INSTANTIATE_CONV(half)

}  // namespace histograd::cuda

#else  // built without cuDNN: the same symbols, each an Error saying so

namespace histograd::cuda {
bool cudnn_available() { return false; }
template <class T>
void conv2d_forward(const Conv2dArgs&, const T*, const T*, const T*, T*, void*) {
  throw Error("cuda::conv2d_forward: histograd::cuda was built without cuDNN");
}
template <class T>
void conv2d_backward(const Conv2dArgs&, const T*, const T*, const T*, T*, T*, T*, void*) {
  throw Error("cuda::conv2d_backward: histograd::cuda was built without cuDNN");
}
#define HG_INSTANTIATE_CONV(T)                                                                            \
  template void conv2d_forward<T>(const Conv2dArgs&, const T*, const T*, const T*, T*, void*);            \
  template void conv2d_backward<T>(const Conv2dArgs&, const T*, const T*, const T*, T*, T*, T*, void*);
HG_INSTANTIATE_CONV(float)
HG_INSTANTIATE_CONV(bfloat16)
HG_INSTANTIATE_CONV(half)
}  // namespace histograd::cuda

#endif
