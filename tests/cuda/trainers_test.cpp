// The three SSL trainers with device = cuda against the same trainers on the CPU, from the same
// seed and data: the models, optimizer state, centres and each batch on the GPU, drop path drawn
// by the device Philox stream (bit-equal to the CPU's), DINOv2's host-drawn masks moved over. Two
// steps each, fp32 and bf16 autocast; then a GPU checkpoint resumed by a CPU trainer.
// Bounds: step 0 starts from equal weights, so its loss differs only by summation order, 1e-4
// fp32 (as vit_step_test), 2e-2 bf16 (an output may round one bf16 step apart); step 1 comes after
// one AdamW update, whose first step moves near-zero gradients by ±lr on fp32 noise, so 1e-2
// (fp32) and 5e-2 (bf16). Skipped without a GPU.
#include <filesystem>
#include <string>
#include <unistd.h>

#include "cuda/cuda_test_util.hpp"
#include "ssl/tiny_trainers.hpp"

namespace hg = histograd;

namespace {

template <class Trainer, class Config>
std::vector<double> losses(Config config, hg::Device device, bool mixed, int steps) {
  config.device = device;
  config.mixed_precision = mixed;
  Trainer trainer(config, tiny::tiles());
  for (int i = 0; i < steps; ++i) trainer.step();
  return trainer.loss_history();
}

template <class Trainer, class Config>
void compare(const char* name, const Config& config) {
  for (const bool mixed : {false, true}) {
    INFO(name << (mixed ? " bf16" : " fp32"));
    const std::vector<double> cpu = losses<Trainer>(config, hg::kCPU, mixed, 2);
    const std::vector<double> gpu = losses<Trainer>(config, hg::Device::cuda(), mixed, 2);
    REQUIRE(gpu.size() == 2);
    INFO("cpu " << cpu[0] << ", " << cpu[1] << "; gpu " << gpu[0] << ", " << gpu[1]);
    CHECK(std::abs(gpu[0] - cpu[0]) <= (mixed ? 2e-2 : 1e-4) * std::abs(cpu[0]));
    CHECK(std::abs(gpu[1] - cpu[1]) <= (mixed ? 5e-2 : 1e-2) * std::abs(cpu[1]));
  }
}

}  // namespace

TEST_CASE("cuda trainers: DINO, MAE and DINOv2 steps on the GPU follow the CPU trainers") {
  HG_REQUIRE_GPU();
  compare<hg::ssl::DINOTrainer>("dino", tiny::dino());
  compare<hg::ssl::MAETrainer>("mae", tiny::mae());
  compare<hg::ssl::DINOv2Trainer>("dinov2", tiny::dinov2());
}

TEST_CASE("cuda trainers: a checkpoint written on the GPU resumes on the CPU") {
  HG_REQUIRE_GPU();
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("hg_cuda_trainers_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "dino.safetensors").string();
  auto config = tiny::dino();
  config.device = hg::Device::cuda();
  hg::ssl::DINOTrainer gpu(config, tiny::tiles());
  gpu.step();
  gpu.step();
  gpu.save(path);
  const hg::Tensor<float> center = gpu.dino().loss.center.cpu();
  config.device = hg::kCPU;
  hg::ssl::DINOTrainer cpu(config, tiny::tiles());
  cpu.load(path);
  CHECK(cpu.iteration() == 2);
  CHECK(cpu.dino().loss.center.to_vector() == center.to_vector());
  for (auto& [name, p] : cpu.dino().student.named_parameters()) CHECK(p.device().is_cpu());
  const hg::ssl::StepResult r = cpu.step();  // continues on the CPU
  CHECK(std::isfinite(r.loss));
  fs::remove_all(dir);
}
