// NumPy .npy files (format version 1.0/2.0: magic, header length, a Python-dict header
// with 'descr', 'fortran_order' and 'shape', then the raw little-endian C-order data), the
// format numpy.load and the pathology tools read embeddings from. The writer is atomic.
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace histograd::io {

namespace detail {
template <class T> const char* npy_descr() {
  if constexpr (std::is_same_v<T, float>) return "<f4";
  else if constexpr (std::is_same_v<T, double>) return "<f8";
  else if constexpr (std::is_same_v<T, int64_t>) return "<i8";
  else if constexpr (std::is_same_v<T, bool>) return "|b1";
  else return nullptr;
}
}  // namespace detail

// Writes `tensor` to `path` as a C-order .npy, through a temporary file renamed into place.
template <class T>
void save_npy(const std::string& path, const Tensor<T>& tensor) {
  const char* descr = detail::npy_descr<T>();
  HG_CHECK(descr != nullptr, "save_npy", "unsupported element type ", dtype_name<T>());
  std::string shape = "(";
  for (size_t i = 0; i < tensor.shape().size(); ++i) shape += std::to_string(tensor.shape()[i]) + ", ";
  if (tensor.shape().size() > 1) shape.resize(shape.size() - 2);  // numpy writes "(5,)" but "(2, 3)"
  else if (tensor.shape().size() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  HG_CHECK(header.size() < 65536, "save_npy", "shape too long for an .npy header");
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    HG_CHECK(out.good(), "save_npy", "cannot write '", temp, "'");
    const char preamble[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
    out.write(preamble, 8);
    const unsigned char length[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                     static_cast<unsigned char>(header.size() >> 8)};
    out.write(reinterpret_cast<const char*>(length), 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    std::vector<T> values = tensor.to_vector();
    if constexpr (std::is_same_v<T, bool>) {
      for (bool v : values) out.put(v ? 1 : 0);
    } else {
      out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
    }
    out.flush();
    HG_CHECK(out.good(), "save_npy", "write to '", temp, "' failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  HG_CHECK(!ec, "save_npy", "cannot rename '", temp, "' to '", path, "': ", ec.message());
}

// Reads a C-order .npy whose dtype is T's (float32, float64, int64, bool).
template <class T>
Tensor<T> load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  HG_CHECK(in.good(), "load_npy", "cannot open '", path, "'");
  char preamble[10];
  in.read(preamble, 10);
  HG_CHECK(in.gcount() == 10 && std::memcmp(preamble, "\x93NUMPY", 6) == 0, "load_npy", "'", path,
           "' is not an .npy file (bad magic)");
  const int major = static_cast<unsigned char>(preamble[6]);
  HG_CHECK(major == 1 || major == 2, "load_npy", "'", path, "': unsupported .npy version ", major);
  uint64_t header_length = static_cast<unsigned char>(preamble[8]) | (static_cast<unsigned char>(preamble[9]) << 8);
  if (major == 2) {  // a 4-byte length: two more bytes follow
    char more[2];
    in.read(more, 2);
    HG_CHECK(in.gcount() == 2, "load_npy", "'", path, "' is truncated in its preamble");
    header_length |= (uint64_t(static_cast<unsigned char>(more[0])) << 16) |
                     (uint64_t(static_cast<unsigned char>(more[1])) << 24);
  }
  HG_CHECK(header_length < (1u << 20), "load_npy", "'", path, "': header length ", header_length, " is implausible");
  std::string header(header_length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_length));
  HG_CHECK(static_cast<uint64_t>(in.gcount()) == header_length, "load_npy", "'", path, "' is truncated in its header");
  auto field = [&](const std::string& key) {
    size_t at = header.find("'" + key + "'");
    HG_CHECK(at != std::string::npos, "load_npy", "'", path, "': header has no '", key, "'");
    size_t colon = header.find(':', at);
    HG_CHECK(colon != std::string::npos, "load_npy", "'", path, "': malformed header");
    return header.substr(colon + 1);
  };
  const std::string descr = detail::npy_descr<T>();
  HG_CHECK(field("descr").find("'" + descr + "'") < 4, "load_npy", "'", path, "': expected dtype ", descr,
           ", got header ", header);
  HG_CHECK(field("fortran_order").find("False") < 4, "load_npy", "'", path, "': Fortran-order arrays are not supported");
  std::string shape_text = field("shape");
  size_t open = shape_text.find('('), close = shape_text.find(')');
  HG_CHECK(open != std::string::npos && close != std::string::npos && open < close, "load_npy", "'", path,
           "': malformed shape in header");
  Shape shape;
  int64_t numel = 1;
  for (size_t i = open + 1; i < close;) {
    while (i < close && (shape_text[i] == ' ' || shape_text[i] == ',')) ++i;
    if (i >= close) break;
    size_t end = i;
    while (end < close && std::isdigit(static_cast<unsigned char>(shape_text[end]))) ++end;
    HG_CHECK(end > i && end - i < 13, "load_npy", "'", path, "': malformed shape in header");
    const int64_t dim = std::stoll(shape_text.substr(i, end - i));
    shape.push_back(dim);
    HG_CHECK(dim == 0 || numel <= (int64_t(1) << 40) / dim, "load_npy", "'", path, "': shape too large");
    numel *= dim;
    i = end;
  }
  Tensor<T> out(shape);
  if constexpr (std::is_same_v<T, bool>) {
    std::vector<char> raw(static_cast<size_t>(numel));
    in.read(raw.data(), numel);
    HG_CHECK(in.gcount() == numel, "load_npy", "'", path, "' is truncated: expected ", numel, " bytes of data");
    for (int64_t i = 0; i < numel; ++i) out.data()[i] = raw[static_cast<size_t>(i)] != 0;
  } else {
    const std::streamsize bytes = static_cast<std::streamsize>(numel * static_cast<int64_t>(sizeof(T)));
    in.read(reinterpret_cast<char*>(out.data()), bytes);
    HG_CHECK(in.gcount() == bytes, "load_npy", "'", path, "' is truncated: expected ", bytes, " bytes of data, got ",
             in.gcount());
  }
  return out;
}

}  // namespace histograd::io
