// The whole VisionTransformer, forward and backward, gives the same bits on 1 and 2 threads
// (every kernel splits work by shape, never by thread count).
#include "test_util.hpp"

TEST_CASE("VisionTransformer: same bits for the forward and the gradients on 1 and 2 threads") {
#ifdef _OPENMP
  hg::models::ViTConfig config = hg::models::preset("dinov2_vits14_reg4");
  config.image_size = 28;
  config.depth = 2;
  config.embed_dim = 48;
  config.num_heads = 3;
  config.mlp_hidden = 96;
  config.layer_scale_init = 0.5;
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    auto model = hg::models::vit<float>(config, 5);
    model.requires_grad_(true);
    hg::Generator gen(9);
    auto images = hg::randn<float>({4, 3, 42, 28}, gen);  // non-native size: the pos-embed is resampled
    auto features = model.forward_features(images);
    hg::mean(features * features).backward();
    std::vector<float> out = features.detach().to_vector();
    for (auto& [name, p] : model.named_parameters()) {
      if (!p.grad().defined()) continue;  // mask_token: used only by masked (iBOT) inputs
      auto g = p.grad().to_vector();
      out.insert(out.end(), g.begin(), g.end());
    }
    return out;
  };
  const int saved = omp_get_max_threads();
  auto one = run(1), two = run(2);
  omp_set_num_threads(saved);
  CHECK(one.size() > 10000);
  CHECK(one == two);
#else
  MESSAGE("built without OpenMP: nothing to compare");
#endif
}
