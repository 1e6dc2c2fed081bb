// Image files in and out: PNG and JPEG decoded to 8-bit RGB, pixel for pixel what Pillow's
// Image.open(path).convert("RGB") gives (png.hpp, jpeg.hpp say how), and an RGB PNG writer.
// Written from the PNG, zlib/deflate and JPEG (T.81) specifications with no library behind them;
// every malformed file is a histograd::Error naming the file and what is wrong with it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "jpeg.hpp"
#include "png.hpp"

namespace histograd::io {

// An 8-bit RGB image: pixels[(y·width + x)·3 + c], rows top to bottom (HWC, as PIL and numpy).
struct Image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;
};

// Decodes a PNG or JPEG held in memory, told apart by their first bytes.
inline Image decode_image(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  Image image;
  if (detail::is_png(data, size))
    image.pixels = detail::decode_png(data, size, name_for_errors, image.width, image.height);
  else if (detail::is_jpeg(data, size))
    image.pixels = detail::decode_jpeg(data, size, name_for_errors, image.width, image.height);
  else
    fail("read_image", name_for_errors, ": not a PNG or JPEG file (unrecognised first bytes)");
  return image;
}

inline Image read_image(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  HG_CHECK(in.good(), "read_image", "cannot open '", path, "'");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  HG_CHECK(!in.bad(), "read_image", "error while reading '", path, "'");
  return decode_image(bytes.data(), bytes.size(), path);
}

// Writes an 8-bit RGB PNG to a temporary name and renames it into place.
inline void write_png(const std::string& path, const Image& image) {
  HG_CHECK(image.width > 0 && image.height > 0 && image.width <= 0x7FFFFFFF && image.height <= 0x7FFFFFFF,
           "write_png", "expected a non-empty image, got ", image.width, "x", image.height);
  HG_CHECK(image.pixels.size() == static_cast<size_t>(image.width * image.height * 3), "write_png", "expected ",
           image.width * image.height * 3, " bytes of RGB pixels for ", image.width, "x", image.height, ", got ",
           image.pixels.size());
  const std::vector<uint8_t> bytes = detail::encode_png(image.width, image.height, image.pixels);
  // A per-process temporary name, removed on any failure, so two writers never share one and
  // a failed write leaves neither a torn PNG nor a stray temporary.
  const std::string temp = path + ".tmp" + std::to_string(::getpid());
  std::error_code ec;
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    HG_CHECK(out.good(), "write_png", "cannot write '", temp, "'");
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out.good()) {
      out.close();
      std::filesystem::remove(temp, ec);
      fail("write_png", "write to '", temp, "' failed (disk full?)");
    }
  }
  std::filesystem::rename(temp, path, ec);
  if (ec) std::filesystem::remove(temp);
  HG_CHECK(!ec, "write_png", "cannot rename '", temp, "' to '", path, "': ", ec.message());
}

}  // namespace histograd::io
