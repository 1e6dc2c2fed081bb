// VisionTransformer at tiny sizes: the token layouts (MODELS.md §0.3) and both position
// resamplings (§0.2) against the op composition written out here, the poolings, intermediate
// layers, the last attention map, HIPT's feature-grid input, drop_path rates, weight-decay
// groups, input errors and a whole-model gradcheck in double.
#include <histograd/models/presets.hpp>

#include "test_util.hpp"

namespace {

using hg::models::PosResample;
using hg::models::TokenLayout;
using hg::models::ViTConfig;

ViTConfig tiny(TokenLayout layout, int64_t registers, PosResample resample) {
  ViTConfig c;
  c.name = "tiny";
  c.image_size = 8;
  c.patch_size = 2;
  c.embed_dim = 6;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_hidden = 8;
  c.num_register_tokens = registers;
  c.layout = layout;
  c.pos_resample = resample;
  c.layer_scale_init = 0.5;
  return c;
}

// Random values in every parameter (the init's 1e-6 tokens would hide layout mistakes).
template <class T>
void randomize(hg::nn::Module<T>& module, uint64_t seed) {
  hg::NoGradGuard no_grad;
  for (auto& [name, p] : module.named_parameters()) p.copy_(random_t<T>(p.shape(), seed++) * T(0.5));
}

// pos_embed's patch rows resampled to grid_h x grid_w as the reference calls F.interpolate.
template <class T>
hg::Tensor<T> resample_patch_rows(const hg::Tensor<T>& patch_rows, int64_t m, int64_t grid_h, int64_t grid_w, bool dino) {
  const int64_t d = patch_rows.size(-1);
  hg::Tensor<T> grid = patch_rows.reshape({1, m, m, d}).permute({0, 3, 1, 2});
  hg::Tensor<T> out = dino ? hg::interpolate_bicubic(grid, grid_h, grid_w, false, false, (grid_h + 0.1) / m, (grid_w + 0.1) / m)
                           : hg::interpolate_bicubic(grid, grid_h, grid_w, false, true);
  return out.permute({0, 2, 3, 1}).reshape({1, grid_h * grid_w, d});
}

}  // namespace

TEST_CASE_TEMPLATE("forward is patch conv, CLS, position add, blocks, final norm and CLS pooling", T, float, double) {
  hg::models::VisionTransformer<T> model(tiny(TokenLayout::ClsPatches, 0, PosResample::DinoOffset), 7);
  randomize(model, 100);
  hg::Tensor<T> images = random_t<T>({2, 3, 8, 8}, 1);
  hg::Tensor<T> patches = hg::conv2d(images, model.patch_embed.proj.weight, model.patch_embed.proj.bias, 2);
  hg::Tensor<T> x = hg::cat<T>({model.cls_token.expand({2, 1, 6}), patches.flatten(2).transpose(1, 2)}, 1) + model.pos_embed;
  for (const auto& block : model.blocks) x = block.forward(x);
  hg::Tensor<T> features = hg::layer_norm(x, model.norm.weight, model.norm.bias, 1e-6);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  check_close(model.forward_features(images), features, tol);
  check_close(model.forward(images), features.select(1, 0).contiguous(), tol);
  CHECK(model.num_prefix_tokens() == 1);
  CHECK(model.config().name == "tiny");
}

TEST_CASE_TEMPLATE("the four token layouts put CLS, registers and positions where the references do", T, float, double) {
  const int64_t registers = 3, n = 16, d = 6;
  hg::Tensor<T> images = random_t<T>({2, 3, 8, 8}, 2);
  for (auto layout : {TokenLayout::ClsPatches, TokenLayout::ClsRegPatchesPosBeforeReg,
                      TokenLayout::ClsRegPatchesPosPatchesOnly, TokenLayout::ClsRegPatchesPosAll}) {
    const int64_t r = layout == TokenLayout::ClsPatches ? 0 : registers;
    hg::models::VisionTransformer<T> model(tiny(layout, r, PosResample::Antialias), 3);
    randomize(model, 200);
    hg::Tensor<T> patches = model.patch_embed.forward(images), cls = model.cls_token.expand({2, 1, d});
    hg::Tensor<T> pos = model.pos_embed, expected;
    switch (layout) {
      case TokenLayout::ClsPatches:
        REQUIRE(pos.shape() == hg::Shape{1, 1 + n, d});
        expected = hg::cat<T>({cls + pos.narrow(1, 0, 1), patches + pos.narrow(1, 1, n)}, 1);
        break;
      case TokenLayout::ClsRegPatchesPosBeforeReg:  // DINOv2 hub: registers get no position
        REQUIRE(pos.shape() == hg::Shape{1, 1 + n, d});
        expected = hg::cat<T>({cls + pos.narrow(1, 0, 1), model.reg_token.expand({2, r, d}), patches + pos.narrow(1, 1, n)}, 1);
        break;
      case TokenLayout::ClsRegPatchesPosPatchesOnly:  // timm no_embed_class
        REQUIRE(pos.shape() == hg::Shape{1, n, d});
        expected = hg::cat<T>({cls, model.reg_token.expand({2, r, d}), patches + pos}, 1);
        break;
      case TokenLayout::ClsRegPatchesPosAll:  // Virchow2
        REQUIRE(pos.shape() == hg::Shape{1, 1 + r + n, d});
        expected = hg::cat<T>({cls + pos.narrow(1, 0, 1), model.reg_token.expand({2, r, d}) + pos.narrow(1, 1, r),
                               patches + pos.narrow(1, 1 + r, n)},
                              1);
        break;
    }
    INFO("layout " << int(layout));
    check_close(model.prepare_tokens(images), expected, 0);
    CHECK(model.num_prefix_tokens() == 1 + r);
    CHECK(model.forward_features(images).shape() == hg::Shape{2, 1 + r + n, d});
  }
}

TEST_CASE_TEMPLATE("pos_embed is resampled for any input size, non-square too, by the configured variant", T, float, double) {
  for (auto resample : {PosResample::DinoOffset, PosResample::Antialias})
    for (auto layout : {TokenLayout::ClsPatches, TokenLayout::ClsRegPatchesPosPatchesOnly, TokenLayout::ClsRegPatchesPosAll}) {
      const int64_t r = layout == TokenLayout::ClsPatches ? 0 : 2;
      hg::models::VisionTransformer<T> model(tiny(layout, r, resample), 4);
      randomize(model, 300);
      const int64_t prefix = model.pos_prefix_rows();
      const bool dino = resample == PosResample::DinoOffset;
      INFO("resample " << int(resample) << " layout " << int(layout));
      // 6 x 11 pixels: a 3 x 5 grid (the odd pixel column dropped by the strided conv).
      hg::Tensor<T> resized = model.position_embedding(3, 5, 6, 11);
      hg::Tensor<T> rows = resample_patch_rows(model.pos_embed.narrow(1, prefix, 16), 4, 3, 5, dino);
      hg::Tensor<T> expected = prefix == 0 ? rows : hg::cat<T>({model.pos_embed.narrow(1, 0, prefix), rows}, 1);
      check_close(resized, expected, 0);
      hg::Tensor<T> images = random_t<T>({1, 3, 6, 11}, 5);
      CHECK(model.forward_features(images).shape() == hg::Shape{1, 1 + r + 15, 6});
      // The native square grid uses pos_embed as it is.
      CHECK(model.position_embedding(4, 4, 8, 8).data() == model.pos_embed.data());
      // DINO resamples a native grid cut from a non-square image (its npatch == N and w == h
      // test), with scale 4.1/4: not the identity. timm keeps it.
      hg::Tensor<T> same_grid = model.position_embedding(4, 4, 8, 9);
      if (dino)
        CHECK(double(hg::amax(hg::abs(same_grid - model.pos_embed)).item()) > 1e-3);
      else
        CHECK(same_grid.data() == model.pos_embed.data());
    }
}

TEST_CASE("position resampling matches PyTorch's F.interpolate in both variants") {
  // pos_embed patch rows p[r, d] = sin(0.7 r + 1.3 d) on a 3x3 grid, D = 2, resampled to 2x4.
  // Literals from torch 2.15: F.interpolate(g, scale_factor=((2+0.1)/3, (4+0.1)/3),
  // mode='bicubic') and F.interpolate(g, size=(2,4), mode='bicubic', antialias=True),
  // g = p.reshape(1,3,3,2).permute(0,3,1,2), output permuted back to [1, 8, 2].
  ViTConfig c = tiny(TokenLayout::ClsRegPatchesPosPatchesOnly, 1, PosResample::DinoOffset);
  c.image_size = 6;
  c.embed_dim = 2;
  c.num_heads = 1;
  hg::models::VisionTransformer<double> model(c, 1);
  {
    hg::NoGradGuard ng;
    for (int64_t r = 0; r < 9; ++r)
      for (int64_t d = 0; d < 2; ++d) model.pos_embed.at({0, r, d}) = std::sin(0.7 * r + 1.3 * d);
  }
  const std::vector<double> dino = {0.180235952781, 0.757629242152, 0.448197642517, 0.680438938406, 0.703146405974, 0.401732304257,
                                    0.743593783771, 0.0959502615968, -0.20284564842, -0.641308258486, -0.418468379204,
                                    -0.555521345794, -0.60896093222, -0.296663192346, -0.620502722988, -0.02974519747};
  const std::vector<double> antialias = {0.360321337933, 0.569642624308, 0.511997777851, 0.408407328098, 0.581817498687,
                                        0.102918166788, 0.526009616507, -0.155309762414, -0.214022370637, -0.606782932865,
                                        -0.416700504503, -0.506250215774, -0.574925109103, -0.254694443627,
                                        -0.589503138109, -0.00981917601849};
  check_close(model.position_embedding(2, 4, 4, 8).contiguous(), dino, 1e-6);
  hg::models::ViTConfig c2 = c;
  c2.pos_resample = PosResample::Antialias;
  hg::models::VisionTransformer<double> model_aa(c2, 1);
  {
    hg::NoGradGuard ng;
    model_aa.pos_embed.copy_(model.pos_embed);
  }
  check_close(model_aa.position_embedding(2, 4, 4, 8).contiguous(), antialias, 1e-6);
}

TEST_CASE("poolings: CLS, mean of patches, Virchow's CLS with the patch mean, and all tokens") {
  ViTConfig c = tiny(TokenLayout::ClsRegPatchesPosAll, 2, PosResample::Antialias);
  hg::Tensor<float> images = random_t<float>({2, 3, 8, 8}, 6);
  for (auto pooling : {hg::models::Pooling::Cls, hg::models::Pooling::MeanPatches, hg::models::Pooling::ClsMeanPatches,
                       hg::models::Pooling::None}) {
    c.pooling = pooling;
    hg::models::VisionTransformer<float> model(c, 5);
    randomize(model, 400);
    hg::Tensor<float> f = model.forward_features(images), pooled = model.forward(images);
    hg::Tensor<float> patch_mean = hg::mean(f.narrow(1, 3, 16), {1});  // registers (tokens 1, 2) excluded
    switch (pooling) {
      case hg::models::Pooling::Cls: check_close(pooled, f.select(1, 0).contiguous(), 0); break;
      case hg::models::Pooling::MeanPatches: check_close(pooled, patch_mean, 0); break;
      case hg::models::Pooling::ClsMeanPatches:
        REQUIRE(pooled.shape() == hg::Shape{2, 12});
        check_close(pooled, hg::cat<float>({f.select(1, 0), patch_mean}, -1), 0);
        break;
      case hg::models::Pooling::None: check_close(pooled, f, 0); break;
    }
  }
}

TEST_CASE("get_intermediate_layers and last_self_attention") {
  ViTConfig c = tiny(TokenLayout::ClsRegPatchesPosBeforeReg, 1, PosResample::Antialias);
  c.depth = 3;
  hg::models::VisionTransformer<float> model(c, 6);
  randomize(model, 500);
  hg::Tensor<float> images = random_t<float>({2, 3, 8, 10}, 7);
  hg::Tensor<float> x0 = model.prepare_tokens(images);
  hg::Tensor<float> x1 = model.blocks[0].forward(x0), x2 = model.blocks[1].forward(x1), x3 = model.blocks[2].forward(x2);
  auto normed = model.get_intermediate_layers(images, 2);
  REQUIRE(normed.size() == 2);
  check_close(normed[0], model.norm.forward(x2), 0);
  check_close(normed[1], model.forward_features(images), 0);
  auto raw = model.get_intermediate_layers(images, 3, false);
  REQUIRE(raw.size() == 3);
  check_close(raw[0], x1, 0);
  check_close(raw[2], x3, 0);
  CHECK_THROWS_WITH_AS(model.get_intermediate_layers(images, 4), doctest::Contains("VisionTransformer: get_intermediate_layers: expected 1 <= n <= 3"), hg::Error);
  hg::Tensor<float> attention = model.last_self_attention(images);
  REQUIRE(attention.shape() == hg::Shape{2, 2, 22, 22});  // CLS + 1 register + 4x5 patches
  check_close(attention, model.blocks[2].attention_map(x2), 0);
  check_close(hg::sum(attention, {-1}), hg::ones<float>({2, 2, 22}), 1e-6);
}

TEST_CASE_TEMPLATE("HIPT ViT_4K: phi on the feature grid, patch size 1, variant A to a 4x5 grid", T, float, double) {
  ViTConfig c = hg::models::preset("hipt_vit4k_256");
  c.depth = 1;
  c.image_size = 3;
  hg::models::VisionTransformer<T> model(c, 8);
  randomize(model, 600);
  CHECK(model.state_dict().count("phi.0.weight") == 1);
  CHECK(model.state_dict().at("pos_embed").shape() == hg::Shape{1, 10, 192});
  hg::Tensor<T> grid = random_t<T>({2, 384, 4, 5}, 9);
  hg::Tensor<T> tokens = hg::gelu(hg::linear(grid.flatten(2).transpose(1, 2), model.phi.weight, model.phi.bias));
  hg::Tensor<T> pos = hg::cat<T>({model.pos_embed.narrow(1, 0, 1), resample_patch_rows(model.pos_embed.narrow(1, 1, 9), 3, 4, 5, true)}, 1);
  hg::Tensor<T> x = model.blocks[0].forward(hg::cat<T>({model.cls_token.expand({2, 1, 192}), tokens}, 1) + pos);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  check_close(model.forward(grid), hg::layer_norm(x, model.norm.weight, model.norm.bias, 1e-6).select(1, 0).contiguous(), tol);
  CHECK_THROWS_WITH_AS(model.forward(random_t<T>({1, 3, 4, 4}, 1)),
                       doctest::Contains("VisionTransformer: 'hipt_vit4k_256' expected a feature grid [B, 384, h, w], got [1, 3, 4, 4]"),
                       hg::Error);
}

TEST_CASE("bad inputs name VisionTransformer and the expected and actual shapes") {
  hg::models::VisionTransformer<float> model(tiny(TokenLayout::ClsPatches, 0, PosResample::Antialias), 1);
  CHECK_THROWS_WITH_AS(model.forward(hg::zeros<float>({1, 1, 8, 8})),
                       doctest::Contains("VisionTransformer: 'tiny' expected images [B, 3, H, W] with H, W >= 2 (the patch size), got [1, 1, 8, 8]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(model.forward(hg::zeros<float>({3, 8, 8})), doctest::Contains("got [3, 8, 8]"), hg::Error);
  ViTConfig fixed = tiny(TokenLayout::ClsPatches, 0, PosResample::Antialias);
  fixed.dynamic_img_size = false;
  hg::models::VisionTransformer<float> strict_size(fixed, 1);
  CHECK_THROWS_WITH_AS(strict_size.forward(hg::zeros<float>({1, 3, 8, 10})),
                       doctest::Contains("VisionTransformer: 'tiny' expected images [B, 3, 8, 8] (dynamic_img_size is off), got [1, 3, 8, 10]"),
                       hg::Error);
  ViTConfig bad = tiny(TokenLayout::ClsPatches, 2, PosResample::Antialias);
  CHECK_THROWS_WITH_AS(hg::models::vit<float>(bad), doctest::Contains("register tokens need a layout"), hg::Error);
  bad = tiny(TokenLayout::ClsPatches, 0, PosResample::Antialias);
  bad.num_heads = 4;
  CHECK_THROWS_WITH_AS(hg::models::vit<float>(bad), doctest::Contains("expected embed_dim divisible by num_heads"), hg::Error);
}

TEST_CASE("drop_path rates rise linearly over the blocks and act only in training") {
  ViTConfig c = tiny(TokenLayout::ClsPatches, 0, PosResample::Antialias);
  c.depth = 3;
  c.drop_path_rate = 0.2;
  hg::models::VisionTransformer<float> model(c, 2);
  CHECK(model.blocks[0].drop_path_rate == 0.0);
  CHECK(model.blocks[1].drop_path_rate == doctest::Approx(0.1));
  CHECK(model.blocks[2].drop_path_rate == doctest::Approx(0.2));
  hg::Tensor<float> images = random_t<float>({8, 3, 8, 8}, 3);
  hg::Tensor<float> a = model.forward(images), b = model.forward(images);  // training: fresh masks
  CHECK(double(hg::amax(hg::abs(a - b)).item()) > 0);
  model.eval();
  check_close(model.forward(images), model.forward(images), 0);
}

TEST_CASE("weight decay exempts tokens and position embeddings; names follow the key style") {
  ViTConfig c = tiny(TokenLayout::ClsRegPatchesPosBeforeReg, 2, PosResample::Antialias);
  c.keys = hg::models::KeyStyle::Dinov2Hub;
  hg::models::VisionTransformer<float> hub(c, 1);
  CHECK(hub.no_weight_decay() == std::set<std::string>{"cls_token", "mask_token", "pos_embed", "register_tokens"});
  auto groups = hub.parameter_groups();
  for (const char* name : {"cls_token", "pos_embed", "register_tokens", "mask_token", "blocks.0.ls1.gamma"})
    CHECK(std::count(groups.no_decay_names.begin(), groups.no_decay_names.end(), name) == 1);
  CHECK(std::count(groups.decay_names.begin(), groups.decay_names.end(), "patch_embed.proj.weight") == 1);
  c.keys = hg::models::KeyStyle::Timm;
  c.layout = TokenLayout::ClsRegPatchesPosPatchesOnly;
  hg::models::VisionTransformer<float> timm(c, 1);
  CHECK(timm.no_weight_decay() == std::set<std::string>{"cls_token", "pos_embed", "reg_token"});
}

TEST_CASE("gradcheck of the whole model in double, with registers and a resampled pos_embed") {
  for (auto resample : {PosResample::DinoOffset, PosResample::Antialias}) {
    ViTConfig c = tiny(TokenLayout::ClsRegPatchesPosAll, 1, resample);
    c.image_size = 4;
    c.embed_dim = 4;
    c.depth = 1;
    c.mlp_hidden = 4;
    c.ffn = hg::models::FfnKind::SwiGLUPacked;
    c.pooling = hg::models::Pooling::ClsMeanPatches;
    hg::models::VisionTransformer<double> model(c, 3);
    randomize(model, 700);
    std::vector<hg::Tensor<double>> inputs{random_input({2, 3, 6, 4}, 10)};  // grid 3x2 from native 2x2
    for (auto& [name, p] : model.named_parameters()) inputs.push_back(p);
    check_gradients([&model](const std::vector<hg::Tensor<double>>& in) { return model.forward(in[0]); }, inputs);
  }
}
