// safetensors files (huggingface/safetensors README): an 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the raw
// little-endian tensor bytes. Reading validates every offset against the file before any
// byte is touched; F32/F64/F16/BF16/I64/I32 convert to the requested element type.
// Writing goes to a temporary file renamed into place, so a crash never leaves a torn file.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace histograd::io {

struct SafetensorsEntry {
  std::string dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range inside the data section
};

namespace detail {

// A minimal JSON reader: just what a safetensors header holds (objects, arrays, strings,
// integers); other values are skipped. Every error names the file and the byte position.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& file) : s_(text), file_(file) {}

  std::map<std::string, SafetensorsEntry> parse(std::map<std::string, std::string>& metadata) {
    std::map<std::string, SafetensorsEntry> entries;
    expect('{');
    if (peek() == '}') { ++pos_; return entries; }
    while (true) {
      std::string name = string();
      expect(':');
      if (name == "__metadata__") {
        expect('{');
        if (peek() != '}')
          while (true) {
            std::string key = string();
            expect(':');
            metadata[key] = string();
            if (peek() == ',') { ++pos_; continue; }
            break;
          }
        expect('}');
      } else {
        if (entries.count(name)) error("duplicate tensor name '" + name + "'");
        entries[name] = entry(name);
      }
      if (peek() == ',') { ++pos_; continue; }
      expect('}');
      break;
    }
    return entries;
  }

 private:
  SafetensorsEntry entry(const std::string& name) {
    SafetensorsEntry e;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    expect('{');
    while (peek() != '}') {
      std::string key = string();
      expect(':');
      if (key == "dtype") { e.dtype = string(); has_dtype = true; }
      else if (key == "shape") { e.shape = integers(); has_shape = true; }
      else if (key == "data_offsets") {
        Shape offsets = integers();
        if (offsets.size() != 2) error("tensor '" + name + "': data_offsets needs 2 numbers");
        e.begin = static_cast<uint64_t>(offsets[0]);
        e.end = static_cast<uint64_t>(offsets[1]);
        has_offsets = true;
      } else {
        error("tensor '" + name + "': unknown field '" + key + "'");
      }
      if (peek() == ',') ++pos_;
    }
    ++pos_;
    if (!has_dtype || !has_shape || !has_offsets) error("tensor '" + name + "' lacks dtype, shape or data_offsets");
    return e;
  }
  Shape integers() {
    Shape out;
    expect('[');
    while (peek() != ']') {
      out.push_back(integer());
      if (peek() == ',') ++pos_;
    }
    ++pos_;
    return out;
  }
  int64_t integer() {
    skip_space();
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    if (start == pos_ || pos_ - start > 18) error("expected a non-negative integer");
    return std::stoll(s_.substr(start, pos_ - start));
  }
  std::string string() {
    expect('"');
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size()) break;
        char esc = s_[pos_++];
        switch (esc) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'u': {  // keep the escape verbatim: names here are ASCII in practice
            if (pos_ + 4 > s_.size()) error("truncated \\u escape");
            out += "\\u" + s_.substr(pos_, 4);
            pos_ += 4;
            break;
          }
          default: out += esc;
        }
      } else {
        out += c;
      }
    }
    if (pos_ >= s_.size()) error("unterminated string");
    ++pos_;
    return out;
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
  const std::string& s_;
  const std::string& file_;
  size_t pos_ = 0;
};

inline size_t dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

template <class T> const char* dtype_tag() {
  if constexpr (std::is_same_v<T, float>) return "F32";
  else if constexpr (std::is_same_v<T, double>) return "F64";
  else if constexpr (std::is_same_v<T, int64_t>) return "I64";
  else if constexpr (std::is_same_v<T, int32_t>) return "I32";
  else if constexpr (std::is_same_v<T, bfloat16>) return "BF16";
  else if constexpr (std::is_same_v<T, half>) return "F16";
  else return nullptr;
}

template <class Src, class T>
void convert(const unsigned char* bytes, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    Src v;
    std::memcpy(&v, bytes + i * sizeof(Src), sizeof(Src));
    if constexpr (std::is_same_v<Src, bfloat16> || std::is_same_v<Src, half>) out[i] = static_cast<T>(static_cast<float>(v));
    else out[i] = static_cast<T>(v);
  }
}

}  // namespace detail

// An opened safetensors file: the header is parsed and validated; tensors are read on demand.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    HG_CHECK(in.good(), "safetensors", "cannot open '", path, "'");
    in.seekg(0, std::ios::end);
    uint64_t file_size = static_cast<uint64_t>(in.tellg());
    in.seekg(0);
    HG_CHECK(file_size >= 8, "safetensors", path, ": file of ", file_size, " bytes is too short for a header");
    unsigned char size_bytes[8];
    in.read(reinterpret_cast<char*>(size_bytes), 8);
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | size_bytes[i];
    HG_CHECK(header_size <= file_size - 8 && header_size <= (100u << 20), "safetensors", path, ": header of ",
             header_size, " bytes does not fit in a file of ", file_size, " bytes");
    std::string header(header_size, '\0');
    in.read(header.data(), static_cast<std::streamsize>(header_size));
    entries_ = detail::HeaderParser(header, path_).parse(metadata_);
    data_start_ = 8 + header_size;
    uint64_t data_size = file_size - data_start_;
    for (const auto& [name, e] : entries_) {
      size_t width = detail::dtype_size(e.dtype);
      HG_CHECK(width != 0, "safetensors", path, ": tensor '", name, "' has unsupported dtype '", e.dtype, "'");
      for (int64_t s : e.shape) HG_CHECK(s >= 0, "safetensors", path, ": tensor '", name, "' has a negative size");
      uint64_t expected = static_cast<uint64_t>(numel_of(e.shape)) * width;
      HG_CHECK(e.begin <= e.end && e.end <= data_size && e.end - e.begin == expected, "safetensors", path, ": tensor '",
               name, "' claims bytes [", e.begin, ", ", e.end, ") but needs ", expected, " bytes inside a data section of ",
               data_size, " bytes (file truncated or corrupt)");
    }
  }

  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  const SafetensorsEntry& entry(const std::string& name) const {
    auto it = entries_.find(name);
    HG_CHECK(it != entries_.end(), "safetensors", path_, ": no tensor named '", name, "'");
    return it->second;
  }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Reads one tensor, converting its stored dtype to T.
  template <class T>
  Tensor<T> get(const std::string& name) const {
    const SafetensorsEntry& e = entry(name);
    std::ifstream in(path_, std::ios::binary);
    HG_CHECK(in.good(), "safetensors", "cannot reopen '", path_, "'");
    std::vector<unsigned char> bytes(e.end - e.begin);
    in.seekg(static_cast<std::streamoff>(data_start_ + e.begin));
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    HG_CHECK(in.good() || bytes.empty(), "safetensors", path_, ": short read of tensor '", name, "'");
    Tensor<T> out(e.shape);
    int64_t n = out.numel();
    const unsigned char* b = bytes.data();
    if (e.dtype == "F32") detail::convert<float>(b, out.data(), n);
    else if (e.dtype == "F64") detail::convert<double>(b, out.data(), n);
    else if (e.dtype == "F16") detail::convert<half>(b, out.data(), n);
    else if (e.dtype == "BF16") detail::convert<bfloat16>(b, out.data(), n);
    else if (e.dtype == "I64") detail::convert<int64_t>(b, out.data(), n);
    else if (e.dtype == "I32") detail::convert<int32_t>(b, out.data(), n);
    else if (e.dtype == "U8" || e.dtype == "BOOL") detail::convert<uint8_t>(b, out.data(), n);
    else fail("safetensors", path_, ": cannot convert tensor '", name, "' of dtype ", e.dtype, " to ", dtype_name<T>());
    return out;
  }

 private:
  std::string path_;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_start_ = 0;
};

// Writes tensors (in key order) to `path` atomically: temp file, then rename.
template <class T>
void save_safetensors(const std::string& path, const std::map<std::string, Tensor<T>>& tensors,
                      const std::map<std::string, std::string>& metadata = {}) {
  const char* tag = detail::dtype_tag<T>();
  static_assert(sizeof(T) > 0);
  HG_CHECK(tag != nullptr, "save_safetensors", "unsupported element type ", dtype_name<T>());
  std::string header = "{";
  auto quoted = [](const std::string& s) {
    std::string q = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q + "\"";
  };
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ',';
      header.append(quoted(k)).append(":").append(quoted(v));
      first = false;
    }
    header += "},";
  }
  uint64_t offset = 0;
  bool first = true;
  for (const auto& [name, t] : tensors) {
    uint64_t bytes = static_cast<uint64_t>(t.numel()) * sizeof(T);
    std::string shape;
    for (size_t i = 0; i < t.shape().size(); ++i) {
      if (i) shape += ',';
      shape.append(std::to_string(t.shape()[i]));
    }
    if (!first) header += ',';
    header.append(quoted(name)).append(":{\"dtype\":\"").append(tag).append("\",\"shape\":[").append(shape);
    header.append("],\"data_offsets\":[").append(std::to_string(offset)).append(",");
    header.append(std::to_string(offset + bytes)).append("]}");
    offset += bytes;
    first = false;
  }
  header += "}";
  while (header.size() % 8) header += ' ';  // keeps the data section 8-byte aligned
  std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    HG_CHECK(out.good(), "save_safetensors", "cannot write '", temp, "'");
    unsigned char size_bytes[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) size_bytes[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(size_bytes), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& [name, t] : tensors) {
      std::vector<T> values = t.to_vector();
      out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
    }
    out.flush();
    HG_CHECK(out.good(), "save_safetensors", "write to '", temp, "' failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  HG_CHECK(!ec, "save_safetensors", "cannot rename '", temp, "' to '", path, "': ", ec.message());
}

}  // namespace histograd::io
