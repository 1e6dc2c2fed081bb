#include "test_util.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {
hg::models::SimpleViTConfig tiny_config() {
  hg::models::SimpleViTConfig config;
  config.image_size = 16;
  config.patch_size = 4;
  config.width = 24;
  config.depth = 2;
  config.heads = 3;
  config.mlp_hidden = 48;
  config.num_classes = 5;
  return config;
}
}  // namespace

TEST_CASE("SimpleViT: the whole forward and backward is differentiable end to end (gradcheck)") {
  auto config = tiny_config();
  config.image_size = 8;
  config.width = 6;
  config.depth = 1;
  config.heads = 2;
  config.mlp_hidden = 8;
  config.num_classes = 3;
  hg::Generator gen(3);
  hg::models::SimpleViT<double> model(config, gen);
  auto images = hg::randn<double>({2, 3, 8, 8}, gen);
  auto params = model.parameters();
  std::vector<hg::Tensor<double>> inputs{images};
  for (auto* p : params) inputs.push_back(*p);
  check_gradients(
      [&](const std::vector<hg::Tensor<double>>& in) {
        for (size_t i = 0; i < params.size(); ++i) *params[i] = in[i + 1];
        return model.forward(in[0]);
      },
      inputs, 1e-5, 1e-4);
}

TEST_CASE("SimpleViT: same bits for the forward and the gradients on 1 and 2 threads") {
#ifdef _OPENMP
  auto run = [](int threads) {
    omp_set_num_threads(threads);
    hg::Generator gen(5);
    hg::models::SimpleViT<float> model(tiny_config(), gen);
    auto images = hg::randn<float>({4, 3, 16, 16}, gen);
    for (auto* p : model.parameters()) p->requires_grad_();
    auto logits = model.forward(images);
    hg::cross_entropy(logits, hg::tensor<int64_t>({0, 1, 2, 3})).backward();
    std::vector<float> out = logits.detach().to_vector();
    for (auto* p : model.parameters()) {
      auto g = p->grad().to_vector();
      out.insert(out.end(), g.begin(), g.end());
    }
    return out;
  };
  int saved = omp_get_max_threads();
  auto one = run(1), two = run(2);
  omp_set_num_threads(saved);
  CHECK(one == two);
#else
  MESSAGE("built without OpenMP: nothing to compare");
#endif
}

TEST_CASE("SimpleViT rejects images of the wrong size") {
  hg::Generator gen(1);
  hg::models::SimpleViT<float> model(tiny_config(), gen);
  CHECK_THROWS_WITH_AS(model.forward(hg::zeros<float>({1, 3, 32, 32})),
                       doctest::Contains("SimpleViT: expected images [B, 3, 16, 16], got [1, 3, 32, 32]"), hg::Error);
}
