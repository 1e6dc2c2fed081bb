// A whole DINO training step on the GPU (float32) against the same step on the CPU in float64,
// from the same weights: a small ViT student and teacher with DINOHead (weight-normalised last
// layer, K = 256), 2 global crops at 32 px + 2 local crops at 16 px, the multi-crop wrapper (one
// backbone pass per resolution), DINOLoss (centring, temperatures, the centre update),
// backward, clip_gradients(3.0), AdamW and the EMA teacher, all on device tensors with the
// models moved by Module::to. Then the same step under AutocastGuard on the GPU (bf16 kernels)
// against the CPU's emulation of the same roundings (float32).
// Bounds: fp32 vs float64, 1e-4 relative per tensor (as tests/cuda/vit_step_test.cpp, whose
// reasoning applies); the AdamW update is checked against the CPU formula on the GPU's own
// gradients (Adam's first step amplifies fp32 noise in near-zero gradients). bf16: the GPU and
// the CPU emulation round the same values but sum in different orders, so an output can land
// one bf16 step (2^-8 relative) apart and the difference travels: 2e-2 on the loss, 5e-2 on
// gradients. Skipped without a GPU.
#include <map>
#include <string>

#include "cuda/cuda_test_util.hpp"
#include "histograd/histograd.hpp"
#include "histograd/ssl/dino.hpp"

namespace hg = histograd;
using hg::Tensor;
using hg::test::relative_error;

namespace {

hg::models::ViTConfig tiny_vit() {
  hg::models::ViTConfig c = hg::models::preset("dino_vits16");
  c.name = "dino_step_test";
  c.image_size = 32, c.patch_size = 8, c.embed_dim = 64, c.depth = 2, c.num_heads = 2, c.mlp_hidden = 128;
  c.drop_path_rate = 0;  // the float and double draws would round differently
  return c;
}

hg::ssl::DINOHeadConfig tiny_head() {
  hg::ssl::DINOHeadConfig h;
  h.out_dim = 256, h.hidden_dim = 96, h.bottleneck_dim = 32;
  return h;
}

template <class From, class To>
void copy_weights(hg::nn::Module<From>& from, hg::nn::Module<To>& to) {
  hg::nn::StateDict<To> state;
  for (auto& [name, tensor] : from.state_dict()) state[name] = tensor.template to<To>();
  to.load_state_dict(state);
}

template <class T>
std::vector<Tensor<T>> crops_as(const std::vector<Tensor<double>>& crops, bool on_gpu) {
  std::vector<Tensor<T>> out;
  for (const auto& c : crops) out.push_back(on_gpu ? c.template to<T>().cuda() : c.template to<T>());
  return out;
}

// One step of main_dino.train_one_epoch (epoch 1: the last layer trains). Returns the loss;
// gradients stay on the student's parameters.
template <class T>
double dino_step(hg::ssl::DINO<T>& dino, hg::optim::AdamW<T>& optimizer, const std::vector<Tensor<T>>& crops,
                 bool autocast, std::vector<double>& clip_norms) {
  Tensor<T> loss;
  {
    hg::AutocastGuard guard(autocast);
    Tensor<T> teacher_output;
    {
      hg::NoGradGuard no_grad;
      teacher_output = dino.teacher.forward(std::vector<Tensor<T>>{crops[0], crops[1]});
    }
    loss = dino.loss.forward(dino.student.forward(crops), teacher_output, 1);
  }
  optimizer.zero_grad();
  loss.backward();
  clip_norms = hg::optim::clip_gradients(dino.student.named_parameters(), 3.0);
  return double(loss.item());
}

hg::ssl::DINOLossConfig loss_config() {
  hg::ssl::DINOLossConfig l;
  l.ncrops = 4;
  return l;
}

void compare_step(bool autocast, uint64_t seed) {
  INFO(std::string(autocast ? "bf16 autocast" : "fp32"));
  // The GPU side is float32; the reference is float64 (fp32 run) or the float32 CPU emulation.
  hg::ssl::DINO<float> gpu = hg::ssl::build_dino<float>(tiny_vit(), tiny_head(), loss_config(), seed);
  hg::ssl::DINO<double> cpu64 = hg::ssl::build_dino<double>(tiny_vit(), tiny_head(), loss_config(), seed);
  hg::ssl::DINO<float> cpu32 = hg::ssl::build_dino<float>(tiny_vit(), tiny_head(), loss_config(), seed);
  copy_weights(gpu.student, cpu64.student);
  copy_weights(gpu.teacher, cpu64.teacher);
  const auto first_teacher = gpu.teacher.state_dict();
  std::map<std::string, std::vector<float>> teacher_before;
  for (auto& [name, t] : first_teacher) teacher_before[name] = t.to_vector();
  gpu.student.cuda();
  gpu.teacher.cuda();
  gpu.loss.cuda();

  std::vector<Tensor<double>> crops;
  for (int i = 0; i < 2; ++i) crops.push_back(random_input({3, 3, 32, 32}, seed + 10 + uint64_t(i)));
  for (int i = 0; i < 2; ++i) crops.push_back(random_input({3, 3, 16, 16}, seed + 20 + uint64_t(i)));

  const double lr = 1e-3, wd = 0.04;
  auto groups = [&](auto& dino) {
    return hg::optim::make_param_groups(dino.student, wd, lr, hg::optim::DecayRule::dino_reference);
  };
  hg::optim::AdamW<float> gpu_opt(groups(gpu));
  std::vector<double> gpu_norms, ref_norms;
  const double gpu_loss = dino_step(gpu, gpu_opt, crops_as<float>(crops, true), autocast, gpu_norms);

  std::map<std::string, std::vector<double>> ref_grads;
  double ref_loss = 0;
  std::vector<double> ref_center;
  if (autocast) {
    hg::optim::AdamW<float> opt(groups(cpu32));
    ref_loss = dino_step(cpu32, opt, crops_as<float>(crops, false), true, ref_norms);
    for (auto& [name, p] : cpu32.student.named_parameters()) {
      if (!p.requires_grad()) continue;
      const std::vector<float> g = p.grad().to_vector();
      ref_grads[name].assign(g.begin(), g.end());
    }
    const std::vector<float> c = cpu32.loss.center.to_vector();
    ref_center.assign(c.begin(), c.end());
  } else {
    hg::optim::AdamW<double> opt(groups(cpu64));
    ref_loss = dino_step(cpu64, opt, crops_as<double>(crops, false), false, ref_norms);
    for (auto& [name, p] : cpu64.student.named_parameters())
      if (p.requires_grad()) ref_grads[name] = p.grad().to_vector();
    ref_center = cpu64.loss.center.to_vector();
  }
  const double loss_bound = autocast ? 2e-2 : 1e-4, grad_bound = autocast ? 5e-2 : 1e-4;
  CHECK(std::abs(gpu_loss - ref_loss) <= loss_bound * std::abs(ref_loss));
  CHECK(relative_error(ref_center, gpu.loss.center.cpu().to_vector()) <= loss_bound);
  CHECK(relative_error(ref_norms, gpu_norms) <= grad_bound);

  std::map<std::string, std::vector<float>> before, gradients;
  for (auto& [name, p] : gpu.student.named_parameters()) {
    CAPTURE(name);
    if (!p.requires_grad()) continue;  // the last layer's frozen weight_g (norm_last_layer)
    REQUIRE(p.grad().defined());
    CHECK(p.grad().device().is_cuda());
    CHECK(relative_error(ref_grads.at(name), p.grad().cpu().to_vector()) <= grad_bound);
    before[name] = p.detach().cpu().to_vector();
    gradients[name] = p.grad().cpu().to_vector();
  }
  gpu_opt.step();
  const double m = 0.996;
  hg::optim::ema_update(gpu.teacher, gpu.student, m);
  for (auto& [name, p] : gpu.student.named_parameters()) {
    CAPTURE(name);
    if (!p.requires_grad()) continue;
    const std::vector<float>& b = before[name];
    const std::vector<float>& g = gradients[name];
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const bool decays = !(p.dim() == 1 || is_bias);
    std::vector<double> expected(b.size());
    for (size_t k = 0; k < b.size(); ++k)
      expected[k] = b[k] * (1 - lr * (decays ? wd : 0.0)) - lr * g[k] / (std::abs(double(g[k])) + 1e-8);
    CHECK(relative_error(expected, p.detach().cpu().to_vector()) <= 1e-5);
  }
  auto updated = gpu.student.state_dict();
  for (auto& [name, t] : gpu.teacher.named_parameters()) {
    CAPTURE(name);
    const std::vector<float> student_now = updated.at(name).cpu().to_vector();
    const std::vector<float>& t0 = teacher_before.at(name);
    std::vector<double> expected(t0.size());
    for (size_t k = 0; k < t0.size(); ++k) expected[k] = m * t0[k] + (1 - m) * student_now[k];
    CHECK(relative_error(expected, t.detach().cpu().to_vector()) <= 1e-6);
  }
}

}  // namespace

TEST_CASE("cuda DINO step (fp32) matches the float64 CPU step") {
  HG_REQUIRE_GPU();
  compare_step(false, 3);
}

TEST_CASE("cuda DINO step under bf16 autocast matches the CPU emulation of its roundings") {
  HG_REQUIRE_GPU();
  compare_step(true, 4);
}
