// Reference-counted element buffers. Tensors (and their views) hold a shared_ptr to one
// Storage; it is 64-byte aligned so Eigen and SIMD loads take the fast path. `from_blob`
// wraps memory someone else owns (an mmap'd checkpoint, a user's array) without copying.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>

#include "device.hpp"
#include "error.hpp"

namespace histograd {

template <class T>
class Storage {
 public:
  // Owning, uninitialised buffer of `count` elements.
  explicit Storage(int64_t count) : size_(count) {
    HG_CHECK(count >= 0, "Storage", "negative element count ", count);
    size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
    data_ = static_cast<T*>(std::aligned_alloc(64, bytes ? bytes : 64));
    if (!data_) throw std::bad_alloc();
    release_ = [](T* p) { std::free(p); };
  }
  // Non-owning (or custom-owning) view of external memory.
  Storage(T* external, int64_t count, std::function<void(T*)> release)
      : data_(external), size_(count), release_(std::move(release)) {}
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
