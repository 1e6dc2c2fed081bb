// DINOv2's objective (MODELS.md §2.2-2.4): the DINOv2 head, Sinkhorn-Knopp and softmax centring
// of the teacher, the DINO CLS-token loss, the iBOT masked-patch loss, the KoLeo regulariser, and
// SSLMetaArch.forward_backward's combination of them with the reference's scales and weights.
// References: dinov2/layers/dino_head.py, dinov2/loss/{dino_clstoken,ibot_patch,koleo}_loss.py,
// dinov2/train/ssl_meta_arch.py, dinov2/utils/param_groups.py.
#pragma once
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../models/vit.hpp"
#include "../ops/indexing.hpp"
#include "../ops/softmax.hpp"
#include "masking.hpp"

namespace histograd::ssl {

// DINOHead of DINOv2: an MLP (nlayers Linear, GELU between) to a bottleneck, L2 normalisation
// (eps 1e-12), then a weight-normalised Linear without bias to the prototypes, W = g · v / ||v||
// per row. Unlike DINO, g is a free parameter (no norm_last_layer freezing). Keys: mlp.0, mlp.2,
// mlp.4 (mlp for nlayers 1), last_layer.weight_g [K, 1], last_layer.weight_v [K, bottleneck].
// BatchNorm in the MLP (use_bn) is not supported.
template <class T = float>
class DINOv2Head : public nn::Module<T> {
 public:
  DINOv2Head() = default;
  DINOv2Head(int64_t in_dim, int64_t out_dim, Generator& gen, int64_t nlayers = 3, int64_t hidden_dim = 2048,
             int64_t bottleneck_dim = 256, bool mlp_bias = true) {
    HG_CHECK(in_dim > 0 && out_dim > 0 && hidden_dim > 0 && bottleneck_dim > 0, "DINOv2Head",
             "expected positive sizes, got in ", in_dim, ", out ", out_dim, ", hidden ", hidden_dim, ", bottleneck ",
             bottleneck_dim);
    nlayers = std::max<int64_t>(nlayers, 1);
    for (int64_t i = 0; i < nlayers; ++i) {
      const int64_t in = i == 0 ? in_dim : hidden_dim, out = i == nlayers - 1 ? bottleneck_dim : hidden_dim;
      mlp.emplace_back(in, out, mlp_bias, gen);
    }
    // The reference keeps nn.Linear's default init for v; any init serves, since g · v / ||v||
    // only sees v's direction.
    weight_v = nn::normal_parameter<T>({out_dim, bottleneck_dim}, 0.02, gen);
    weight_g = nn::constant_parameter<T>({out_dim, 1}, 1.0);
  }

  // x [..., in_dim] -> prototype scores [..., out_dim].
  Tensor<T> forward(const Tensor<T>& x) const { return linear(bottleneck(x), last_layer_weight()); }
  // normalize(mlp(x)): the input of the last layer.
  Tensor<T> bottleneck(const Tensor<T>& x) const {
    Tensor<T> h = x;
    for (size_t i = 0; i < mlp.size(); ++i) {
      h = mlp[i].forward(h);
      if (i + 1 < mlp.size()) h = gelu(h);
    }
    return normalize(h, 2.0, -1, 1e-12);
  }
  // torch.nn.utils.weight_norm with dim 0: v · (g / ||v_row||), no eps.
  Tensor<T> last_layer_weight() const { return weight_norm(weight_v, weight_g); }

  void visit(nn::ModuleVisitor<T>& v) override {
    if (mlp.size() == 1) {
      v.module("mlp", mlp[0]);
    } else {
      for (size_t i = 0; i < mlp.size(); ++i) v.module("mlp." + std::to_string(2 * i), mlp[i]);
    }
    v.parameter("last_layer.weight_g", weight_g);
    v.parameter("last_layer.weight_v", weight_v);
  }

  std::vector<nn::Linear<T>> mlp;
  Tensor<T> weight_g, weight_v;
};

namespace detail {
// Sinkhorn-Knopp on a [B, K] score matrix in the compute type C (sums accumulated in double).
template <class C>
std::vector<C> sinkhorn_rows(std::vector<C> q, int64_t rows, int64_t cols, double temperature, double num_samples,
                             int64_t iterations) {
  const C temp = static_cast<C>(temperature);
  for (auto& v : q) v = std::exp(v / temp);
  double total = 0;
  for (C v : q) total += v;
  for (auto& v : q) v /= static_cast<C>(total);
  const C prototypes = static_cast<C>(cols), samples = static_cast<C>(num_samples);
  std::vector<double> per_prototype(static_cast<size_t>(cols));
  for (int64_t it = 0; it < iterations; ++it) {
    // Each prototype (a column here, a row of the paper's K x B matrix) gets total mass 1/K.
    std::fill(per_prototype.begin(), per_prototype.end(), 0.0);
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t k = 0; k < cols; ++k) per_prototype[static_cast<size_t>(k)] += q[static_cast<size_t>(b * cols + k)];
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t k = 0; k < cols; ++k) {
        C& v = q[static_cast<size_t>(b * cols + k)];
        v /= static_cast<C>(per_prototype[static_cast<size_t>(k)]);
        v /= prototypes;
      }
    // Each sample gets total mass 1/B.
    for (int64_t b = 0; b < rows; ++b) {
      double per_sample = 0;
      for (int64_t k = 0; k < cols; ++k) per_sample += q[static_cast<size_t>(b * cols + k)];
      for (int64_t k = 0; k < cols; ++k) {
        C& v = q[static_cast<size_t>(b * cols + k)];
        v /= static_cast<C>(per_sample);
        v /= samples;
      }
    }
  }
  for (auto& v : q) v *= samples;
  return q;
}
}  // namespace detail

// The teacher's Sinkhorn-Knopp assignment (sinkhorn_knopp_teacher): Q = exp(scores / temp)ᵀ,
// Q /= ΣQ, then `iterations` times rows (prototypes) to 1/K and columns (samples) to 1/B, and
// finally Q·B, returned as [B, K] whose rows sum to 1. No max is subtracted before exp, as in the
// reference. num_samples is B (default: the rows; the iBOT loss passes the masked-token count).
// The reference computes in float32 whatever the input type; in_float32 = false computes in T.
template <class T>
Tensor<T> sinkhorn_knopp(const Tensor<T>& teacher_output, double teacher_temp, std::optional<double> num_samples = {},
                         int64_t iterations = 3, bool in_float32 = true) {
  HG_CHECK(teacher_output.dim() == 2 && teacher_output.numel() > 0, "sinkhorn_knopp",
           "expected non-empty teacher scores [B, K], got ", to_string(teacher_output.shape()));
  HG_CHECK(teacher_temp > 0 && iterations >= 0, "sinkhorn_knopp", "expected teacher_temp > 0 and iterations >= 0, got ",
           teacher_temp, " and ", iterations);
  const int64_t rows = teacher_output.size(0), cols = teacher_output.size(1);
  const double samples = num_samples ? *num_samples : static_cast<double>(rows);
  const std::vector<T> scores = teacher_output.contiguous().to_vector();
  std::vector<T> out(scores.size());
  if (in_float32 && !std::is_same_v<T, float>) {
    std::vector<float> q = detail::sinkhorn_rows(std::vector<float>(scores.begin(), scores.end()), rows, cols,
                                                 teacher_temp, samples, iterations);
    std::copy(q.begin(), q.end(), out.begin());
  } else {
    out = detail::sinkhorn_rows(scores, rows, cols, teacher_temp, samples, iterations);
  }
  return from_vector<T>(out, {rows, cols});
}

// softmax((scores - center) / temp) over the prototypes (softmax_center_teacher), no gradient.
template <class T>
Tensor<T> softmax_center_teacher(const Tensor<T>& teacher_output, const Tensor<T>& center, double teacher_temp) {
  HG_CHECK(teacher_temp > 0, "softmax_center_teacher", "expected teacher_temp > 0, got ", teacher_temp);
  NoGradGuard no_grad;
  return softmax(div(teacher_output.detach() - center, scalar_tensor<T>(static_cast<T>(teacher_temp))), -1);
}

// Σ_s Σ_t -mean_b Σ_k t · log_softmax(s / student_temp) (DINOLoss.forward): every student
// chunk against every teacher target, rows matched one to one.
template <class T>
Tensor<T> dino_cross_entropy(const std::vector<Tensor<T>>& student, const std::vector<Tensor<T>>& teacher,
                             double student_temp = 0.1) {
  HG_CHECK(!student.empty() && !teacher.empty(), "dino_cross_entropy", "expected student and teacher outputs, got ",
           student.size(), " and ", teacher.size());
  Tensor<T> total;
  for (const auto& s : student) {
    const Tensor<T> lsm = log_softmax(div(s, scalar_tensor<T>(static_cast<T>(student_temp))), -1);
    for (const auto& t : teacher) {
      HG_CHECK(t.shape() == s.shape(), "dino_cross_entropy", "expected teacher targets shaped as the student's ",
               to_string(s.shape()), ", got ", to_string(t.shape()));
      const Tensor<T> term = -mean(sum(t * lsm, {-1}));
      total = total.defined() ? total + term : term;
    }
  }
  return total;
}

// iBOTPatchLoss.forward_masked: -Σ_i w_i Σ_k t_ik log_softmax(s_i / student_temp)_k / num_images,
// over the masked tokens i (w_i = 1 / #masked in the token's image, so this is the mean over all
// num_images global crops of each image's mean masked-token cross-entropy).
template <class T>
Tensor<T> ibot_masked_loss(const Tensor<T>& student_masked, const Tensor<T>& teacher_masked, const Tensor<T>& masks_weight,
                           int64_t num_images, double student_temp = 0.1) {
  HG_CHECK(student_masked.dim() == 2 && teacher_masked.shape() == student_masked.shape() && masks_weight.dim() == 1 &&
               masks_weight.size(0) == student_masked.size(0),
           "ibot_masked_loss", "expected student and teacher [M, K] and masks_weight [M], got ",
           to_string(student_masked.shape()), ", ", to_string(teacher_masked.shape()), " and ",
           to_string(masks_weight.shape()));
  HG_CHECK(num_images >= 1, "ibot_masked_loss", "expected num_images >= 1, got ", num_images);
  const Tensor<T> lsm = log_softmax(div(student_masked, scalar_tensor<T>(static_cast<T>(student_temp))), -1);
  const Tensor<T> per_token = sum(teacher_masked * lsm, {-1});
  return div(-sum(per_token * masks_weight), scalar_tensor<T>(static_cast<T>(num_images)));
}

// KoLeo (Sablayrolles et al. 2018; KoLeoLoss.forward): x normalised (eps 1e-8), each row's nearest
// neighbour by dot product (the diagonal excluded), d_i = ||x_i - x_nn(i) + eps||₂ (PairwiseDistance
// adds eps to the difference), loss = -mean log(d_i + eps). The neighbour choice is not
// differentiated; the distances are.
template <class T>
Tensor<T> koleo_loss(const Tensor<T>& x, double eps = 1e-8) {
  HG_CHECK(x.dim() == 2 && x.size(0) >= 2, "koleo_loss", "expected features [B, D] with B >= 2, got ",
           to_string(x.shape()));
  const Tensor<T> unit = normalize(x, 2.0, -1, eps);
  Tensor<int64_t> neighbour;
  {
    NoGradGuard no_grad;
    // B x B dot products (B the batch), the diagonal set to -1 as KoLeoLoss does; all on x's
    // device, so a GPU step does not wait on a copy back.
    const Tensor<T> dots = matmul(unit.detach(), unit.detach().mT());
    const Tensor<T> index = arange<T>(T(0), static_cast<T>(x.size(0)), T(1), x.device());
    neighbour = argmax(masked_fill(dots, eq(index.unsqueeze(1), index.unsqueeze(0)), T(-1)), 1);
  }
  const Tensor<T> diff = unit - index_select(unit, 0, neighbour) + static_cast<T>(1e-8);
  const Tensor<T> distances = sqrt(sum(square(diff), {-1}));
  return -mean(log(distances + static_cast<T>(eps)));
}

enum class Centering {
  Softmax,       // train.centering "centering": softmax((t - center) / temp), centres EMA 0.9
  SinkhornKnopp  // train.centering "sinkhorn_knopp"
};

struct DINOv2LossConfig {
  int64_t dino_out_dim = 65536, ibot_out_dim = 65536;  // ibot_out_dim = dino_out_dim for a shared head
  int64_t n_global_crops = 2, n_local_crops = 8;
  Centering centering = Centering::Softmax;
  double student_temp = 0.1, center_momentum = 0.9;
  double dino_loss_weight = 1.0, ibot_loss_weight = 1.0, koleo_loss_weight = 0.1;
};

// The teacher's targets for one step: DINO probabilities per global crop [n_global, b, K] (in the
// swapped order the caller gave) and iBOT probabilities of the masked tokens [M, K_ibot].
template <class T>
struct DINOv2Targets {
  Tensor<T> dino, ibot;
};

// Each term as it enters the total (SSLMetaArch logs koleo / 2 and ibot / 2 instead).
template <class T>
struct DINOv2LossTerms {
  Tensor<T> total, dino_local, dino_global, koleo, ibot;
};

// The losses of SSLMetaArch.forward_backward with its centres. Terms (n_g global, n_l local crops):
//   dino_local  = w_dino · CE(local students, both teachers) / (n_g(n_g-1) + n_g·n_l)
//   dino_global = w_dino · CE(global students, swapped teachers) · 2 / (same)
//   koleo       = w_koleo · Σ over the 2 global chunks of KoLeo(student backbone CLS)
//   ibot        = w_ibot · forward_masked(...) · 2 · (1 / n_g)
template <class T = float>
class DINOv2Loss {
 public:
  explicit DINOv2Loss(const DINOv2LossConfig& config) : config(config) {
    HG_CHECK(config.n_global_crops == 2, "DINOv2Loss", "expected 2 global crops (as SSLMetaArch asserts), got ",
             config.n_global_crops);
    HG_CHECK(config.n_local_crops >= 0 && config.dino_out_dim > 0 && config.ibot_out_dim > 0, "DINOv2Loss",
             "expected n_local_crops >= 0 and positive output dims, got ", config.n_local_crops, ", ",
             config.dino_out_dim, ", ", config.ibot_out_dim);
    dino_center = zeros<T>({1, config.dino_out_dim});
    ibot_center = zeros<T>({1, 1, config.ibot_out_dim});
  }

  bool do_ibot() const { return config.ibot_loss_weight > 0; }
  bool do_koleo() const { return config.koleo_loss_weight > 0; }

  // teacher_cls [n_g·b, K]: the teacher head's CLS outputs, crops already swapped (crop 1 first);
  // teacher_masked [M, K_ibot]: its outputs for the masked patch tokens (undefined without iBOT).
  // With Softmax centring this also moves both centres (the reference applies the same update
  // lazily at the start of the next step, which gives the same numbers).
  DINOv2Targets<T> teacher_targets(const Tensor<T>& teacher_cls, const Tensor<T>& teacher_masked, double teacher_temp) {
    NoGradGuard no_grad;
    HG_CHECK(teacher_cls.dim() == 2 && teacher_cls.size(1) == config.dino_out_dim &&
                 teacher_cls.size(0) % config.n_global_crops == 0,
             "DINOv2Loss", "expected teacher CLS outputs [", config.n_global_crops, "·b, ", config.dino_out_dim,
             "], got ", to_string(teacher_cls.shape()));
    const bool ibot = do_ibot() && teacher_masked.defined();
    if (ibot)
      HG_CHECK(teacher_masked.dim() == 2 && teacher_masked.size(1) == config.ibot_out_dim, "DINOv2Loss",
               "expected teacher masked-patch outputs [M, ", config.ibot_out_dim, "], got ",
               to_string(teacher_masked.shape()));
    const Shape per_crop{config.n_global_crops, teacher_cls.size(0) / config.n_global_crops, config.dino_out_dim};
    DINOv2Targets<T> targets;
    if (config.centering == Centering::Softmax) {
      targets.dino = softmax_center_teacher(teacher_cls, dino_center, teacher_temp).reshape(per_crop);
      update_center(dino_center, mean_rows(teacher_cls));
      if (ibot) {
        targets.ibot = softmax_center_teacher(teacher_masked, ibot_center.reshape({1, config.ibot_out_dim}), teacher_temp);
        update_center(ibot_center, mean_rows(teacher_masked).reshape({1, 1, config.ibot_out_dim}));
      }
    } else {
      targets.dino = sinkhorn_knopp(teacher_cls, teacher_temp).reshape(per_crop);
      if (ibot)
        targets.ibot = sinkhorn_knopp(teacher_masked, teacher_temp, static_cast<double>(teacher_masked.size(0)));
    }
    return targets;
  }

  // student_local [n_l·b, K], student_global [n_g·b, K]: the student head's CLS outputs;
  // student_global_backbone_cls [n_g·b, D]: the student backbone's normalised CLS tokens (KoLeo);
  // student_masked [M, K_ibot]: the head's outputs for the masked patch tokens; masks_weight [M];
  // num_global_images = n_g·b (the iBOT mean runs over every global crop, masked or not).
  DINOv2LossTerms<T> forward(const Tensor<T>& student_local, const Tensor<T>& student_global,
                             const Tensor<T>& student_global_backbone_cls, const Tensor<T>& student_masked,
                             const DINOv2Targets<T>& targets, const Tensor<T>& masks_weight,
                             int64_t num_global_images) const {
    const int64_t n_g = config.n_global_crops, n_l = config.n_local_crops;
    const double n_local_terms = static_cast<double>(std::max<int64_t>(n_l * n_g, 1));
    const double n_global_terms = static_cast<double>((n_g - 1) * n_g);
    const double loss_scales = 2;  // "since we process global crops together"
    HG_CHECK(targets.dino.defined() && targets.dino.dim() == 3 && targets.dino.size(0) == n_g, "DINOv2Loss",
             "expected teacher targets [", n_g, ", b, K] from teacher_targets(), got ",
             targets.dino.defined() ? to_string(targets.dino.shape()) : std::string("none"));
    const int64_t b = targets.dino.size(1);
    HG_CHECK(student_global.dim() == 2 && student_global.size(0) == n_g * b, "DINOv2Loss",
             "expected student global outputs [", n_g * b, ", K], got ", to_string(student_global.shape()));
    std::vector<Tensor<T>> teacher_chunks;
    for (int64_t c = 0; c < n_g; ++c) teacher_chunks.push_back(targets.dino.select(0, c));

    DINOv2LossTerms<T> terms;
    std::vector<Tensor<T>> parts;
    if (n_l > 0) {
      HG_CHECK(student_local.dim() == 2 && student_local.size(0) == n_l * b, "DINOv2Loss",
               "expected student local outputs [", n_l * b, ", K], got ",
               student_local.defined() ? to_string(student_local.shape()) : std::string("none"));
      std::vector<Tensor<T>> local_chunks;
      for (int64_t c = 0; c < n_l; ++c) local_chunks.push_back(student_local.narrow(0, c * b, b));
      terms.dino_local = div(dino_cross_entropy(local_chunks, teacher_chunks, config.student_temp),
                             scalar_tensor<T>(static_cast<T>(n_global_terms + n_local_terms)));
      parts.push_back(terms.dino_local * static_cast<T>(config.dino_loss_weight));
    }
    if (config.dino_loss_weight > 0) {
      terms.dino_global =
          div(dino_cross_entropy<T>({student_global}, {targets.dino.reshape({n_g * b, config.dino_out_dim})},
                                    config.student_temp) *
                  static_cast<T>(loss_scales),
              scalar_tensor<T>(static_cast<T>(n_global_terms + n_local_terms)));
      parts.push_back(terms.dino_global * static_cast<T>(config.dino_loss_weight));
      if (do_koleo()) {
        HG_CHECK(student_global_backbone_cls.dim() == 2 && student_global_backbone_cls.size(0) == n_g * b,
                 "DINOv2Loss", "expected student backbone CLS tokens [", n_g * b, ", D], got ",
                 student_global_backbone_cls.defined() ? to_string(student_global_backbone_cls.shape())
                                                       : std::string("none"));
        // "we don't apply koleo loss between cls tokens of a same image": one term per crop chunk.
        const int64_t chunk = (n_g * b + 1) / 2;
        Tensor<T> koleo_sum;
        for (int64_t start = 0; start < n_g * b; start += chunk) {
          Tensor<T> term = koleo_loss(student_global_backbone_cls.narrow(0, start, std::min(chunk, n_g * b - start)));
          koleo_sum = koleo_sum.defined() ? koleo_sum + term : term;
        }
        terms.koleo = koleo_sum * static_cast<T>(config.koleo_loss_weight);
        parts.push_back(terms.koleo);
      }
    }
    if (do_ibot()) {
      HG_CHECK(targets.ibot.defined() && student_masked.defined(), "DINOv2Loss",
               "expected iBOT student and teacher outputs for the masked tokens (ibot_loss_weight > 0)");
      terms.ibot = ibot_masked_loss(student_masked, targets.ibot, masks_weight, num_global_images, config.student_temp) *
                   static_cast<T>(loss_scales) * static_cast<T>(1.0 / static_cast<double>(n_g));
      parts.push_back(terms.ibot * static_cast<T>(config.ibot_loss_weight));
    }
    HG_CHECK(!parts.empty(), "DINOv2Loss", "expected at least one loss with a positive weight");
    terms.total = parts[0];
    for (size_t i = 1; i < parts.size(); ++i) terms.total = terms.total + parts[i];
    return terms;
  }

  DINOv2LossConfig config;
  Tensor<T> dino_center;  // [1, K]
  Tensor<T> ibot_center;  // [1, 1, K_ibot]

 private:
  static Tensor<T> mean_rows(const Tensor<T>& x) {
    return div(sum(x.detach(), {0}, true), scalar_tensor<T>(static_cast<T>(x.size(0))));
  }
  void update_center(Tensor<T>& center, const Tensor<T>& batch_center) const {
    const T m = static_cast<T>(config.center_momentum);
    center = center * m + batch_center * static_cast<T>(1 - config.center_momentum);
  }
};

// The outputs of DINOv2's forward_features.
template <class T>
struct DINOv2Features {
  Tensor<T> cls;       // x_norm_clstoken [B, D]
  Tensor<T> registers; // x_norm_regtokens [B, R, D]
  Tensor<T> patches;   // x_norm_patchtokens [B, N, D]
  Tensor<T> prenorm;   // x_prenorm [B, 1 + R + N, D]
};

// prepare_tokens_with_masks: patch tokens where masks [B, N] is true are replaced by mask_token
// before CLS, position embedding and registers. The ViT must have DINOv2's token layout (CLS +
// patches, registers inserted after pos_embed) and its mask_token (KeyStyle::Dinov2Hub).
template <class T>
Tensor<T> dinov2_prepare_tokens(const models::VisionTransformer<T>& vit, const Tensor<T>& images,
                                const Tensor<bool>& masks = Tensor<bool>()) {
  if (!masks.defined()) return vit.prepare_tokens(images);
  const models::ViTConfig& c = vit.config();
  HG_CHECK(vit.mask_token.defined() && !c.input_is_feature_grid &&
               (c.layout == models::TokenLayout::ClsPatches || c.layout == models::TokenLayout::ClsRegPatchesPosBeforeReg),
           "dinov2_prepare_tokens", "expected a DINOv2 ViT (mask_token, layout CLS+patches with registers after "
           "pos_embed), got config '", c.name, "'");
  HG_CHECK(images.dim() == 4 && images.size(1) == c.in_channels, "dinov2_prepare_tokens", "expected images [B, ",
           c.in_channels, ", H, W], got ", to_string(images.shape()));
  Tensor<T> x = vit.patch_embed.forward(images);
  const int64_t batch = x.size(0), dim = c.embed_dim, registers = c.num_register_tokens;
  HG_CHECK(masks.dim() == 2 && masks.size(0) == batch && masks.size(1) == x.size(1), "dinov2_prepare_tokens",
           "expected masks [", batch, ", ", x.size(1), "] (one per patch), got ", to_string(masks.shape()));
  x = where(masks.unsqueeze(-1), vit.mask_token, x);
  const int64_t in_h = images.size(2), in_w = images.size(3);
  const Tensor<T> pos = vit.position_embedding(in_h / c.patch_size, in_w / c.patch_size, in_h, in_w);
  Tensor<T> tokens = cat<T>({vit.cls_token.expand({batch, 1, dim}), x}, 1) + pos;
  if (registers == 0) return tokens;
  return cat<T>({tokens.narrow(1, 0, 1), vit.reg_token.expand({batch, registers, dim}),
                 tokens.narrow(1, 1, tokens.size(1) - 1)},
                1);
}

template <class T>
DINOv2Features<T> dinov2_forward_features(const models::VisionTransformer<T>& vit, const Tensor<T>& images,
                                          const Tensor<bool>& masks = Tensor<bool>()) {
  Tensor<T> x = dinov2_prepare_tokens(vit, images, masks);
  for (const auto& block : vit.blocks) x = block.forward(x);
  const Tensor<T> normed = vit.norm.forward(x);
  const int64_t registers = vit.config().num_register_tokens, tokens = normed.size(1);
  return {normed.select(1, 0), normed.narrow(1, 1, registers), normed.narrow(1, 1 + registers, tokens - 1 - registers),
          x};
}

// One network of SSLMetaArch (student or teacher): backbone, dino_head and, with
// ibot.separate_head, ibot_head. Keys: backbone.*, dino_head.*, ibot_head.*.
template <class T = float>
class DINOv2Networks : public nn::Module<T> {
 public:
  DINOv2Networks(const models::ViTConfig& backbone_config, int64_t dino_out_dim, std::optional<int64_t> ibot_out_dim,
                 uint64_t seed = 0, int64_t head_nlayers = 3, int64_t head_hidden_dim = 2048,
                 int64_t head_bottleneck_dim = 256)
      : backbone(backbone_config, seed) {
    Generator gen(seed + 1);
    dino_head = DINOv2Head<T>(backbone_config.embed_dim, dino_out_dim, gen, head_nlayers, head_hidden_dim,
                              head_bottleneck_dim);
    if (ibot_out_dim)
      ibot_head = DINOv2Head<T>(backbone_config.embed_dim, *ibot_out_dim, gen, head_nlayers, head_hidden_dim,
                                head_bottleneck_dim);
  }
  bool separate_ibot_head() const { return !ibot_head.mlp.empty(); }
  const DINOv2Head<T>& patch_head() const { return separate_ibot_head() ? ibot_head : dino_head; }

  void visit(nn::ModuleVisitor<T>& v) override {
    v.module("backbone", backbone);
    v.module("dino_head", dino_head);
    if (separate_ibot_head()) v.module("ibot_head", ibot_head);
  }

  models::VisionTransformer<T> backbone;
  DINOv2Head<T> dino_head, ibot_head;
};

// SSLMetaArch.forward_backward without the backward: teacher targets from the unmasked global
// crops (CLS chunks swapped so crop A meets crop B), the student on masked global crops and on
// local crops, the heads, and the loss terms. global_crops [2b, C, H, W] (crop-major, as the
// collate stacks them), local_crops [n_l·b, C, h, w] (undefined when n_l = 0). The student's
// batch-diagonal head call of the reference is per row, so running the head per input is equal.
template <class T>
DINOv2LossTerms<T> dinov2_forward_loss(const DINOv2Networks<T>& student, const DINOv2Networks<T>& teacher,
                                       DINOv2Loss<T>& loss, const Tensor<T>& global_crops,
                                       const Tensor<T>& local_crops, const MaskBatch& masks, double teacher_temp) {
  const int64_t n_g = loss.config.n_global_crops, images = global_crops.size(0);
  HG_CHECK(images % n_g == 0 && masks.num_images == images, "dinov2_forward_loss", "expected ", n_g,
           "·b global crops with one mask each, got ", images, " crops and ", masks.num_images, " masks");
  const bool ibot = loss.do_ibot() && masks.n_masked_patches() > 0;
  const Device device = global_crops.device();  // the masks are drawn on the host, used where the crops are
  const Tensor<int64_t> mask_indices = masks.indices_tensor().to(device);
  DINOv2Targets<T> targets;
  {
    NoGradGuard no_grad;
    const DINOv2Features<T> t = dinov2_forward_features(teacher.backbone, global_crops);
    const int64_t b = images / n_g;
    const Tensor<T> swapped = cat<T>({t.cls.narrow(0, b, b), t.cls.narrow(0, 0, b)}, 0);
    Tensor<T> teacher_masked;
    if (ibot)
      teacher_masked =
          teacher.patch_head().forward(index_select(t.patches.reshape({-1, t.patches.size(2)}), 0, mask_indices));
    targets = loss.teacher_targets(teacher.dino_head.forward(swapped), teacher_masked, teacher_temp);
  }
  const DINOv2Features<T> global = dinov2_forward_features(student.backbone, global_crops, masks.masks_tensor().to(device));
  Tensor<T> local_after_head;
  if (loss.config.n_local_crops > 0)
    local_after_head = student.dino_head.forward(dinov2_forward_features(student.backbone, local_crops).cls);
  const Tensor<T> global_after_head = student.dino_head.forward(global.cls);
  Tensor<T> masked_after_head;
  if (ibot)
    masked_after_head = student.patch_head().forward(
        index_select(global.patches.reshape({-1, global.patches.size(2)}), 0, mask_indices));
  if (!ibot && loss.do_ibot()) {
    // No masked token in the batch: the iBOT term is an empty sum.
    DINOv2LossConfig without = loss.config;
    without.ibot_loss_weight = 0;
    DINOv2Loss<T> no_ibot(without);
    DINOv2LossTerms<T> terms =
        no_ibot.forward(local_after_head, global_after_head, global.cls, Tensor<T>(), targets, Tensor<T>(), images);
    terms.ibot = zeros<T>({}, device);
    return terms;
  }
  return loss.forward(local_after_head, global_after_head, global.cls, masked_after_head, targets,
                      masks.template weight_tensor<T>().to(device), images);
}

// One parameter group of get_params_groups_with_decay after fuse_params_groups.
template <class T>
struct DINOv2ParamGroup {
  double lr_multiplier = 1, wd_multiplier = 1;
  bool is_last_layer = false;
  std::vector<std::string> names;  // relative to the submodule, as the reference logs them
  std::vector<Tensor<T>> params;
};

// DINOv2's rules (utils/param_groups.py) for one submodule's parameters (names without the
// "backbone."/"dino_head." prefix; num_blocks = 0 for a head):
//   lr: layerwise_decay^(num_blocks + 1 - layer_id), layer_id 0 for pos_embed, patch_embed,
//       mask_token, cls_token, register_tokens; i + 1 for blocks.i.*; num_blocks + 1 otherwise;
//       times patch_embed_lr_mult for patch_embed.*;
//   wd: 0 for names ending in .bias or containing "norm" or "gamma" (tokens and pos_embed decay);
//   is_last_layer for names containing "last_layer" (its lr follows the frozen-first schedule).
// Groups with equal (lr, wd, last-layer) are fused in first-seen order.
template <class T>
std::vector<DINOv2ParamGroup<T>> dinov2_param_groups(nn::Module<T>& submodule, int64_t num_blocks,
                                                     double layerwise_decay = 0.9, double patch_embed_lr_mult = 0.2) {
  std::vector<DINOv2ParamGroup<T>> groups;
  auto contains = [](const std::string& s, const char* part) { return s.find(part) != std::string::npos; };
  for (auto& [name, param] : submodule.named_parameters()) {
    int64_t layer_id = num_blocks + 1;
    if (num_blocks > 0) {
      if (contains(name, "pos_embed") || contains(name, "patch_embed") || contains(name, "mask_token") ||
          contains(name, "cls_token") || contains(name, "register_tokens")) {
        layer_id = 0;
      } else if (contains(name, "blocks.") && !contains(name, "residual.")) {
        const size_t at = name.find("blocks.") + 7;
        layer_id = std::stoll(name.substr(at, name.find('.', at) - at)) + 1;
      }
    }
    double lr_multiplier = std::pow(layerwise_decay, static_cast<double>(num_blocks + 1 - layer_id));
    const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const double wd_multiplier = bias || contains(name, "norm") || contains(name, "gamma") ? 0.0 : 1.0;
    if (contains(name, "patch_embed")) lr_multiplier *= patch_embed_lr_mult;
    const bool last = contains(name, "last_layer");
    auto it = std::find_if(groups.begin(), groups.end(), [&](const DINOv2ParamGroup<T>& g) {
      return g.lr_multiplier == lr_multiplier && g.wd_multiplier == wd_multiplier && g.is_last_layer == last;
    });
    if (it == groups.end()) {
      groups.push_back(DINOv2ParamGroup<T>{lr_multiplier, wd_multiplier, last, {}, {}});
      it = groups.end() - 1;
    }
    it->names.push_back(name);
    it->params.push_back(param);
  }
  return groups;
}

}  // namespace histograd::ssl
