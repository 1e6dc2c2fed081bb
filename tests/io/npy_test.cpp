// .npy writer and reader: byte-exact headers against what numpy.save writes (pasted from
// numpy 1.26), round trips, and clear errors on truncated or mistyped files.
#include <histograd/io/npy.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "test_util.hpp"

namespace fs = std::filesystem;

static std::string npy_temp(const std::string& name) {
  return (fs::temp_directory_path() / ("histograd_npy_" + std::to_string(::getpid()) + "_" + name)).string();
}

static std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_CASE("save_npy writes the header numpy.save writes") {
  const std::string path = npy_temp("a.npy");
  hg::io::save_npy(path, hg::arange<float>(0, 6).reshape({2, 3}));
  const std::string bytes = read_all(path);
  REQUIRE(bytes.size() == 128 + 6 * 4);
  CHECK(bytes.substr(0, 10) == std::string("\x93NUMPY\x01\x00v\x00", 10));
  const std::string expected_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  CHECK(bytes.substr(10, expected_dict.size()) == expected_dict);
  CHECK(bytes[127] == '\n');
  CHECK(!fs::exists(path + ".tmp"));
  hg::io::save_npy(path, hg::zeros<double>({5}));
  CHECK(read_all(path).substr(10, 57) == "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }");
  fs::remove(path);
}

TEST_CASE("npy round trip keeps shape and values, including strided input") {
  const std::string path = npy_temp("b.npy");
  auto x = hg::randn<float>({4, 3}).transpose(0, 1);
  hg::io::save_npy(path, x);
  auto y = hg::io::load_npy<float>(path);
  CHECK(y.shape() == hg::Shape{3, 4});
  check_close(y, x.contiguous(), 0);
  hg::io::save_npy(path, hg::tensor<int64_t>({7, -2, 9}));
  CHECK(hg::io::load_npy<int64_t>(path).to_vector() == std::vector<int64_t>{7, -2, 9});
  fs::remove(path);
}

TEST_CASE("load_npy names the file and the problem") {
  const std::string path = npy_temp("c.npy");
  hg::io::save_npy(path, hg::ones<float>({8, 8}));
  CHECK_THROWS_WITH_AS(hg::io::load_npy<double>(path), doctest::Contains("expected dtype <f8"), hg::Error);
  const std::string bytes = read_all(path);
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() - 3);
  CHECK_THROWS_WITH_AS(hg::io::load_npy<float>(path), doctest::Contains("is truncated"), hg::Error);
  std::ofstream(path, std::ios::binary) << bytes.substr(0, 40);
  CHECK_THROWS_WITH_AS(hg::io::load_npy<float>(path), doctest::Contains("truncated in its header"), hg::Error);
  std::ofstream(path, std::ios::binary) << "PK\x03\x04 not numpy";
  CHECK_THROWS_WITH_AS(hg::io::load_npy<float>(path), doctest::Contains("bad magic"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::io::load_npy<float>(npy_temp("missing.npy")), doctest::Contains("cannot open"), hg::Error);
  fs::remove(path);
}
