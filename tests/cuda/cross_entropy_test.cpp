// cuda/cross_entropy.cu against float64 references written here from the definitions: hard-label
// cross-entropy with ignore_index (loss, logsumexp, dlogits with per-row and broadcast upstream
// gradients) and DINO's tempered soft-target loss (loss, both logsumexps, dstudent), at class
// counts that exercise the vectorised, scalar and unrolled loops (10 … 65537). Outputs are
// poisoned (NaN) before every run; NaN never passes. Both kernel versions (set_cross_entropy_kernel_version)
// run every case on their own fresh inputs; the DINO forward is rerun for a bit-identical result.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "histograd/cuda/cross_entropy.hpp"

namespace {

using hg::test::DeviceBuffer;

template <class T> double tolerance() {
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  else if constexpr (std::is_same_v<T, hg::bfloat16>) return 1e-2;
  else return 5e-3;
}

double logsumexp(const double* x, int64_t n, double scale = 1.0, const double* center = nullptr) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; ++k) m = std::max(m, (x[k] - (center ? center[k] : 0.0)) * scale);
  double s = 0;
  for (int64_t k = 0; k < n; ++k) s += std::exp((x[k] - (center ? center[k] : 0.0)) * scale - m);
  return m + std::log(s);
}

template <class T> void check_hard(int64_t rows, int64_t classes, bool broadcast_grad, uint64_t seed) {
  INFO("rows ", rows, " classes ", classes, " broadcast ", broadcast_grad, " dtype ", hg::dtype_name<T>());
  const int64_t ignore = -100;
  const std::vector<T> logits = hg::test::random_values<T>(size_t(rows * classes), seed, 3.0);
  const std::vector<double> x = hg::test::as_doubles(logits);
  std::vector<int64_t> labels(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)  // every third row ignored; the rest spread over the classes, last class included
    labels[size_t(r)] = r % 3 == 1 ? ignore : r == 0 ? classes - 1 : (r * 7919 + 13) % classes;
  const std::vector<T> dloss = hg::test::random_values<T>(size_t(rows), seed + 1);
  const float scale = broadcast_grad ? 0.25f : 1.0f;

  std::vector<double> loss(static_cast<size_t>(rows)), lse(static_cast<size_t>(rows)), dlogits(x.size(), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    if (labels[size_t(r)] == ignore) continue;
    const double* xr = x.data() + r * classes;
    const double l = logsumexp(xr, classes);
    loss[size_t(r)] = l - xr[labels[size_t(r)]];
    lse[size_t(r)] = l;
    const double g = hg::test::to_double(dloss[broadcast_grad ? 0 : size_t(r)]) * scale;
    for (int64_t c = 0; c < classes; ++c)
      dlogits[size_t(r * classes + c)] = (std::exp(xr[c] - l) - (c == labels[size_t(r)] ? 1.0 : 0.0)) * g;
  }

  DeviceBuffer<T> d_logits(logits), d_dloss(dloss), d_grad(logits.size());
  DeviceBuffer<int64_t> d_labels(labels);
  DeviceBuffer<float> d_loss(static_cast<size_t>(rows)), d_lse(static_cast<size_t>(rows));
  hg::cuda::cross_entropy_forward(d_logits.ptr, d_labels.ptr, d_loss.ptr, d_lse.ptr, rows, classes, ignore);
  CHECK(hg::test::relative_error(loss, d_loss.download()) <= 1e-5);
  CHECK(hg::test::relative_error(lse, d_lse.download()) <= 1e-5);
  hg::cuda::cross_entropy_backward(d_logits.ptr, d_labels.ptr, d_lse.ptr, d_dloss.ptr, broadcast_grad ? 0 : 1, scale,
                                   d_grad.ptr, rows, classes, ignore);
  CHECK(hg::test::relative_error(dlogits, d_grad.download()) <= tolerance<T>());
}

template <class T>
void check_distill(int64_t rows, int64_t classes, bool with_center, int64_t offset, uint64_t seed) {
  INFO("rows ", rows, " classes ", classes, " center ", with_center, " offset ", offset, " dtype ",
       hg::dtype_name<T>());
  const float ts = 0.1f, tt = 0.04f;
  const size_t n = size_t(rows * classes);
  std::vector<T> student = hg::test::random_values<T>(n + size_t(offset), seed, 2.0),
                 teacher = hg::test::random_values<T>(n + size_t(offset), seed + 1, 0.5),
                 center = hg::test::random_values<T>(size_t(classes + offset), seed + 2, 0.1);
  const std::vector<T> dloss = hg::test::random_values<T>(size_t(rows), seed + 3);
  const std::vector<double> s = hg::test::as_doubles(std::vector<T>(student.begin() + offset, student.end()));
  const std::vector<double> t = hg::test::as_doubles(std::vector<T>(teacher.begin() + offset, teacher.end()));
  const std::vector<double> c = with_center ? hg::test::as_doubles(std::vector<T>(center.begin() + offset, center.end()))
                                            : std::vector<double>(size_t(classes), 0.0);
  const double inv_s = 1.0 / double(ts), inv_t = 1.0 / double(tt);

  std::vector<double> loss(static_cast<size_t>(rows)), lse_s(static_cast<size_t>(rows)), lse_t(static_cast<size_t>(rows)), dstudent(n);
  for (int64_t r = 0; r < rows; ++r) {
    const double* sr = s.data() + r * classes;
    const double* tr = t.data() + r * classes;
    const double ls = logsumexp(sr, classes, inv_s), lt = logsumexp(tr, classes, inv_t, c.data());
    double value = 0;
    const double g = hg::test::to_double(dloss[size_t(r)]) * 0.5;
    for (int64_t k = 0; k < classes; ++k) {
      const double q = std::exp((tr[k] - c[size_t(k)]) * inv_t - lt), logp = sr[k] * inv_s - ls;
      value -= q * logp;
      dstudent[size_t(r * classes + k)] = (std::exp(logp) - q) * g * inv_s;
    }
    loss[size_t(r)] = value;
    lse_s[size_t(r)] = ls;
    lse_t[size_t(r)] = lt;
  }

  DeviceBuffer<T> d_s(student), d_t(teacher), d_c(center), d_dloss(dloss), d_grad(n + size_t(offset));
  DeviceBuffer<float> d_loss(static_cast<size_t>(rows)), d_ls(static_cast<size_t>(rows)), d_lt(static_cast<size_t>(rows));
  const T* cp = with_center ? d_c.ptr + offset : nullptr;
  hg::cuda::distillation_cross_entropy_forward(d_s.ptr + offset, d_t.ptr + offset, cp, d_loss.ptr, d_ls.ptr, d_lt.ptr,
                                               rows, classes, ts, tt);
  CHECK(hg::test::relative_error(loss, d_loss.download()) <= 1e-5);
  CHECK(hg::test::relative_error(lse_s, d_ls.download()) <= 1e-5);
  CHECK(hg::test::relative_error(lse_t, d_lt.download()) <= 1e-5);
  hg::cuda::distillation_cross_entropy_backward(d_s.ptr + offset, d_t.ptr + offset, cp, d_ls.ptr, d_lt.ptr,
                                                d_dloss.ptr, 1, 0.5f, d_grad.ptr + offset, rows, classes, ts, tt);
  std::vector<T> grad = d_grad.download();
  CHECK(hg::test::relative_error(dstudent, std::vector<T>(grad.begin() + offset, grad.end())) <= tolerance<T>());
  // Run again on poisoned outputs: bit-identical (fixed merge order, no atomics).
  const std::vector<float> loss_first = d_loss.download(), ls_first = d_ls.download();
  d_loss.poison();
  d_ls.poison();
  d_lt.poison();
  hg::cuda::distillation_cross_entropy_forward(d_s.ptr + offset, d_t.ptr + offset, cp, d_loss.ptr, d_ls.ptr, d_lt.ptr,
                                               rows, classes, ts, tt);
  const std::vector<float> loss_again = d_loss.download(), ls_again = d_ls.download();
  CHECK(std::memcmp(loss_first.data(), loss_again.data(), loss_first.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(ls_first.data(), ls_again.data(), ls_first.size() * sizeof(float)) == 0);
}

// Sets the kernel generation for a scope (both are kept: 2 is the default, 1 the kernels of run 1).
struct KernelVersion {
  int saved = hg::cuda::cross_entropy_kernel_version();
  explicit KernelVersion(int v) { hg::cuda::set_cross_entropy_kernel_version(v); }
  ~KernelVersion() { hg::cuda::set_cross_entropy_kernel_version(saved); }
};

template <class T> void check_all_versions(uint64_t seed);

template <class T> void check_all() {
  for (int version : {2, 1}) {
    INFO("kernel version ", version);
    KernelVersion v(version);
    check_all_versions<T>(uint64_t(500 + 1000 * version));  // fresh inputs per version
  }
}

template <class T> void check_all_versions(uint64_t seed) {
  check_distill<T>(128, 65536, true, 0, seed += 10);  // the benchmark's DINO shape: rows split over blocks
  check_distill<T>(2, 300000, true, 0, seed += 10);   // many slices per row
  for (int64_t classes : {10, 1000, 65536, 65537}) {
    check_hard<T>(7, classes, false, seed += 10);
    check_distill<T>(4, classes, true, 0, seed += 10);
  }
  check_hard<T>(300, 1000, true, seed += 10);  // grid-stride over rows, one broadcast upstream gradient
  check_hard<T>(5, 1, false, seed += 10);
  check_distill<T>(6, 1000, false, 0, seed += 10);  // no centre
  check_distill<T>(3, 4096, true, 1, seed += 10);   // misaligned: scalar path
}

}  // namespace

TEST_CASE("cuda cross_entropy: hard labels and DINO soft targets against float64, float32") {
  HG_REQUIRE_GPU();
  check_all<float>();
}

TEST_CASE("cuda cross_entropy: hard labels and DINO soft targets against float64, bfloat16") {
  HG_REQUIRE_GPU();
  check_all<hg::bfloat16>();
}

TEST_CASE("cuda cross_entropy: hard labels and DINO soft targets against float64, float16") {
  HG_REQUIRE_GPU();
  check_all<hg::half>();
}

TEST_CASE("cuda cross_entropy: -inf logits, all-ignored batches and bad labels") {
  HG_REQUIRE_GPU();
  // A row with masked (-inf) logits still has a finite loss; a label outside the classes gives NaN.
  const float inf = INFINITY;
  const std::vector<float> logits{-inf, 1.0f, -inf, 2.0f, 0.5f, 0.5f, 0.5f, 0.5f, 1.0f, 2.0f, 3.0f, 4.0f};
  const std::vector<int64_t> labels{1, -100, 7};
  DeviceBuffer<float> d_logits(logits), loss(3), lse(3);
  DeviceBuffer<int64_t> d_labels(labels);
  hg::cuda::cross_entropy_forward(d_logits.ptr, d_labels.ptr, loss.ptr, lse.ptr, 3, 4);
  const std::vector<float> got = loss.download();
  CHECK(std::abs(got[0] - float(std::log(std::exp(1.0) + std::exp(2.0)) - 1.0)) < 1e-6);
  CHECK(got[1] == 0.0f);
  CHECK(std::isnan(got[2]));
  CHECK_THROWS_WITH_AS(hg::cuda::set_cross_entropy_kernel_version(3),
                       doctest::Contains("cuda::set_cross_entropy_kernel_version: expected 1 or 2"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::cuda::distillation_cross_entropy_forward<float>(d_logits.ptr, d_logits.ptr, nullptr, loss.ptr,
                                                                           lse.ptr, lse.ptr, 3, 4, 0.0f, 0.04f),
                       doctest::Contains("expected positive temperatures"), hg::Error);
}
