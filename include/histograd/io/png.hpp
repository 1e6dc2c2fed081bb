// PNG (W3C PNG specification, 2nd edition): chunk walk with CRC-32 checks, IHDR/PLTE/IDAT/IEND,
// every colour type and bit depth, the five row filters (§9) and Adam7 interlacing (§8.2),
// decoded to 8-bit RGB exactly as Pillow's Image.open(p).convert("RGB") gives it: alpha and tRNS
// dropped (not composited), palette expanded (indices past the palette read as black), grey
// replicated, low bit depths scaled to 0..255, 16-bit colour/grey-alpha reduced to the high byte
// and 16-bit grey clipped to 255 (Pillow's I;16 -> L conversion). Also a stored-deflate encoder.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "inflate.hpp"

namespace histograd::io::detail {

inline uint32_t read_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

inline bool is_png(const uint8_t* data, size_t size) {
  static constexpr uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  return size >= 8 && std::memcmp(data, signature, 8) == 0;
}

struct PngHeader {
  int64_t width = 0, height = 0;
  int bit_depth = 0, colour_type = 0;
  bool interlaced = false;

  int channels() const { return colour_type == 0 || colour_type == 3 ? 1 : colour_type == 4 ? 2 : colour_type == 2 ? 3 : 4; }
  int bits_per_pixel() const { return channels() * bit_depth; }
  // Bytes of one filtered row of `pixels` pixels, without the filter-type byte.
  size_t row_bytes(int64_t pixels) const { return static_cast<size_t>((pixels * bits_per_pixel() + 7) / 8); }
  // Distance in bytes to the pixel a filter calls "left" (at least one byte, §9.2).
  size_t filter_stride() const { return static_cast<size_t>(std::max(1, bits_per_pixel() / 8)); }
};

inline PngHeader parse_png_header(const uint8_t* p, uint32_t length, const std::string& name) {
  HG_CHECK(length == 13, "read_image", name, ": IHDR chunk of ", length, " bytes (expected 13)");
  PngHeader h;
  h.width = read_be32(p);
  h.height = read_be32(p + 4);
  h.bit_depth = p[8];
  h.colour_type = p[9];
  HG_CHECK(h.width > 0 && h.height > 0 && h.width <= 0x7FFFFFFF && h.height <= 0x7FFFFFFF, "read_image", name,
           ": invalid PNG size ", h.width, "x", h.height);
  HG_CHECK(h.width * h.height <= (int64_t(1) << 28), "read_image", name, ": PNG of ", h.width, "x", h.height,
           " pixels exceeds the limit of 2^28 pixels");
  const int d = h.bit_depth, t = h.colour_type;
  const bool valid = (t == 0 && (d == 1 || d == 2 || d == 4 || d == 8 || d == 16)) ||
                     (t == 3 && (d == 1 || d == 2 || d == 4 || d == 8)) ||
                     ((t == 2 || t == 4 || t == 6) && (d == 8 || d == 16));
  HG_CHECK(valid, "read_image", name, ": invalid PNG colour type ", t, " with bit depth ", d);
  HG_CHECK(p[10] == 0 && p[11] == 0, "read_image", name, ": unknown PNG compression or filter method");
  HG_CHECK(p[12] <= 1, "read_image", name, ": unknown PNG interlace method ", int(p[12]));
  h.interlaced = p[12] == 1;
  return h;
}

// Paeth predictor (§9.4): whichever of left, up, up-left is closest to left + up - up-left.
inline uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return static_cast<uint8_t>(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

// Undoes one row's filter in place; `previous` is the reconstructed row above (zeros for the first).
inline void unfilter_row(int filter, uint8_t* row, const uint8_t* previous, size_t length, size_t stride,
                         const std::string& name) {
  switch (filter) {
    case 0: return;
    case 1: for (size_t i = stride; i < length; ++i) row[i] = uint8_t(row[i] + row[i - stride]); return;
    case 2: for (size_t i = 0; i < length; ++i) row[i] = uint8_t(row[i] + previous[i]); return;
    case 3:
      for (size_t i = 0; i < length; ++i) row[i] = uint8_t(row[i] + ((i >= stride ? row[i - stride] : 0) + previous[i]) / 2);
      return;
    case 4:
      for (size_t i = 0; i < length; ++i)
        row[i] = uint8_t(row[i] + paeth(i >= stride ? row[i - stride] : 0, previous[i], i >= stride ? previous[i - stride] : 0));
      return;
    default: fail("read_image", name, ": invalid PNG filter type ", filter);
  }
}

// Sample `index` of a reconstructed row at the header's bit depth (big-endian, packed MSB first).
inline uint32_t png_sample(const uint8_t* row, int64_t index, int bit_depth) {
  if (bit_depth == 8) return row[index];
  if (bit_depth == 16) return uint32_t(row[2 * index]) << 8 | row[2 * index + 1];
  const int64_t bit = index * bit_depth;
  const int shift = 8 - bit_depth - static_cast<int>(bit % 8);
  return (row[bit / 8] >> shift) & ((1u << bit_depth) - 1);
}

// One pixel of a reconstructed row, as Pillow's convert("RGB") makes it.
inline void png_pixel_to_rgb(const PngHeader& h, const uint8_t* row, int64_t x, const std::vector<uint8_t>& palette,
                             uint8_t* rgb) {
  const int d = h.bit_depth, channels = h.channels();
  if (h.colour_type == 3) {
    const size_t index = png_sample(row, x, d);
    for (int c = 0; c < 3; ++c) rgb[c] = 3 * index + 2 < palette.size() ? palette[3 * index + c] : 0;
    return;
  }
  auto reduce = [&](uint32_t v) -> uint8_t {
    if (d == 16) return static_cast<uint8_t>(h.colour_type == 0 ? std::min<uint32_t>(v, 255) : v >> 8);
    return static_cast<uint8_t>(v * 255 / ((1u << d) - 1));
  };
  if (h.colour_type == 0 || h.colour_type == 4) {
    rgb[0] = rgb[1] = rgb[2] = reduce(png_sample(row, x * channels, d));
    return;
  }
  for (int c = 0; c < 3; ++c) rgb[c] = reduce(png_sample(row, x * channels + c, d));
}

struct Adam7Pass {
  int64_t x0, y0, dx, dy;
};
inline std::vector<Adam7Pass> png_passes(bool interlaced) {
  if (!interlaced) return {{0, 0, 1, 1}};
  return {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
}
inline int64_t pass_extent(int64_t size, int64_t start, int64_t step) { return size > start ? (size - start + step - 1) / step : 0; }

inline size_t png_raw_size(const PngHeader& h) {
  size_t total = 0;
  for (const Adam7Pass& p : png_passes(h.interlaced)) {
    const int64_t w = pass_extent(h.width, p.x0, p.dx), rows = pass_extent(h.height, p.y0, p.dy);
    if (w > 0 && rows > 0) total += static_cast<size_t>(rows) * (1 + h.row_bytes(w));
  }
  return total;
}

// Unfilters every (sub-)image of the inflated stream and scatters its pixels into rgb.
inline void png_reconstruct(const PngHeader& h, std::vector<uint8_t>& raw, const std::vector<uint8_t>& palette,
                            uint8_t* rgb, const std::string& name) {
  size_t offset = 0;
  for (const Adam7Pass& p : png_passes(h.interlaced)) {
    const int64_t w = pass_extent(h.width, p.x0, p.dx), rows = pass_extent(h.height, p.y0, p.dy);
    if (w == 0 || rows == 0) continue;
    const size_t length = h.row_bytes(w);
    const std::vector<uint8_t> zeros(length, 0);
    const uint8_t* previous = zeros.data();
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* row = raw.data() + offset + 1;
      unfilter_row(raw[offset], row, previous, length, h.filter_stride(), name);
      const int64_t y = p.y0 + r * p.dy;
      uint8_t* out = rgb + 3 * (y * h.width + p.x0);
      if (h.bit_depth == 8 && (h.colour_type == 2 || h.colour_type == 6)) {  // the common case, without the general path
        const int channels = h.channels();
        for (int64_t i = 0; i < w; ++i) std::memcpy(out + 3 * i * p.dx, row + channels * i, 3);
      } else {
        for (int64_t i = 0; i < w; ++i) png_pixel_to_rgb(h, row, i, palette, out + 3 * i * p.dx);
      }
      previous = row;
      offset += 1 + length;
    }
  }
}

// Decodes a whole PNG file held in memory to 8-bit RGB.
inline std::vector<uint8_t> decode_png(const uint8_t* data, size_t size, const std::string& name, int64_t& width,
                                       int64_t& height) {
  HG_CHECK(is_png(data, size), "read_image", name, ": not a PNG file (bad signature)");
  PngHeader header;
  std::vector<uint8_t> palette, compressed;
  bool seen_header = false, seen_end = false;
  for (size_t pos = 8; !seen_end;) {
    HG_CHECK(size - pos >= 12, "read_image", name, ": PNG file is truncated (no IEND chunk)");
    const uint32_t length = read_be32(data + pos);
    HG_CHECK(length <= size - pos - 12, "read_image", name, ": PNG chunk of ", length, " bytes at offset ", pos,
             " runs past the end of the file (truncated)");
    const uint8_t* type = data + pos + 4;
    const uint8_t* body = data + pos + 8;
    const std::string tag(reinterpret_cast<const char*>(type), 4);
    HG_CHECK(crc32(type, length + 4) == read_be32(body + length), "read_image", name, ": CRC mismatch in PNG chunk '",
             tag, "' at offset ", pos);
    HG_CHECK(seen_header || tag == "IHDR", "read_image", name, ": PNG does not start with an IHDR chunk");
    if (tag == "IHDR") {
      HG_CHECK(!seen_header, "read_image", name, ": more than one IHDR chunk");
      header = parse_png_header(body, length, name);
      seen_header = true;
    } else if (tag == "PLTE") {
      HG_CHECK(length % 3 == 0 && length <= 768, "read_image", name, ": PLTE chunk of ", length, " bytes");
      palette.assign(body, body + length);
    } else if (tag == "IDAT") {
      compressed.insert(compressed.end(), body, body + length);
    } else if (tag == "IEND") {
      seen_end = true;
    }
    pos += 12 + static_cast<size_t>(length);
  }
  HG_CHECK(header.colour_type != 3 || !palette.empty(), "read_image", name, ": palette PNG without a PLTE chunk");
  HG_CHECK(!compressed.empty(), "read_image", name, ": PNG without IDAT data");
  const size_t expected = png_raw_size(header);
  std::vector<uint8_t> raw = zlib_decompress(compressed.data(), compressed.size(), expected, name);
  HG_CHECK(raw.size() == expected, "read_image", name, ": PNG image data holds ", raw.size(), " bytes, expected ",
           expected, " (truncated)");
  width = header.width;
  height = header.height;
  std::vector<uint8_t> rgb(static_cast<size_t>(width * height * 3));
  png_reconstruct(header, raw, palette, rgb.data(), name);
  return rgb;
}

// An 8-bit RGB PNG: every row with filter 0, the zlib stream in stored blocks.
inline std::vector<uint8_t> encode_png(int64_t width, int64_t height, const std::vector<uint8_t>& rgb) {
  std::vector<uint8_t> raw;
  raw.reserve(static_cast<size_t>(height * (1 + 3 * width)));
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), rgb.begin() + y * width * 3, rgb.begin() + (y + 1) * width * 3);
  }
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  auto chunk = [&out](const char* type, const std::vector<uint8_t>& body) {
    const uint32_t length = static_cast<uint32_t>(body.size());
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(length >> shift));
    const size_t start = out.size();
    out.insert(out.end(), type, type + 4);
    out.insert(out.end(), body.begin(), body.end());
    const uint32_t crc = crc32(out.data() + start, body.size() + 4);
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(crc >> shift));
  };
  std::vector<uint8_t> ihdr;
  for (uint32_t v : {uint32_t(width), uint32_t(height)})
    for (int shift = 24; shift >= 0; shift -= 8) ihdr.push_back(static_cast<uint8_t>(v >> shift));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, deflate, adaptive filters, no interlace
  chunk("IHDR", ihdr);
  chunk("IDAT", zlib_store(raw));
  chunk("IEND", {});
  return out;
}

}  // namespace histograd::io::detail
