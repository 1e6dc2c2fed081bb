// Training state on the GPU against the same calls on the CPU: optim::AdamW and optim::SGD
// stepping device parameters (cuda/optim.cu, one launch for all tensors) against the CPU loop
// fed the same gradients, over tensors of odd sizes (0, 1, 3, several 64K chunks), two groups
// with different lr/wd multipliers, a parameter without a gradient on the first step (so step
// counts differ) and 250 tensors (more than one launch's table); the optimizer state exported
// from the device and loaded into a CPU optimizer; clip_gradients / clip_grad_norm on device
// gradients; ema_update on device modules; Module::to(Device) on a ViT, with a tied weight.
// Bounds: float32 1e-6 relative (the GPU may contract the update into FMAs, the CPU does not),
// float64 1e-13; norms are double sums in another order, 1e-12 (float gradients squared exactly
// in double). Skipped without a GPU.
#include <string>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "histograd/histograd.hpp"

namespace hg = histograd;
using hg::Tensor;
using hg::test::relative_error;

namespace {

template <class T> double bound() { return std::is_same_v<T, float> ? 1e-6 : 1e-13; }

// Parameter tensors of the sizes above, with random values; `count` of them.
template <class T>
std::vector<Tensor<T>> make_params(int count, uint64_t seed) {
  std::vector<Tensor<T>> out;
  for (int i = 0; i < count; ++i) {
    const int64_t n = i % 7 == 0 ? 0 : i % 7 == 1 ? 1 : i % 7 == 2 ? 3 : i % 7 == 3 ? 65536 * 3 + 17 : 97 * (i + 1);
    Tensor<T> p = random_input({n}, seed + uint64_t(i)).template to<T>();
    p.requires_grad_(true);
    out.push_back(p);
  }
  return out;
}

template <class T>
std::vector<Tensor<T>> to_device(const std::vector<Tensor<T>>& params) {
  std::vector<Tensor<T>> out;
  for (const auto& p : params) {
    Tensor<T> d = p.detach().cuda();
    d.requires_grad_(true);
    out.push_back(d);
  }
  return out;
}

// Two groups (every other parameter), as DINO's regularized / not_regularized split.
template <class T>
std::vector<hg::optim::ParamGroup<T>> groups_of(const std::vector<Tensor<T>>& params) {
  hg::optim::ParamGroup<T> a, b;
  a.lr = b.lr = 1e-2;
  a.weight_decay = 0.04;
  b.lr_multiplier = 0.5;
  for (size_t i = 0; i < params.size(); ++i) (i % 2 ? b : a).params.push_back(params[i]);
  return {a, b};
}

// Gives parameter i a fresh gradient (the same on both sides); on step 0 parameter 5 gets none.
template <class T>
void set_gradients(std::vector<Tensor<T>>& cpu, std::vector<Tensor<T>>& gpu, int step) {
  for (size_t i = 0; i < cpu.size(); ++i) {
    cpu[i].zero_grad();
    gpu[i].zero_grad();
    if (step == 0 && i == 5) continue;
    const Tensor<T> g = random_input(cpu[i].shape(), 1000 + 31 * uint64_t(step) + i).template to<T>();
    cpu[i].set_grad(g);
    gpu[i].set_grad(g.cuda());
  }
}

template <class T>
void check_params(const std::vector<Tensor<T>>& cpu, const std::vector<Tensor<T>>& gpu) {
  for (size_t i = 0; i < cpu.size(); ++i) {
    CAPTURE(i);
    CHECK(gpu[i].device().is_cuda());
    const std::vector<T> expected = cpu[i].detach().to_vector();
    CHECK(relative_error(std::vector<double>(expected.begin(), expected.end()), gpu[i].detach().cpu().to_vector()) <=
          bound<T>());
  }
}

template <class T, class Make>
void check_optimizer(int count, Make&& make) {
  INFO(hg::dtype_name<T>(), ", ", count, " tensors");
  std::vector<Tensor<T>> cpu = make_params<T>(count, 7), gpu = to_device(cpu);
  auto cpu_opt = make(groups_of(cpu));
  auto gpu_opt = make(groups_of(gpu));
  for (int step = 0; step < 3; ++step) {
    set_gradients(cpu, gpu, step);
    cpu_opt.step();
    gpu_opt.step();
    check_params(cpu, gpu);
  }
  // The device state, exported and loaded into a fresh CPU optimizer, continues like the CPU one.
  std::vector<Tensor<T>> resumed = make_params<T>(count, 7);
  for (size_t i = 0; i < resumed.size(); ++i) {
    hg::NoGradGuard no_grad;
    resumed[i].copy_(gpu[i].detach());
  }
  auto resumed_opt = make(groups_of(resumed));
  resumed_opt.load_state(gpu_opt.state());
  std::vector<Tensor<T>> unused = to_device(cpu);
  set_gradients(cpu, unused, 3);
  for (size_t i = 0; i < resumed.size(); ++i) resumed[i].set_grad(cpu[i].grad());
  cpu_opt.step();
  resumed_opt.step();
  for (size_t i = 0; i < cpu.size(); ++i) {
    CAPTURE(i);
    const std::vector<T> expected = cpu[i].detach().to_vector();
    CHECK(relative_error(std::vector<double>(expected.begin(), expected.end()), resumed[i].detach().to_vector()) <=
          10 * bound<T>());
  }
}

}  // namespace

TEST_CASE("cuda optim: AdamW on device parameters steps like the CPU AdamW") {
  HG_REQUIRE_GPU();
  auto adamw_f = [](auto groups) { return hg::optim::AdamW<float>(std::move(groups), 0.9, 0.999, 1e-8); };
  auto adamw_d = [](auto groups) { return hg::optim::AdamW<double>(std::move(groups), 0.9, 0.999, 1e-8); };
  check_optimizer<float>(12, adamw_f);
  check_optimizer<double>(12, adamw_d);
  check_optimizer<float>(250, adamw_f);  // two launches
}

TEST_CASE("cuda optim: SGD (momentum, Nesterov, none) on device parameters steps like the CPU SGD") {
  HG_REQUIRE_GPU();
  check_optimizer<float>(12, [](auto groups) { return hg::optim::SGD<float>(std::move(groups), 0.9, true); });
  check_optimizer<float>(12, [](auto groups) { return hg::optim::SGD<float>(std::move(groups), 0.9, false); });
  check_optimizer<double>(12, [](auto groups) { return hg::optim::SGD<double>(std::move(groups), 0.0, false); });
}

TEST_CASE("cuda optim: clip_gradients and clip_grad_norm on device gradients") {
  HG_REQUIRE_GPU();
  for (int variant = 0; variant < 2; ++variant) {
    CAPTURE(variant);
    std::vector<Tensor<float>> cpu = make_params<float>(20, 3), gpu = to_device(cpu);
    set_gradients(cpu, gpu, 1);
    hg::optim::NamedParameters<float> cpu_named, gpu_named;
    for (size_t i = 0; i < cpu.size(); ++i) {
      const std::string name = std::to_string(i);  // (GCC 12 warns falsely on "p" + std::string)
      cpu_named.emplace_back(name, cpu[i]);
      gpu_named.emplace_back(name, gpu[i]);
    }
    if (variant == 0) {  // DINO: per parameter, clip 3 (most of these gradients are larger)
      const std::vector<double> cpu_norms = hg::optim::clip_gradients(cpu_named, 3.0);
      const std::vector<double> gpu_norms = hg::optim::clip_gradients(gpu_named, 3.0);
      REQUIRE(cpu_norms.size() == gpu_norms.size());
      CHECK(relative_error(cpu_norms, gpu_norms) <= 1e-6);  // each rounded to float
    } else {  // DINOv2: global norm
      const double cpu_total = hg::optim::clip_grad_norm(cpu_named, 1.0);
      const double gpu_total = hg::optim::clip_grad_norm(gpu_named, 1.0);
      CHECK(std::abs(cpu_total - gpu_total) <= 1e-6 * cpu_total);
    }
    for (size_t i = 0; i < cpu.size(); ++i) {
      CAPTURE(i);
      const std::vector<float> expected = cpu[i].grad().to_vector();
      CHECK(relative_error(std::vector<double>(expected.begin(), expected.end()), gpu[i].grad().cpu().to_vector()) <=
            1e-6);
    }
  }
}

TEST_CASE("cuda optim: Module::to moves a ViT (tied weights stay tied) and ema_update runs on it") {
  HG_REQUIRE_GPU();
  hg::models::ViTConfig c;
  c.name = "optim_test";
  c.image_size = 32, c.patch_size = 8, c.embed_dim = 32, c.depth = 2, c.num_heads = 2, c.mlp_hidden = 64;
  hg::models::VisionTransformer<float> student(c, 1), teacher(c, 2), cpu_student(c, 1), cpu_teacher(c, 2);
  student.cuda();
  teacher.to(hg::Device::cuda());
  auto named = student.named_parameters();
  for (auto& [name, p] : named) {
    CAPTURE(name);
    CHECK(p.device().is_cuda());
    CHECK(p.requires_grad());
  }
  for (auto& [name, b] : student.named_buffers()) CHECK(b.device().is_cuda());
  // The moved model computes what the CPU one does.
  const Tensor<float> images = random_input({2, 3, 32, 32}, 5).to<float>();
  {
    hg::NoGradGuard no_grad;
    const std::vector<float> expected = cpu_student.forward(images).to_vector();
    CHECK(relative_error(std::vector<double>(expected.begin(), expected.end()),
                         student.forward(images.cuda()).cpu().to_vector()) <= 1e-5);
  }
  hg::optim::ema_update(teacher, student, 0.996);
  hg::optim::ema_update(cpu_teacher, cpu_student, 0.996);
  auto cpu_named = cpu_teacher.named_parameters(), gpu_named = teacher.named_parameters();
  for (size_t i = 0; i < cpu_named.size(); ++i) {
    CAPTURE(cpu_named[i].first);
    const std::vector<float> expected = cpu_named[i].second.detach().to_vector();
    CHECK(relative_error(std::vector<double>(expected.begin(), expected.end()),
                         gpu_named[i].second.detach().cpu().to_vector()) <= 1e-6);
  }
  // A tied weight is moved once and stays one tensor.
  hg::Generator gen(3);
  struct Tied : hg::nn::Module<float> {
    hg::nn::Linear<float> a, b;
    explicit Tied(hg::Generator& g) : a(4, 4, true, g), b(4, 4, true, g) {}
    void visit(hg::nn::ModuleVisitor<float>& v) override {
      v.module("a", a);
      v.module("b", b);
    }
  } tied(gen);
  tied.b.weight = tied.a.weight;
  tied.cuda();
  CHECK(tied.a.weight.device().is_cuda());
  CHECK(tied.a.weight.is_same(tied.b.weight));
  tied.cpu();
  CHECK(tied.a.weight.device().is_cpu());
  CHECK(tied.a.weight.is_same(tied.b.weight));
}
