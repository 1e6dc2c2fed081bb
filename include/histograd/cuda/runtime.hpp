// The CUDA runtime as the header-only core sees it: device discovery, the caching allocator on
// cudaMalloc, the stream every histograd kernel runs on, and copies. Plain C++ declarations (no
// CUDA headers), defined in cuda/runtime.cu and present when histograd::cuda is linked
// (HISTOGRAD_WITH_CUDA). Every CUDA failure surfaces as histograd::Error naming the call.
#pragma once
#include <cstddef>
#include <string>

namespace histograd::cuda {

// True when a device can be used; otherwise unavailable_reason() says why (no driver, no
// device, a driver older than the runtime), for tests that skip and for clear errors.
bool available();
std::string unavailable_reason();
int device_count();
std::string device_name(int device = 0);
void set_device(int device);
int current_device();

// Caching allocator. Blocks freed by a tensor go back to a per-size free list and are handed
// out again without cudaFree/cudaMalloc (both synchronise the whole device). Reuse is safe
// because every histograd kernel runs on one stream per device in issue order; a program that
// switches streams goes through set_current_stream, which synchronises the old one first.
// Out of memory: the cache is returned to the driver and the call retried once, then an Error
// says how much was asked, in use and cached.
void* allocate(size_t bytes);
void release(void* block, size_t bytes);
void empty_cache();
size_t allocated_bytes();       // held by live tensors
size_t cached_bytes();          // kept in the free lists
size_t peak_allocated_bytes();  // since start or reset_peak()
void reset_peak();

// The stream histograd launches on (a cudaStream_t as void*; nullptr is never returned: each
// device gets its own non-blocking stream on first use).
void* current_stream();
void set_current_stream(void* stream);
void synchronize();  // waits for the current stream

enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
// Copies `bytes` on the current stream; device-to-host copies wait for completion so the host
// may read the result at once.
void copy(void* destination, const void* source, size_t bytes, CopyKind kind);
// Sets `bytes` bytes to `value` on the current stream.
void fill_bytes(void* destination, int value, size_t bytes);

}  // namespace histograd::cuda
