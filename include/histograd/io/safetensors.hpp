// safetensors files (huggingface/safetensors README and src/tensor.rs; docs/MODELS.md §16.1):
// a u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
// "__metadata__": {str: str}}, then the tensor bytes. The file is memory-mapped and validated
// whole before any tensor is handed out; get<T> aliases the mapping when the stored dtype is T
// and aligned, and converts otherwise. Writing goes to a temporary file renamed into place.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

#include "../core/tensor.hpp"
#include "mapped_file.hpp"

namespace histograd::io {

struct SafetensorsEntry {
  std::string dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range inside the data section
};

namespace detail {

// The safetensors dtypes: width in bits, and the StoredType when we can convert it.
struct SafetensorsDtype {
  const char* name;
  int bits;
  std::optional<StoredType> stored;
};
inline const SafetensorsDtype* find_safetensors_dtype(const std::string& name) {
  static const SafetensorsDtype table[] = {
      {"BOOL", 8, StoredType::Bool}, {"U8", 8, StoredType::U8},     {"I8", 8, StoredType::I8},
      {"I16", 16, StoredType::I16},  {"I32", 32, StoredType::I32},  {"I64", 64, StoredType::I64},
      {"F16", 16, StoredType::F16},  {"BF16", 16, StoredType::BF16}, {"F32", 32, StoredType::F32},
      {"F64", 64, StoredType::F64},  {"U16", 16, {}},                {"U32", 32, {}},
      {"U64", 64, {}},               {"C64", 64, {}},                {"F8_E5M2", 8, {}},
      {"F8_E4M3", 8, {}},            {"F8_E8M0", 8, {}},             {"F8_E4M3FNUZ", 8, {}},
      {"F8_E5M2FNUZ", 8, {}},        {"F4", 4, {}},                  {"F6_E2M3", 6, {}},
      {"F6_E3M2", 6, {}}};
  for (const auto& d : table)
    if (name == d.name) return &d;
  return nullptr;
}

// A JSON reader for exactly what a safetensors header may hold. It never recurses, so a hostile
// header cannot exhaust the stack; every error names the file and the byte position.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& file) : s_(text), file_(file) {}

  std::map<std::string, SafetensorsEntry> parse(std::map<std::string, std::string>& metadata) {
    std::map<std::string, SafetensorsEntry> entries;
    if (s_.empty() || s_[0] != '{') error("the header must start with '{'");
    bool seen_metadata = false;
    object([&](const std::string& name) {
      if (name == "__metadata__") {
        if (seen_metadata) error("duplicate key '__metadata__'");
        seen_metadata = true;
        object([&](const std::string& key) {
          if (metadata.count(key)) error("duplicate metadata key '" + key + "'");
          metadata[key] = string();
        });
      } else {
        if (entries.count(name)) error("duplicate tensor name '" + name + "'");
        entries[name] = entry(name);
      }
    });
    skip_space();
    if (pos_ != s_.size()) error("text after the closing '}'");
    return entries;
  }

 private:
  // `{ "key": <value read by on_key>, ... }`
  template <class OnKey> void object(OnKey&& on_key) {
    expect('{');
    if (peek() == '}') { ++pos_; return; }
    while (true) {
      std::string key = string();
      expect(':');
      on_key(key);
      if (peek() == '}') { ++pos_; return; }
      expect(',');
    }
  }
  SafetensorsEntry entry(const std::string& name) {
    SafetensorsEntry e;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    object([&](const std::string& key) {
      bool& seen = key == "dtype" ? has_dtype : key == "shape" ? has_shape : has_offsets;
      if (key != "dtype" && key != "shape" && key != "data_offsets")
        error("tensor '" + name + "': unknown field '" + key + "'");
      if (seen) error("tensor '" + name + "': field '" + key + "' given twice");
      seen = true;
      if (key == "dtype") e.dtype = string();
      else if (key == "shape") e.shape = integers();
      else {
        Shape offsets = integers();
        if (offsets.size() != 2) error("tensor '" + name + "': data_offsets needs 2 numbers");
        e.begin = static_cast<uint64_t>(offsets[0]);
        e.end = static_cast<uint64_t>(offsets[1]);
      }
    });
    if (!has_dtype || !has_shape || !has_offsets) error("tensor '" + name + "' lacks dtype, shape or data_offsets");
    return e;
  }
  Shape integers() {
    Shape out;
    expect('[');
    if (peek() == ']') { ++pos_; return out; }
    while (true) {
      out.push_back(integer());
      if (peek() == ']') { ++pos_; return out; }
      expect(',');
    }
  }
  int64_t integer() {
    skip_space();
    uint64_t value = 0;
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      if (value > (uint64_t(INT64_MAX) - 9) / 10) error("number too large");
      value = value * 10 + static_cast<uint64_t>(s_[pos_++] - '0');
    }
    if (start == pos_) error("expected a non-negative integer");
    return static_cast<int64_t>(value);
  }
  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) error("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character inside a string");
      if (c != '\\') { out += c; continue; }
      if (pos_ >= s_.size()) error("unterminated string");
      switch (char esc = s_[pos_++]) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case '"': case '\\': case '/': out += esc; break;
        case 'u': append_utf8(out, code_point()); break;
        default: error(std::string("unknown escape '\\") + esc + "'");
      }
    }
  }
  // \uXXXX, combining a UTF-16 surrogate pair into one code point.
  uint32_t code_point() {
    uint32_t high = hex4();
    if (high < 0xD800 || high > 0xDFFF) return high;
    if (high > 0xDBFF || pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') error("lone surrogate");
    pos_ += 2;
    uint32_t low = hex4();
    if (low < 0xDC00 || low > 0xDFFF) error("lone surrogate");
    return 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
  }
  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = s_[pos_++];
      int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
      if (d < 0) error("bad hex digit in \\u escape");
      v = v * 16 + static_cast<uint32_t>(d);
    }
    return v;
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) { out += static_cast<char>(cp); return; }
    if (cp < 0x800) { out += static_cast<char>(0xC0 | (cp >> 6)); }
    else {
      if (cp < 0x10000) out += static_cast<char>(0xE0 | (cp >> 12));
      else { out += static_cast<char>(0xF0 | (cp >> 18)); out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F)); }
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    }
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  char peek() {
    skip_space();
    if (pos_ >= s_.size()) error("unexpected end of header");
    return s_[pos_];
  }
  void expect(char c) {
    if (peek() != c) error(std::string("expected '") + c + "'");
    ++pos_;
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  [[noreturn]] void error(const std::string& what) {
    fail("safetensors", file_, ": malformed header at byte ", pos_, ": ", what);
  }
  std::string_view s_;
  const std::string& file_;
  size_t pos_ = 0;
};

template <class T> const char* dtype_tag() {
  if constexpr (std::is_same_v<T, float>) return "F32";
  else if constexpr (std::is_same_v<T, double>) return "F64";
  else if constexpr (std::is_same_v<T, int64_t>) return "I64";
  else if constexpr (std::is_same_v<T, int32_t>) return "I32";
  else if constexpr (std::is_same_v<T, int16_t>) return "I16";
  else if constexpr (std::is_same_v<T, int8_t>) return "I8";
  else if constexpr (std::is_same_v<T, uint8_t>) return "U8";
  else if constexpr (std::is_same_v<T, bfloat16>) return "BF16";
  else if constexpr (std::is_same_v<T, half>) return "F16";
  else return nullptr;
}

}  // namespace detail

// An opened safetensors file: mapped, header parsed and every entry validated against the file.
// Tensors returned by get() may alias the mapping; it stays alive as long as any of them does.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path) : file_(MappedFile::open(path, "safetensors")) { validate(); }
  // Parses bytes already in memory (copied); `name` stands for the path in error messages.
  SafetensorsFile(std::span<const unsigned char> bytes, std::string name)
      : file_(MappedFile::copy_of(bytes, std::move(name))) { validate(); }

  const std::string& path() const { return file_->name(); }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  const SafetensorsEntry& entry(const std::string& name) const {
    auto it = entries_.find(name);
    HG_CHECK(it != entries_.end(), "safetensors", path(), ": no tensor named '", name, "'");
    return it->second;
  }
  const Shape& shape(const std::string& name) const { return entry(name).shape; }
  const std::string& dtype(const std::string& name) const { return entry(name).dtype; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // One tensor as T: zero copy when stored as T at an aligned address, else converted.
  template <class T>
  Tensor<T> get(const std::string& name) const {
    const SafetensorsEntry& e = entry(name);
    auto stored = detail::find_safetensors_dtype(e.dtype)->stored;
    HG_CHECK(stored.has_value(), "safetensors", path(), ": tensor '", name, "' has dtype ", e.dtype,
             ", which histograd cannot convert to ", dtype_name<T>());
    auto storage = storage_over<T>(file_, data_start_ + e.begin, *stored, numel_of(e.shape), "safetensors", name);
    return Tensor<T>(storage, e.shape, contiguous_strides(e.shape), 0);
  }

 private:
  static constexpr uint64_t kMaxHeader = 100000000;  // the reference implementation's limit

  void validate() {
    const std::string& p = path();
    uint64_t file_size = file_->size();
    HG_CHECK(file_size >= 8, "safetensors", p, ": file of ", file_size, " bytes is too short for a header");
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | file_->data()[i];
    HG_CHECK(header_size <= file_size - 8 && header_size <= kMaxHeader, "safetensors", p, ": header of ",
             header_size, " bytes does not fit in a file of ", file_size, " bytes (limit ", kMaxHeader, ")");
    std::string_view header(reinterpret_cast<const char*>(file_->data()) + 8, header_size);
    entries_ = detail::HeaderParser(header, p).parse(metadata_);
    data_start_ = 8 + header_size;
    check_entries(file_size - data_start_);
  }

  // Sizes match dtype x shape, and the byte ranges tile the data section exactly: sorted by
  // offset they start at 0, leave no hole, never overlap, and end where the file ends.
  void check_entries(uint64_t data_size) const {
    const std::string& p = path();
    std::vector<std::pair<std::pair<uint64_t, uint64_t>, const std::string*>> ranges;
    for (const auto& [name, e] : entries_) {
      const auto* dtype = detail::find_safetensors_dtype(e.dtype);
      HG_CHECK(dtype != nullptr, "safetensors", p, ": tensor '", name, "' has unknown dtype '", e.dtype, "'");
      uint64_t bits = static_cast<uint64_t>(dtype->bits);
      for (int64_t s : e.shape)
        HG_CHECK(!detail::mul_overflows(bits, static_cast<uint64_t>(s), bits), "safetensors", p, ": tensor '", name,
                 "': shape ", to_string(e.shape), " overflows a 64-bit byte count");
      HG_CHECK(bits % 8 == 0, "safetensors", p, ": tensor '", name, "' of ", e.dtype, " does not end on a byte");
      HG_CHECK(e.begin <= e.end && e.end - e.begin == bits / 8, "safetensors", p, ": tensor '", name,
               "' claims bytes [", e.begin, ", ", e.end, ") but ", e.dtype, " ", to_string(e.shape), " needs ",
               bits / 8, " bytes");
      ranges.push_back({{e.begin, e.end}, &name});
    }
    std::sort(ranges.begin(), ranges.end());
    uint64_t expected_begin = 0;
    for (const auto& [range, name] : ranges) {
      HG_CHECK(range.first == expected_begin, "safetensors", p, ": tensor '", *name, "' starts at byte ", range.first,
               " of the data section, expected ", expected_begin, " (", range.first < expected_begin ? "overlap" : "hole",
               ")");
      expected_begin = range.second;
    }
    HG_CHECK(expected_begin == data_size, "safetensors", p, ": tensors end at byte ", expected_begin,
             " of the data section but it holds ", data_size, " bytes (file truncated or corrupt)");
  }

  std::shared_ptr<MappedFile> file_;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_start_ = 0;
};

// Every tensor of a safetensors file as T.
template <class T>
std::map<std::string, Tensor<T>> load_safetensors(const std::string& path) {
  SafetensorsFile file(path);
  std::map<std::string, Tensor<T>> out;
  for (const auto& name : file.keys()) out.emplace(name, file.get<T>(name));
  return out;
}

namespace detail {
inline std::string json_quoted(const std::string& s) {
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      q += '\\';
      q += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      const char* hex = "0123456789abcdef";
      q += "\\u00";
      q += hex[(c >> 4) & 0xF];
      q += hex[c & 0xF];
    } else {
      q += c;
    }
  }
  return q + "\"";
}
}  // namespace detail

// Writes tensors (in key order) to `path` atomically: a temporary file in the same directory,
// renamed into place, so a crash never leaves a torn file where a good one was. The header is
// padded with spaces to a multiple of 8 bytes so the data section is 8-byte aligned.
template <class T>
void save_safetensors(const std::string& path, const std::map<std::string, Tensor<T>>& tensors,
                      const std::map<std::string, std::string>& metadata = {}) {
  const char* tag = detail::dtype_tag<T>();
  HG_CHECK(tag != nullptr, "save_safetensors", "unsupported element type ", dtype_name<T>());
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it)
      header.append(it == metadata.begin() ? "" : ",").append(detail::json_quoted(it->first)).append(":").append(
          detail::json_quoted(it->second));
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    HG_CHECK(name != "__metadata__", "save_safetensors", "'__metadata__' is reserved and cannot name a tensor");
    uint64_t bytes = static_cast<uint64_t>(t.numel()) * sizeof(T);
    std::string shape;
    for (size_t i = 0; i < t.shape().size(); ++i) shape.append(i ? "," : "").append(std::to_string(t.shape()[i]));
    header.append(header.size() > 1 ? "," : "").append(detail::json_quoted(name)).append(":{\"dtype\":\"");
    header.append(tag).append("\",\"shape\":[").append(shape).append("],\"data_offsets\":[");
    header.append(std::to_string(offset)).append(",").append(std::to_string(offset + bytes)).append("]}");
    offset += bytes;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::string temp = path + ".tmp" + std::to_string(::getpid());
  try {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    HG_CHECK(out.good(), "save_safetensors", "cannot write '", temp, "'");
    unsigned char size_bytes[8];
    for (int i = 0; i < 8; ++i) size_bytes[i] = static_cast<unsigned char>(uint64_t(header.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(size_bytes), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& [name, tensor] : tensors) {
      const Tensor<T> t = tensor.cpu();  // device tensors are staged through the host
      if (t.is_contiguous()) {
        out.write(reinterpret_cast<const char*>(t.data()), static_cast<std::streamsize>(t.numel() * sizeof(T)));
      } else {
        std::vector<T> values = t.to_vector();
        out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
      }
    }
    out.flush();
    if (!out.good()) {
      out.close();
      std::filesystem::remove(temp);
      fail("save_safetensors", "write to '", temp, "' failed (disk full?)");
    }
  } catch (...) {  // whatever stopped the write, no partial temp file is left behind
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
  // The bytes must be on disk before the rename makes them the file, or a power cut could leave
  // an empty file under the good name.
  if (int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) std::filesystem::remove(temp);
  HG_CHECK(!ec, "save_safetensors", "cannot rename '", temp, "' to '", path, "': ", ec.message());
}

}  // namespace histograd::io
