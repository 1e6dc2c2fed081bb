#include "test_util.hpp"

#include <cstdint>
#include <limits>
#include <random>

namespace {

using hg::cpu::MatrixLayout;

// One operand stored with a leading dimension wider than its extent; the gap holds NaN, so a
// kernel reading outside the matrix poisons its result.
struct Operand {
  int64_t rows, cols;
  MatrixLayout layout;
  std::vector<float> data;
  Operand(int64_t r, int64_t c, bool col_major, int64_t pad, std::mt19937& rng) : rows(r), cols(c) {
    layout = {col_major, (col_major ? r : c) + pad};
    data.assign(static_cast<size_t>(layout.ld * (col_major ? c : r)), std::numeric_limits<float>::quiet_NaN());
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) data[static_cast<size_t>(index(i, j))] = dist(rng);
  }
  int64_t index(int64_t i, int64_t j) const { return layout.col_major ? i + j * layout.ld : i * layout.ld + j; }
  double at(int64_t i, int64_t j) const { return data[static_cast<size_t>(index(i, j))]; }
};

enum class Path { gemm, serial, batched };

// Runs C (+)= alpha A B through `path` and checks every element against a double-accumulated
// loop, within 1e-5 of the row's scale max_j sum_k |A_ik| |B_kj| (plus |C_ij| when accumulating);
// the columns past N in each row of C must keep their NaN.
void check_product(int64_t M, int64_t N, int64_t K, bool a_col, bool b_col, bool accumulate, float alpha, Path path,
                   uint32_t seed) {
  std::mt19937 rng(seed);
  const Operand a(M, K, a_col, 3, rng), b(K, N, b_col, 5, rng);
  const int64_t ldc = N + 2;
  std::vector<float> c(static_cast<size_t>(M * ldc), std::numeric_limits<float>::quiet_NaN());
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      if (accumulate) c[static_cast<size_t>(i * ldc + j)] = dist(rng);
  const std::vector<float> c0 = c;
  if (path == Path::gemm)
    hg::cpu::gemm<float>(M, N, K, alpha, a.data.data(), a.layout, b.data.data(), b.layout, c.data(), ldc, accumulate);
  else if (path == Path::serial)
    hg::cpu::gemm_serial<float>(M, N, K, alpha, a.data.data(), a.layout, b.data.data(), b.layout, c.data(), ldc,
                                accumulate);
  else {
    const int64_t zero = 0;
    hg::cpu::gemm_batched<float>(1, M, N, K, alpha, a.data.data(), &zero, a.layout, b.data.data(), &zero, b.layout,
                                 c.data(), 0, ldc, accumulate);
  }
  INFO("M=" << M << " N=" << N << " K=" << K << " a_col=" << a_col << " b_col=" << b_col
            << " accumulate=" << accumulate << " alpha=" << alpha << " path=" << int(path));
  bool ok = true;
  for (int64_t i = 0; i < M && ok; ++i) {
    std::vector<double> ref(static_cast<size_t>(N)), mag(static_cast<size_t>(N));
    double scale = 0;
    for (int64_t j = 0; j < N; ++j) {
      double s = 0, m = 0;
      for (int64_t k = 0; k < K; ++k) {
        s += a.at(i, k) * b.at(k, j);
        m += std::abs(a.at(i, k) * b.at(k, j));
      }
      ref[static_cast<size_t>(j)] = double(alpha) * s;
      scale = std::max(scale, std::abs(double(alpha)) * m);
    }
    for (int64_t j = 0; j < N; ++j) {
      const double start = accumulate ? double(c0[static_cast<size_t>(i * ldc + j)]) : 0.0;
      const double want = start + ref[static_cast<size_t>(j)], got = c[static_cast<size_t>(i * ldc + j)];
      if (!(std::abs(got - want) <= 1e-5 * (scale + std::abs(start)) + 1e-30)) {
        INFO("first mismatch at (" << i << ", " << j << "): got " << got << ", expected " << want);
        CHECK(false);
        ok = false;
        break;
      }
    }
    for (int64_t j = N; j < ldc && ok; ++j) {
      INFO("padding of C written at (" << i << ", " << j << ")");
      CHECK(std::isnan(c[static_cast<size_t>(i * ldc + j)]));
      ok = std::isnan(c[static_cast<size_t>(i * ldc + j)]);
    }
  }
  CHECK(ok);
}

constexpr int64_t kSizes[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 65, 129, 200, 385};
constexpr int kSizeCount = 14;

}  // namespace

TEST_CASE("float GEMM matches a double loop for small odd shapes, both layouts, alpha and accumulate") {
  INFO("packed AVX-512 kernel in use: " << hg::cpu::packed::avx512_available());
  uint32_t seed = 1;
  const int64_t small[] = {1, 2, 3, 7, 15, 16, 17, 31, 33};
  for (int64_t M : small)
    for (int64_t N : small)
      for (int64_t K : small)
        for (int variant = 0; variant < 2; ++variant) {
          // Layouts, accumulate and alpha rotate with the shape so that every combination meets
          // many shapes without running the whole cross product.
          const uint32_t s = seed++;
          const bool a_col = (s >> 0) & 1, b_col = (s >> 1) & 1, accumulate = (s >> 2) & 1;
          const float alpha = variant ? -0.75f : 1.0f;
          check_product(M, N, K, a_col, b_col, accumulate, alpha, Path::serial, s);
        }
}

TEST_CASE("float GEMM matches a double loop for large mixed shapes through every entry point") {
  for (int i = 0; i < 48; ++i) {
    const int64_t M = kSizes[(i * 5 + 9) % kSizeCount], N = kSizes[(i * 3 + 4) % kSizeCount],
                  K = kSizes[(i * 11 + 13) % kSizeCount];
    const bool a_col = i & 1, b_col = (i >> 1) & 1, accumulate = (i >> 2) & 1;
    const float alpha = (i % 3 == 0) ? 1.0f : 0.5f - float(i % 5);
    const Path path = static_cast<Path>(i % 3);
    check_product(M, N, K, a_col, b_col, accumulate, alpha, path, 1000u + uint32_t(i));
  }
  // Depths that split into several packed blocks (and one that leaves an uneven split).
  check_product(200, 129, 1536, false, true, false, 1.0f, Path::gemm, 7);
  check_product(65, 385, 1000, true, false, true, 2.0f, Path::gemm, 8);
  check_product(385, 33, 769, false, false, false, -1.0f, Path::batched, 9);
}

TEST_CASE("float GEMM gives the same bits whatever the thread count, and packed equals serial") {
  std::mt19937 rng(42);
  const int64_t M = 385, N = 200, K = 1000;
  const Operand a(M, K, false, 0, rng), b(K, N, true, 0, rng);
  std::vector<float> serial(static_cast<size_t>(M * N)), first(serial.size()), parallel(serial.size());
  hg::cpu::gemm_serial<float>(M, N, K, 1.0f, a.data.data(), a.layout, b.data.data(), b.layout, serial.data(), N, false);
  hg::cpu::gemm<float>(M, N, K, 1.0f, a.data.data(), a.layout, b.data.data(), b.layout, first.data(), N, false);
  // The packed kernel blocks the depth by K alone, so even splitting C differently from a
  // whole serial product cannot change a bit (Eigen's tiles only promise the thread count).
  if (hg::cpu::packed::avx512_available()) CHECK(first == serial);
#ifdef _OPENMP
  const int saved = hg::cpu::max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    hg::cpu::gemm<float>(M, N, K, 1.0f, a.data.data(), a.layout, b.data.data(), b.layout, parallel.data(), N, false);
    CHECK(parallel == first);
  }
  omp_set_num_threads(saved);
#endif
}

TEST_CASE("double GEMM still matches a double loop") {
  std::mt19937 rng(3);
  const int64_t M = 33, N = 17, K = 65;
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(K * N)), c(static_cast<size_t>(M * N));
  for (auto& x : a) x = dist(rng);
  for (auto& x : b) x = dist(rng);
  hg::cpu::gemm<double>(M, N, K, 2.0, a.data(), MatrixLayout{false, K}, b.data(), MatrixLayout{true, K}, c.data(), N,
                        false);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += a[static_cast<size_t>(i * K + k)] * b[static_cast<size_t>(j * K + k)];
      CHECK(std::abs(c[static_cast<size_t>(i * N + j)] - 2.0 * s) <= 1e-12);
    }
}
