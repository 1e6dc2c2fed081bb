// ViT-S/16, ViT-B/16 and ViT-L/16 forward (224x224, CLS embedding, float32) at batch 1 and
// 32 beside timm in inference mode with the same thread count, and the time to load a ViT-L
// checkpoint from safetensors and from a torch.save .pth beside torch.load/safetensors.
// Every measurement runs in its own process (this program re-runs itself), so each peak RSS
// belongs to one configuration only.
//   OMP_NUM_THREADS=2 build/bench/benchmarks/vit_bench [--loads-only] [repeats] [folder for the ViT-L files]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <histograd/histograd.hpp>
#include <string>

#include "bench_util.hpp"

namespace hg = histograd;

namespace {

// timm's vit_{small,base,large}_patch16_224: the DINO layout (CLS + patches, pos on all,
// LN 1e-6, GELU MLP, no LayerScale) at the three widths, with timm's key names.
hg::models::ViTConfig timm_vit(const std::string& size) {
  hg::models::ViTConfig c = hg::models::preset("dino_vitb16");
  c.keys = hg::models::KeyStyle::Timm;
  if (size == "small") c.embed_dim = 384, c.num_heads = 6, c.mlp_hidden = 1536;
  if (size == "large") c.embed_dim = 1024, c.depth = 24, c.num_heads = 16, c.mlp_hidden = 4096;
  c.name = "vit_" + size + "_patch16_224";
  return c;
}

std::string self_exe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

std::map<std::string, double> run_child(const std::string& args) { return bench::run_and_parse(self_exe() + " " + args); }

int forward_child(const std::string& size, int64_t batch, int repeats) {
  auto model = hg::models::vit<float>(timm_vit(size));
  model.eval();
  auto images = hg::randn<float>({batch, 3, 224, 224});
  hg::NoGradGuard no_grad;
  std::printf("seconds %.9f\n", bench::time_median([&] { auto y = model.forward(images); }, repeats));
  std::printf("rss %.1f\n", bench::peak_rss_mib());
  return 0;
}

// Load = read the file and install every tensor in a model built without drawing weights
// (nn::SkipInit, as examples/embed does); touch = also read every weight once, which is what a
// first forward pays for a memory-mapped file.
int load_child(const std::string& path, int repeats) {
  double touched = 0;
  std::vector<double> load_times, touch_times;
  for (int r = 0; r <= repeats; ++r) {  // the first round warms the page cache and is dropped
    hg::nn::SkipInit skip_init;
    auto model = hg::models::vit<float>(timm_vit("large"));
    const auto start = std::chrono::steady_clock::now();
    hg::io::load_weights(model, path);
    const auto loaded = std::chrono::steady_clock::now();
    for (auto& [name, p] : model.named_parameters())
      for (int64_t i = 0, n = p.numel(); i < n; i += 1024) touched += double(p.data()[i]);  // one float per 4 KiB page
    const auto done = std::chrono::steady_clock::now();
    if (r == 0) continue;
    load_times.push_back(std::chrono::duration<double>(loaded - start).count());
    touch_times.push_back(std::chrono::duration<double>(done - start).count());
  }
  std::sort(load_times.begin(), load_times.end());
  std::sort(touch_times.begin(), touch_times.end());
  std::printf("load_seconds %.9f\n", load_times[load_times.size() / 2]);
  std::printf("touch_seconds %.9f\n", touch_times[touch_times.size() / 2]);
  std::printf("rss %.1f\n", bench::peak_rss_mib());
  std::printf("checksum %.3f\n", touched);  // keeps the reads from being optimised away
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 5 && std::string(argv[1]) == "--forward") return forward_child(argv[2], std::atoll(argv[3]), std::atoi(argv[4]));
  if (argc >= 4 && std::string(argv[1]) == "--load") return load_child(argv[2], std::atoi(argv[3]));
  const bool loads_only = argc > 1 && std::string(argv[1]) == "--loads-only";  // skip the forward table
  if (loads_only) --argc, ++argv;
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 3;
  const std::string folder = argc > 2 ? argv[2] : "/tmp/histograd_vit_bench";
  const int threads = hg::cpu::max_threads();

  std::printf("ViT forward, 224x224, float32, %d threads, median of %d runs (batch 32: of %d)\n", threads, repeats,
              std::max(1, repeats / 2));
  std::printf("%-24s %5s %12s %12s %8s %12s %12s\n", "model", "batch", "hg img/s", "torch img/s", "hg/torch",
              "hg RSS MiB", "torch RSS");
  for (const std::string size : {"small", "base", "large"}) {
    if (loads_only) break;
    for (int64_t batch : {1, 32}) {
      const int r = batch == 1 ? repeats : std::max(1, repeats / 2);
      auto ours = run_child("--forward " + size + " " + std::to_string(batch) + " " + std::to_string(r));
      auto torch = bench::run_torch_reference("timm vit_" + size + "_patch16_224 " + std::to_string(batch) + " " +
                                              std::to_string(r) + " " + std::to_string(threads));
      const double ours_ips = ours.count("seconds") ? batch / ours["seconds"] : 0;
      const double torch_ips = torch.count("vit_seconds") ? batch / torch["vit_seconds"] : 0;
      std::printf("%-24s %5ld %12.2f %12.2f %8.2f %12.0f %12.0f\n", ("vit_" + size + "_patch16_224").c_str(),
                  long(batch), ours_ips, torch_ips, torch_ips > 0 ? ours_ips / torch_ips : 0.0, ours["rss"],
                  torch["vit_peak_rss_mib"]);
      std::fflush(stdout);
    }
  }

  std::filesystem::create_directories(folder);
  const std::string stem = folder + "/vit_large_patch16_224";
  if (!std::filesystem::exists(stem + ".pth")) bench::run_torch_reference("save vit_large_patch16_224 " + folder);
  if (!std::filesystem::exists(stem + ".pth")) {
    std::printf("\nno ViT-L checkpoint (PyTorch/timm missing?): load times skipped\n");
    return 0;
  }
  std::printf("\nViT-L/16 checkpoint load (%.0f MiB, page cache warm), median of %d\n",
              std::filesystem::file_size(stem + ".safetensors") / 1048576.0, repeats);
  std::printf("%-12s %14s %16s %14s %16s %12s\n", "format", "hg load s", "hg load+touch s", "torch load s",
              "torch mmap load s", "hg RSS MiB");
  for (const std::string ext : {".safetensors", ".pth"}) {
    auto ours = run_child("--load " + stem + ext + " " + std::to_string(repeats));
    auto torch = bench::run_torch_reference("load " + stem + ext + " " + std::to_string(repeats));
    std::printf("%-12s %14.3f %16.3f %14.3f %16s %12.0f\n", ext.c_str(), ours["load_seconds"], ours["touch_seconds"],
                torch["load_seconds"],
                torch.count("load_mmap_seconds") ? std::to_string(torch["load_mmap_seconds"]).substr(0, 6).c_str() : "-",
                ours["rss"]);
  }
  return 0;
}
