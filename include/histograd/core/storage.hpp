// Reference-counted element buffers. Tensors (and their views) hold a shared_ptr to one
// Storage; it is 64-byte aligned so Eigen and SIMD loads take the fast path, and comes from a
// caching allocator. `from_blob` wraps memory someone else owns (an mmap'd checkpoint, a
// user's array) without copying.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <memory>
#include <new>

#include "device.hpp"
#include "error.hpp"
#ifdef HISTOGRAD_WITH_CUDA
#include "../cuda/runtime.hpp"
#endif

namespace histograd {

// The CPU allocator: 64-byte aligned blocks, with freed large blocks kept for reuse. A model's
// forward allocates the same activation sizes layer after layer; handing back a block the
// process already touched avoids the page faults (and the kernel zeroing pages) that a fresh
// mapping costs on every op, about a tenth of a ViT forward. Small blocks go straight to malloc,
// which recycles them well. The cache is bounded (HISTOGRAD_CPU_CACHE_MB, default 1024) and
// empty_cache() returns it to the system.
class CpuAllocator {
 public:
  static CpuAllocator& instance() {
    static CpuAllocator* allocator = new CpuAllocator();  // never destroyed: storages may outlive statics
    return *allocator;
  }
  // Large blocks are rounded up to whole 64 KiB, so nearby sizes share a bucket.
  static size_t rounded_size(size_t bytes) {
    size_t unit = bytes >= kCacheFrom ? (size_t(64) << 10) : 64;
    return std::max<size_t>(64, (bytes + unit - 1) / unit * unit);
  }
  void* allocate(size_t bytes) {
    if (bytes >= kCacheFrom) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* block = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= bytes;
        return block;
      }
    }
    void* block = std::aligned_alloc(64, bytes);
    if (!block) {
      empty_cache();  // one retry with the cache handed back
      block = std::aligned_alloc(64, bytes);
      if (!block) throw std::bad_alloc();
    }
    return block;
  }
  void release(void* block, size_t bytes) {
    if (bytes >= kCacheFrom) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + bytes <= limit_bytes_) {
        free_[bytes].push_back(block);
        cached_bytes_ += bytes;
        return;
      }
    }
    std::free(block);
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, blocks] : free_)
      for (void* block : blocks) std::free(block);
    free_.clear();
    cached_bytes_ = 0;
  }
  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_bytes_;
  }

 private:
  static constexpr size_t kCacheFrom = size_t(1) << 20;
  CpuAllocator() {
    const char* limit = std::getenv("HISTOGRAD_CPU_CACHE_MB");
    limit_bytes_ = (limit ? std::strtoull(limit, nullptr, 10) : 1024ull) << 20;
  }
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_bytes_ = 0, limit_bytes_ = 0;
};

// Frees the blocks the CPU allocator keeps for reuse.
inline void empty_cache() { CpuAllocator::instance().empty_cache(); }

template <class T>
class Storage {
 public:
  // Owning, uninitialised buffer of `count` elements.
  explicit Storage(int64_t count) : Storage(count, kCPU) {}
  // Owning, uninitialised buffer on `device`: CUDA memory comes from the caching allocator of
  // cuda/runtime.cu, and asking for it in a build without histograd::cuda is an Error.
  Storage(int64_t count, Device device) : size_(count), device_(device) {
    HG_CHECK(count >= 0, "Storage", "negative element count ", count);
    if (device.is_cpu()) {
      size_t bytes = CpuAllocator::rounded_size(static_cast<size_t>(count) * sizeof(T));
      data_ = static_cast<T*>(CpuAllocator::instance().allocate(bytes));
      release_ = [bytes](T* p) { CpuAllocator::instance().release(p, bytes); };
      return;
    }
#ifdef HISTOGRAD_WITH_CUDA
    cuda::set_device(device.index);
    const size_t bytes = static_cast<size_t>(count) * sizeof(T);
    data_ = static_cast<T*>(cuda::allocate(bytes));
    release_ = [bytes](T* p) { cuda::release(p, bytes); };
#else
    fail("Storage", "cannot allocate on ", device.str(), ": histograd was built without CUDA (link histograd::cuda)");
#endif
  }
  // Non-owning (or custom-owning) view of external memory.
  Storage(T* external, int64_t count, std::function<void(T*)> release, Device device = kCPU)
      : data_(external), size_(count), release_(std::move(release)), device_(device) {}
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (release_) release_(data_);
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return size_; }
  Device device() const { return device_; }
  // Bumped by every in-place write, so autograd can detect a saved tensor modified later.
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  T* data_ = nullptr;
  int64_t size_ = 0;
  std::function<void(T*)> release_;
  Device device_ = kCPU;
  uint64_t version_ = 0;
};

}  // namespace histograd
