// zlib streams (RFC 1950) around DEFLATE (RFC 1951): an inflater for PNG's IDAT data, with the
// header check, stored / fixed / dynamic Huffman blocks and the Adler-32 trailer, plus CRC-32
// (ISO 3309, as PNG chunks use it) and a stored-block deflater for the PNG writer. Every read is
// bounds-checked; malformed streams throw histograd::Error naming the file and the problem.
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace histograd::io::detail {

inline uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

inline uint32_t adler32(const uint8_t* data, size_t size, uint32_t adler = 1) {
  uint32_t a = adler & 0xFFFF, b = adler >> 16;
  while (size > 0) {
    const size_t chunk = size < 5552 ? size : 5552;  // largest run before b can overflow 32 bits
    for (size_t i = 0; i < chunk; ++i) {
      a += data[i];
      b += a;
    }
    a %= 65521;
    b %= 65521;
    data += chunk;
    size -= chunk;
  }
  return (b << 16) | a;
}

// DEFLATE reads bits least-significant first; Huffman codes arrive most-significant bit first,
// which the decoding table below absorbs by indexing with the bit-reversed code.
class InflateBits {
 public:
  InflateBits(const uint8_t* data, size_t size, const std::string& name) : data_(data), size_(size), name_(name) {}

  uint32_t peek(int count) {
    while (bit_count_ < count) {
      // Past the end we shift in zeros and count them; consume() fails if any is used.
      const uint64_t byte = pos_ < size_ ? data_[pos_] : 0;
      ++pos_;
      bits_ |= byte << bit_count_;
      bit_count_ += 8;
    }
    return static_cast<uint32_t>(bits_ & ((uint64_t(1) << count) - 1));
  }
  void consume(int count) {
    bits_ >>= count;
    bit_count_ -= count;
    if (pos_ > size_ && (pos_ - size_) * 8 > static_cast<size_t>(bit_count_)) fail_truncated();
  }
  uint32_t bits(int count) {
    if (count == 0) return 0;
    const uint32_t value = peek(count);
    consume(count);
    return value;
  }
  // Drops the bits left in the current byte; returns the offset of the next whole byte.
  size_t align_to_byte() {
    consume(bit_count_ % 8);
    return pos_ - static_cast<size_t>(bit_count_ / 8);
  }
  void skip_bytes(size_t offset_after) {
    bits_ = 0;
    bit_count_ = 0;
    pos_ = offset_after;
  }
  [[noreturn]] void fail_truncated() const { fail("inflate", name_, ": compressed data is truncated"); }
  const std::string& name() const { return name_; }

 private:
  const uint8_t* data_;
  size_t size_, pos_ = 0;
  uint64_t bits_ = 0;
  int bit_count_ = 0;
  const std::string& name_;
};

// A canonical Huffman code as a table over the next max_bits input bits:
// entry = symbol << 4 | code length (0 marks a bit pattern no code starts with).
struct InflateHuffman {
  int max_bits = 0;
  std::vector<uint16_t> table;

  InflateHuffman(const uint8_t* lengths, int count, const std::string& name) {
    int length_count[16] = {0};
    for (int i = 0; i < count; ++i) {
      ++length_count[lengths[i]];
      if (lengths[i] > max_bits) max_bits = lengths[i];
    }
    length_count[0] = 0;
    int next_code[16] = {0}, code = 0;
    for (int bits = 1; bits < 16; ++bits) {
      code = (code + length_count[bits - 1]) << 1;
      next_code[bits] = code;
      HG_CHECK(code + length_count[bits] <= (1 << bits), "inflate", name, ": over-subscribed Huffman code lengths");
    }
    if (max_bits == 0) max_bits = 1;  // an all-zero code: every lookup reports an invalid code
    table.assign(size_t(1) << max_bits, 0);
    for (int symbol = 0; symbol < count; ++symbol) {
      const int len = lengths[symbol];
      if (len == 0) continue;
      const uint32_t reversed = reverse_bits(static_cast<uint32_t>(next_code[len]++), len);
      for (uint32_t fill = reversed; fill < table.size(); fill += 1u << len)
        table[fill] = static_cast<uint16_t>(symbol << 4 | len);
    }
  }

  int decode(InflateBits& in) const {
    const uint16_t entry = table[in.peek(max_bits)];
    HG_CHECK((entry & 15) != 0, "inflate", in.name(), ": invalid Huffman code in compressed data");
    in.consume(entry & 15);
    return entry >> 4;
  }

  static uint32_t reverse_bits(uint32_t code, int length) {
    uint32_t out = 0;
    for (int i = 0; i < length; ++i, code >>= 1) out = (out << 1) | (code & 1);
    return out;
  }
};

struct InflateTables {
  static constexpr uint16_t length_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                               31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
  static constexpr uint8_t length_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                               2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
  static constexpr uint16_t distance_base[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,
                                                 33,  49,  65,  97,  129, 193,  257,  385,  513,  769,
                                                 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
  static constexpr uint8_t distance_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                                 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
};

// Appends one block's literals and back-references to `out`, never beyond `limit` bytes.
inline void inflate_codes(InflateBits& in, const InflateHuffman& literals, const InflateHuffman& distances,
                          std::vector<uint8_t>& out, size_t limit) {
  using T = InflateTables;
  while (true) {
    const int symbol = literals.decode(in);
    if (symbol < 256) {
      HG_CHECK(out.size() < limit, "inflate", in.name(), ": more decompressed data than the image holds");
      out.push_back(static_cast<uint8_t>(symbol));
      continue;
    }
    if (symbol == 256) return;
    HG_CHECK(symbol <= 285, "inflate", in.name(), ": invalid length code ", symbol);
    const size_t length = T::length_base[symbol - 257] + in.bits(T::length_extra[symbol - 257]);
    const int distance_code = distances.decode(in);
    HG_CHECK(distance_code < 30, "inflate", in.name(), ": invalid distance code ", distance_code);
    const size_t distance = T::distance_base[distance_code] + in.bits(T::distance_extra[distance_code]);
    HG_CHECK(distance <= out.size(), "inflate", in.name(), ": back-reference of ", distance,
             " bytes before the start of the data");
    HG_CHECK(out.size() + length <= limit, "inflate", in.name(), ": more decompressed data than the image holds");
    const size_t from = out.size() - distance;
    for (size_t i = 0; i < length; ++i) out.push_back(out[from + i]);  // may overlap itself: byte by byte
  }
}

inline void inflate_fixed_block(InflateBits& in, std::vector<uint8_t>& out, size_t limit) {
  static const auto tables = [] {
    uint8_t lengths[288 + 30];
    for (int i = 0; i < 288; ++i) lengths[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
    for (int i = 0; i < 30; ++i) lengths[288 + i] = 5;
    static const std::string fixed = "fixed Huffman code";
    return std::pair<InflateHuffman, InflateHuffman>{InflateHuffman(lengths, 288, fixed),
                                                      InflateHuffman(lengths + 288, 30, fixed)};
  }();
  inflate_codes(in, tables.first, tables.second, out, limit);
}

// The code lengths of a dynamic block are themselves Huffman coded (RFC 1951 §3.2.7).
inline void inflate_dynamic_block(InflateBits& in, std::vector<uint8_t>& out, size_t limit) {
  const int literal_count = static_cast<int>(in.bits(5)) + 257, distance_count = static_cast<int>(in.bits(5)) + 1;
  const int length_code_count = static_cast<int>(in.bits(4)) + 4;
  HG_CHECK(literal_count <= 286 && distance_count <= 30, "inflate", in.name(), ": too many codes in a dynamic block");
  static constexpr uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
  uint8_t code_lengths[19] = {0};
  for (int i = 0; i < length_code_count; ++i) code_lengths[order[i]] = static_cast<uint8_t>(in.bits(3));
  const InflateHuffman length_code(code_lengths, 19, in.name());

  uint8_t lengths[286 + 30] = {0};
  for (int i = 0; i < literal_count + distance_count;) {
    const int symbol = length_code.decode(in);
    if (symbol < 16) {
      lengths[i++] = static_cast<uint8_t>(symbol);
      continue;
    }
    HG_CHECK(symbol != 16 || i > 0, "inflate", in.name(), ": repeat of a code length before the first one");
    const uint8_t value = symbol == 16 ? lengths[i - 1] : 0;
    const int repeat = symbol == 16 ? 3 + static_cast<int>(in.bits(2))
                       : symbol == 17 ? 3 + static_cast<int>(in.bits(3))
                                      : 11 + static_cast<int>(in.bits(7));
    HG_CHECK(i + repeat <= literal_count + distance_count, "inflate", in.name(), ": code lengths overflow the table");
    for (int r = 0; r < repeat; ++r) lengths[i++] = value;
  }
  HG_CHECK(lengths[256] != 0, "inflate", in.name(), ": dynamic block without an end-of-block code");
  const InflateHuffman literals(lengths, literal_count, in.name());
  const InflateHuffman distances(lengths + literal_count, distance_count, in.name());
  inflate_codes(in, literals, distances, out, limit);
}

// Decompresses a whole zlib stream; `limit` caps the output (PNG knows its exact raw size).
inline std::vector<uint8_t> zlib_decompress(const uint8_t* data, size_t size, size_t limit, const std::string& name) {
  HG_CHECK(size >= 6, "inflate", name, ": zlib stream of ", size, " bytes is too short");
  const int cmf = data[0], flags = data[1];
  HG_CHECK((cmf & 15) == 8 && (cmf >> 4) <= 7, "inflate", name, ": not a deflate stream (zlib header ", cmf, ")");
  HG_CHECK((cmf * 256 + flags) % 31 == 0, "inflate", name, ": corrupt zlib header check bits");
  HG_CHECK((flags & 32) == 0, "inflate", name, ": zlib preset dictionaries are not allowed in PNG");
  std::vector<uint8_t> out;
  InflateBits in(data + 2, size - 2, name);
  for (bool last = false; !last;) {
    last = in.bits(1) != 0;
    const uint32_t type = in.bits(2);
    if (type == 0) {
      const size_t start = in.align_to_byte();
      HG_CHECK(start + 4 <= size - 2, "inflate", name, ": compressed data is truncated");
      const uint8_t* header = data + 2 + start;
      const size_t length = header[0] | header[1] << 8, complement = header[2] | header[3] << 8;
      HG_CHECK((length ^ 0xFFFF) == complement, "inflate", name, ": stored block length check failed");
      HG_CHECK(start + 4 + length <= size - 2, "inflate", name, ": compressed data is truncated");
      HG_CHECK(out.size() + length <= limit, "inflate", name, ": more decompressed data than the image holds");
      out.insert(out.end(), header + 4, header + 4 + length);
      in.skip_bytes(start + 4 + length);
    } else if (type == 1) {
      inflate_fixed_block(in, out, limit);
    } else if (type == 2) {
      inflate_dynamic_block(in, out, limit);
    } else {
      fail("inflate", name, ": invalid deflate block type 3");
    }
  }
  const size_t end = 2 + in.align_to_byte();
  HG_CHECK(end + 4 <= size, "inflate", name, ": zlib stream ends before its Adler-32 checksum");
  const uint32_t stored = uint32_t(data[end]) << 24 | uint32_t(data[end + 1]) << 16 | uint32_t(data[end + 2]) << 8 |
                          uint32_t(data[end + 3]);
  HG_CHECK(stored == adler32(out.data(), out.size()), "inflate", name, ": Adler-32 checksum mismatch");
  return out;
}

// A zlib stream of stored (uncompressed) blocks: valid everywhere, no compression.
inline std::vector<uint8_t> zlib_store(const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> out = {0x78, 0x01};
  size_t pos = 0;
  do {
    const size_t length = std::min<size_t>(raw.size() - pos, 65535);
    const bool last = pos + length == raw.size();
    out.push_back(last ? 1 : 0);
    const uint8_t header[4] = {uint8_t(length), uint8_t(length >> 8), uint8_t(~length), uint8_t(~length >> 8)};
    out.insert(out.end(), header, header + 4);
    out.insert(out.end(), raw.begin() + static_cast<std::ptrdiff_t>(pos),
               raw.begin() + static_cast<std::ptrdiff_t>(pos + length));
    pos += length;
  } while (pos < raw.size());
  const uint32_t adler = adler32(raw.data(), raw.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(adler >> shift));
  return out;
}

}  // namespace histograd::io::detail
