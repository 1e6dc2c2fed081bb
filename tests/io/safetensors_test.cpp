// safetensors: round trips through our writer, files written by the Python safetensors package
// (scripts/gen_checkpoint_fixtures.py), zero-copy hand-out over the mapping, dtype conversion,
// and every validation rule of docs/MODELS.md §16.1 on hand-made bad headers.
#include <histograd/io/safetensors.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "test_util.hpp"

namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("histograd_test_" + std::to_string(::getpid()) + "_" + name)).string();
}
void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }
std::string fixture(const std::string& name) { return std::string(HISTOGRAD_FIXTURES_DIR) + "/io/" + name; }

// A safetensors file from a header text and a data section.
std::string with_header(const std::string& header, const std::string& data = "", uint64_t claimed = ~0ull) {
  uint64_t n = claimed == ~0ull ? header.size() : claimed;
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s + header + data;
}
hg::io::SafetensorsFile from_string(const std::string& bytes) {
  return hg::io::SafetensorsFile(
      std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()), "mem.st");
}
std::vector<double> expected_values(const std::string& key) {
  return hg::io::SafetensorsFile(fixture("expected.safetensors")).get<double>(key).to_vector();
}

}  // namespace

TEST_CASE("safetensors round trip keeps names, shapes, values and metadata") {
  std::string path = temp_path("roundtrip.safetensors");
  auto a = hg::randn<float>({3, 4}), b = hg::arange<float>(0, 5);
  hg::io::save_safetensors<float>(path, {{"blocks.0.weight", a}, {"bias", b.reshape({5, 1}).transpose(0, 1)}},
                                  {{"format", "pt"}, {"note", "quote \" and\nnewline"}});
  for (const auto& entry : fs::directory_iterator(fs::temp_directory_path()))
    CHECK(entry.path().string().find(path + ".tmp") == std::string::npos);
  hg::io::SafetensorsFile file(path);
  CHECK(file.keys() == std::vector<std::string>{"bias", "blocks.0.weight"});
  CHECK(file.metadata().at("format") == "pt");
  CHECK(file.metadata().at("note") == "quote \" and\nnewline");
  CHECK(file.dtype("bias") == "F32");
  CHECK(file.shape("bias") == hg::Shape{1, 5});
  check_close(file.get<float>("blocks.0.weight"), a, 0);
  check_close(file.get<double>("bias"), {0, 1, 2, 3, 4}, 0);  // converts F32 -> F64
  CHECK_THROWS_WITH_AS(file.get<float>("missing"), doctest::Contains("no tensor named 'missing'"), hg::Error);
  // The header is padded so the data section starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  CHECK(n % 8 == 0);
  auto all = hg::io::load_safetensors<double>(path);
  CHECK(all.size() == 2);
  check_close(all.at("blocks.0.weight"), a.to<double>(), 0);
  fs::remove(path);
}

TEST_CASE("safetensors hands out tensors that alias the private mapping") {
  std::string path = temp_path("alias.safetensors");
  hg::io::save_safetensors<float>(path, {{"w", hg::arange<float>(0, 6).reshape({2, 3})}});
  hg::Tensor<float> w, again;
  {
    hg::io::SafetensorsFile file(path);
    w = file.get<float>("w");
    again = file.get<float>("w");
  }  // the file object is gone; the tensors keep the mapping alive
  CHECK(w.data() == again.data());  // zero copy: both point into the one mapping
  w.data()[0] = 42;                 // copy-on-write: the page is private, the file untouched
  CHECK(again.data()[0] == 42);
  CHECK(hg::io::SafetensorsFile(path).get<float>("w").to_vector()[0] == 0);
  auto converted = hg::io::SafetensorsFile(path).get<double>("w");
  check_close(converted, {0, 1, 2, 3, 4, 5}, 0);
  fs::remove(path);
}

TEST_CASE("safetensors reads files written by the Python package") {
  hg::io::SafetensorsFile file(fixture("mixed_dtypes.safetensors"));
  CHECK(file.dtype("half") == "F16");
  CHECK(file.dtype("bf16") == "BF16");
  for (const char* name : {"half", "bf16", "f64", "ids", "mask", "scalar", "empty"}) {
    INFO(name);
    check_close(file.get<float>(name), expected_values(std::string("mixed_dtypes/") + name), 1e-7);  // f64 rounds
    check_close(file.get<double>(name), expected_values(std::string("mixed_dtypes/") + name), 0);
  }
  CHECK(file.get<float>("scalar").shape() == hg::Shape{});
  CHECK(file.get<float>("empty").shape() == hg::Shape{0, 4});
  CHECK(file.get<int64_t>("ids").to_vector() == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(file.get<int64_t>("half"), doctest::Contains("do not convert to int64 without loss"), hg::Error);
  hg::io::SafetensorsFile state(fixture("f32_state.safetensors"));
  CHECK(state.metadata().at("format") == "pt");
  for (const auto& name : state.keys()) check_close(state.get<float>(name), expected_values("f32_state/" + name), 0);
  hg::io::SafetensorsFile parity(std::string(HISTOGRAD_FIXTURES_DIR) + "/parity/block_graph.safetensors");
  CHECK(parity.get<int64_t>("labels").to_vector() == std::vector<int64_t>{3, 1});
}

TEST_CASE("safetensors reads unaligned data sections by copying") {
  // A 61-byte header puts the F32 data at byte 69: not 4-byte aligned, so get() must copy.
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.resize(61, ' ');
  float values[2] = {1.5f, -2.25f};
  auto file = from_string(with_header(header, std::string(reinterpret_cast<const char*>(values), 8)));
  check_close(file.get<float>("w"), {1.5, -2.25}, 0);
}

TEST_CASE("bad safetensors files give errors naming the file and the problem") {
  auto rejects = [](const std::string& bytes, const std::string& message) {
    INFO(message);
    CHECK_THROWS_WITH_AS(from_string(bytes), doctest::Contains(message.c_str()), hg::Error);
  };
  CHECK_THROWS_WITH_AS(hg::io::SafetensorsFile("/nonexistent/x.safetensors"), doctest::Contains("cannot open"), hg::Error);
  rejects("abc", "mem.st: file of 3 bytes is too short");
  const std::string w = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  rejects(with_header(w, std::string(8, '\0')), "tensors end at byte 16 of the data section but it holds 8");
  rejects(with_header(w, std::string(24, '\0')), "but it holds 24 bytes");  // trailing junk
  rejects(with_header(w, std::string(16, '\0'), 1u << 30), "does not fit");
  rejects(with_header(w, std::string(16, '\0'), 200000000), "does not fit");
  rejects(with_header(R"({"w":{"dtype":"F32","shape":[2,2)"), "malformed header");
  rejects(with_header(R"( {})"), "must start with '{'");
  rejects(with_header(R"({} x)"), "text after the closing");
  rejects(with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                      std::string(16, '\0')),
          "duplicate tensor name 'w'");
  rejects(with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0')),
          "claims bytes [0, 4) but F32 [2] needs 8 bytes");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                      std::string(12, '\0')),
          "tensor 'b' starts at byte 8 of the data section, expected 4 (hole)");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      std::string(8, '\0')),
          "(overlap)");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
          "overflows a 64-bit byte count");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,0]}})"), "number too large");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})"), "expected a non-negative integer");
  rejects(with_header(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", "x"), "unknown dtype 'Q7'");
  rejects(with_header(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", "x"), "does not end on a byte");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1]}})"), "lacks dtype, shape or data_offsets");
  rejects(with_header(R"({"a":{"dtype":"F32","dtype":"F32"}})"), "field 'dtype' given twice");
  rejects(with_header(R"({"__metadata__":{"k":1}})"), "expected '\"'");
  rejects(with_header(R"({"a\ud800":{}})"), "lone surrogate");
  // Known dtypes we cannot convert still open; reading them says so.
  auto c64 = from_string(with_header(R"({"z":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0')));
  CHECK_THROWS_WITH_AS(c64.get<float>("z"), doctest::Contains("mem.st: tensor 'z' has dtype C64"), hg::Error);
}

TEST_CASE("every truncation of a valid safetensors file is an Error") {
  std::string path = temp_path("cut.safetensors");
  std::ifstream in(fixture("mixed_dtypes.safetensors"), std::ios::binary);
  std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(good.size() > 100);
  CHECK_NOTHROW(from_string(good));
  for (size_t cut = 0; cut < good.size(); ++cut) {
    INFO("cut at " << cut);
    CHECK_THROWS_AS(from_string(good.substr(0, cut)), hg::Error);
  }
  write_bytes(path, good.substr(0, good.size() - 3));
  CHECK_THROWS_WITH_AS(hg::io::SafetensorsFile{path}, doctest::Contains((path + ": tensors end at byte").c_str()), hg::Error);
  fs::remove(path);
}
