// The README's code, built with the examples so it can never drift from the API: the op tour,
// then a foundation model from a checkpoint (here one this program writes first, since the
// published weights are not part of the repository).
#include <filesystem>
#include <histograd/histograd.hpp>
#include <iostream>
namespace hg = histograd;

static void op_tour() {
  auto x = hg::randn<float>({8, 197, 384});                      // tokens
  auto w = (hg::randn<float>({1152, 384}) * 0.02f).requires_grad_();
  auto qkv = hg::linear(x, w, hg::Tensor<float>())               // [8, 197, 1152]
                 .reshape({8, 197, 3, 6, 64}).permute({2, 0, 3, 1, 4});
  auto out = hg::scaled_dot_product_attention(qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2));
  auto loss = hg::mean(hg::gelu(out) * out);
  loss.backward();                                               // w.grad(): [1152, 384]
  { hg::NoGradGuard no_grad; auto y = hg::layer_norm(x, hg::Tensor<float>(), hg::Tensor<float>(), 1e-6); }
  std::cout << "loss " << loss.item() << ", grad shape " << hg::to_string(w.grad().shape()) << "\n";
}

static void foundation_model(const std::string& checkpoint, const std::string& tile) {
  auto model = hg::models::vit("dino_vits16");
  hg::io::load_weights(model, checkpoint);
  model.eval();
  auto preprocess = hg::data::Preprocess::for_model(model.config());   // the preset's published transform
  hg::NoGradGuard no_grad;
  auto embedding = model.forward(preprocess(hg::io::read_image(tile)).unsqueeze(0));   // [1, 384]
  std::cout << "embedding " << hg::to_string(embedding.shape()) << "\n";
}

int main() {
  op_tour();
  const auto folder = std::filesystem::temp_directory_path();
  const std::string checkpoint = (folder / "readme_tour_dino_vits16.safetensors").string();
  const std::string tile = (folder / "readme_tour_tile.png").string();
  hg::io::save_safetensors(checkpoint, hg::models::vit("dino_vits16", /*seed=*/1).state_dict());
  hg::io::Image image{300, 260, std::vector<uint8_t>(300 * 260 * 3)};
  for (size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = static_cast<uint8_t>((i * 7) % 251);
  hg::io::write_png(tile, image);
  foundation_model(checkpoint, tile);
  std::filesystem::remove(checkpoint);
  std::filesystem::remove(tile);
}
