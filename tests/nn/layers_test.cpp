// nn layers: reference key names, forward against the op composition written out by hand,
// gradchecks (double) of the modules that add math (SwiGLU, LayerScale, Attention, Block),
// and the attention map against a naive loop.
#include <histograd/nn/transformer.hpp>

#include "test_util.hpp"

namespace {

template <class M>
std::vector<std::string> keys(M& module) {
  std::vector<std::string> out;
  for (auto& [name, p] : module.named_parameters()) out.push_back(name);
  return out;
}

// Gradcheck of module.forward(x) with respect to x and every parameter of the module.
template <class M>
void check_module_gradients(M& module, const hg::Tensor<double>& x) {
  std::vector<hg::Tensor<double>> inputs{x};
  for (auto& [name, p] : module.named_parameters()) inputs.push_back(p);
  check_gradients([&module](const std::vector<hg::Tensor<double>>& in) { return module.forward(in[0]); }, inputs);
}

// Replaces every parameter by a random one, so zero biases and unit norms do not hide terms.
template <class T>
void randomize(hg::nn::Module<T>& module, uint64_t seed) {
  hg::NoGradGuard no_grad;
  for (auto& [name, p] : module.named_parameters()) p.copy_(random_t<T>(p.shape(), seed++) * T(0.5));
}

}  // namespace

TEST_CASE_TEMPLATE("Linear, LayerNorm, Mlp and SwiGLU use the reference key names", T, float, double) {
  hg::Generator gen(1);
  hg::nn::Linear<T> with_bias(4, 3, true, gen), without(4, 3, false, gen);
  CHECK(keys(with_bias) == std::vector<std::string>{"weight", "bias"});
  CHECK(keys(without) == std::vector<std::string>{"weight"});
  CHECK(with_bias.weight.shape() == hg::Shape{3, 4});
  CHECK(with_bias.weight.requires_grad());
  hg::nn::Mlp<T> mlp(4, 8, gen);
  CHECK(keys(mlp) == std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"});
  hg::nn::SwiGLU<T> packed(4, 6, hg::nn::SwiGLUStyle::Packed, gen), fused(4, 6, hg::nn::SwiGLUStyle::Fused, gen),
      unpacked(4, 6, hg::nn::SwiGLUStyle::Unpacked, gen);
  CHECK(keys(packed) == std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"});
  CHECK(keys(fused) == std::vector<std::string>{"w12.weight", "w12.bias", "w3.weight", "w3.bias"});
  CHECK(keys(unpacked) == std::vector<std::string>{"fc1_g.weight", "fc1_g.bias", "fc1_x.weight", "fc1_x.bias",
                                                   "fc2.weight", "fc2.bias"});
  CHECK(packed.state_dict().at("fc1.weight").shape() == hg::Shape{12, 4});
  CHECK(packed.state_dict().at("fc2.weight").shape() == hg::Shape{4, 6});
  hg::nn::LayerScale<T> ls(4, 1e-5), none(4, 0.0);
  CHECK(keys(ls) == std::vector<std::string>{"gamma"});
  CHECK(keys(none).empty());
  check_close(ls.gamma, {T(1e-5), T(1e-5), T(1e-5), T(1e-5)}, 0);
}

TEST_CASE_TEMPLATE("SwiGLU applies SiLU to the first half of fc1's output", T, float, double) {
  hg::Generator gen(2);
  hg::nn::SwiGLU<T> packed(5, 3, hg::nn::SwiGLUStyle::Packed, gen);
  randomize(packed, 10);
  hg::Tensor<T> x = random_t<T>({2, 4, 5}, 3);
  hg::Tensor<T> h = hg::linear(x, packed.fc1.weight, packed.fc1.bias);
  hg::Tensor<T> expected =
      hg::linear(hg::silu(h.narrow(-1, 0, 3).contiguous()) * h.narrow(-1, 3, 3).contiguous(), packed.fc2.weight,
                 packed.fc2.bias);
  check_close(packed.forward(x), expected, 1e-6);
  // The unpacked style with fc1_g/fc1_x set to the two halves computes the same thing.
  hg::nn::SwiGLU<T> unpacked(5, 3, hg::nn::SwiGLUStyle::Unpacked, gen);
  {
    hg::NoGradGuard ng;
    unpacked.fc1_g.weight.copy_(packed.fc1.weight.narrow(0, 0, 3));
    unpacked.fc1_g.bias.copy_(packed.fc1.bias.narrow(0, 0, 3));
    unpacked.fc1_x.weight.copy_(packed.fc1.weight.narrow(0, 3, 3));
    unpacked.fc1_x.bias.copy_(packed.fc1.bias.narrow(0, 3, 3));
    unpacked.fc2.weight.copy_(packed.fc2.weight);
    unpacked.fc2.bias.copy_(packed.fc2.bias);
  }
  check_close(unpacked.forward(x), expected, 1e-6);
  // Hand values of one element (silu(a)·b with a, b the halves), computed independently.
  std::vector<T> hv = h.contiguous().to_vector();
  double a = hv[0], b = hv[3];
  double gated = a / (1 + std::exp(-a)) * b;
  CHECK(std::abs(double((hg::silu(h.narrow(-1, 0, 3)) * h.narrow(-1, 3, 3)).contiguous().to_vector()[0]) - gated) <
        1e-5);
}

TEST_CASE("gradchecks of SwiGLU, LayerScale, Mlp, Attention and Block (double)") {
  hg::Generator gen(3);
  SUBCASE("SwiGLU packed and unpacked, non-contiguous input") {
    hg::nn::SwiGLU<double> packed(4, 3, hg::nn::SwiGLUStyle::Packed, gen);
    randomize(packed, 20);
    check_module_gradients(packed, random_input({2, 3, 4}, 4, true));
    hg::nn::SwiGLU<double> unpacked(4, 3, hg::nn::SwiGLUStyle::Unpacked, gen);
    randomize(unpacked, 30);
    check_module_gradients(unpacked, random_input({3, 4}, 5));
  }
  SUBCASE("LayerScale broadcasts gamma over the leading dims") {
    hg::nn::LayerScale<double> ls(4, 0.3);
    randomize(ls, 40);
    check_module_gradients(ls, random_input({2, 3, 4}, 6, true));
  }
  SUBCASE("Mlp") {
    hg::nn::Mlp<double> mlp(4, 5, gen);
    randomize(mlp, 50);
    check_module_gradients(mlp, random_input({2, 3, 4}, 7));
  }
  SUBCASE("Attention, 2 heads") {
    hg::nn::Attention<double> attn(6, 2, true, gen);
    randomize(attn, 60);
    check_module_gradients(attn, random_input({2, 5, 6}, 8, true));
  }
  SUBCASE("Block with LayerScale and each feed-forward") {
    for (auto ffn : {hg::nn::FfnKind::Mlp, hg::nn::FfnKind::SwiGLUPacked, hg::nn::FfnKind::SwiGLUFused}) {
      hg::nn::BlockOptions options;
      options.dim = 6;
      options.num_heads = 3;
      options.mlp_hidden = 4;
      options.ffn = ffn;
      options.layer_scale_init = 0.5;
      hg::nn::Block<double> block(options, gen);
      randomize(block, 70);
      check_module_gradients(block, random_input({2, 4, 6}, 9));
    }
  }
}

TEST_CASE_TEMPLATE("Block's forward is the pre-LN residual composition of its parts", T, float, double) {
  hg::Generator gen(4);
  hg::nn::BlockOptions options;
  options.dim = 8;
  options.num_heads = 2;
  options.mlp_hidden = 16;
  options.layer_scale_init = 0.7;
  hg::nn::Block<T> block(options, gen);
  randomize(block, 80);
  CHECK(keys(block) == std::vector<std::string>{
                           "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                           "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
                           "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"});
  hg::Tensor<T> x = random_t<T>({2, 5, 8}, 11);
  // Attention written out head by head with an explicit softmax.
  hg::Tensor<T> h = hg::layer_norm(x, block.norm1.weight, block.norm1.bias, 1e-6);
  hg::Tensor<T> qkv = hg::linear(h, block.attn.qkv.weight, block.attn.qkv.bias);  // [2, 5, 24]
  std::vector<hg::Tensor<T>> heads;
  for (int64_t head = 0; head < 2; ++head) {
    hg::Tensor<T> q = qkv.narrow(-1, head * 4, 4), k = qkv.narrow(-1, 8 + head * 4, 4), v = qkv.narrow(-1, 16 + head * 4, 4);
    heads.push_back(hg::matmul(hg::softmax(hg::matmul(q, k.mT()) * T(0.5), -1), v));
  }
  hg::Tensor<T> attended = hg::linear(hg::cat(heads, -1), block.attn.proj.weight, block.attn.proj.bias);
  hg::Tensor<T> y = x + attended * block.ls1.gamma;
  hg::Tensor<T> m = hg::layer_norm(y, block.norm2.weight, block.norm2.bias, 1e-6);
  hg::Tensor<T> ffn = hg::linear(hg::gelu(hg::linear(m, std::get<hg::nn::Mlp<T>>(block.mlp).fc1.weight,
                                                     std::get<hg::nn::Mlp<T>>(block.mlp).fc1.bias)),
                                 std::get<hg::nn::Mlp<T>>(block.mlp).fc2.weight, std::get<hg::nn::Mlp<T>>(block.mlp).fc2.bias);
  hg::Tensor<T> expected = y + ffn * block.ls2.gamma;
  check_close(block.forward(x), expected, std::is_same_v<T, float> ? 1e-5 : 1e-12);

  // attention_map against a naive loop over (b, head, i, j).
  hg::Tensor<T> map = block.attention_map(x);
  REQUIRE(map.shape() == hg::Shape{2, 2, 5, 5});
  std::vector<T> qv = qkv.contiguous().to_vector(), mv = map.contiguous().to_vector();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t head = 0; head < 2; ++head)
      for (int64_t i = 0; i < 5; ++i) {
        std::vector<double> logits(5);
        double biggest = -1e300, total = 0;
        for (int64_t j = 0; j < 5; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < 4; ++c)
            dot += double(qv[(b * 5 + i) * 24 + head * 4 + c]) * double(qv[(b * 5 + j) * 24 + 8 + head * 4 + c]);
          logits[j] = dot / 2.0;
          biggest = std::max(biggest, logits[j]);
        }
        for (auto& l : logits) total += (l = std::exp(l - biggest));
        for (int64_t j = 0; j < 5; ++j)
          CHECK(std::abs(double(mv[((b * 2 + head) * 5 + i) * 5 + j]) - logits[j] / total) < 1e-6);
      }
}

TEST_CASE("Block applies drop_path only in training mode") {
  hg::Generator gen(5);
  hg::nn::BlockOptions options;
  options.dim = 4;
  options.num_heads = 1;
  options.mlp_hidden = 4;
  options.drop_path = 1.0;  // every residual branch dropped while training
  hg::nn::Block<float> block(options, gen);
  hg::Tensor<float> x = random_t<float>({3, 2, 4}, 12);
  check_close(block.forward(x), x, 0);
  block.eval();
  hg::Tensor<float> y = block.forward(x);
  CHECK(std::abs(double(hg::sum(hg::abs(y - x)).item())) > 1e-3);
}

TEST_CASE("PatchEmbed makes row-major patch tokens and names proj like the reference") {
  hg::Generator gen(6);
  hg::nn::PatchEmbed<double> embed(3, 5, 2, gen);
  CHECK(keys(embed) == std::vector<std::string>{"proj.weight", "proj.bias"});
  hg::Tensor<double> images = random_input({2, 3, 4, 6}, 13);
  hg::Tensor<double> tokens = embed.forward(images);
  REQUIRE(tokens.shape() == hg::Shape{2, 6, 5});
  // token (row r, col c) = W · patch + b, checked for one token by a plain loop.
  const int64_t r = 1, c = 2, b = 1, d = 3;
  double expected = embed.proj.bias.at({d});
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 2; ++j)
        expected += embed.proj.weight.at({d, ch, i, j}) * images.at({b, ch, r * 2 + i, c * 2 + j});
  CHECK(std::abs(tokens.contiguous().at({b, r * 3 + c, d}) - expected) < 1e-12);
  CHECK_THROWS_WITH_AS(hg::nn::Attention<float>(6, 4, true, gen), doctest::Contains("Attention: expected an embedding dim"),
                       hg::Error);
}
