// The end-to-end GPU figure: one DINO training step with a ViT-B/16 student and teacher
// (dino_vitb16, student drop_path 0.1) and DINOHead (65536 prototypes, norm_last_layer), 2 global
// crops at 224 + 8 local at 96, `batch` images per crop: teacher forward (no grad), student
// forward, DINOLoss, backward, clip_gradients(3.0), AdamW, EMA teacher update — the body of
// main_dino.train_one_epoch, as benchmarks/ssl_bench.cpp times it on the CPU. Modes: fp32 (exact
// GEMMs), tf32 (cuda::set_allow_tf32), bf16 (AutocastGuard around the forward and the loss: bf16
// GEMMs and attention, fp32 master weights, layer norm, softmax and losses). The PyTorch side,
// the reference DINO code under torch.autocast(bfloat16), is benchmarks/cuda/torch_dino_step.py.
// Prints "RESULT dino_step mode=<m> batch=<b> seconds=<median> images_per_s=<..> peak_mib=<..>
// loss=<..>"; two warm-up steps, then the median of `steps`.
//   dino_step_bench [steps=5] [batch=32] [modes=fp32,tf32,bf16]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <histograd/histograd.hpp>
#include <histograd/ssl/dino.hpp>
#include <string>
#include <vector>

namespace hg = histograd;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void run(const std::string& mode, int steps, int64_t batch) {
  hg::cuda::set_allow_tf32(mode == "tf32");
  hg::models::ViTConfig backbone = hg::models::preset("dino_vitb16");
  backbone.drop_path_rate = 0.1;
  hg::ssl::DINOLossConfig loss_config;
  loss_config.ncrops = 10;
  hg::ssl::DINO<float> dino = hg::ssl::build_dino<float>(backbone, hg::ssl::DINOHeadConfig{}, loss_config, 0);
  dino.student.cuda();
  dino.teacher.cuda();
  dino.loss.cuda();
  hg::optim::AdamW<float> optimizer(
      hg::optim::make_param_groups(dino.student, 0.04, 0.0005 * double(batch) / 256.0, hg::optim::DecayRule::dino_reference));
  const auto named_student = dino.student.named_parameters();
  hg::Generator gen(0);
  std::vector<hg::Tensor<float>> crops;
  for (int i = 0; i < 2; ++i) crops.push_back(hg::randn<float>({batch, 3, 224, 224}, gen).cuda());
  for (int i = 0; i < 8; ++i) crops.push_back(hg::randn<float>({batch, 3, 96, 96}, gen).cuda());
  const std::vector<hg::Tensor<float>> globals{crops[0], crops[1]};

  hg::cuda::synchronize();
  hg::cuda::reset_peak();
  std::vector<double> seconds;
  double loss_value = 0;
  for (int s = 0; s < steps + 2; ++s) {
    const auto start = std::chrono::steady_clock::now();
    hg::Tensor<float> loss;
    {
      hg::AutocastGuard autocast(mode == "bf16");
      hg::Tensor<float> teacher_output;
      {
        hg::NoGradGuard no_grad;
        teacher_output = dino.teacher.forward(globals);
      }
      loss = dino.loss.forward(dino.student.forward(crops), teacher_output, 1);
    }
    optimizer.zero_grad();
    loss.backward();
    hg::optim::clip_gradients(named_student, 3.0);
    optimizer.step();
    hg::optim::ema_update(dino.teacher, dino.student, 0.996);
    loss_value = double(loss.item());  // the host sync that ends the step
    if (s >= 2) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double step = median(seconds);
  std::printf("RESULT dino_step mode=%s batch=%ld seconds=%.5f images_per_s=%.1f peak_mib=%.0f loss=%.5f\n",
              mode.c_str(), long(batch), step, double(batch) / step,
              double(hg::cuda::peak_allocated_bytes()) / (1024.0 * 1024.0), loss_value);
  std::fflush(stdout);
  hg::cuda::set_allow_tf32(false);
}

}  // namespace

int main(int argc, char** argv) try {
  if (!hg::cuda::available()) {
    std::printf("skipped: no usable CUDA device (%s)\n", hg::cuda::unavailable_reason().c_str());
    return 0;
  }
  const int steps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const int64_t batch = argc > 2 ? std::max(1, std::atoi(argv[2])) : 32;
  const std::string modes = argc > 3 ? argv[3] : "fp32,tf32,bf16";
  std::printf("DINO ViT-B/16 step on %s: 2x224 + 8x96 crops, batch %ld per crop\n", hg::cuda::device_name().c_str(),
              long(batch));
  for (const std::string mode : {"fp32", "tf32", "bf16"})
    if (modes.find(mode) != std::string::npos) {
      try {
        run(mode, steps, batch);
      } catch (const std::exception& e) {  // one mode failing (memory, a missing kernel) leaves the others
        std::printf("RESULT dino_step mode=%s failed: %s\n", mode.c_str(), e.what());
        hg::cuda::empty_cache();
      }
    }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dino_step_bench: %s\n", e.what());
  return 1;
}
