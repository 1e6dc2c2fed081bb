// ViT-S/16 forward (224x224, 12 blocks, width 384, 6 heads, CLS embedding), images/s at
// batch 1 and 16, against PyTorch (timm's vit_small_patch16_224 in inference mode) with the
// same thread count in the same run. Also reports this process's peak RSS.
// Run: OMP_NUM_THREADS=2 build/release/benchmarks/vit_forward_bench
#include <cstdio>
#include <histograd/histograd.hpp>

#include "bench_util.hpp"

namespace hg = histograd;

int main(int argc, char** argv) {
  const int threads = hg::cpu::max_threads();
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 5;
  hg::Generator gen(0);
  hg::models::SimpleViT<float> model(hg::models::SimpleViTConfig{}, gen);
  std::printf("ViT-S/16 forward, float32, %d threads, median of %d runs\n", threads, repeats);
  std::printf("%6s %14s %14s %10s %16s %16s\n", "batch", "histograd", "PyTorch", "hg/torch", "hg peak RSS", "torch peak RSS");
  for (int64_t batch : {1, 16}) {
    auto images = hg::randn<float>({batch, 3, 224, 224}, gen);
    hg::NoGradGuard no_grad;
    double ours = bench::time_median([&] { auto y = model.forward(images); }, repeats);
    double ours_rss = bench::peak_rss_mib();
    auto torch = bench::run_torch_reference("vit " + std::to_string(batch) + " " + std::to_string(repeats) + " " +
                                            std::to_string(threads));
    double ours_ips = double(batch) / ours;
    if (torch.count("vit_seconds")) {
      double torch_ips = double(batch) / torch["vit_seconds"];
      std::printf("%6ld %10.2f im/s %10.2f im/s %10.2f %12.0f MiB %12.0f MiB%s\n", long(batch), ours_ips, torch_ips,
                  ours_ips / torch_ips, ours_rss, torch["vit_peak_rss_mib"], torch["vit_source_timm"] ? "  (timm)" : "");
    } else {
      std::printf("%6ld %10.2f im/s %14s %10s %12.0f MiB %16s\n", long(batch), ours_ips, "n/a", "n/a", ours_rss, "n/a");
    }
  }
  return 0;
}
