// DINO (Caron et al. 2021, facebookresearch/dino; MODELS.md §1.2-1.4): the projection head with
// its weight-normalised prototype layer (vision_transformer.py DINOHead), the multi-crop
// wrapper that runs the backbone once per resolution (utils.py MultiCropWrapper), the
// self-distillation loss with teacher centring and temperature warm-up (main_dino.py
// DINOLoss) and a student/teacher bundle. DINO's optimiser pieces (get_params_groups as
// optim::make_param_groups(..., DecayRule::dino_reference), cosine schedules, clip_gradients,
// cancel_gradients_last_layer, the EMA update) are in optim/.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/factories.hpp"
#include "../models/vit.hpp"
#include "../nn/layers.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/indexing.hpp"
#include "../ops/loss.hpp"
#include "../ops/norm.hpp"
#include "../ops/reduce.hpp"
#include "../ops/softmax.hpp"
#include "../optim/schedule.hpp"

namespace histograd::ssl {

// The head's shape (DINOHead's arguments; defaults are the reference's).
struct DINOHeadConfig {
  int64_t out_dim = 65536;       // K, the number of prototypes
  bool use_bn = false;           // BatchNorm1d between the MLP layers: not supported (throws)
  bool norm_last_layer = true;   // freeze weight_g at 1, so every prototype has unit norm
  int64_t nlayers = 3, hidden_dim = 2048, bottleneck_dim = 256;
};

// nn.utils.weight_norm(nn.Linear(in, out, bias=False)): the weight is re-parametrised as
// W[k, :] = g[k] · v[k, :] / ||v[k, :]||₂ (norm over the input dim, one per output row), so the
// optimiser moves direction (v) and length (g) apart. Keys weight_g [out, 1], weight_v [out, in].
template <class T>
class WeightNormLinear : public nn::Module<T> {
 public:
  WeightNormLinear() = default;
  // v takes nn.Linear's default init, U(-1/sqrt(in), 1/sqrt(in)); g starts at 1 (DINOHead fills
  // it with 1 after weight_norm has set it to ||v||).
  WeightNormLinear(int64_t in_features, int64_t out_features, Generator& gen)
      : weight_g(nn::constant_parameter<T>({out_features, 1}, 1.0)) {
    const T bound = T(1) / std::sqrt(static_cast<T>(in_features));
    if (nn::SkipInit::active()) {
      weight_v = empty<T>({out_features, in_features});
    } else {
      NoGradGuard no_grad;
      weight_v = (rand<T>({out_features, in_features}, gen) * T(2) - T(1)) * bound;
    }
    weight_v.requires_grad_(true);
  }
  // The effective [out, in] weight, differentiable in v (and g when it requires grad):
  // torch's _weight_norm, v * (g / ||v||), as one fused op.
  Tensor<T> weight() const { return weight_norm(weight_v, weight_g); }
  Tensor<T> forward(const Tensor<T>& x) const { return linear(x, weight()); }
  void visit(nn::ModuleVisitor<T>& v) override {
    v.parameter("weight_g", weight_g);
    v.parameter("weight_v", weight_v);
  }

  Tensor<T> weight_g, weight_v;
};

// x -> mlp (Linear, GELU, ..., Linear to the bottleneck) -> L2-normalise -> last_layer (K
// prototypes). Keys: mlp.0/mlp.2/.../mlp.{2(n-1)} for nlayers >= 2 ("mlp" alone for one
// layer), last_layer.weight_g, last_layer.weight_v.
template <class T>
class DINOHead : public nn::Module<T> {
 public:
  DINOHead() = default;
  DINOHead(int64_t in_dim, const DINOHeadConfig& config, Generator& gen) : config_(config) {
    const char* op = "DINOHead";
    HG_CHECK(!config.use_bn, op, "use_bn=true (BatchNorm1d in the head) is not supported; expected use_bn=false");
    HG_CHECK(in_dim > 0 && config.out_dim > 0 && config.hidden_dim > 0 && config.bottleneck_dim > 0, op,
             "expected positive in_dim, out_dim, hidden_dim and bottleneck_dim, got ", in_dim, ", ", config.out_dim,
             ", ", config.hidden_dim, ", ", config.bottleneck_dim);
    const int64_t layers = std::max<int64_t>(config.nlayers, 1);  // as the reference: nlayers < 1 means 1
    for (int64_t i = 0; i < layers; ++i) {
      const int64_t in = i == 0 ? in_dim : config.hidden_dim;
      const int64_t out = i == layers - 1 ? config.bottleneck_dim : config.hidden_dim;
      mlp.push_back(nn::Linear<T>(in, out, true, gen, 0.02));
    }
    last_layer = WeightNormLinear<T>(config.bottleneck_dim, config.out_dim, gen);
    if (config.norm_last_layer) last_layer.weight_g.requires_grad_(false);
  }

  // x [N, in_dim] -> logits [N, out_dim].
  Tensor<T> forward(const Tensor<T>& x) const { return last_layer.forward(normalize(bottleneck(x), 2.0, -1, 1e-12)); }
  // The MLP's output before the L2 normalisation, [N, bottleneck_dim].
  Tensor<T> bottleneck(const Tensor<T>& x) const {
    HG_CHECK(x.dim() >= 1 && !mlp.empty() && x.size(-1) == mlp[0].in_features(), "DINOHead", "expected input [N, ",
             mlp.empty() ? 0 : mlp[0].in_features(), "], got ", to_string(x.shape()));
    Tensor<T> h = x;
    for (size_t i = 0; i < mlp.size(); ++i) {
      h = mlp[i].forward(h);
      if (i + 1 < mlp.size()) h = gelu(h);
    }
    return h;
  }

  void visit(nn::ModuleVisitor<T>& v) override {
    if (mlp.size() == 1) v.module("mlp", mlp[0]);
    else
      for (size_t i = 0; i < mlp.size(); ++i) v.module("mlp." + std::to_string(2 * i), mlp[i]);
    v.module("last_layer", last_layer);
  }
  const DINOHeadConfig& config() const { return config_; }

  std::vector<nn::Linear<T>> mlp;  // Sequential indices 0, 2, 4, ...: the GELUs sit between
  WeightNormLinear<T> last_layer;

 private:
  DINOHeadConfig config_;
};

// backbone + head over a list of crops. Consecutive crops of the same width (the reference
// compares shape[-1] only) are concatenated and go through the backbone in one batch; the
// pooled outputs are concatenated in crop order and the head runs once on all of them, so the
// rows are crop-major: [crop 0 (all B), crop 1 (all B), ...]. Keys backbone.*, head.*.
template <class T>
class MultiCropWrapper : public nn::Module<T> {
 public:
  MultiCropWrapper(models::VisionTransformer<T> backbone, DINOHead<T> head)
      : backbone(std::move(backbone)), head(std::move(head)) {}

  Tensor<T> forward(const std::vector<Tensor<T>>& crops) const { return head.forward(backbone_features(crops)); }
  Tensor<T> forward(const Tensor<T>& images) const { return forward(std::vector<Tensor<T>>{images}); }

  // The backbone's pooled output for every crop, batched by resolution: [sum of batches, D].
  Tensor<T> backbone_features(const std::vector<Tensor<T>>& crops) const {
    HG_CHECK(!crops.empty(), "MultiCropWrapper", "expected at least one crop, got an empty list");
    std::vector<Tensor<T>> outputs;
    size_t start = 0;
    while (start < crops.size()) {
      HG_CHECK(crops[start].dim() >= 1, "MultiCropWrapper", "crop ", start, ": expected images [B, C, H, W], got ",
               to_string(crops[start].shape()));
      size_t end = start + 1;
      while (end < crops.size() && crops[end].dim() >= 1 && crops[end].size(-1) == crops[start].size(-1)) ++end;
      std::vector<Tensor<T>> group(crops.begin() + static_cast<std::ptrdiff_t>(start),
                                   crops.begin() + static_cast<std::ptrdiff_t>(end));
      outputs.push_back(backbone.forward(group.size() == 1 ? group[0] : cat<T>(group, 0)));
      start = end;
    }
    return outputs.size() == 1 ? outputs[0] : cat<T>(outputs, 0);
  }

  void visit(nn::ModuleVisitor<T>& v) override {
    v.module("backbone", backbone);
    v.module("head", head);
  }

  models::VisionTransformer<T> backbone;
  DINOHead<T> head;
};

// DINOLoss's settings beyond out_dim (defaults: main_dino.py's arguments; the paper's ViT
// recipe uses teacher_temp 0.07 with 30 warm-up epochs).
struct DINOLossConfig {
  int64_t ncrops = 10;  // 2 global + local_crops_number
  double warmup_teacher_temp = 0.04, teacher_temp = 0.04;
  int64_t warmup_teacher_temp_epochs = 0, nepochs = 100;
  double student_temp = 0.1, center_momentum = 0.9;
};

// H(teacher, student) over every (global teacher view iq, student view v != iq) pair, averaged;
// the teacher is centred by a running mean of its outputs and sharpened by a temperature that
// warms up linearly per epoch. The centre is a buffer ("center" [1, K]) saved in checkpoints.
template <class T>
class DINOLoss : public nn::Module<T> {
 public:
  DINOLoss() = default;
  DINOLoss(int64_t out_dim, const DINOLossConfig& config) : config_(config) {
    const char* op = "DINOLoss";
    HG_CHECK(out_dim > 0 && config.ncrops >= 2, op, "expected out_dim > 0 and ncrops >= 2 (two global views), got ",
             out_dim, " and ", config.ncrops);
    HG_CHECK(config.nepochs >= 1 && config.warmup_teacher_temp_epochs >= 0 &&
                 config.warmup_teacher_temp_epochs <= config.nepochs,
             op, "expected 0 <= warmup_teacher_temp_epochs <= nepochs and nepochs >= 1, got ",
             config.warmup_teacher_temp_epochs, " and ", config.nepochs);
    HG_CHECK(config.student_temp > 0 && config.teacher_temp > 0 && config.warmup_teacher_temp > 0, op,
             "expected positive temperatures, got student ", config.student_temp, ", teacher ", config.teacher_temp,
             ", warm-up ", config.warmup_teacher_temp);
    center = zeros<T>({1, out_dim});
    teacher_temp_schedule = optim::teacher_temperature_schedule(config.warmup_teacher_temp, config.teacher_temp,
                                                               config.warmup_teacher_temp_epochs, config.nepochs);
  }
  // The reference's positional constructor.
  DINOLoss(int64_t out_dim, int64_t ncrops, double warmup_teacher_temp, double teacher_temp,
           int64_t warmup_teacher_temp_epochs, int64_t nepochs, double student_temp = 0.1, double center_momentum = 0.9)
      : DINOLoss(out_dim, DINOLossConfig{ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs,
                                         nepochs, student_temp, center_momentum}) {}

  // student_output [ncrops·B, K] and teacher_output [2·B, K], crop-major (MultiCropWrapper's
  // order). Returns the scalar loss (differentiable in the student) and then moves the centre.
  //
  // H is linear in its target, so the pairs sharing a student view fold into one target:
  // student view v meets t_v = Σ_{iq∈{0,1}, iq≠v} q_iq (one teacher view for v < 2, both for the
  // locals). One fused soft cross-entropy over all ncrops·B rows, mean over rows, then times
  // ncrops / (2·ncrops − 2), equals the reference's average of per-pair batch means.
  Tensor<T> forward(const Tensor<T>& student_output, const Tensor<T>& teacher_output, int64_t epoch) {
    Tensor<T> loss = compute(student_output, teacher_output, epoch);
    update_center(teacher_output);
    return loss;
  }

  // The loss alone, leaving the centre as it is.
  Tensor<T> compute(const Tensor<T>& student_output, const Tensor<T>& teacher_output, int64_t epoch) const {
    const char* op = "DINOLoss";
    const int64_t ncrops = config_.ncrops, classes = center.size(1);
    HG_CHECK(teacher_output.dim() == 2 && teacher_output.size(1) == classes && teacher_output.size(0) % 2 == 0 &&
                 teacher_output.size(0) > 0,
             op, "expected teacher_output [2·B, ", classes, "] (the two global views), got ",
             to_string(teacher_output.shape()));
    const int64_t batch = teacher_output.size(0) / 2;
    HG_CHECK(student_output.dim() == 2 && student_output.size(0) == ncrops * batch && student_output.size(1) == classes,
             op, "expected student_output [", ncrops, "·", batch, ", ", classes, "] (ncrops · batch), got ",
             to_string(student_output.shape()));
    const double temperature = teacher_temperature(epoch);
    Tensor<T> targets;
    {
      NoGradGuard no_grad;  // the teacher's distribution is a constant target (.detach())
      Tensor<T> teacher_probs = softmax((teacher_output.detach() - center) / T(temperature), -1);
      Tensor<T> first = teacher_probs.narrow(0, 0, batch), second = teacher_probs.narrow(0, batch, batch);
      std::vector<Tensor<T>> per_view{second, first};
      if (ncrops > 2) {
        Tensor<T> both = first + second;
        for (int64_t v = 2; v < ncrops; ++v) per_view.push_back(both);
      }
      targets = cat<T>(per_view, 0);
    }
    Tensor<T> student_logits = student_output / T(config_.student_temp);
    Tensor<T> mean_over_rows = cross_entropy(student_logits, targets, 0.0, Reduction::Mean);
    return mean_over_rows * T(double(ncrops) / double(2 * ncrops - 2));
  }

  // center = m · center + (1 − m) · mean over rows of teacher_output (one process: the
  // reference's all-reduce over GPUs is the identity).
  void update_center(const Tensor<T>& teacher_output) {
    NoGradGuard no_grad;
    Tensor<T> batch_center = sum(teacher_output.detach(), {0}, true) / T(teacher_output.size(0));
    center.copy_(center * T(config_.center_momentum) + batch_center * T(1 - config_.center_momentum));
  }

  double teacher_temperature(int64_t epoch) const {
    HG_CHECK(epoch >= 0 && epoch < static_cast<int64_t>(teacher_temp_schedule.size()), "DINOLoss", "expected epoch in [0, ",
             teacher_temp_schedule.size(), ") (nepochs), got ", epoch);
    return teacher_temp_schedule[static_cast<size_t>(epoch)];
  }
  const DINOLossConfig& config() const { return config_; }

  void visit(nn::ModuleVisitor<T>& v) override { v.buffer("center", center); }

  Tensor<T> center;                            // [1, K]
  std::vector<double> teacher_temp_schedule;  // one value per epoch

 private:
  DINOLossConfig config_;
};

// A student, its teacher and the loss, built as main_dino.py does: the teacher has the same
// backbone without stochastic depth and a head with norm_last_layer=true, starts as a copy of
// the student, and never requires grad (it moves by EMA only).
template <class T>
struct DINO {
  MultiCropWrapper<T> student, teacher;
  DINOLoss<T> loss;
};

template <class T = float>
DINO<T> build_dino(const models::ViTConfig& backbone, const DINOHeadConfig& head, const DINOLossConfig& loss = {},
                   uint64_t seed = 0) {
  HG_CHECK(backbone.pooling == models::Pooling::Cls, "build_dino", "expected a backbone pooling the CLS token (",
           "Pooling::Cls, as DINO's ViT returns), got config '", backbone.name, "' with another pooling");
  Generator gen(seed ^ 0xD1A0D1A0ULL);
  models::ViTConfig teacher_backbone = backbone;
  teacher_backbone.drop_path_rate = 0;
  DINOHeadConfig teacher_head = head;
  teacher_head.norm_last_layer = true;
  DINO<T> dino{MultiCropWrapper<T>(models::VisionTransformer<T>(backbone, seed), DINOHead<T>(backbone.embed_dim, head, gen)),
               MultiCropWrapper<T>(models::VisionTransformer<T>(teacher_backbone, seed),
                                   DINOHead<T>(backbone.embed_dim, teacher_head, gen)),
               DINOLoss<T>(head.out_dim, loss)};
  dino.teacher.load_state_dict(dino.student.state_dict());
  dino.teacher.requires_grad_(false);
  return dino;
}

}  // namespace histograd::ssl
