// JPEG (ITU-T T.81): baseline/extended sequential and progressive Huffman decoding (Annex F,
// G.1.2), 1 or 3 components, any integral sampling factors, restart intervals. To give the
// pixels Pillow gives (it decodes with libjpeg-turbo's defaults), the arithmetic after entropy
// decoding follows libjpeg's: the ISLOW integer IDCT (jidctint.c: Loeffler-Ligtenberg-Moschytz,
// 13-bit constants, 2 extra bits after the first pass, its wrap-around range limit), "fancy"
// triangle chroma upsampling for h2v1 / h1v2 / h2v2 (jdsample.c) and its fixed-point
// YCbCr->RGB tables (jdcolor.c, 16-bit fractions). CMYK/YCCK, 12-bit and arithmetic coding are
// rejected with a clear Error.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace histograd::io::detail {

inline bool is_jpeg(const uint8_t* data, size_t size) { return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF; }

// Zig-zag position -> natural (row-major) position in the 8x8 block.
inline constexpr std::array<uint8_t, 64> jpeg_zigzag = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,  12, 19, 26, 33, 40, 48,
    41, 34, 27, 20, 13, 6,  7,  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23,
    30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63};

// Canonical Huffman code of a DHT segment (T.81 Annex C), decoded the way F.2.2.3 describes:
// the shortest length whose largest code is not below the bits read so far.
// `fast` maps the next 8 bits to code length << 8 | value for codes of up to 8 bits (0: longer).
struct JpegHuffman {
  bool defined = false;
  int32_t max_code[18] = {0}, first_code[17] = {0}, first_index[17] = {0};
  uint8_t values[256] = {0};
  uint16_t fast[256] = {0};
};

// The entropy-coded bytes of a scan: 0xFF00 stands for 0xFF; any other marker ends the data,
// after which zeros are supplied (as libjpeg does), so a marker is never read as data.
class JpegBits {
 public:
  JpegBits(const uint8_t* data, size_t size, size_t pos, const std::string& name)
      : data_(data), size_(size), pos_(pos), name_(name) {}

  uint32_t bits(int count) {
    while (bit_count_ < count) fill_byte();
    bit_count_ -= count;
    return (buffer_ >> bit_count_) & ((1u << count) - 1);
  }
  int decode(const JpegHuffman& table) {
    while (bit_count_ < 8) fill_byte();
    const uint16_t entry = table.fast[(buffer_ >> (bit_count_ - 8)) & 0xFF];
    if (entry != 0) {
      bit_count_ -= entry >> 8;
      return entry & 0xFF;
    }
    int32_t code = static_cast<int32_t>(bits(1));
    int length = 1;
    while (code > table.max_code[length]) {
      HG_CHECK(length < 16, "read_image", name_, ": invalid Huffman code in JPEG data");
      code = (code << 1) | static_cast<int32_t>(bits(1));
      ++length;
    }
    return table.values[table.first_index[length] + code - table.first_code[length]];
  }
  // A magnitude category s and its s extra bits as a signed value (F.2.2.1 EXTEND).
  int32_t receive_extend(int s) {
    if (s == 0) return 0;
    const int32_t v = static_cast<int32_t>(bits(s));
    return v < (1 << (s - 1)) ? v - (1 << s) + 1 : v;
  }
  // At a restart interval's end: drop the partial byte and expect marker RST<expected>.
  void restart(int expected) {
    bit_count_ = 0;
    if (!at_marker_) {
      // a well-formed stream has nothing but fill bits left before the marker
      HG_CHECK(pos_ + 1 < size_ && data_[pos_] == 0xFF, "read_image", name_, ": JPEG restart marker missing");
    }
    while (pos_ + 1 < size_ && data_[pos_] == 0xFF && data_[pos_ + 1] == 0xFF) ++pos_;
    HG_CHECK(pos_ + 1 < size_ && data_[pos_ + 1] == 0xD0 + expected, "read_image", name_,
             ": expected JPEG restart marker RST", expected, " in the entropy-coded data");
    pos_ += 2;
    at_marker_ = false;
  }
  size_t position() const { return pos_; }

 private:
  void fill_byte() {
    uint32_t byte = 0;
    if (!at_marker_) {
      HG_CHECK(pos_ < size_, "read_image", name_, ": JPEG file is truncated inside its entropy-coded data");
      byte = data_[pos_];
      if (byte == 0xFF) {
        HG_CHECK(pos_ + 1 < size_, "read_image", name_, ": JPEG file is truncated inside its entropy-coded data");
        if (data_[pos_ + 1] == 0x00) {
          pos_ += 2;
        } else {
          at_marker_ = true;
          byte = 0;
        }
      } else {
        ++pos_;
      }
    }
    buffer_ = (buffer_ << 8) | byte;
    bit_count_ += 8;
  }

  const uint8_t* data_;
  size_t size_, pos_;
  uint32_t buffer_ = 0;
  int bit_count_ = 0;
  bool at_marker_ = false;
  const std::string& name_;
};

struct JpegComponent {
  int id = 0, h = 1, v = 1, quant_index = 0;
  int64_t width = 0, height = 0;      // samples actually in the image: ceil(W·h/hmax) x ceil(H·v/vmax)
  int64_t blocks_w = 0, blocks_h = 0;  // blocks stored (whole MCUs)
  std::vector<int16_t> coefficients;   // blocks_h·blocks_w blocks of 64, natural order
  std::array<uint16_t, 64> quant{};    // latched at the component's first scan, as libjpeg does
  bool quant_latched = false;
  int dc_table = 0, ac_table = 0;
  int32_t dc_prediction = 0;
  int16_t* block(int64_t bx, int64_t by) { return coefficients.data() + (by * blocks_w + bx) * 64; }
};

// libjpeg's jpeg_idct_islow on one dequantised block, into 8x8 samples at out (row stride `stride`).
inline void jpeg_idct_islow(const int16_t* coef, const uint16_t* quant, uint8_t* out, int64_t stride) {
  constexpr int kConstBits = 13, kPass1Bits = 2;
  auto descale = [](int64_t x, int n) { return static_cast<int32_t>((x + (int64_t(1) << (n - 1))) >> n); };
  // The 1-D Loeffler IDCT of in[0..7 · step] (already scaled), returning the 8 outputs before descaling.
  auto idct_1d = [](int64_t i0, int64_t i1, int64_t i2, int64_t i3, int64_t i4, int64_t i5, int64_t i6, int64_t i7,
                    int64_t* o) {
    int64_t z1 = (i2 + i6) * 4433;  // FIX(0.541196100)
    const int64_t t2 = z1 + i6 * -15137, t3 = z1 + i2 * 6270;
    const int64_t t0 = (i0 + i4) * (int64_t(1) << kConstBits), t1 = (i0 - i4) * (int64_t(1) << kConstBits);
    const int64_t t10 = t0 + t3, t13 = t0 - t3, t11 = t1 + t2, t12 = t1 - t2;
    int64_t a0 = i7, a1 = i5, a2 = i3, a3 = i1;
    z1 = a0 + a3;
    int64_t z2 = a1 + a2, z3 = a0 + a2, z4 = a1 + a3;
    const int64_t z5 = (z3 + z4) * 9633;
    a0 *= 2446;
    a1 *= 16819;
    a2 *= 25172;
    a3 *= 12299;
    z1 *= -7373;
    z2 *= -20995;
    z3 = z3 * -16069 + z5;
    z4 = z4 * -3196 + z5;
    a0 += z1 + z3;
    a1 += z2 + z4;
    a2 += z2 + z3;
    a3 += z1 + z4;
    o[0] = t10 + a3, o[7] = t10 - a3, o[1] = t11 + a2, o[6] = t11 - a2;
    o[2] = t12 + a1, o[5] = t12 - a1, o[3] = t13 + a0, o[4] = t13 - a0;
  };
  int32_t workspace[64];
  // libjpeg's range-limit table indexed with (x & 1023): clamps |x| < 512, wraps beyond.
  auto range_limit = [](int32_t x) {
    x &= 1023;
    return static_cast<uint8_t>(x < 128 ? x + 128 : x < 512 ? 255 : x < 896 ? 0 : x - 896);
  };
  // A line whose AC terms are all zero gives its DC everywhere: the shortcut libjpeg takes, and
  // the exact value the full transform would produce.
  for (int c = 0; c < 8; ++c) {  // columns; results keep kPass1Bits fraction bits
    int64_t in[8], o[8];
    bool ac_zero = true;
    for (int r = 0; r < 8; ++r) {
      in[r] = int64_t(coef[r * 8 + c]) * quant[r * 8 + c];
      ac_zero = ac_zero && (r == 0 || in[r] == 0);
    }
    if (ac_zero) {
      for (int r = 0; r < 8; ++r) workspace[r * 8 + c] = static_cast<int32_t>(in[0] * (1 << kPass1Bits));
      continue;
    }
    idct_1d(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], o);
    for (int r = 0; r < 8; ++r) workspace[r * 8 + c] = descale(o[r], kConstBits - kPass1Bits);
  }
  for (int r = 0; r < 8; ++r) {
    const int32_t* w = workspace + r * 8;
    uint8_t* row = out + r * stride;
    if (w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0 && w[6] == 0 && w[7] == 0) {
      std::fill(row, row + 8, range_limit(descale(w[0], kPass1Bits + 3)));
      continue;
    }
    int64_t o[8];
    idct_1d(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], o);
    for (int c = 0; c < 8; ++c) row[c] = range_limit(descale(o[c], kConstBits + kPass1Bits + 3));
  }
}

// Scan decoding: Annex F (sequential) and G.1.2 (progressive DC/AC, first and refining scans).
struct JpegScan {
  std::vector<JpegComponent*> components;
  int spectral_start = 0, spectral_end = 63, approx_high = 0, approx_low = 0;
};

class JpegDecoder {
 public:
  JpegDecoder(const uint8_t* data, size_t size, const std::string& name) : data_(data), size_(size), name_(name) {}

  std::vector<uint8_t> decode(int64_t& width, int64_t& height) {
    HG_CHECK(is_jpeg(data_, size_), "read_image", name_, ": not a JPEG file (no SOI marker)");
    size_t pos = 2;
    while (true) {
      const int marker = next_marker(pos);
      if (marker == 0xD9) break;  // EOI
      if (marker >= 0xD0 && marker <= 0xD7) continue;  // stray RST between segments: nothing to read
      HG_CHECK(pos + 2 <= size_, "read_image", name_, ": JPEG file is truncated (segment header)");
      const size_t length = size_t(data_[pos]) << 8 | data_[pos + 1];
      HG_CHECK(length >= 2 && pos + length <= size_, "read_image", name_, ": JPEG segment of ", length,
               " bytes at offset ", pos, " runs past the end of the file (truncated)");
      const uint8_t* body = data_ + pos + 2;
      const size_t body_size = length - 2;
      pos += length;
      if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) read_frame(body, body_size, marker == 0xC2);
      else if (marker == 0xC4) read_huffman_tables(body, body_size);
      else if (marker == 0xDB) read_quant_tables(body, body_size);
      else if (marker == 0xDD) read_restart_interval(body, body_size);
      else if (marker == 0xDA) pos = read_scan(body, body_size, pos);
      else if (marker == 0xE0) saw_jfif_ = saw_jfif_ || (body_size >= 5 && std::equal(body, body + 5, "JFIF"));
      else if (marker == 0xEE && body_size >= 12 && std::equal(body, body + 5, "Adobe")) adobe_transform_ = body[11];
      else if (marker == 0xDC) fail("read_image", name_, ": JPEG DNL marker is not supported");
      else if ((marker >= 0xC3 && marker <= 0xCF) && marker != 0xC8 && marker != 0xCC)
        fail("read_image", name_, ": unsupported JPEG process (SOF", marker - 0xC0,
             "): only baseline, extended and progressive Huffman JPEGs are supported");
    }
    HG_CHECK(!components_.empty(), "read_image", name_, ": JPEG without a frame header (SOF)");
    HG_CHECK(scans_ > 0, "read_image", name_, ": JPEG without image data (no scan)");
    width = width_;
    height = height_;
    return to_rgb();
  }

 private:
  // Returns the next marker code at or after pos and moves pos past it. Like libjpeg, bytes that
  // are not a marker (entropy-coded leftovers, stuffed 0xFF00, padding) are skipped.
  int next_marker(size_t& pos) {
    while (true) {
      while (pos < size_ && data_[pos] != 0xFF) ++pos;
      while (pos < size_ && data_[pos] == 0xFF) ++pos;  // 0xFF fill bytes may precede a marker
      HG_CHECK(pos < size_, "read_image", name_, ": JPEG file is truncated (no EOI marker)");
      if (data_[pos] != 0x00) return data_[pos++];
    }
  }

  void read_frame(const uint8_t* p, size_t n, bool progressive) {
    HG_CHECK(components_.empty(), "read_image", name_, ": JPEG with more than one frame header");
    HG_CHECK(n >= 6, "read_image", name_, ": JPEG frame header is too short");
    HG_CHECK(p[0] == 8, "read_image", name_, ": JPEG of ", int(p[0]), "-bit precision (only 8-bit is supported)");
    height_ = p[1] << 8 | p[2];
    width_ = p[3] << 8 | p[4];
    const int count = p[5];
    HG_CHECK(height_ > 0, "read_image", name_, ": JPEG with height 0 (DNL marker) is not supported");
    HG_CHECK(width_ > 0, "read_image", name_, ": JPEG with width 0");
    HG_CHECK(width_ * height_ <= (int64_t(1) << 28), "read_image", name_, ": JPEG of ", width_, "x", height_,
             " pixels exceeds the limit of 2^28 pixels");
    HG_CHECK(count == 1 || count == 3, "read_image", name_, ": JPEG with ", count,
             " components (only greyscale and YCbCr/RGB are supported; CMYK/YCCK is not)");
    HG_CHECK(n == 6 + 3 * size_t(count), "read_image", name_, ": JPEG frame header of ", n, " bytes for ", count,
             " components");
    progressive_ = progressive;
    components_.resize(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      JpegComponent& c = components_[static_cast<size_t>(i)];
      c.id = p[6 + 3 * i];
      c.h = p[7 + 3 * i] >> 4;
      c.v = p[7 + 3 * i] & 15;
      c.quant_index = p[8 + 3 * i];
      HG_CHECK(c.h >= 1 && c.h <= 4 && c.v >= 1 && c.v <= 4, "read_image", name_, ": invalid JPEG sampling factors ",
               c.h, "x", c.v);
      HG_CHECK(c.quant_index <= 3, "read_image", name_, ": invalid JPEG quantisation table index ", c.quant_index);
      max_h_ = std::max(max_h_, c.h);
      max_v_ = std::max(max_v_, c.v);
    }
    mcus_w_ = (width_ + 8 * max_h_ - 1) / (8 * max_h_);
    mcus_h_ = (height_ + 8 * max_v_ - 1) / (8 * max_v_);
    for (JpegComponent& c : components_) {
      c.width = (width_ * c.h + max_h_ - 1) / max_h_;
      c.height = (height_ * c.v + max_v_ - 1) / max_v_;
      c.blocks_w = mcus_w_ * c.h;
      c.blocks_h = mcus_h_ * c.v;
      c.coefficients.assign(static_cast<size_t>(c.blocks_w * c.blocks_h * 64), 0);
    }
  }

  void read_quant_tables(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n;) {
      const int precision = p[i] >> 4, index = p[i] & 15;
      HG_CHECK(precision <= 1 && index <= 3, "read_image", name_, ": invalid JPEG quantisation table header");
      const size_t bytes = precision ? 128 : 64;
      HG_CHECK(i + 1 + bytes <= n, "read_image", name_, ": JPEG quantisation table is truncated");
      for (int k = 0; k < 64; ++k)
        quant_[index][jpeg_zigzag[k]] = precision ? uint16_t(p[i + 1 + 2 * k] << 8 | p[i + 2 + 2 * k]) : p[i + 1 + k];
      quant_defined_[index] = true;
      i += 1 + bytes;
    }
  }

  void read_huffman_tables(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n;) {
      HG_CHECK(i + 17 <= n, "read_image", name_, ": JPEG Huffman table is truncated");
      const int table_class = p[i] >> 4, index = p[i] & 15;
      HG_CHECK(table_class <= 1 && index <= 3, "read_image", name_, ": invalid JPEG Huffman table header");
      JpegHuffman& t = huffman_[table_class][index];
      int total = 0;
      for (int l = 1; l <= 16; ++l) total += p[i + static_cast<size_t>(l)];
      HG_CHECK(total <= 256 && i + 17 + static_cast<size_t>(total) <= n, "read_image", name_,
               ": JPEG Huffman table is truncated or holds more than 256 codes");
      int32_t code = 0, index_in_values = 0;
      for (int l = 1; l <= 16; ++l) {
        const int count = p[i + static_cast<size_t>(l)];
        t.first_index[l] = index_in_values;
        t.first_code[l] = code;
        code += count;
        index_in_values += count;
        t.max_code[l] = count ? code - 1 : -1;
        // as libjpeg: no code may be all ones, so the code space must never fill up
        HG_CHECK(count == 0 || code < (1 << l), "read_image", name_, ": bad JPEG Huffman table (code lengths overflow)");
        code <<= 1;
      }
      t.max_code[17] = 0x7FFFFFFF;
      std::copy(p + i + 17, p + i + 17 + total, t.values);
      std::fill(std::begin(t.fast), std::end(t.fast), uint16_t(0));
      for (int l = 1; l <= 8; ++l)
        for (int32_t c = t.first_code[l]; c <= t.max_code[l]; ++c)
          for (int32_t fill = c << (8 - l); fill < (c + 1) << (8 - l); ++fill)
            t.fast[fill] = static_cast<uint16_t>(l << 8 | t.values[t.first_index[l] + c - t.first_code[l]]);
      t.defined = true;
      i += 17 + static_cast<size_t>(total);
    }
  }

  void read_restart_interval(const uint8_t* p, size_t n) {
    HG_CHECK(n == 2, "read_image", name_, ": JPEG restart-interval segment of ", n, " bytes");
    restart_interval_ = p[0] << 8 | p[1];
  }

  // Parses a scan header and decodes its entropy-coded data, which starts at `pos`; returns the
  // offset of the marker that ends it.
  size_t read_scan(const uint8_t* p, size_t n, size_t pos) {
    HG_CHECK(!components_.empty(), "read_image", name_, ": JPEG scan before the frame header");
    HG_CHECK(n >= 1 && p[0] >= 1 && p[0] <= 4 && n == 4 + 2 * size_t(p[0]), "read_image", name_,
             ": invalid JPEG scan header");
    JpegScan scan;
    int blocks_per_mcu = 0;
    for (int i = 0; i < p[0]; ++i) {
      JpegComponent* c = find_component(p[1 + 2 * i]);
      HG_CHECK(c != nullptr, "read_image", name_, ": JPEG scan names unknown component ", int(p[1 + 2 * i]));
      HG_CHECK(std::find(scan.components.begin(), scan.components.end(), c) == scan.components.end(), "read_image",
               name_, ": JPEG scan names a component twice");
      c->dc_table = p[2 + 2 * i] >> 4;
      c->ac_table = p[2 + 2 * i] & 15;
      HG_CHECK(c->dc_table <= 3 && c->ac_table <= 3, "read_image", name_, ": invalid JPEG Huffman table selector");
      latch_quant_table(*c);
      blocks_per_mcu += c->h * c->v;
      scan.components.push_back(c);
    }
    HG_CHECK(scan.components.size() == 1 || blocks_per_mcu <= 10, "read_image", name_,
             ": JPEG scan with more than 10 blocks per MCU");
    const uint8_t* s = p + 1 + 2 * p[0];
    scan.spectral_start = s[0];
    scan.spectral_end = s[1];
    scan.approx_high = s[2] >> 4;
    scan.approx_low = s[2] & 15;
    if (progressive_) check_progressive_scan(scan);
    else scan = JpegScan{scan.components, 0, 63, 0, 0};  // libjpeg ignores these fields in sequential JPEGs
    check_tables(scan);
    ++scans_;
    return decode_scan(scan, pos);
  }

  JpegComponent* find_component(int id) {
    for (JpegComponent& c : components_)
      if (c.id == id) return &c;
    return nullptr;
  }

  void latch_quant_table(JpegComponent& c) {
    if (c.quant_latched) return;
    HG_CHECK(quant_defined_[c.quant_index], "read_image", name_, ": JPEG quantisation table ", c.quant_index,
             " used before it is defined");
    c.quant = quant_[c.quant_index];
    c.quant_latched = true;
  }

  void check_progressive_scan(const JpegScan& s) {
    const bool dc = s.spectral_start == 0;
    HG_CHECK(s.spectral_start <= s.spectral_end && s.spectral_end <= 63 && (dc ? s.spectral_end == 0 : true) &&
                 (dc || s.components.size() == 1) && s.approx_low <= 13 && s.approx_high <= 13,
             "read_image", name_, ": invalid progressive JPEG scan (Ss=", s.spectral_start, ", Se=", s.spectral_end,
             ", Ah=", s.approx_high, ", Al=", s.approx_low, ")");
  }

  void check_tables(const JpegScan& s) {
    const bool needs_dc = !progressive_ || (s.spectral_start == 0 && s.approx_high == 0);
    const bool needs_ac = !progressive_ || s.spectral_start > 0;
    for (const JpegComponent* c : s.components) {
      HG_CHECK(!needs_dc || huffman_[0][c->dc_table].defined, "read_image", name_, ": JPEG scan uses DC Huffman table ",
               c->dc_table, " before it is defined");
      HG_CHECK(!needs_ac || huffman_[1][c->ac_table].defined, "read_image", name_, ": JPEG scan uses AC Huffman table ",
               c->ac_table, " before it is defined");
    }
  }

  // Walks the scan's MCUs (one block per MCU when the scan holds one component, A.2.2-A.2.3).
  size_t decode_scan(const JpegScan& scan, size_t pos) {
    JpegBits bits(data_, size_, pos, name_);
    for (JpegComponent* c : scan.components) c->dc_prediction = 0;
    eob_run_ = 0;
    const bool single = scan.components.size() == 1;
    const int64_t units_w = single ? (scan.components[0]->width + 7) / 8 : mcus_w_;
    const int64_t units_h = single ? (scan.components[0]->height + 7) / 8 : mcus_h_;
    int expected_restart = 0;
    for (int64_t unit = 0; unit < units_w * units_h; ++unit) {
      if (restart_interval_ > 0 && unit > 0 && unit % restart_interval_ == 0) {
        bits.restart(expected_restart);
        expected_restart = (expected_restart + 1) & 7;
        for (JpegComponent* c : scan.components) c->dc_prediction = 0;
        eob_run_ = 0;
      }
      const int64_t ux = unit % units_w, uy = unit / units_w;
      if (single) {
        decode_block(bits, scan, *scan.components[0], scan.components[0]->block(ux, uy));
        continue;
      }
      for (JpegComponent* c : scan.components)
        for (int v = 0; v < c->v; ++v)
          for (int h = 0; h < c->h; ++h) decode_block(bits, scan, *c, c->block(ux * c->h + h, uy * c->v + v));
    }
    return bits.position();
  }

  void decode_block(JpegBits& bits, const JpegScan& s, JpegComponent& c, int16_t* block) {
    if (!progressive_) {
      decode_dc_first(bits, c, block, 0);
      decode_ac_first(bits, c, block, 1, 63, 0);
    } else if (s.spectral_start == 0) {
      if (s.approx_high == 0) decode_dc_first(bits, c, block, s.approx_low);
      else if (bits.bits(1)) block[0] = static_cast<int16_t>(block[0] | (1 << s.approx_low));
    } else if (s.approx_high == 0) {
      decode_ac_first(bits, c, block, s.spectral_start, s.spectral_end, s.approx_low);
    } else {
      decode_ac_refine(bits, c, block, s.spectral_start, s.spectral_end, s.approx_low);
    }
  }

  void decode_dc_first(JpegBits& bits, JpegComponent& c, int16_t* block, int shift) {
    const int category = bits.decode(huffman_[0][c.dc_table]);
    HG_CHECK(category <= 15, "read_image", name_, ": invalid DC magnitude category ", category, " in JPEG data");
    c.dc_prediction += bits.receive_extend(category);
    block[0] = static_cast<int16_t>(c.dc_prediction * (1 << shift));
  }

  // Run-length coded AC coefficients start..end (F.2.2.2, G.1.2.2 with end-of-band runs).
  void decode_ac_first(JpegBits& bits, const JpegComponent& c, int16_t* block, int start, int end, int shift) {
    if (eob_run_ > 0) {
      --eob_run_;
      return;
    }
    for (int k = start; k <= end; ++k) {
      const int rs = bits.decode(huffman_[1][c.ac_table]), run = rs >> 4, size = rs & 15;
      if (size == 0) {
        if (run == 15) {
          k += 15;
          continue;
        }
        if (!progressive_) return;  // sequential JPEGs have no end-of-band runs: any run < 15 ends the block
        eob_run_ = (1 << run) - 1 + static_cast<int32_t>(bits.bits(run));
        return;
      }
      k += run;
      HG_CHECK(k <= end, "read_image", name_, ": JPEG coefficient index past the end of the block");
      block[jpeg_zigzag[static_cast<size_t>(k)]] = static_cast<int16_t>(bits.receive_extend(size) * (1 << shift));
    }
  }

  // Refines coefficient bit `shift` (G.1.2.3): one correction bit per already non-zero
  // coefficient passed over, new coefficients of magnitude 1 << shift placed after `run` zeros.
  void decode_ac_refine(JpegBits& bits, const JpegComponent& c, int16_t* block, int start, int end, int shift) {
    const int plus = 1 << shift, minus = -plus;
    auto refine = [&](int16_t& coef) {
      if (bits.bits(1) && (coef & plus) == 0) coef = static_cast<int16_t>(coef + (coef >= 0 ? plus : minus));
    };
    int k = start;
    if (eob_run_ == 0) {
      for (; k <= end; ++k) {
        const int rs = bits.decode(huffman_[1][c.ac_table]);
        int run = rs >> 4, value = 0;
        if ((rs & 15) != 0) {
          HG_CHECK((rs & 15) == 1, "read_image", name_, ": invalid refinement magnitude in progressive JPEG");
          value = bits.bits(1) ? plus : minus;
        } else if (run != 15) {
          eob_run_ = (1 << run) + static_cast<int32_t>(bits.bits(run));
          break;
        }
        for (; k <= end; ++k) {
          int16_t& coef = block[jpeg_zigzag[static_cast<size_t>(k)]];
          if (coef != 0) refine(coef);
          else if (--run < 0) break;
        }
        if (value != 0) {
          HG_CHECK(k <= end, "read_image", name_, ": JPEG coefficient index past the end of the block");
          block[jpeg_zigzag[static_cast<size_t>(k)]] = static_cast<int16_t>(value);
        }
      }
    }
    if (eob_run_ > 0) {
      for (; k <= end; ++k) {
        int16_t& coef = block[jpeg_zigzag[static_cast<size_t>(k)]];
        if (coef != 0) refine(coef);
      }
      --eob_run_;
    }
  }

  std::vector<uint8_t> to_rgb();

  const uint8_t* data_;
  size_t size_;
  const std::string& name_;
  std::vector<JpegComponent> components_;
  std::array<std::array<uint16_t, 64>, 4> quant_{};
  bool quant_defined_[4] = {false, false, false, false};
  JpegHuffman huffman_[2][4];
  int64_t width_ = 0, height_ = 0, mcus_w_ = 0, mcus_h_ = 0;
  int max_h_ = 1, max_v_ = 1, restart_interval_ = 0, scans_ = 0, adobe_transform_ = -1;
  int32_t eob_run_ = 0;
  bool progressive_ = false, saw_jfif_ = false;
};

// Chroma upsampling to the full image grid, as libjpeg-turbo's jdsample.c does it by default:
// triangle filters for 2:1 factors (weights 3/4, 1/4 per direction, rounding biases alternating
// so that halves do not always round up), edge samples replicated, box replication otherwise.
inline std::vector<uint8_t> jpeg_upsample(const uint8_t* plane, int64_t stride, int64_t in_w, int64_t in_h, int hf,
                                          int vf, int64_t width, int64_t height) {
  std::vector<uint8_t> out(static_cast<size_t>(width * height));
  const bool fancy_h2 = hf == 2 && in_w > 2;  // libjpeg-turbo falls back to the box for narrower planes
  const bool fancy = (hf == 1 && vf == 2) || (fancy_h2 && vf <= 2);
  std::vector<int> sums(static_cast<size_t>(in_w));
  std::vector<uint8_t> wide(static_cast<size_t>(2 * in_w));
  for (int64_t y = 0; y < height; ++y) {
    uint8_t* row = out.data() + y * width;
    const uint8_t* near = plane + (y / vf) * stride;
    if (!fancy) {
      for (int64_t x = 0; x < width; ++x) row[x] = near[x / hf];
      continue;
    }
    // the row above for even output rows, below for odd ones, clamped to the real rows
    const int64_t i = y / vf, far_row = y % 2 == 0 ? std::max<int64_t>(i - 1, 0) : std::min(i + 1, in_h - 1);
    const uint8_t* far = plane + far_row * stride;
    if (vf == 1) {  // h2v1: (3·nearer + farther column) / 4, bias 1 on the left output, 2 on the right
      for (int64_t j = 0; j < in_w; ++j) {
        const int here = 3 * near[j];
        wide[2 * j] = static_cast<uint8_t>(j == 0 ? near[0] : (here + near[j - 1] + 1) >> 2);
        wide[2 * j + 1] = static_cast<uint8_t>(j == in_w - 1 ? near[j] : (here + near[j + 1] + 2) >> 2);
      }
      std::copy(wide.begin(), wide.begin() + width, row);
      continue;
    }
    for (int64_t j = 0; j < in_w; ++j) sums[j] = 3 * near[j] + far[j];
    if (hf == 1) {  // h1v2: (3·nearer + farther row) / 4, bias 1 above, 2 below
      const int bias = y % 2 == 0 ? 1 : 2;
      for (int64_t x = 0; x < width; ++x) row[x] = static_cast<uint8_t>((sums[x] + bias) >> 2);
      continue;
    }
    // h2v2: the same across the column sums, in sixteenths, biases 8 and 7
    for (int64_t j = 0; j < in_w; ++j) {
      const int here = 3 * sums[j];
      wide[2 * j] = static_cast<uint8_t>(j == 0 ? (sums[0] * 4 + 8) >> 4 : (here + sums[j - 1] + 8) >> 4);
      wide[2 * j + 1] = static_cast<uint8_t>(j == in_w - 1 ? (sums[j] * 4 + 7) >> 4 : (here + sums[j + 1] + 7) >> 4);
    }
    std::copy(wide.begin(), wide.begin() + width, row);
  }
  return out;
}

// jdcolor.c's tables: R = Y + 1.402 Cr', B = Y + 1.772 Cb', G = Y - 0.34414 Cb' - 0.71414 Cr'
// (Cb' = Cb - 128), each product in 16-bit fixed point, rounded as libjpeg rounds it.
struct YCbCrTables {
  int32_t cr_r[256], cb_b[256];
  int64_t cr_g[256], cb_g[256];
  YCbCrTables() {
    auto fix = [](double x) { return static_cast<int64_t>(x * 65536.0 + 0.5); };
    const int64_t half = int64_t(1) << 15;
    for (int i = 0; i < 256; ++i) {
      const int64_t x = i - 128;
      cr_r[i] = static_cast<int32_t>((fix(1.40200) * x + half) >> 16);
      cb_b[i] = static_cast<int32_t>((fix(1.77200) * x + half) >> 16);
      cr_g[i] = -fix(0.71414) * x;
      cb_g[i] = -fix(0.34414) * x + half;
    }
  }
};

inline std::vector<uint8_t> JpegDecoder::to_rgb() {
  std::vector<std::vector<uint8_t>> full;
  for (JpegComponent& c : components_) {
    HG_CHECK(max_h_ % c.h == 0 && max_v_ % c.v == 0, "read_image", name_, ": unsupported JPEG sampling factors ", c.h,
             "x", c.v, " (maximum ", max_h_, "x", max_v_, ")");
    const int64_t stride = c.blocks_w * 8;
    std::vector<uint8_t> plane(static_cast<size_t>(stride * c.blocks_h * 8));
    for (int64_t by = 0; by < c.blocks_h; ++by)
      for (int64_t bx = 0; bx < c.blocks_w; ++bx)
        jpeg_idct_islow(c.block(bx, by), c.quant.data(), plane.data() + by * 8 * stride + bx * 8, stride);
    full.push_back(jpeg_upsample(plane.data(), stride, c.width, c.height, max_h_ / c.h, max_v_ / c.v, width_, height_));
  }
  const size_t pixels = static_cast<size_t>(width_ * height_);
  std::vector<uint8_t> rgb(pixels * 3);
  if (full.size() == 1) {
    for (size_t i = 0; i < pixels; ++i) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = full[0][i];
    return rgb;
  }
  // libjpeg's default colour-space guess for 3 components (jdapimin.c default_decompress_parms)
  const bool is_rgb = !saw_jfif_ && (adobe_transform_ == 0 ||
                                     (adobe_transform_ < 0 && components_[0].id == 'R' && components_[1].id == 'G' &&
                                      components_[2].id == 'B'));
  static const YCbCrTables t;
  auto clamp = [](int64_t v) { return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255)); };
  for (size_t i = 0; i < pixels; ++i) {
    const int y = full[0][i], cb = full[1][i], cr = full[2][i];
    if (is_rgb) {
      rgb[3 * i] = static_cast<uint8_t>(y), rgb[3 * i + 1] = static_cast<uint8_t>(cb), rgb[3 * i + 2] = static_cast<uint8_t>(cr);
      continue;
    }
    rgb[3 * i] = clamp(y + t.cr_r[cr]);
    rgb[3 * i + 1] = clamp(y + ((t.cb_g[cb] + t.cr_g[cr]) >> 16));
    rgb[3 * i + 2] = clamp(y + t.cb_b[cb]);
  }
  return rgb;
}

inline std::vector<uint8_t> decode_jpeg(const uint8_t* data, size_t size, const std::string& name, int64_t& width,
                                        int64_t& height) {
  return JpegDecoder(data, size, name).decode(width, height);
}

}  // namespace histograd::io::detail
