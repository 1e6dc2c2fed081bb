// The main job for now: train a small Vision Transformer from scratch with histograd alone.
// Task: tell the orientation of noisy stripe textures (horizontal, vertical, two diagonals)
// in 3x32x32 images made on the fly. The model is a models::VisionTransformer (patch 8,
// width 64, 2 blocks, 4 heads, CLS token, learned position embeddings) with a linear head on
// its CLS embedding, trained with AdamW and cross-entropy.
// Prints the loss as it falls and the accuracy on held-out images.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <histograd/histograd.hpp>
#include <string>
#include <vector>

namespace hg = histograd;
using Tensor = hg::Tensor<float>;

namespace {

constexpr int64_t kImage = 32, kClasses = 4;

// A batch of stripe images and their orientation labels, drawn from `gen`.
std::pair<Tensor, hg::Tensor<int64_t>> make_batch(int64_t batch, hg::Generator& gen) {
  Tensor images({batch, 3, kImage, kImage});
  hg::Tensor<int64_t> labels({batch});
  Tensor params = hg::rand<float>({batch, 3}, gen);
  Tensor noise = hg::randn<float>({batch, 3, kImage, kImage}, gen);
  const float directions[kClasses][2] = {{0, 1}, {1, 0}, {0.7071f, 0.7071f}, {0.7071f, -0.7071f}};
  for (int64_t b = 0; b < batch; ++b) {
    int64_t label = std::min<int64_t>(kClasses - 1, static_cast<int64_t>(params.at({b, 0}) * kClasses));
    float frequency = 0.35f + 0.5f * params.at({b, 1}), phase = 6.2832f * params.at({b, 2});
    labels.data()[b] = label;
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < kImage; ++y)
        for (int64_t x = 0; x < kImage; ++x) {
          float along = directions[label][0] * y + directions[label][1] * x;
          images.at({b, c, y, x}) = std::sin(frequency * along + phase) + 0.8f * noise.at({b, c, y, x});
        }
  }
  return {images, labels};
}

// The backbone and a linear classifier over its CLS embedding, as one module.
struct Classifier : hg::nn::Module<float> {
  hg::models::VisionTransformer<float> backbone;
  hg::nn::Linear<float> head;
  Classifier(const hg::models::ViTConfig& config, hg::Generator& gen)
      : backbone(config, /*seed=*/11), head(config.embed_dim, kClasses, true, gen) {}
  Tensor forward(const Tensor& images) const { return head.forward(backbone.forward(images)); }
  void visit(hg::nn::ModuleVisitor<float>& v) override {
    v.module("backbone", backbone);
    v.module("head", head);
  }
};

double accuracy(const Classifier& model, const Tensor& images, const hg::Tensor<int64_t>& labels) {
  hg::NoGradGuard no_grad;
  hg::Tensor<int64_t> predicted = hg::argmax(model.forward(images), -1);
  int64_t correct = 0;
  for (int64_t i = 0; i < labels.numel(); ++i) correct += predicted.data()[i] == labels.data()[i];
  return double(correct) / double(labels.numel());
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 300;
  const int64_t batch = 32;
  hg::Generator data_gen(7), init_gen(11), eval_gen(2024);
  hg::models::ViTConfig config = hg::models::preset("dino_vits16");
  config.name = "tiny";
  config.image_size = kImage;
  config.patch_size = 8;
  config.embed_dim = 64;
  config.depth = 2;
  config.num_heads = 4;
  config.mlp_hidden = 256;
  Classifier model(config, init_gen);
  model.requires_grad_(true);
  hg::optim::AdamW<float> optimizer(model.parameters(), 1e-3, 0.9, 0.999, 1e-8, 0.05);
  auto [eval_images, eval_labels] = make_batch(512, eval_gen);

  std::printf("training a tiny ViT (%d steps, batch %ld) on stripe orientation; held-out accuracy before: %.1f%%\n",
              steps, static_cast<long>(batch), 100 * accuracy(model, eval_images, eval_labels));
  auto start = std::chrono::steady_clock::now();
  double running = 0, first_loss = 0;
  for (int step = 1; step <= steps; ++step) {
    auto [images, labels] = make_batch(batch, data_gen);
    Tensor loss = hg::cross_entropy(model.forward(images), labels);
    HG_CHECK(std::isfinite(loss.item()), "train_tiny_vit", "loss became non-finite at step ", step);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    if (step == 1) first_loss = loss.item();
    running = step == 1 ? loss.item() : 0.9 * running + 0.1 * loss.item();
    if (step == 1 || step % 25 == 0) std::printf("step %4d  loss %.4f  (smoothed %.4f)\n", step, loss.item(), running);
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("held-out accuracy after: %.1f%%  (%.1f s, %.1f images/s)\n", 100 * accuracy(model, eval_images, eval_labels),
              seconds, steps * batch / seconds);
  if (!(running < 0.7 * first_loss)) {
    std::printf("the loss did not fall: %.4f at the start, %.4f (smoothed) at the end\n", first_loss, running);
    return 1;
  }
  return 0;
}
