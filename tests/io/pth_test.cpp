// torch.save checkpoints: files written by real torch (scripts/gen_checkpoint_fixtures.py)
// against the values stored beside them in expected.safetensors; views, shared storages and
// zero copy; and hostile input: pickles asking for code, lying tensor views, corrupt zips,
// truncations at every byte.
#include <histograd/io/pth.hpp>
#include <histograd/io/safetensors.hpp>

#include <fstream>

#include "test_util.hpp"

namespace {

std::string fixture(const std::string& name) { return std::string(HISTOGRAD_FIXTURES_DIR) + "/io/" + name; }
std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
template <class T = float>
std::map<std::string, hg::Tensor<T>> read_string(const std::string& bytes, const std::string& name = "mem.pth") {
  return hg::io::read_pth<T>(
      std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()), name);
}
std::vector<double> expected_values(const std::string& key) {
  return hg::io::SafetensorsFile(fixture("expected.safetensors")).get<double>(key).to_vector();
}

std::string le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>(v >> (8 * i));
  return s;
}
// A stored (uncompressed) zip, as torch writes it but without alignment padding or CRCs (the
// reader checks neither). `method` lets a test mark entries as compressed.
// zip64: every size and offset goes through the ZIP64 extra field and end records, as for
// checkpoints over 4 GB.
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& files, uint16_t method = 0,
                     bool zip64 = false) {
  std::string out, directory;
  const uint64_t big = 0xFFFFFFFF;
  for (const auto& [name, data] : files) {
    uint64_t local = out.size();
    out += "PK\x03\x04" + le(20, 2) + le(0, 2) + le(method, 2) + le(0, 4) + le(0, 4) + le(data.size(), 4) +
           le(data.size(), 4) + le(name.size(), 2) + le(0, 2) + name + data;
    std::string extra = zip64 ? le(1, 2) + le(24, 2) + le(data.size(), 8) + le(data.size(), 8) + le(local, 8) : "";
    directory += "PK\x01\x02" + le(45, 2) + le(45, 2) + le(0, 2) + le(method, 2) + le(0, 4) + le(0, 4) +
                 le(zip64 ? big : data.size(), 4) + le(zip64 ? big : data.size(), 4) + le(name.size(), 2) +
                 le(extra.size(), 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(zip64 ? big : local, 4) +
                 name + extra;
  }
  uint64_t at = out.size();
  if (zip64) {
    uint64_t record = at + directory.size();
    directory += "PK\x06\x06" + le(44, 8) + le(45, 2) + le(45, 2) + le(0, 4) + le(0, 4) + le(files.size(), 8) +
                 le(files.size(), 8) + le(record - at, 8) + le(at, 8);
    directory += "PK\x06\x07" + le(0, 4) + le(record, 8) + le(1, 4);
    return out + directory + "PK\x05\x06" + le(0, 4) + le(0xFFFF, 2) + le(0xFFFF, 2) + le(big, 4) + le(big, 4) +
           le(0, 2);
  }
  return out + directory + "PK\x05\x06" + le(0, 4) + le(files.size(), 2) + le(files.size(), 2) +
         le(directory.size(), 4) + le(at, 4) + le(0, 2);
}

// Pickle pieces (protocol 2), for writing data.pkl by hand.
std::string str(const std::string& s) { return "X" + le(s.size(), 4) + s; }
std::string small_int(int v) { return "K" + le(static_cast<uint64_t>(v), 1); }
std::string int_tuple(std::initializer_list<int> v) {
  std::string s = "(";
  for (int x : v) s += small_int(x);
  return s + "t";
}
// {'w': _rebuild_tensor_v2(storage '0' of `numel` floats, offset, sizes, strides)}
std::string tensor_pickle(int numel, int offset, std::initializer_list<int> sizes, std::initializer_list<int> strides) {
  return "\x80\x02}(" + str("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") +
         "ctorch\nFloatStorage\n" + str("0") + str("cpu") + small_int(numel) + "tQ" + small_int(offset) +
         int_tuple(sizes) + int_tuple(strides) + "\x89" + "ccollections\nOrderedDict\n)RtRu.";
}
std::string checkpoint(const std::string& pickle, const std::string& storage = std::string(16, '\0')) {
  return make_zip({{"archive/data.pkl", pickle}, {"archive/byteorder", "little"}, {"archive/data/0", storage}});
}

}  // namespace

TEST_CASE_TEMPLATE("pth: torch.save files match the values torch saved", T, float, double) {
  for (const char* name : {"f32_state", "mixed_dtypes", "views", "shared", "training", "legacy"}) {
    auto sd = hg::io::read_pth<T>(fixture(std::string(name) + ".pth"));
    hg::io::SafetensorsFile expected(fixture("expected.safetensors"));
    size_t count = 0;
    for (const auto& key : expected.keys()) {
      if (key.rfind(std::string(name) + "/", 0) != 0) continue;
      std::string inner = key.substr(std::string(name).size() + 1);
      INFO(name << ": " << inner);
      REQUIRE(sd.count(inner));
      CHECK(sd.at(inner).shape() == expected.shape(key));
      // float64 entries read as float round once; everything else is exact
      check_close(sd.at(inner), expected.get<double>(key).to_vector(), std::is_same_v<T, float> ? 1e-7 : 0);
      ++count;
    }
    CHECK(count == sd.size());  // nothing extra: non-tensor leaves are dropped
  }
}

TEST_CASE("pth: views keep torch's strides and offsets, shared storages stay shared") {
  auto views = hg::io::read_pth<float>(fixture("views.pth"));
  CHECK(views.at("transposed").strides() == hg::Shape{1, 5});
  CHECK(views.at("window").storage_offset() == 7);
  CHECK(views.at("window").strides() == hg::Shape{5, 1});
  CHECK(views.at("strided").strides() == hg::Shape{10, 3});
  CHECK(views.at("transposed").storage() == views.at("window").storage());  // one base storage

  auto shared = hg::io::read_pth<float>(fixture("shared.pth"));
  CHECK(shared.at("all").storage() == shared.at("middle").storage());
  auto legacy = hg::io::read_pth<float>(fixture("legacy.pth"));  // the pre-1.6 format shares the same way
  CHECK(legacy.at("view").storage() == legacy.at("base").storage());
  CHECK(legacy.at("view").strides() == hg::Shape{1, 2});
  CHECK(shared.at("middle").storage_offset() == 2);
  shared.at("all").data()[3] = 100;  // an in-place write reaches the other view, as in torch
  CHECK(shared.at("middle").at({1, 0}) == 100);
  CHECK(hg::io::read_pth<float>(fixture("shared.pth")).at("middle").at({1, 0}) != 100);  // private mapping
  auto converted = hg::io::read_pth<double>(fixture("shared.pth"));
  CHECK(converted.at("all").storage() == converted.at("middle").storage());  // converted once, still shared
}

TEST_CASE("pth: a training checkpoint flattens nested dicts and skips non-tensors") {
  auto sd = hg::io::read_pth<float>(fixture("training.pth"));
  std::vector<std::string> keys;
  for (const auto& [k, v] : sd) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"dino_loss.center", "optimizer.state.0.exp_avg", "optimizer.state.0.step",
                                         "teacher.backbone.blocks.0.norm1.weight", "teacher.head.last_layer.weight_g"});
  check_close(sd.at("teacher.backbone.blocks.0.norm1.weight"),
              expected_values("training/teacher.backbone.blocks.0.norm1.weight"), 0);
}

TEST_CASE("pth: integer storages read as integers, float storages refuse integer types") {
  std::string longs = "\x80\x02}(" + str("ids") + "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") +
                      "ctorch\nLongStorage\n" + str("0") + str("cpu") + small_int(2) + "tQ" + small_int(0) +
                      int_tuple({2}) + int_tuple({1}) + "\x89" "NtRu.";
  auto sd = read_string<int64_t>(checkpoint(longs, le(7, 8) + le(uint64_t(-3), 8)));
  CHECK(sd.at("ids").to_vector() == std::vector<int64_t>{7, -3});
  CHECK_THROWS_WITH_AS(hg::io::read_pth<int64_t>(fixture("f32_state.pth")),
                       doctest::Contains("holds float32 values, which do not convert to int64 without loss"), hg::Error);
}

TEST_CASE("pth: a hand-written checkpoint parses, with and without lies") {
  auto sd = read_string(checkpoint(tensor_pickle(4, 1, {3}, {1})));
  CHECK(sd.at("w").shape() == hg::Shape{3});
  CHECK(sd.at("w").storage_offset() == 1);
  float values[4] = {1, 2, 3, 4};
  std::string storage(reinterpret_cast<const char*>(values), 16);
  auto wide = read_string(make_zip({{"archive/data.pkl", tensor_pickle(4, 1, {3}, {1})}, {"archive/data/0", storage}},
                                   0, /*zip64=*/true));
  check_close(wide.at("w"), {2, 3, 4}, 0);
  auto rejects = [](const std::string& bytes, const std::string& message) {
    INFO(message);
    CHECK_THROWS_WITH_AS(read_string(bytes), doctest::Contains(message.c_str()), hg::Error);
  };
  rejects(checkpoint(tensor_pickle(4, 2, {3}, {1})), "mem.pth: tensor 'w' (offset 2, size [3], stride [1]) reaches outside its storage of 4");
  rejects(checkpoint(tensor_pickle(4, 0, {2, 2}, {3, 1})), "reaches outside its storage");
  rejects(checkpoint(tensor_pickle(5, 0, {3}, {1})), "storage '0' claims 5 float32 elements but holds 16 bytes");
  rejects(make_zip({{"archive/data.pkl", tensor_pickle(4, 0, {4}, {1})}}), "uses storage '0', which the archive lacks");
  rejects(make_zip({{"archive/data.pkl", tensor_pickle(4, 0, {4}, {1})}, {"archive/byteorder", "big"}}), "'big'-endian");
  rejects(make_zip({{"archive/x.pkl", "."}}), "no <archive>/data.pkl entry");
  rejects(checkpoint("\x80\x02}q" + le(0, 1) + str("self") + "h" + le(0, 1) + "s."), "nested deeper than 64 levels (or a cycle)");
  // 60 levels of [x, x] where each x is the level below: 2^60 paths through 120 values.
  std::string doubling = "\x80\x02]q" + le(0, 1);
  for (int level = 1; level <= 60; ++level)
    doubling += "](h" + le(static_cast<uint64_t>(level - 1), 1) + "h" + le(static_cast<uint64_t>(level - 1), 1) +
                "eq" + le(static_cast<uint64_t>(level), 1);
  rejects(checkpoint(doubling + "."), "shared so often that flattening them would not end");
  rejects(checkpoint("\x80\x02}" + str("w")), "ends without STOP");
  rejects(checkpoint("\x80\x02s."), "stack underflow");
  rejects(checkpoint("\x80\x02h\x05."), "memo index 5 was never stored");
  rejects(checkpoint("\x80\x02X\xff\xff\xff\x7f" "abc"), "truncated");
  rejects(checkpoint("\x80\x02I42\n."), "opcode 0x49 is not one a checkpoint uses");
}

TEST_CASE("pth: a pickle that asks for code is refused before anything runs") {
  auto rejects = [](const std::string& pickle, const std::string& message) {
    INFO(message);
    CHECK_THROWS_WITH_AS(read_string(checkpoint(pickle), "evil.pth"), doctest::Contains(message.c_str()), hg::Error);
  };
  rejects("\x80\x02" "cos\nsystem\n" + str("touch /tmp/pwned") + "\x85R.",
          "evil.pth: pickle asks for os.system, which a state dict does not need");
  rejects("\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93" + str("1+1") + "\x85R.",
          "pickle asks for builtins.eval, which a state dict does not need");
  rejects("\x80\x02" "ctorch\nload\n.", "pickle asks for torch.load");
  rejects("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n" + str("x") + "\x85R.", "_rebuild_tensor_v2 needs");
  rejects("\x80\x02(" + str("storage") + str("os") + str("0") + str("cpu") + small_int(1) + "tQ.",
          "storage type is not a torch storage class");
}

TEST_CASE("pth: corrupt zips and unsupported formats are clear errors") {
  CHECK_THROWS_WITH_AS(hg::io::read_pth<float>("/nonexistent/x.pth"), doctest::Contains("cannot open"), hg::Error);
  std::string legacy = file_bytes(fixture("legacy.pth"));
  for (size_t cut = 0; cut < legacy.size(); ++cut) {
    INFO("legacy cut at " << cut);
    CHECK_THROWS_AS(read_string(legacy.substr(0, cut)), hg::Error);
  }
  CHECK_THROWS_WITH_AS(read_string("\x80\x02}."), doctest::Contains("a pickle without torch's magic number"), hg::Error);
  CHECK_THROWS_WITH_AS(read_string("hello"), doctest::Contains("mem.pth: not a PyTorch checkpoint (neither a zip nor a pickle)"), hg::Error);
  CHECK_THROWS_WITH_AS(read_string(make_zip({{"archive/data.pkl", "."}}, 8)),
                       doctest::Contains("zip entry 'archive/data.pkl' is compressed (method 8)"), hg::Error);

  std::string good = file_bytes(fixture("f32_state.pth"));
  REQUIRE(good.size() > 1000);
  size_t directory = good.rfind("PK\x01\x02");
  std::string broken = good;
  broken[directory + 1] = 'X';  // the last directory record loses its signature
  CHECK_THROWS_WITH_AS(read_string(broken), doctest::Contains("corrupt zip: bad central directory record"), hg::Error);
  broken = good;
  broken[directory + 45] = '\x7f';  // its local-header offset now points far past the end
  CHECK_THROWS_WITH_AS(read_string(broken), doctest::Contains("points past the end of the file"), hg::Error);
  broken = good;
  size_t end = good.rfind("PK\x05\x06");
  broken[end + 19] = '\x7f';  // directory offset beyond the file
  CHECK_THROWS_WITH_AS(read_string(broken), doctest::Contains("corrupt zip: central directory lies outside"), hg::Error);

  // Every truncation fails cleanly: the end-of-directory record is the first thing lost.
  for (size_t cut = 0; cut < good.size(); cut += 7) {
    INFO("cut at " << cut);
    CHECK_THROWS_AS(read_string(good.substr(0, cut)), hg::Error);
  }
}
