// One DINO and one MAE training step, float32 on the CPU, beside the same step in PyTorch built
// from the reference repositories' code (benchmarks/ssl_reference.py) in the same run.
//   DINO: student + teacher ViT-S/16 (dino_vits16, student drop_path 0.1) with DINOHead (65536
//         prototypes, hidden 2048, bottleneck 256, norm_last_layer), 2 global crops at 224 + 8
//         local crops at 96, batch 16 per crop: teacher forward (no grad) on the globals,
//         student forward on all ten, DINOLoss, backward, clip_gradients(3.0),
//         cancel_gradients_last_layer (a no-op after the first epoch), AdamW, EMA teacher update.
//   MAE:  mae_vit_base_patch16 (norm_pix_loss) at 224, batch 16, mask ratio 0.75: forward and
//         loss, backward, AdamW (betas 0.9, 0.95), zero_grad.
// images/s counts the 16 source images of a step (a DINO image yields 10 crops). Each side of
// each objective runs in its own process (this program re-runs itself), so each peak RSS
// belongs to one side alone. One warm-up step, then the median of `steps` steps, with the
// medians of the forward / backward / optimizer phases beside it.
//   OMP_NUM_THREADS=2 build/bench/benchmarks/ssl_bench [steps] [dino|mae|all]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <histograd/histograd.hpp>
#include <histograd/ssl/dino.hpp>
#include <histograd/ssl/mae.hpp>
#include <histograd/optim/clip.hpp>
#include <histograd/optim/ema.hpp>
#include <histograd/optim/optimizer.hpp>
#include <map>
#include <string>
#include <vector>

#include "bench_util.hpp"

namespace hg = histograd;

namespace {

constexpr int64_t kBatch = 16;

// Wall time of the named phases of every step; the first step is the warm-up.
class PhaseTimer {
 public:
  void step() {
    if (!steps_.empty()) cpu_.push_back(double(std::clock() - cpu_start_) / CLOCKS_PER_SEC);
    steps_.emplace_back();
    cpu_start_ = std::clock();  // CPU seconds of every thread: less sensitive to a busy machine
    last_ = std::chrono::steady_clock::now();
  }
  void mark(const std::string& phase) {
    const auto now = std::chrono::steady_clock::now();
    steps_.back()[phase] += std::chrono::duration<double>(now - last_).count();
    if (steps_.size() == 1) peaks_.emplace_back(phase, bench::peak_rss_mib());  // where the peak is reached
    last_ = now;
  }
  // The peak RSS once the model and optimizer exist, before the first step.
  void setup_done() { setup_peak_ = bench::peak_rss_mib(); }
  void report(const std::string& kind) {
    cpu_.push_back(double(std::clock() - cpu_start_) / CLOCKS_PER_SEC);
    std::vector<std::map<std::string, double>> timed(steps_.begin() + 1, steps_.end());
    std::vector<double> totals;
    for (const auto& s : timed) {
      double t = 0;
      for (const auto& [phase, seconds] : s) t += seconds;
      totals.push_back(t);
    }
    std::printf("%s_seconds %.6f\n", kind.c_str(), median(totals));
    std::printf("%s_cpu_seconds %.6f\n", kind.c_str(), median(std::vector<double>(cpu_.begin() + 1, cpu_.end())));
    for (const auto& [phase, unused] : timed.front()) {
      std::vector<double> values;
      for (const auto& s : timed) values.push_back(s.at(phase));
      std::printf("%s_%s_seconds %.6f\n", kind.c_str(), phase.c_str(), median(values));
    }
    std::printf("%s_peak_setup_mib %.1f\n", kind.c_str(), setup_peak_);
    for (const auto& [phase, peak] : peaks_) std::printf("%s_peak_after_%s_mib %.1f\n", kind.c_str(), phase.c_str(), peak);
  }

 private:
  static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }
  std::vector<std::map<std::string, double>> steps_;
  std::chrono::steady_clock::time_point last_;
  std::vector<std::pair<std::string, double>> peaks_;
  double setup_peak_ = 0;
  std::vector<double> cpu_;
  std::clock_t cpu_start_ = 0;
};

int dino_child(int steps) {
  hg::models::ViTConfig backbone = hg::models::preset("dino_vits16");
  backbone.drop_path_rate = 0.1;  // main_dino.py's default for the student
  const hg::ssl::DINOHeadConfig head;  // the reference's defaults: 65536, 2048, 256, norm_last_layer
  hg::ssl::DINOLossConfig loss_config;  // main_dino.py's defaults, 2 + 8 crops
  loss_config.ncrops = 10;
  hg::ssl::DINO<float> dino = hg::ssl::build_dino<float>(backbone, head, loss_config, 0);
  hg::optim::AdamW<float> optimizer(
      hg::optim::make_param_groups(dino.student, 0.04, 0.0, hg::optim::DecayRule::dino_reference));
  const auto named_student = dino.student.named_parameters();
  const double lr = 0.0005 * double(kBatch) / 256.0, weight_decay = 0.04, momentum = 0.996;
  const int64_t epoch = 1;  // past freeze_last_layer: the last layer is trained

  hg::Generator gen(0);
  std::vector<hg::Tensor<float>> crops;
  for (int i = 0; i < 2; ++i) crops.push_back(hg::randn<float>({kBatch, 3, 224, 224}, gen));
  for (int i = 0; i < 8; ++i) crops.push_back(hg::randn<float>({kBatch, 3, 96, 96}, gen));
  const std::vector<hg::Tensor<float>> globals{crops[0], crops[1]};

  PhaseTimer timer;
  timer.setup_done();
  double value = 0;
  for (int s = 0; s <= steps; ++s) {
    timer.step();
    for (auto& group : optimizer.groups()) group.lr = lr;
    optimizer.groups()[0].weight_decay = weight_decay;
    hg::Tensor<float> teacher_output;
    {
      hg::NoGradGuard no_grad;
      teacher_output = dino.teacher.forward(globals);
    }
    timer.mark("teacher");
    hg::Tensor<float> student_output = dino.student.forward(crops);
    timer.mark("student");
    hg::Tensor<float> loss = dino.loss.forward(student_output, teacher_output, epoch);
    value = double(loss.item());
    timer.mark("loss");
    optimizer.zero_grad();
    loss.backward();
    timer.mark("backward");
    hg::optim::clip_gradients(named_student, 3.0);
    hg::optim::cancel_gradients_last_layer(epoch, named_student, 1);
    optimizer.step();
    hg::optim::ema_update(dino.teacher, dino.student, momentum);
    timer.mark("optimizer");
  }
  timer.report("dino");
  std::printf("dino_loss %.6f\n", value);
  std::printf("dino_peak_rss_mib %.1f\n", bench::peak_rss_mib());
  return 0;
}

int mae_child(int steps) {
  hg::ssl::MaskedAutoencoderViT<float> model(hg::ssl::mae_vit_base_patch16(true), 0);
  model.train();
  // main_pretrain.py: AdamW(betas (0.9, 0.95)) over add_weight_decay's groups, lr = blr · batch / 256.
  hg::optim::AdamW<float> optimizer(hg::optim::make_param_groups(model, 0.05, 1.5e-4 * double(kBatch) / 256.0), 0.9,
                                    0.95);
  hg::Generator gen(0), mask_gen(1);
  const hg::Tensor<float> imgs = hg::randn<float>({kBatch, 3, 224, 224}, gen);

  PhaseTimer timer;
  timer.setup_done();
  double value = 0;
  for (int s = 0; s <= steps; ++s) {
    timer.step();
    hg::ssl::MAEOutput<float> out = model.forward(imgs, 0.75, mask_gen);
    value = double(out.loss.item());
    timer.mark("forward");
    out.loss.backward();
    timer.mark("backward");
    optimizer.step();
    optimizer.zero_grad();
    timer.mark("optimizer");
  }
  timer.report("mae");
  std::printf("mae_loss %.6f\n", value);
  std::printf("mae_peak_rss_mib %.1f\n", bench::peak_rss_mib());
  return 0;
}

std::string self_exe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

double get(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0.0 : it->second;
}

void row(const std::string& what, double ours, double theirs, const char* unit, int precision) {
  if (theirs > 0)
    std::printf("| %-28s | %10.*f %-5s | %10.*f %-5s | %6.2f |\n", what.c_str(), precision, ours, unit, precision, theirs,
                unit, ours / theirs);
  else
    std::printf("| %-28s | %10.*f %-5s | %16s | %6s |\n", what.c_str(), precision, ours, unit, "n/a", "n/a");
}

void compare(const std::string& kind, const std::string& title, int steps, int threads) {
  const auto ours = bench::run_and_parse(self_exe() + " --" + kind + " " + std::to_string(steps));
  const auto torch = bench::run_reference_script(
      "ssl_reference.py", kind + " " + std::to_string(steps) + " " + std::to_string(threads));
  std::printf("\n%s, batch %ld, float32, %d threads, median of %d steps after 1 warm-up\n", title.c_str(),
              long(kBatch), threads, steps);
  std::printf("| %-28s | %16s | %16s | %6s |\n", "", "histograd", "PyTorch", "hg/pt");
  std::printf("|%s|%s|%s|%s|\n", std::string(30, '-').c_str(), std::string(18, '-').c_str(),
              std::string(18, '-').c_str(), std::string(8, '-').c_str());
  const auto rate = [](double seconds) { return seconds > 0 ? double(kBatch) / seconds : 0.0; };
  row("images/s (16 per step)", rate(get(ours, kind + "_seconds")), rate(get(torch, kind + "_seconds")), "im/s", 3);
  row("step", get(ours, kind + "_seconds"), get(torch, kind + "_seconds"), "s", 3);
  row("  CPU time, all threads", get(ours, kind + "_cpu_seconds"), get(torch, kind + "_cpu_seconds"), "s", 3);
  // DINO's forward is timed in three parts: teacher (no grad), student (all crops), loss.
  const auto seconds = [&](const std::map<std::string, double>& m, const std::string& phase) {
    if (phase != "forward" || m.count(kind + "_forward_seconds")) return get(m, kind + "_" + phase + "_seconds");
    return get(m, kind + "_teacher_seconds") + get(m, kind + "_student_seconds") + get(m, kind + "_loss_seconds");
  };
  for (const std::string phase : {"forward", "teacher", "student", "loss", "backward", "optimizer"}) {
    if (!ours.count(kind + "_" + phase + "_seconds") && phase != "forward") continue;
    const bool part = phase == "teacher" || phase == "student" || phase == "loss";
    row((part ? "    " : "  ") + phase, seconds(ours, phase), seconds(torch, phase), "s", 3);
  }
  row("peak RSS", get(ours, kind + "_peak_rss_mib"), get(torch, kind + "_peak_rss_mib"), "MiB", 0);
  // Where the peak is reached: after building the model and optimizer, then after each phase of
  // the first step (the optimizer's moments appear there on the PyTorch side).
  row("  peak after setup", get(ours, kind + "_peak_setup_mib"), get(torch, kind + "_peak_setup_mib"), "MiB", 0);
  for (const std::string phase : {"teacher", "student", "loss", "forward", "backward", "optimizer"})
    if (ours.count(kind + "_peak_after_" + phase + "_mib"))
      row("  peak after " + phase, get(ours, kind + "_peak_after_" + phase + "_mib"),
          get(torch, kind + "_peak_after_" + phase + "_mib"), "MiB", 0);
  row("loss (random data)", get(ours, kind + "_loss"), get(torch, kind + "_loss"), "", 4);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc >= 3 && std::string(argv[1]) == "--dino") return dino_child(std::max(1, std::atoi(argv[2])));
  if (argc >= 3 && std::string(argv[1]) == "--mae") return mae_child(std::max(1, std::atoi(argv[2])));
  const int steps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  const std::string which = argc > 2 ? argv[2] : "all";
  const int threads = hg::cpu::max_threads();
  std::printf("SSL training steps; hg/pt > 1 means histograd is faster (images/s) or uses more (time, memory)\n");
  if (which == "all" || which == "dino")
    compare("dino", "DINO step: ViT-S/16 student + teacher, DINOHead 65536, 2x224 + 8x96 crops", steps, threads);
  if (which == "all" || which == "mae")
    compare("mae", "MAE step: mae_vit_base_patch16, norm_pix_loss, mask 0.75, 224", steps, threads);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ssl_bench: %s\n", e.what());
  return 1;
}
