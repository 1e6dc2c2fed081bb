// The CUDA runtime behind include/histograd/cuda/runtime.hpp: device discovery, one stream per
// device, and the caching allocator (per-size free lists over cudaMalloc, as PyTorch's and
// llm.c's arenas do, so steady-state training never calls cudaMalloc/cudaFree).
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "check.cuh"

namespace histograd::cuda {
namespace {

struct DeviceProbe {
  int count = 0;
  std::string reason;
  DeviceProbe() {
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(status) + " (" +
               cudaGetErrorString(status) + ")";
      count = 0;
      cudaGetLastError();  // clear the sticky-free error so later probes are not poisoned
    } else if (count == 0) {
      reason = "no CUDA device is present";
    }
  }
};
const DeviceProbe& probe() {
  static DeviceProbe instance;
  return instance;
}

class Allocator {
 public:
  // Small blocks round to 512 B, large ones to 2 MiB, so near sizes share a free list.
  static size_t rounded(size_t bytes) {
    const size_t unit = bytes < (size_t(1) << 20) ? 512 : (size_t(2) << 20);
    return std::max<size_t>(unit, (bytes + unit - 1) / unit * unit);
  }
  void* allocate(size_t bytes) {
    const size_t size = rounded(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto& list = free_[size];
    void* block = nullptr;
    if (!list.empty()) {
      block = list.back();
      list.pop_back();
      cached_ -= size;
    } else {
      cudaError_t status = cudaMalloc(&block, size);
      if (status == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        release_cache_locked();
        status = cudaMalloc(&block, size);
      }
      if (status != cudaSuccess) {
        cudaGetLastError();
        throw Error("cuda::allocate: cudaMalloc of " + std::to_string(size >> 20) + " MiB failed: " +
                    cudaGetErrorString(status) + " (" + std::to_string(allocated_ >> 20) + " MiB held by tensors, " +
                    std::to_string(cached_ >> 20) + " MiB cached)");
      }
    }
    allocated_ += size;
    peak_ = std::max(peak_, allocated_);
    return block;
  }
  void release(void* block, size_t bytes) {
    if (!block) return;
    const size_t size = rounded(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    free_[size].push_back(block);
    allocated_ -= size;
    cached_ += size;
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cache_locked();
  }
  size_t allocated() { std::lock_guard<std::mutex> lock(mutex_); return allocated_; }
  size_t cached() { std::lock_guard<std::mutex> lock(mutex_); return cached_; }
  size_t peak() { std::lock_guard<std::mutex> lock(mutex_); return peak_; }
  void reset_peak() { std::lock_guard<std::mutex> lock(mutex_); peak_ = allocated_; }

 private:
  void release_cache_locked() {
    cudaDeviceSynchronize();  // blocks may still be read by queued kernels
    for (auto& [size, blocks] : free_)
      for (void* block : blocks) cudaFree(block);
    free_.clear();
    cached_ = 0;
  }
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t allocated_ = 0, cached_ = 0, peak_ = 0;
};
Allocator& allocator() {
  static Allocator* instance = new Allocator();  // never destroyed: tensors may outlive statics
  return *instance;
}

struct StreamTable {
  std::mutex mutex;
  std::unordered_map<int, cudaStream_t> streams;
};
StreamTable& stream_table() {
  static StreamTable* table = new StreamTable();
  return *table;
}

void require_device(const char* call) {
  if (probe().count == 0) throw Error(std::string(call) + ": no usable CUDA device (" + probe().reason + ")");
}

}  // namespace

bool available() { return probe().count > 0; }
std::string unavailable_reason() { return probe().reason; }
int device_count() { return probe().count; }

std::string device_name(int device) {
  require_device("cuda::device_name");
  cudaDeviceProp properties;
  HG_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  return properties.name;
}
void set_device(int device) {
  require_device("cuda::set_device");
  HG_CUDA_CHECK(cudaSetDevice(device));
}
int current_device() {
  int device = 0;
  HG_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

void* allocate(size_t bytes) {
  require_device("cuda::allocate");
  return allocator().allocate(bytes);
}
void release(void* block, size_t bytes) { allocator().release(block, bytes); }
void empty_cache() { allocator().empty_cache(); }
size_t allocated_bytes() { return allocator().allocated(); }
size_t cached_bytes() { return allocator().cached(); }
size_t peak_allocated_bytes() { return allocator().peak(); }
void reset_peak() { allocator().reset_peak(); }

void* current_stream() {
  require_device("cuda::current_stream");
  const int device = current_device();
  StreamTable& table = stream_table();
  std::lock_guard<std::mutex> lock(table.mutex);
  cudaStream_t& stream = table.streams[device];
  if (!stream) HG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return stream;
}
void set_current_stream(void* stream) {
  HG_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(current_stream())));
  StreamTable& table = stream_table();
  std::lock_guard<std::mutex> lock(table.mutex);
  table.streams[current_device()] = static_cast<cudaStream_t>(stream);
}
void synchronize() { HG_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(current_stream()))); }

void copy(void* destination, const void* source, size_t bytes, CopyKind kind) {
  if (bytes == 0) return;
  const cudaMemcpyKind direction = kind == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
                                   : kind == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                                                    : cudaMemcpyDeviceToDevice;
  cudaStream_t stream = static_cast<cudaStream_t>(current_stream());
  HG_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, direction, stream));
  // Pageable host memory: the host buffer may be freed or read right after we return.
  if (kind != CopyKind::DeviceToDevice) HG_CUDA_CHECK(cudaStreamSynchronize(stream));
}
void fill_bytes(void* destination, int value, size_t bytes) {
  if (bytes == 0) return;
  HG_CUDA_CHECK(cudaMemsetAsync(destination, value, bytes, static_cast<cudaStream_t>(current_stream())));
}

}  // namespace histograd::cuda
