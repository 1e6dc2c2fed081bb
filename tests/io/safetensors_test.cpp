#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "test_util.hpp"

namespace fs = std::filesystem;

static std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("histograd_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

static void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST_CASE("safetensors round trip keeps names, shapes and values") {
  std::string path = temp_path("roundtrip.safetensors");
  auto a = hg::randn<float>({3, 4}), b = hg::arange<float>(0, 5);
  hg::io::save_safetensors<float>(path, {{"blocks.0.weight", a}, {"bias", b.reshape({5, 1}).transpose(0, 1)}},
                                  {{"format", "pt"}});
  CHECK(!fs::exists(path + ".tmp"));
  hg::io::SafetensorsFile file(path);
  CHECK(file.keys() == std::vector<std::string>{"bias", "blocks.0.weight"});
  CHECK(file.metadata().at("format") == "pt");
  check_close(file.get<float>("blocks.0.weight"), a, 0);
  auto bias = file.get<double>("bias");  // converts F32 -> F64
  CHECK(bias.shape() == hg::Shape{1, 5});
  check_close(bias, {0, 1, 2, 3, 4}, 0);
  CHECK_THROWS_WITH_AS(file.get<float>("missing"), doctest::Contains("no tensor named 'missing'"), hg::Error);
  fs::remove(path);
}

TEST_CASE("safetensors reads PyTorch's fixture file") {
  hg::io::SafetensorsFile file(std::string(HISTOGRAD_FIXTURES_DIR) + "/parity/block_graph.safetensors");
  CHECK(file.entry("qkv.weight").shape == hg::Shape{48, 16});
  CHECK(file.entry("labels").dtype == "I64");
  CHECK(file.get<int64_t>("labels").to_vector() == std::vector<int64_t>{3, 1});
}

TEST_CASE("bad and truncated safetensors files give clear errors") {
  std::string path = temp_path("bad.safetensors");
  CHECK_THROWS_WITH_AS(hg::io::SafetensorsFile("/nonexistent/x.safetensors"), doctest::Contains("cannot open"), hg::Error);
  write_bytes(path, "abc");
  CHECK_THROWS_WITH_AS(hg::io::SafetensorsFile{path}, doctest::Contains("too short for a header"), hg::Error);
  std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  auto with_size = [](const std::string& h, uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
    return s + h;
  };
  write_bytes(path, with_size(header, header.size()) + std::string(8, '\0'));  // data truncated: 8 of 16 bytes
  CHECK_THROWS_WITH_AS(hg::io::SafetensorsFile{path}, doctest::Contains("file truncated or corrupt"), hg::Error);
  write_bytes(path, with_size(header, 1u << 30) + std::string(16, '\0'));  // absurd header length
  CHECK_THROWS_WITH_AS(hg::io::SafetensorsFile{path}, doctest::Contains("does not fit"), hg::Error);
  std::string broken = R"({"w":{"dtype":"F32","shape":[2,2)";
  write_bytes(path, with_size(broken, broken.size()));
  CHECK_THROWS_WITH_AS(hg::io::SafetensorsFile{path}, doctest::Contains("malformed header"), hg::Error);
  std::string odd = R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})";
  write_bytes(path, with_size(odd, odd.size()) + std::string(8, '\0'));
  CHECK_THROWS_WITH_AS(hg::io::SafetensorsFile{path}, doctest::Contains("unsupported dtype 'C64'"), hg::Error);
  // every prefix of a valid file either loads or throws Error, never crashes
  std::string good = with_size(header, header.size()) + std::string(16, '\1');
  for (size_t cut = 0; cut < good.size(); ++cut) {
    write_bytes(path, good.substr(0, cut));
    CHECK_THROWS_AS(hg::io::SafetensorsFile{path}, hg::Error);
  }
  fs::remove(path);
}
