// read_checkpoint's format detection and load_weights into a model: the same weights from a
// torch.save zip and a safetensors file, strict errors, the model's key translation, and the
// loaded parameters sharing the mapped file.
#include <histograd/io/checkpoint.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "test_util.hpp"

namespace {

std::string fixture(const std::string& name) { return std::string(HISTOGRAD_FIXTURES_DIR) + "/io/" + name; }

// torch.nn.Sequential(Linear(4, 3), LayerNorm(3)): the keys of f32_state.{pth,safetensors}.
struct Pair : hg::nn::Module<float> {
  hg::Tensor<float> weight, bias;
  Pair(hg::Shape w, hg::Shape b) : weight(hg::zeros<float>(w)), bias(hg::zeros<float>(b)) {}
  void visit(hg::nn::ModuleVisitor<float>& v) override {
    v.parameter("weight", weight);
    v.parameter("bias", bias);
  }
};
struct Sequential : hg::nn::Module<float> {
  Pair linear{{3, 4}, {3}}, norm{{3}, {3}};
  void visit(hg::nn::ModuleVisitor<float>& v) override {
    v.module("0", linear);
    v.module("1", norm);
  }
};
// A model whose published checkpoint nests it under "teacher.backbone." (DINO training files).
struct Backbone : hg::nn::Module<float> {
  hg::Tensor<float> norm_weight = hg::zeros<float>({6});
  void visit(hg::nn::ModuleVisitor<float>& v) override { v.parameter("blocks.0.norm1.weight", norm_weight); }
  hg::nn::StateDict<float> translate_checkpoint(hg::nn::StateDict<float> raw) const override {
    hg::nn::StateDict<float> out;
    const std::string prefix = "teacher.backbone.";
    for (auto& [k, t] : raw)
      if (k.rfind(prefix, 0) == 0) out.emplace(k.substr(prefix.size()), t);
    return out;
  }
};

}  // namespace

TEST_CASE("read_checkpoint detects the format from the bytes, not the name") {
  auto from_pth = hg::io::read_checkpoint<float>(fixture("f32_state.pth"));
  auto from_st = hg::io::read_checkpoint<float>(fixture("f32_state.safetensors"));
  REQUIRE(from_pth.size() == 4);
  REQUIRE(from_st.size() == 4);
  for (const auto& [k, v] : from_pth) check_close(v, from_st.at(k), 0);
  // A ".bin" that is really a torch zip, as Hugging Face names them.
  std::string renamed = (std::filesystem::temp_directory_path() / ("hg_" + std::to_string(::getpid()) + ".bin")).string();
  std::filesystem::copy_file(fixture("f32_state.pth"), renamed, std::filesystem::copy_options::overwrite_existing);
  CHECK(hg::io::read_checkpoint<double>(renamed).size() == 4);
  std::ofstream(renamed, std::ios::binary) << "GIF89a and so on";
  CHECK_THROWS_WITH_AS(hg::io::read_checkpoint<float>(renamed),
                       doctest::Contains((renamed + ": neither a safetensors file nor a torch.save checkpoint").c_str()), hg::Error);
  std::filesystem::remove(renamed);
  CHECK_THROWS_WITH_AS(hg::io::read_checkpoint<float>("/nonexistent.pth"), doctest::Contains("cannot open"), hg::Error);
  CHECK(hg::io::read_checkpoint<float>(fixture("legacy.pth")).size() == 4);  // pre-1.6 torch.save
}

TEST_CASE("load_weights fills a model from either format, sharing the file's memory") {
  auto expected = hg::io::SafetensorsFile(fixture("expected.safetensors"));
  for (const char* file : {"f32_state.pth", "f32_state.safetensors"}) {
    INFO(file);
    Sequential model;
    model.linear.weight.requires_grad_(true);
    hg::io::load_weights(model, fixture(file));
    check_close(model.linear.weight, expected.get<double>("f32_state/0.weight").to_vector(), 0);
    check_close(model.norm.bias, expected.get<double>("f32_state/1.bias").to_vector(), 0);
    CHECK(model.linear.weight.requires_grad());
    auto again = hg::io::read_checkpoint<float>(fixture(file));
    CHECK(again.at("0.weight").data() != model.linear.weight.data());  // separate mappings
  }
}

TEST_CASE("load_weights is strict by default and uses the model's key translation") {
  Sequential model;
  CHECK_THROWS_WITH_AS(hg::io::load_weights(model, fixture("training.pth")),
                       doctest::Contains("missing keys (4)"), hg::Error);
  Backbone backbone;
  hg::io::load_weights(backbone, fixture("training.pth"));
  check_close(backbone.norm_weight,
              hg::io::SafetensorsFile(fixture("expected.safetensors"))
                  .get<double>("training/teacher.backbone.blocks.0.norm1.weight")
                  .to_vector(),
              0);
  Sequential partial;
  CHECK_NOTHROW(hg::io::load_weights(partial, fixture("f32_state.pth"), /*strict=*/false));
}
