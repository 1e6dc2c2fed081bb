// Masked autoencoders (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022),
// as facebookresearch/mae writes them (models_mae.py, util/pos_embed.py; MODELS.md §3): the
// fixed 2-D sin-cos position embeddings, per-sample random masking by argsort of uniform noise,
// a ViT encoder over the visible patches only, a narrower decoder that re-inserts mask tokens,
// the pixel loss on the removed patches (optionally per-patch normalised), and a PNG of
// reconstructions as the MAE demo draws them. Key names are the reference's state dict's.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "../io/image.hpp"
#include "../nn/transformer.hpp"
#include "../ops/indexing.hpp"
#include "../ops/reduce.hpp"
#include "../ops/sort.hpp"

namespace histograd::ssl {

// ---------------------------------------------------------------- position embeddings
// get_2d_sincos_pos_embed (util/pos_embed.py): [grid², E] (with a leading zero row for CLS when
// cls_token). Token (row i, col j) is [sin(jω), cos(jω), sin(iω), cos(iω)], each block E/4 wide
// with ω_k = 10000^(-k/(E/4)): the first half encodes the column because the reference's meshgrid
// puts w first. Computed in double and rounded once to T, as the reference computes in float64.
template <class T = float>
Tensor<T> get_2d_sincos_pos_embed(int64_t embed_dim, int64_t grid_size, bool cls_token = false) {
  HG_CHECK(embed_dim > 0 && embed_dim % 4 == 0, "get_2d_sincos_pos_embed",
           "expected an embedding dim divisible by 4 (sin and cos of two coordinates), got ", embed_dim);
  HG_CHECK(grid_size > 0, "get_2d_sincos_pos_embed", "expected a positive grid size, got ", grid_size);
  const int64_t quarter = embed_dim / 4, prefix = cls_token ? 1 : 0;
  std::vector<double> omega(static_cast<size_t>(quarter));
  for (int64_t k = 0; k < quarter; ++k)
    omega[static_cast<size_t>(k)] = 1.0 / std::pow(10000.0, static_cast<double>(k) / static_cast<double>(quarter));
  Tensor<T> out = zeros<T>({prefix + grid_size * grid_size, embed_dim});
  for (int64_t i = 0; i < grid_size; ++i)
    for (int64_t j = 0; j < grid_size; ++j) {
      T* row = out.data() + (prefix + i * grid_size + j) * embed_dim;
      for (int64_t k = 0; k < quarter; ++k) {
        const double column = static_cast<double>(j) * omega[static_cast<size_t>(k)];
        const double line = static_cast<double>(i) * omega[static_cast<size_t>(k)];
        row[k] = static_cast<T>(std::sin(column));
        row[quarter + k] = static_cast<T>(std::cos(column));
        row[2 * quarter + k] = static_cast<T>(std::sin(line));
        row[3 * quarter + k] = static_cast<T>(std::cos(line));
      }
    }
  return out;
}

// ---------------------------------------------------------------- configuration
struct MAEConfig {
  std::string name = "mae_vit_large_patch16";
  int64_t img_size = 224, patch_size = 16, in_chans = 3;
  int64_t embed_dim = 1024, depth = 24, num_heads = 16;
  int64_t decoder_embed_dim = 512, decoder_depth = 8, decoder_num_heads = 16;
  double mlp_ratio = 4.0;
  bool norm_pix_loss = false;
  double norm_eps = 1e-6;  // the presets' partial(nn.LayerNorm, eps=1e-6)
};

namespace detail {
inline MAEConfig mae_shape(const std::string& name, int64_t patch, int64_t dim, int64_t depth, int64_t heads,
                           bool norm_pix_loss) {
  MAEConfig c;
  c.name = name;
  c.patch_size = patch;
  c.embed_dim = dim;
  c.depth = depth;
  c.num_heads = heads;
  c.norm_pix_loss = norm_pix_loss;
  return c;
}
}  // namespace detail

// models_mae.py's recommended archs; every decoder is 512 wide, 8 blocks, 16 heads.
inline MAEConfig mae_vit_base_patch16(bool norm_pix_loss = false) {
  return detail::mae_shape("mae_vit_base_patch16", 16, 768, 12, 12, norm_pix_loss);
}
inline MAEConfig mae_vit_large_patch16(bool norm_pix_loss = false) {
  return detail::mae_shape("mae_vit_large_patch16", 16, 1024, 24, 16, norm_pix_loss);
}
inline MAEConfig mae_vit_huge_patch14(bool norm_pix_loss = false) {
  return detail::mae_shape("mae_vit_huge_patch14", 14, 1280, 32, 16, norm_pix_loss);
}
// The model of the tests and the parity fixtures (scripts/gen_mae_fixtures.py): 32x32 images,
// 8x8 patches, a 2-block encoder 32 wide and a 1-block decoder 16 wide.
inline MAEConfig mae_tiny(bool norm_pix_loss = false) {
  MAEConfig c = detail::mae_shape("mae_tiny", 8, 32, 2, 2, norm_pix_loss);
  c.img_size = 32;
  c.decoder_embed_dim = 16;
  c.decoder_depth = 1;
  c.decoder_num_heads = 2;
  return c;
}

// ---------------------------------------------------------------- patches
// patchify: [N, C, H, W] -> [N, L, p²·C] with patch (h, w) in row-major order and element
// (pr·p + pc)·C + c inside it (einsum 'nchpwq->nhwpqc').
template <class T>
Tensor<T> patchify(const Tensor<T>& imgs, int64_t patch_size) {
  HG_CHECK(imgs.dim() == 4 && imgs.size(2) == imgs.size(3) && patch_size > 0 && imgs.size(2) % patch_size == 0,
           "patchify", "expected square images [N, C, H, H] with H a multiple of the patch size ", patch_size, ", got ",
           to_string(imgs.shape()));
  const int64_t n = imgs.size(0), c = imgs.size(1), p = patch_size, h = imgs.size(2) / p;
  return imgs.reshape({n, c, h, p, h, p}).permute({0, 2, 4, 3, 5, 1}).reshape({n, h * h, p * p * c});
}

// unpatchify: the inverse, [N, L, p²·C] -> [N, C, √L·p, √L·p] (einsum 'nhwpqc->nchpwq').
template <class T>
Tensor<T> unpatchify(const Tensor<T>& x, int64_t patch_size, int64_t channels = 3) {
  HG_CHECK(x.dim() == 3 && patch_size > 0 && channels > 0 && x.size(2) == patch_size * patch_size * channels,
           "unpatchify", "expected patches [N, L, ", patch_size * patch_size * channels, "] (patch ", patch_size,
           ", ", channels, " channels), got ", to_string(x.shape()));
  const int64_t n = x.size(0), p = patch_size, h = static_cast<int64_t>(std::llround(std::sqrt(double(x.size(1)))));
  HG_CHECK(h * h == x.size(1), "unpatchify", "expected a square number of patches, got ", x.size(1));
  return x.reshape({n, h, h, p, p, channels}).permute({0, 5, 1, 3, 2, 4}).reshape({n, channels, h * p, h * p});
}

// ---------------------------------------------------------------- masking
template <class T>
struct RandomMasking {
  Tensor<T> x_masked;             // [N, len_keep, D], the kept tokens in shuffled order
  Tensor<T> mask;                 // [N, L]: 0 kept, 1 removed, in the original patch order
  Tensor<int64_t> ids_restore;    // [N, L]: argsort(ids_shuffle), the unshuffling gather index
  Tensor<int64_t> ids_keep;       // [N, len_keep]: ids_shuffle[:, :len_keep]
};

// random_masking: keeps the len_keep = int(L·(1 - mask_ratio)) tokens of smallest noise per
// sample (ids_shuffle = argsort(noise) ascending), gathering them from x [N, L, D].
template <class T>
RandomMasking<T> random_masking(const Tensor<T>& x, double mask_ratio, const Tensor<T>& noise) {
  HG_CHECK(x.dim() == 3, "random_masking", "expected tokens [N, L, D], got ", to_string(x.shape()));
  const int64_t n = x.size(0), length = x.size(1), dim = x.size(2);
  HG_CHECK(noise.shape() == (Shape{n, length}), "random_masking", "expected noise of shape ", to_string(Shape{n, length}),
           ", got ", to_string(noise.shape()));
  HG_CHECK(mask_ratio >= 0 && mask_ratio < 1, "random_masking", "expected a mask ratio in [0, 1), got ", mask_ratio);
  // Python's int() truncates toward zero; the product is non-negative here.
  const int64_t len_keep = static_cast<int64_t>(static_cast<double>(length) * (1.0 - mask_ratio));
  HG_CHECK(len_keep >= 1, "random_masking", "mask ratio ", mask_ratio, " keeps no token of ", length);
  RandomMasking<T> out;
  // On x's device from the sort on: the noise may be a host tensor (the same draws on either
  // device), and nothing comes back to the host. ids_restore, the inverse permutation, is the
  // argsort of ids_shuffle; the mask is [0]*len_keep + [1]*(L - len_keep) unshuffled by it.
  const Tensor<int64_t> ids_shuffle = argsort(noise.detach(), 1).to(x.device());
  out.ids_restore = argsort(ids_shuffle, 1);
  const Tensor<T> kept_first =
      cat<T>({zeros<T>({1, len_keep}, x.device()), ones<T>({1, length - len_keep}, x.device())}, 1);
  out.mask = gather(kept_first.expand({n, length}), 1, out.ids_restore);
  out.ids_keep = ids_shuffle.narrow(1, 0, len_keep).contiguous();
  out.x_masked = gather(x, 1, out.ids_keep.unsqueeze(-1).expand({n, len_keep, dim}));
  return out;
}

// forward_loss: mean over each patch of (pred - target)², averaged over the removed patches
// only: Σ mask·loss / Σ mask. With norm_pix_loss the target is each patch standardised by its
// own mean and unbiased variance, (t - μ) / √(σ² + 1e-6).
template <class T>
Tensor<T> mae_loss(const Tensor<T>& imgs, const Tensor<T>& pred, const Tensor<T>& mask, int64_t patch_size,
                   bool norm_pix_loss) {
  Tensor<T> target = patchify(imgs, patch_size);
  HG_CHECK(pred.shape() == target.shape(), "mae_loss", "expected pred of shape ", to_string(target.shape()),
           " (the patchified images), got ", to_string(pred.shape()));
  HG_CHECK(mask.shape() == (Shape{pred.size(0), pred.size(1)}), "mae_loss", "expected a mask of shape ",
           to_string(Shape{pred.size(0), pred.size(1)}), ", got ", to_string(mask.shape()));
  if (norm_pix_loss) {
    const Tensor<T> patch_mean = mean(target, {-1}, true), patch_var = var(target, {-1}, 1, true);
    target = (target - patch_mean) / sqrt(patch_var + T(1e-6));
  }
  const Tensor<T> per_patch = mean(square(pred - target), {-1});
  return sum(per_patch * mask) / sum(mask);
}

template <class T>
struct MAEOutput {
  Tensor<T> loss;               // scalar
  Tensor<T> pred;               // [N, L, p²·C], normalised pixels when norm_pix_loss
  Tensor<T> mask;               // [N, L], 1 = removed
  Tensor<int64_t> ids_restore;  // [N, L]
};

// ---------------------------------------------------------------- the model
// MaskedAutoencoderViT (models_mae.py). Requires square images of config().img_size. Parameters
// follow the reference's state dict: cls_token, mask_token, patch_embed.proj.*, blocks.{i}.*,
// norm.*, decoder_embed.*, decoder_blocks.{i}.*, decoder_norm.*, decoder_pred.*; pos_embed and
// decoder_pos_embed (requires_grad=False in the reference) are buffers here, so they appear in
// state_dict() under those names but never in parameters() or an optimiser.
template <class T = float>
class MaskedAutoencoderViT : public nn::Module<T> {
 public:
  explicit MaskedAutoencoderViT(const MAEConfig& config, uint64_t seed = 0) : config_(config) {
    const MAEConfig& c = config_;
    const char* op = "MaskedAutoencoderViT";
    HG_CHECK(c.patch_size > 0 && c.img_size % c.patch_size == 0 && c.in_chans > 0, op, "config '", c.name,
             "': expected img_size a multiple of patch_size, got ", c.img_size, " and ", c.patch_size);
    HG_CHECK(c.depth >= 1 && c.decoder_depth >= 1 && c.mlp_ratio > 0, op, "config '", c.name,
             "': expected depth, decoder_depth >= 1 and mlp_ratio > 0, got ", c.depth, ", ", c.decoder_depth, ", ",
             c.mlp_ratio);
    HG_CHECK(c.embed_dim % 4 == 0 && c.decoder_embed_dim % 4 == 0, op, "config '", c.name,
             "': the sin-cos embeddings need widths divisible by 4, got ", c.embed_dim, " and ", c.decoder_embed_dim);
    grid_ = c.img_size / c.patch_size;
    const bool initialise = !nn::SkipInit::active();
    Generator gen(seed);
    {
      nn::SkipInit allocate_only;  // every value is set by initialize_weights below
      patch_embed = nn::PatchEmbed<T>(c.in_chans, c.embed_dim, c.patch_size, gen);
      cls_token = nn::constant_parameter<T>({1, 1, c.embed_dim}, 0.0);
      for (int64_t i = 0; i < c.depth; ++i) blocks.items.emplace_back(block_options(c.embed_dim, c.num_heads), gen);
      norm = nn::LayerNorm<T>(c.embed_dim, c.norm_eps);
      decoder_embed = nn::Linear<T>(c.embed_dim, c.decoder_embed_dim, true, gen);
      mask_token = nn::constant_parameter<T>({1, 1, c.decoder_embed_dim}, 0.0);
      for (int64_t i = 0; i < c.decoder_depth; ++i)
        decoder_blocks.items.emplace_back(block_options(c.decoder_embed_dim, c.decoder_num_heads), gen);
      decoder_norm = nn::LayerNorm<T>(c.decoder_embed_dim, c.norm_eps);
      decoder_pred = nn::Linear<T>(c.decoder_embed_dim, c.patch_size * c.patch_size * c.in_chans, true, gen);
    }
    pos_embed = get_2d_sincos_pos_embed<T>(c.embed_dim, grid_, true).unsqueeze(0).contiguous();
    decoder_pos_embed = get_2d_sincos_pos_embed<T>(c.decoder_embed_dim, grid_, true).unsqueeze(0).contiguous();
    if (initialise) initialize_weights(gen);
  }

  // initialize_weights: xavier_uniform for every Linear (biases 0) and for the patch stem's
  // weight viewed as [D, C·p·p]; N(0, .02²) tokens; LayerNorm 1 and 0. The stem's bias keeps
  // nn.Conv2d's default U(±1/√(C·p·p)), which the reference never overrides.
  void initialize_weights(Generator& gen) {
    NoGradGuard no_grad;
    auto xavier = [&gen](Tensor<T>& w, int64_t fan_out, int64_t fan_in) {
      const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
      w.copy_(uniform_like(w, bound, gen));
    };
    const int64_t stem_fan_in = config_.in_chans * config_.patch_size * config_.patch_size;
    xavier(patch_embed.proj.weight, config_.embed_dim, stem_fan_in);
    patch_embed.proj.bias.copy_(uniform_like(patch_embed.proj.bias, 1.0 / std::sqrt(double(stem_fan_in)), gen));
    cls_token.copy_(randn<T>(cls_token.shape(), gen) * T(0.02));
    mask_token.copy_(randn<T>(mask_token.shape(), gen) * T(0.02));
    this->for_each_module([&](const std::string&, nn::Module<T>& m) {
      if (auto* linear = dynamic_cast<nn::Linear<T>*>(&m)) {
        xavier(linear->weight, linear->out_features(), linear->in_features());
        if (linear->bias.defined()) linear->bias.zero_();
      } else if (auto* layer_norm = dynamic_cast<nn::LayerNorm<T>*>(&m)) {
        layer_norm->weight.fill_(T(1));
        layer_norm->bias.zero_();
      }
    });
  }

  // The whole step of models_mae.py's forward: loss, pred and mask, with noise ~ U[0, 1) drawn
  // from `gen` ([N, L]) or given (the parity tests feed the reference's).
  MAEOutput<T> forward(const Tensor<T>& imgs, double mask_ratio = 0.75, Generator& gen = default_generator()) const {
    check_images(imgs);
    return forward(imgs, mask_ratio, rand<T>({imgs.size(0), grid_ * grid_}, gen));
  }
  MAEOutput<T> forward(const Tensor<T>& imgs, double mask_ratio, const Tensor<T>& noise) const {
    auto [latent, masking] = forward_encoder(imgs, mask_ratio, noise);
    MAEOutput<T> out;
    out.pred = forward_decoder(latent, masking.ids_restore);
    out.loss = forward_loss(imgs, out.pred, masking.mask);
    out.mask = masking.mask;
    out.ids_restore = masking.ids_restore;
    return out;
  }

  // Patches + pos, masking, CLS (+ its pos) prepended, blocks, norm: latent [N, 1 + len_keep, D].
  std::pair<Tensor<T>, RandomMasking<T>> forward_encoder(const Tensor<T>& imgs, double mask_ratio,
                                                         const Tensor<T>& noise) const {
    check_images(imgs);
    const int64_t n = imgs.size(0), length = grid_ * grid_, dim = config_.embed_dim;
    Tensor<T> x = patch_embed.forward(imgs) + pos_embed.narrow(1, 1, length);
    RandomMasking<T> masking = random_masking(x, mask_ratio, noise);
    const Tensor<T> cls = (cls_token + pos_embed.narrow(1, 0, 1)).expand({n, 1, dim});
    x = cat<T>({cls, masking.x_masked}, 1);
    for (const auto& block : blocks) x = block.forward(x);
    return {norm.forward(x), std::move(masking)};
  }

  // Embeds the latent, appends mask tokens, unshuffles with ids_restore, re-prepends the CLS,
  // adds the decoder's pos, blocks, norm, predicts pixels and drops the CLS: [N, L, p²·C].
  Tensor<T> forward_decoder(const Tensor<T>& latent, const Tensor<int64_t>& ids_restore) const {
    const int64_t length = grid_ * grid_, width = config_.decoder_embed_dim;
    HG_CHECK(latent.dim() == 3 && latent.size(2) == config_.embed_dim && latent.size(1) >= 2 &&
                 latent.size(1) <= length + 1,
             "MaskedAutoencoderViT", "forward_decoder: expected a latent [N, 1 + kept, ", config_.embed_dim,
             "] with 1 <= kept <= ", length, ", got ", to_string(latent.shape()));
    const int64_t n = latent.size(0);
    HG_CHECK(ids_restore.shape() == (Shape{n, length}), "MaskedAutoencoderViT", "forward_decoder: expected ids_restore ",
             to_string(Shape{n, length}), ", got ", to_string(ids_restore.shape()));
    Tensor<T> x = decoder_embed.forward(latent);
    const int64_t kept = x.size(1) - 1;
    Tensor<T> shuffled = cat<T>({x.narrow(1, 1, kept), mask_token.expand({n, length - kept, width})}, 1);
    Tensor<T> unshuffled = gather(shuffled, 1, ids_restore.unsqueeze(-1).expand({n, length, width}));
    x = cat<T>({x.narrow(1, 0, 1), unshuffled}, 1) + decoder_pos_embed;
    for (const auto& block : decoder_blocks) x = block.forward(x);
    return decoder_pred.forward(decoder_norm.forward(x)).narrow(1, 1, length);
  }

  Tensor<T> forward_loss(const Tensor<T>& imgs, const Tensor<T>& pred, const Tensor<T>& mask) const {
    return mae_loss(imgs, pred, mask, config_.patch_size, config_.norm_pix_loss);
  }
  Tensor<T> patchify(const Tensor<T>& imgs) const { return ssl::patchify(imgs, config_.patch_size); }
  Tensor<T> unpatchify(const Tensor<T>& x) const { return ssl::unpatchify(x, config_.patch_size, config_.in_chans); }

  // The reference's add_weight_decay decays cls_token and mask_token (3-D, not on a skip list),
  // so nothing is exempt beyond Module's 1-D and *.bias rule.
  std::set<std::string> no_weight_decay() const override { return {}; }

  void visit(nn::ModuleVisitor<T>& v) override {
    v.parameter("cls_token", cls_token);
    v.parameter("mask_token", mask_token);
    v.buffer("pos_embed", pos_embed);
    v.buffer("decoder_pos_embed", decoder_pos_embed);
    v.module("patch_embed", patch_embed);
    blocks.visit(v, "blocks");
    v.module("norm", norm);
    v.module("decoder_embed", decoder_embed);
    decoder_blocks.visit(v, "decoder_blocks");
    v.module("decoder_norm", decoder_norm);
    v.module("decoder_pred", decoder_pred);
  }

  const MAEConfig& config() const { return config_; }
  int64_t num_patches() const { return grid_ * grid_; }

  nn::PatchEmbed<T> patch_embed;
  Tensor<T> cls_token;          // [1, 1, D]
  Tensor<T> pos_embed;          // [1, 1 + L, D], fixed sin-cos
  nn::ModuleList<nn::Block<T>> blocks;
  nn::LayerNorm<T> norm;
  nn::Linear<T> decoder_embed;  // D -> decoder width
  Tensor<T> mask_token;         // [1, 1, decoder width]
  Tensor<T> decoder_pos_embed;  // [1, 1 + L, decoder width], fixed sin-cos
  nn::ModuleList<nn::Block<T>> decoder_blocks;
  nn::LayerNorm<T> decoder_norm;
  nn::Linear<T> decoder_pred;   // decoder width -> p²·C

 private:
  nn::BlockOptions block_options(int64_t dim, int64_t heads) const {
    nn::BlockOptions o;
    o.dim = dim;
    o.num_heads = heads;
    o.mlp_hidden = static_cast<int64_t>(static_cast<double>(dim) * config_.mlp_ratio);  // timm: int(dim * mlp_ratio)
    o.qkv_bias = true;
    o.norm_eps = config_.norm_eps;
    return o;
  }
  static Tensor<T> uniform_like(const Tensor<T>& t, double bound, Generator& gen) {
    return rand<T>(t.shape(), gen) * T(2 * bound) - T(bound);
  }
  void check_images(const Tensor<T>& imgs) const {
    const MAEConfig& c = config_;
    HG_CHECK(imgs.dim() == 4 && imgs.size(1) == c.in_chans && imgs.size(2) == c.img_size && imgs.size(3) == c.img_size,
             "MaskedAutoencoderViT", "'", c.name, "' expected images [N, ", c.in_chans, ", ", c.img_size, ", ",
             c.img_size, "], got ", to_string(imgs.shape()));
  }

  MAEConfig config_;
  int64_t grid_ = 0;
};

// ---------------------------------------------------------------- reconstruction picture
// One row per image (up to max_rows): input | masked (removed patches grey) | reconstruction
// with the visible patches pasted from the input | reconstruction alone, as the MAE demo
// (demo/mae_visualize.ipynb) shows them. images [N, C=3, H, W] are normalised by mean/std;
// pred [N, L, p²·3] and mask [N, L] are a forward's. With norm_pix_loss the prediction is in
// per-patch standardised units and is mapped back with each input patch's mean and
// √(unbiased var + 1e-6). Written atomically (io::write_png).
template <class T>
void save_reconstruction_png(const std::string& path, const Tensor<T>& images, const Tensor<T>& mask,
                             const Tensor<T>& pred, const std::array<double, 3>& mean_rgb,
                             const std::array<double, 3>& std_rgb, bool norm_pix_loss, int64_t max_rows = 8) {
  const char* op = "save_reconstruction_png";
  HG_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == images.size(3) && images.size(0) >= 1, op,
           "expected square RGB images [N, 3, H, H], got ", to_string(images.shape()));
  HG_CHECK(pred.dim() == 3 && pred.size(0) == images.size(0) && pred.size(2) % 3 == 0, op,
           "expected pred [", images.size(0), ", L, p*p*3], got ", to_string(pred.shape()));
  const int64_t patch = static_cast<int64_t>(std::llround(std::sqrt(double(pred.size(2) / 3))));
  HG_CHECK(patch * patch * 3 == pred.size(2) && images.size(2) % patch == 0 &&
               (images.size(2) / patch) * (images.size(2) / patch) == pred.size(1),
           op, "pred ", to_string(pred.shape()), " does not tile images ", to_string(images.shape()));
  HG_CHECK(mask.shape() == (Shape{pred.size(0), pred.size(1)}), op, "expected a mask of shape ",
           to_string(Shape{pred.size(0), pred.size(1)}), ", got ", to_string(mask.shape()));
  HG_CHECK(max_rows >= 1, op, "expected max_rows >= 1, got ", max_rows);
  NoGradGuard no_grad;
  Tensor<T> patches = pred.detach();
  if (norm_pix_loss) {
    const Tensor<T> target = patchify(images.detach(), patch);
    patches = patches * sqrt(var(target, {-1}, 1, true) + T(1e-6)) + mean(target, {-1}, true);
  }
  const Tensor<T> reconstruction = unpatchify(patches, patch).contiguous();
  const Tensor<T> removed =
      unpatchify(mask.detach().unsqueeze(-1).expand({pred.size(0), pred.size(1), pred.size(2)}), patch).contiguous();
  const Tensor<T> input = images.detach().contiguous();

  const int64_t rows = std::min(max_rows, images.size(0)), side = images.size(2), gap = 2, panels = 4;
  io::Image picture;
  picture.width = panels * side + (panels - 1) * gap;
  picture.height = rows * side + (rows - 1) * gap;
  picture.pixels.assign(static_cast<size_t>(picture.width * picture.height * 3), 255);
  auto to_byte = [&](double normalised, int64_t channel) {
    const double v = normalised * std_rgb[size_t(channel)] + mean_rgb[size_t(channel)];
    return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255.0));
  };
  const int64_t plane = side * side;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < side; ++y)
        for (int64_t x = 0; x < side; ++x) {
          const int64_t at = (r * 3 + c) * plane + y * side + x;
          const bool hidden = removed.data()[at] != T(0);
          const double in = double(input.data()[at]), out = double(reconstruction.data()[at]);
          const uint8_t values[panels] = {to_byte(in, c), hidden ? uint8_t(128) : to_byte(in, c),
                                          to_byte(hidden ? out : in, c), to_byte(out, c)};
          for (int64_t panel = 0; panel < panels; ++panel) {
            const int64_t px = panel * (side + gap) + x, py = r * (side + gap) + y;
            picture.pixels[static_cast<size_t>((py * picture.width + px) * 3 + c)] = values[panel];
          }
        }
  io::write_png(path, picture);
}

}  // namespace histograd::ssl
