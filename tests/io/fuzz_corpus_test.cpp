// Replays the fuzzers' seed corpus (fuzz/corpus/<name>/) through the harness bodies in the
// normal test build, so CI exercises them without clang or libFuzzer: each seed must parse,
// and each truncation and single-byte corruption of a seed must parse or throw histograd::Error.
#include "../../fuzz/readers_fuzz.hpp"

#include <filesystem>
#include <fstream>

#include "test_util.hpp"

namespace {

std::vector<std::string> corpus(const std::string& name) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(HISTOGRAD_FIXTURES_DIR) + "/../../fuzz/corpus/" + name)) {
    std::ifstream in(entry.path(), std::ios::binary);
    files.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return files;
}

const uint8_t* bytes_of(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

void mutate_and_replay(const std::string& seed, void (*harness)(const uint8_t*, size_t)) {
  for (size_t cut = 0; cut <= seed.size(); ++cut) harness(bytes_of(seed), cut);
  for (size_t at = 0; at < seed.size(); ++at)
    for (unsigned char flip : {0x01, 0x80, 0xFF}) {
      std::string mutated = seed;
      mutated[at] = static_cast<char>(mutated[at] ^ flip);
      harness(bytes_of(mutated), mutated.size());
    }
}

}  // namespace

TEST_CASE("fuzz corpus: safetensors seeds parse, and their mutations only ever throw Error") {
  auto seeds = corpus("safetensors");
  REQUIRE(seeds.size() >= 2);
  for (const auto& seed : seeds) {
    hg::io::SafetensorsFile file(std::span<const unsigned char>(bytes_of(seed), seed.size()), "seed");
    CHECK(!file.keys().empty());
    mutate_and_replay(seed, hg::fuzz::parse_safetensors);
  }
}

TEST_CASE("fuzz corpus: pth seeds parse, and their mutations only ever throw Error") {
  auto seeds = corpus("pth");
  REQUIRE(seeds.size() >= 4);
  for (const auto& seed : seeds) {
    CHECK(!hg::io::read_pth<float>(std::span<const unsigned char>(bytes_of(seed), seed.size()), "seed").empty());
    mutate_and_replay(seed, hg::fuzz::parse_pth);
  }
}
