// The bytes of a checkpoint file held in memory, and the typed tensors both checkpoint readers
// (safetensors.hpp, pth.hpp) hand out over them. A file is mapped whole with mmap, MAP_PRIVATE
// and read+write, so a tensor can alias the mapping (zero copy) and an in-place write to it
// copies the page instead of faulting or reaching the file. Where mmap fails the file is read.
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/dtype.hpp"
#include "../cpu/parallel.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace histograd::io {

class MappedFile {
 public:
  // `reader` names the caller in error messages ("safetensors", "pth").
  static std::shared_ptr<MappedFile> open(const std::string& path, const char* reader) {
    auto file = std::shared_ptr<MappedFile>(new MappedFile(path));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    HG_CHECK(fd >= 0, reader, "cannot open '", path, "': ", std::strerror(errno));
    struct stat info {};
    if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
      ::close(fd);
      fail(reader, "'", path, "' is not a regular file");
    }
    file->size_ = static_cast<size_t>(info.st_size);
    // MAP_NORESERVE: a multi-GB checkpoint should not count against the commit limit for pages
    // that are only ever read.
    void* map = file->size_ ? ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0)
                            : MAP_FAILED;
    if (map != MAP_FAILED) {
      file->data_ = static_cast<unsigned char*>(map);
      file->mapped_ = true;
    } else {
      file->read_all(fd, reader);
    }
    ::close(fd);
    return file;
  }

  // A private copy of bytes already in memory (the fuzzers, tests); `name` stands in for the path.
  static std::shared_ptr<MappedFile> copy_of(std::span<const unsigned char> bytes, std::string name) {
    auto file = std::shared_ptr<MappedFile>(new MappedFile(std::move(name)));
    file->buffer_.assign(bytes.begin(), bytes.end());
    file->data_ = file->buffer_.data();
    file->size_ = bytes.size();
    return file;
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (mapped_) ::munmap(data_, size_);
  }

  unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }
  bool is_mapped() const { return mapped_; }

 private:
  explicit MappedFile(std::string name) : name_(std::move(name)) {}
  void read_all(int fd, const char* reader) {
    buffer_.resize(size_);
    size_t done = 0;
    while (done < size_) {
      ssize_t got = ::pread(fd, buffer_.data() + done, size_ - done, static_cast<off_t>(done));
      if (got <= 0) {
        ::close(fd);
        fail(reader, "'", name_, "': read failed after ", done, " of ", size_, " bytes");
      }
      done += static_cast<size_t>(got);
    }
    data_ = buffer_.data();
  }

  std::string name_;
  unsigned char* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<unsigned char> buffer_;
};

// The element types stored in checkpoints that we can hand out as tensors.
enum class StoredType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };

inline size_t stored_size(StoredType t) {
  switch (t) {
    case StoredType::F64: case StoredType::I64: return 8;
    case StoredType::F32: case StoredType::I32: return 4;
    case StoredType::F16: case StoredType::BF16: case StoredType::I16: return 2;
    default: return 1;
  }
}
inline const char* stored_name(StoredType t) {
  constexpr const char* names[] = {"float64", "float32", "float16", "bfloat16", "int64",
                                   "int32",   "int16",   "int8",    "uint8",    "bool"};
  return names[static_cast<int>(t)];
}

namespace detail {

// Size arithmetic on numbers read from a file: any overflow is the file's fault.
inline bool mul_overflows(uint64_t a, uint64_t b, uint64_t& out) { return __builtin_mul_overflow(a, b, &out); }
inline bool add_overflows(uint64_t a, uint64_t b, uint64_t& out) { return __builtin_add_overflow(a, b, &out); }

template <class T> constexpr bool is_stored_as(StoredType t) {
  switch (t) {
    case StoredType::F64: return std::is_same_v<T, double>;
    case StoredType::F32: return std::is_same_v<T, float>;
    case StoredType::F16: return std::is_same_v<T, half>;
    case StoredType::BF16: return std::is_same_v<T, bfloat16>;
    case StoredType::I64: return std::is_same_v<T, int64_t>;
    case StoredType::I32: return std::is_same_v<T, int32_t>;
    case StoredType::I16: return std::is_same_v<T, int16_t>;
    case StoredType::I8: return std::is_same_v<T, int8_t>;
    case StoredType::U8: return std::is_same_v<T, uint8_t>;
    case StoredType::Bool: return std::is_same_v<T, bool>;
  }
  return false;
}

template <class T> constexpr bool is_float_like = std::is_floating_point_v<T> || std::is_same_v<T, half> ||
                                                  std::is_same_v<T, bfloat16>;

// Half and bfloat16 only convert through float.
template <class T, class Src> T convert_one(Src v) {
  if constexpr (std::is_same_v<Src, half> || std::is_same_v<Src, bfloat16>) return convert_one<T>(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) return T(static_cast<float>(v));
  else return static_cast<T>(v);
}

// The bytes may sit at any address (older safetensors files are unaligned): memcpy each element.
template <class Src, class T> void convert_run(const unsigned char* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    Src v;
    std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(Src)), sizeof(Src));
    dst[i] = convert_one<T>(v);
  }
}

template <class T> void convert_elements(StoredType from, const unsigned char* src, T* dst, int64_t n) {
  switch (from) {
    case StoredType::F64: return convert_run<double>(src, dst, n);
    case StoredType::F32: return convert_run<float>(src, dst, n);
    case StoredType::F16: return convert_run<half>(src, dst, n);
    case StoredType::BF16: return convert_run<bfloat16>(src, dst, n);
    case StoredType::I64: return convert_run<int64_t>(src, dst, n);
    case StoredType::I32: return convert_run<int32_t>(src, dst, n);
    case StoredType::I16: return convert_run<int16_t>(src, dst, n);
    case StoredType::I8: return convert_run<int8_t>(src, dst, n);
    case StoredType::U8: return convert_run<uint8_t>(src, dst, n);
    case StoredType::Bool:  // any non-zero byte is true, as numpy and torch read it
      for (int64_t i = 0; i < n; ++i) dst[i] = convert_one<T>(src[i] != 0 ? 1 : 0);
      return;
  }
}

}  // namespace detail

// Storage for `count` elements of `type` at byte `offset` in `file` (the caller has bounds-checked
// the range). Aliases the mapping when the type is T and the address is aligned for T, keeping the
// file alive through the release hook; otherwise a converted copy. Float data never becomes an
// integer tensor: that would silently truncate weights.
template <class T>
std::shared_ptr<Storage<T>> storage_over(const std::shared_ptr<MappedFile>& file, uint64_t offset, StoredType type,
                                         int64_t count, const char* reader, const std::string& tensor_name) {
  unsigned char* bytes = file->data() + offset;
  if (detail::is_stored_as<T>(type) && reinterpret_cast<uintptr_t>(bytes) % alignof(T) == 0) {
    return std::make_shared<Storage<T>>(reinterpret_cast<T*>(bytes), count, [keep = file](T*) {});
  }
  const bool source_is_float = type == StoredType::F64 || type == StoredType::F32 || type == StoredType::F16 ||
                               type == StoredType::BF16;
  if constexpr (!detail::is_float_like<T>) {
    HG_CHECK(!source_is_float, reader, file->name(), ": tensor '", tensor_name, "' holds ", stored_name(type),
             " values, which do not convert to ", dtype_name<T>(), " without loss");
  }
  auto storage = std::make_shared<Storage<T>>(count);
  T* out = storage->data();
  const int64_t width = static_cast<int64_t>(stored_size(type));
  cpu::parallel_for(count, 4, [&](int64_t begin, int64_t end) {  // element-wise: any split gives the same bits
    detail::convert_elements<T>(type, bytes + begin * width, out + begin, end - begin);
  });
  return storage;
}

}  // namespace histograd::io
