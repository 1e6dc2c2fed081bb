// PNG and JPEG decoding against Pillow (scripts/gen_image_fixtures.py: every PNG format, JPEGs of
// many qualities, subsamplings and scan layouts, decoded by Pillow/libjpeg-turbo), the shared
// tiles against stored Pillow checksums, the PNG writer, and malformed input: every truncation
// and many byte flips of valid files must give a histograd::Error, never a crash.
#include <histograd/io/image.hpp>
#include <histograd/io/safetensors.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "test_util.hpp"

namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) { return std::string(HISTOGRAD_FIXTURES_DIR) + "/images/" + name; }

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open ", path);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

hg::io::Image decode(const std::vector<uint8_t>& bytes, const std::string& name = "test.img") {
  return hg::io::decode_image(bytes.data(), bytes.size(), name);
}

// Largest |ours - Pillow's| over all samples.
int max_difference(const hg::io::Image& image, const hg::Tensor<float>& expected) {
  REQUIRE(expected.shape() == hg::Shape{image.height, image.width, 3});
  std::vector<float> want = expected.to_vector();
  int worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(int(image.pixels[i]) - int(want[i])));
  return worst;
}

// Rewrites the CRC of the PNG chunk containing `offset`, so the decoder goes past the check.
void fix_png_crc(std::vector<uint8_t>& png, size_t offset) {
  for (size_t pos = 8; pos + 12 <= png.size();) {
    const size_t length = hg::io::detail::read_be32(png.data() + pos);
    if (pos + 12 + length > png.size()) return;
    if (offset >= pos && offset < pos + 12 + length) {
      const uint32_t crc = hg::io::detail::crc32(png.data() + pos + 4, length + 4);
      for (int i = 0; i < 4; ++i) png[pos + 8 + length + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
      return;
    }
    pos += 12 + length;
  }
}

// Decoding either succeeds with a consistent image or throws histograd::Error (any other
// exception fails the test; a crash or out-of-bounds read fails it under the sanitizers).
void expect_clean_outcome(const std::vector<uint8_t>& bytes, const std::string& what) {
  try {
    hg::io::Image image = decode(bytes);
    INFO(what);
    CHECK(image.pixels.size() == static_cast<size_t>(image.width * image.height * 3));
  } catch (const hg::Error&) {
  } catch (const std::exception& e) {
    FAIL(what << ": threw a non-histograd exception: " << e.what());
  }
}

std::vector<uint8_t> png_with_header(uint32_t width, uint32_t height, uint8_t depth, uint8_t colour_type) {
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  for (uint32_t v : {width, height})
    for (int shift = 24; shift >= 0; shift -= 8) png.push_back(static_cast<uint8_t>(v >> shift));
  png.insert(png.end(), {depth, colour_type, 0, 0, 0, 0, 0, 0, 0});
  fix_png_crc(png, 12);
  const std::vector<uint8_t> end = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
  png.insert(png.end(), end.begin(), end.end());
  return png;
}

// Offset of the first JPEG marker `code` (0xFF code) in a file.
size_t find_marker(const std::vector<uint8_t>& jpeg, uint8_t code) {
  for (size_t i = 0; i + 1 < jpeg.size(); ++i)
    if (jpeg[i] == 0xFF && jpeg[i + 1] == code) return i;
  FAIL("marker not found");
  return 0;
}

}  // namespace

TEST_CASE("PNG and JPEG decode to Pillow's convert('RGB') pixels exactly") {
  hg::io::SafetensorsFile expected(fixture("decoded.safetensors"));
  int png = 0, jpeg = 0, worst_jpeg = 0;
  for (const std::string& name : expected.keys()) {
    INFO("fixture " << name);
    hg::io::Image image = hg::io::read_image(fixture(name));
    const int difference = max_difference(image, expected.get<float>(name));
    CHECK(difference == 0);
    if (name.ends_with(".jpg")) {
      worst_jpeg = std::max(worst_jpeg, difference);
      ++jpeg;
    } else {
      ++png;
    }
  }
  MESSAGE("largest JPEG difference from Pillow/libjpeg-turbo over ", jpeg, " files: ", worst_jpeg);
  CHECK(png == 29);
  CHECK(jpeg == 25);
}

TEST_CASE("decode_image from memory equals read_image") {
  for (const char* name : {"rgb8_interlaced.png", "progressive_s2.jpg"}) {
    hg::io::Image a = hg::io::read_image(fixture(name)), b = decode(read_bytes(fixture(name)));
    CHECK(a.width == b.width);
    CHECK(a.height == b.height);
    CHECK(a.pixels == b.pixels);
  }
}

TEST_CASE("the shared tiles decode to Pillow's pixels (CRC-32 of the RGB bytes)") {
  const std::string dir = std::string(HISTOGRAD_SHARED_DATA_DIR) + "/tiles/";
  if (!fs::is_directory(dir)) {
    MESSAGE("skipped: no shared tiles at ", dir);
    return;
  }
  std::ifstream list(fixture("tiles.txt"));
  REQUIRE(list.good());
  int checked = 0;
  for (std::string line; std::getline(list, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name;
    int64_t width = 0, height = 0;
    uint32_t crc = 0;
    fields >> name >> width >> height >> crc;
    if (!fs::exists(dir + name)) continue;
    INFO("tile " << name);
    hg::io::Image image = hg::io::read_image(dir + name);
    CHECK(image.width == width);
    CHECK(image.height == height);
    CHECK(hg::io::detail::crc32(image.pixels.data(), image.pixels.size()) == crc);
    ++checked;
  }
  MESSAGE("checked ", checked, " shared tiles");
  CHECK(checked > 0);
}

TEST_CASE("write_png writes an RGB PNG that reads back identically, atomically") {
  const std::string path =
      (fs::temp_directory_path() / ("histograd_test_" + std::to_string(::getpid()) + "_heatmap.png")).string();
  hg::io::Image image{71, 13, {}};
  for (int64_t i = 0; i < 71 * 13 * 3; ++i) image.pixels.push_back(static_cast<uint8_t>(i * 37 + i / 7));
  hg::io::write_png(path, image);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  hg::io::Image back = hg::io::read_image(path);
  CHECK(back.width == 71);
  CHECK(back.height == 13);
  CHECK(back.pixels == image.pixels);
  // more than one stored block (65535 bytes each)
  hg::io::Image large{300, 100, std::vector<uint8_t>(300 * 100 * 3, 7)};
  hg::io::write_png(path, large);
  CHECK(hg::io::read_image(path).pixels == large.pixels);
  fs::remove(path);
  CHECK_THROWS_WITH_AS(hg::io::write_png(path, hg::io::Image{4, 4, std::vector<uint8_t>(5)}),
                       doctest::Contains("write_png: expected 48 bytes of RGB pixels"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::io::write_png("/nonexistent_dir/x.png", image), doctest::Contains("write_png: cannot write"),
                       hg::Error);
}

TEST_CASE("malformed images give errors naming the file and the problem") {
  CHECK_THROWS_WITH_AS(hg::io::read_image(fixture("missing.png")), doctest::Contains("read_image: cannot open"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(decode({'G', 'I', 'F', '8', '9', 'a'}, "x.gif"),
                       doctest::Contains("read_image: x.gif: not a PNG or JPEG file"), hg::Error);
  CHECK_THROWS_AS(decode({}), hg::Error);

  std::vector<uint8_t> png = read_bytes(fixture("rgb8.png"));
  CHECK_THROWS_WITH_AS(decode(std::vector<uint8_t>(png.begin(), png.begin() + 60), "cut.png"),
                       doctest::Contains("cut.png: PNG chunk"), hg::Error);
  std::vector<uint8_t> flipped = png;
  flipped[40] ^= 0x10;
  CHECK_THROWS_WITH_AS(decode(flipped, "flip.png"), doctest::Contains("flip.png: CRC mismatch in PNG chunk"), hg::Error);
  CHECK_THROWS_WITH_AS(decode(png_with_header(100000, 100000, 8, 2), "huge.png"),
                       doctest::Contains("huge.png: PNG of 100000x100000 pixels exceeds the limit"), hg::Error);
  CHECK_THROWS_WITH_AS(decode(png_with_header(4, 4, 3, 2), "depth.png"),
                       doctest::Contains("invalid PNG colour type 2 with bit depth 3"), hg::Error);
  CHECK_THROWS_WITH_AS(decode(png_with_header(4, 4, 8, 2), "empty.png"), doctest::Contains("PNG without IDAT data"),
                       hg::Error);

  std::vector<uint8_t> jpeg = read_bytes(fixture("q75_s2.jpg"));
  {
    INFO("bytes before a marker are skipped, as libjpeg does (it warns of 'extraneous bytes')");
    std::vector<uint8_t> padded = jpeg;
    const size_t eoi = padded.size() - 2;
    padded.insert(padded.begin() + static_cast<std::ptrdiff_t>(eoi), {0x00, 0x12, 0xFF, 0x00, 0xFF});
    CHECK(decode(padded).pixels == hg::io::read_image(fixture("q75_s2.jpg")).pixels);
  }
  CHECK_THROWS_WITH_AS(decode(std::vector<uint8_t>(jpeg.begin(), jpeg.end() - 40), "cut.jpg"),
                       doctest::Contains("cut.jpg: JPEG file is truncated"), hg::Error);
  std::vector<uint8_t> huge = jpeg;
  const size_t sof = find_marker(huge, 0xC0);
  huge[sof + 5] = huge[sof + 6] = huge[sof + 7] = huge[sof + 8] = 0xFF;
  CHECK_THROWS_WITH_AS(decode(huge, "huge.jpg"), doctest::Contains("huge.jpg: JPEG of 65535x65535 pixels exceeds"),
                       hg::Error);
  std::vector<uint8_t> arithmetic = jpeg;
  arithmetic[sof + 1] = 0xC9;
  CHECK_THROWS_WITH_AS(decode(arithmetic, "arith.jpg"), doctest::Contains("unsupported JPEG process (SOF9)"), hg::Error);
  std::vector<uint8_t> bad_table = jpeg;
  const size_t dht = find_marker(bad_table, 0xC4);
  // the first table's code-length counts [0, 1, 5, ...] become [2, 0, 4, ...]: same total, but two
  // 1-bit codes leave no room for longer ones
  bad_table[dht + 5] = 2, bad_table[dht + 6] = 0, bad_table[dht + 7] = 4;
  CHECK_THROWS_WITH_AS(decode(bad_table, "table.jpg"), doctest::Contains("table.jpg: bad JPEG Huffman table"), hg::Error);
  std::vector<uint8_t> twelve_bit = jpeg;
  twelve_bit[sof + 4] = 12;
  CHECK_THROWS_WITH_AS(decode(twelve_bit, "deep.jpg"), doctest::Contains("12-bit precision"), hg::Error);
}

// Every prefix of small files of each kind, and each byte flipped (with PNG CRCs repaired so the
// corruption reaches the inflater, filters and pixel code): an Error or a valid image, nothing else.
TEST_CASE("truncated and corrupted files never crash") {
  for (const char* name : {"palette4_interlaced_trns.png", "grey16_interlaced.png", "rgba8.png", "fixed_huffman.png",
                           "stored.png", "q30_s2.jpg", "progressive_s1.jpg", "restart_progressive.jpg", "restart.jpg",
                           "grey_progressive.jpg", "sampling_440.jpg", "separate_scans_420.jpg"}) {
    const std::vector<uint8_t> bytes = read_bytes(fixture(name));
    const bool is_png = std::string(name).ends_with(".png");
    for (size_t length = 0; length < bytes.size(); ++length) {
      // PNG's IEND and JPEG's EOI end the file: every proper prefix lacks them
      INFO(name << " cut at " << length);
      CHECK_THROWS_AS(decode(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length))),
                      hg::Error);
    }
    for (size_t offset = 0; offset < bytes.size(); ++offset)
      for (uint8_t mask : {uint8_t(0xFF), uint8_t(1u << (offset % 8))}) {
        std::vector<uint8_t> corrupt = bytes;
        corrupt[offset] ^= mask;
        if (is_png) fix_png_crc(corrupt, offset);
        expect_clean_outcome(corrupt, std::string(name) + " flipped at " + std::to_string(offset));
      }
  }
}
