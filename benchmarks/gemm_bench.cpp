// GEMM throughput: histograd's matmul (Eigen over our buffers, no copies) against Eigen's
// own sgemm on Eigen-allocated matrices and against torch.mm, same sizes, same threads.
// Run: OMP_NUM_THREADS=2 build/release/benchmarks/gemm_bench
#include <Eigen/Core>
#include <cstdio>
#include <histograd/histograd.hpp>

#include "bench_util.hpp"

namespace hg = histograd;

int main() {
  const int threads = hg::cpu::max_threads();
  std::printf("GEMM C[n,n] = A[n,n] B[n,n], float32, %d threads, median of repeats\n", threads);
  std::printf("%6s %14s %14s %14s %12s %12s\n", "n", "histograd", "Eigen sgemm", "torch.mm", "hg/Eigen", "hg/torch");
  for (int64_t n : {256, 512, 1024, 2048}) {
    const int repeats = n >= 2048 ? 5 : 20;
    const double flops = 2.0 * double(n) * double(n) * double(n);
    hg::NoGradGuard no_grad;
    auto a = hg::randn<float>({n, n}), b = hg::randn<float>({n, n});
    double ours = bench::time_median([&] { auto c = hg::matmul(a, b); }, repeats);
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    RowMajor ea = RowMajor::Random(n, n), eb = RowMajor::Random(n, n), ec(n, n);
    double eigen = bench::time_median([&] { ec.noalias() = ea * eb; }, repeats);
    auto torch = bench::run_torch_reference("gemm " + std::to_string(n) + " " + std::to_string(repeats) + " " +
                                            std::to_string(threads));
    double ours_gf = flops / ours / 1e9, eigen_gf = flops / eigen / 1e9;
    if (torch.count("gemm_seconds")) {
      double torch_gf = flops / torch["gemm_seconds"] / 1e9;
      std::printf("%6ld %9.1f GF/s %9.1f GF/s %9.1f GF/s %12.2f %12.2f\n", long(n), ours_gf, eigen_gf, torch_gf,
                  ours_gf / eigen_gf, ours_gf / torch_gf);
    } else {
      std::printf("%6ld %9.1f GF/s %9.1f GF/s %14s %12.2f %12s\n", long(n), ours_gf, eigen_gf, "n/a", ours_gf / eigen_gf,
                  "n/a");
    }
  }
  return 0;
}
