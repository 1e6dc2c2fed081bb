// cuda/layer_norm.cu against a float64 reference written here from the definition (biased
// variance; dx = rstd (dy w - mean(dy w) - xhat mean(dy w xhat)); dw = Σ dy xhat, db = Σ dy), on
// fresh random rows: every row length path (in registers, re-read, vectorised, scalar, misaligned).
// Outputs are poisoned (NaN) before every run, so unwritten elements fail; NaN never passes. Both kernel
// versions (set_layer_norm_kernel_version) run every shape on their own fresh inputs.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "histograd/cuda/layer_norm.hpp"

namespace {

using hg::test::DeviceBuffer;

// CHECK(error <= bound), and on failure one line naming the quantity and the case: the GPU run's
// log keeps only lines matching ERROR/CHECK, which drop doctest's INFO ("logged:") lines.
void check_error(const char* what, double error, double bound, const std::string& where) {
  if (!(error <= bound)) std::printf("ERROR layer_norm %s: relative error %g > %g at %s\n", what, error, bound, where.c_str());
  CHECK(error <= bound);
}

template <class T> double tolerance() {
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  else if constexpr (std::is_same_v<T, hg::bfloat16>) return 1e-2;
  else return 5e-3;
}

struct Reference {
  std::vector<double> y, mean, rstd, dx, dw, db;
};

Reference reference(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                    const std::vector<double>& dy, int64_t rows, int64_t cols, double eps) {
  Reference r;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  r.mean.resize(size_t(rows));
  r.rstd.resize(size_t(rows));
  r.dw.assign(size_t(cols), 0.0);
  r.db.assign(size_t(cols), 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    const double* xr = x.data() + i * cols;
    const double* g = dy.data() + i * cols;
    double mean = 0, var = 0;
    for (int64_t k = 0; k < cols; ++k) mean += xr[k];
    mean /= double(cols);
    for (int64_t k = 0; k < cols; ++k) var += (xr[k] - mean) * (xr[k] - mean);
    var /= double(cols);
    const double rstd = 1.0 / std::sqrt(var + eps);
    r.mean[size_t(i)] = mean;
    r.rstd[size_t(i)] = rstd;
    double mean_dyw = 0, mean_dyw_xhat = 0;
    for (int64_t k = 0; k < cols; ++k) {
      const double xhat = (xr[k] - mean) * rstd;
      r.y[size_t(i * cols + k)] = xhat * w[size_t(k)] + b[size_t(k)];
      mean_dyw += g[k] * w[size_t(k)];
      mean_dyw_xhat += g[k] * w[size_t(k)] * xhat;
      r.dw[size_t(k)] += g[k] * xhat;
      r.db[size_t(k)] += g[k];
    }
    mean_dyw /= double(cols);
    mean_dyw_xhat /= double(cols);
    for (int64_t k = 0; k < cols; ++k) {
      const double xhat = (xr[k] - mean) * rstd;
      r.dx[size_t(i * cols + k)] = rstd * (g[k] * w[size_t(k)] - mean_dyw - xhat * mean_dyw_xhat);
    }
  }
  return r;
}

// offset: elements to shift every device pointer by (1 forces the scalar path).
template <class T>
void check_layer_norm(int64_t rows, int64_t cols, bool affine, int64_t offset, double shift, uint64_t seed) {
  INFO("rows ", rows, " cols ", cols, " affine ", affine, " offset ", offset, " dtype ", hg::dtype_name<T>());
  const std::string where = "version " + std::to_string(hg::cuda::layer_norm_kernel_version()) + " rows " + std::to_string(rows) + " cols " + std::to_string(cols) + " affine " +
                            std::to_string(affine) + " offset " + std::to_string(offset) + " dtype " +
                            std::string(hg::dtype_name<T>());
  const size_t n = size_t(rows * cols), c = size_t(cols);
  std::vector<double> xd = hg::test::as_doubles(hg::test::random_values<T>(n, seed));
  for (double& v : xd) v += shift;  // rows far from zero: the statistics must not cancel
  std::vector<T> x(n), dy = hg::test::random_values<T>(n, seed + 1), w = hg::test::random_values<T>(c, seed + 2),
                       b = hg::test::random_values<T>(c, seed + 3);
  for (size_t i = 0; i < n; ++i) x[i] = hg::test::from_double<T>(xd[i]);
  const std::vector<double> xs = hg::test::as_doubles(x), dys = hg::test::as_doubles(dy);
  const std::vector<double> ws = affine ? hg::test::as_doubles(w) : std::vector<double>(c, 1.0);
  const std::vector<double> bs = affine ? hg::test::as_doubles(b) : std::vector<double>(c, 0.0);
  const double eps = 1e-5;
  const Reference ref = reference(xs, ws, bs, dys, rows, cols, eps);

  auto padded = [&](const std::vector<T>& v) {
    std::vector<T> out(size_t(offset), T(0.0f));
    out.insert(out.end(), v.begin(), v.end());
    return out;
  };
  DeviceBuffer<T> dx_in(padded(x)), ddy(padded(dy)), dw_in(padded(w)), db_in(padded(b));
  DeviceBuffer<T> y(n + size_t(offset)), dx(n + size_t(offset)), dweight(c), dbias(c);
  DeviceBuffer<float> mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
  const T* wp = affine ? dw_in.ptr + offset : nullptr;
  const T* bp = affine ? db_in.ptr + offset : nullptr;
  hg::cuda::layer_norm_forward(dx_in.ptr + offset, wp, bp, y.ptr + offset, mean.ptr, rstd.ptr, rows, cols, eps);
  auto tail = [&](const DeviceBuffer<T>& buf) {
    std::vector<T> all = buf.download();
    return std::vector<T>(all.begin() + offset, all.end());
  };
  check_error("y", hg::test::relative_error(ref.y, tail(y)), tolerance<T>(), where);
  check_error("mean", hg::test::relative_error(ref.mean, mean.download()), 1e-5, where);
  check_error("rstd", hg::test::relative_error(ref.rstd, rstd.download()), 1e-5, where);

  hg::cuda::layer_norm_backward(dx_in.ptr + offset, ddy.ptr + offset, wp, mean.ptr, rstd.ptr, dx.ptr + offset,
                                dweight.ptr, dbias.ptr, rows, cols);
  check_error("dx", hg::test::relative_error(ref.dx, tail(dx)), tolerance<T>(), where);
  const std::vector<T> dw_first = dweight.download(), db_first = dbias.download();
  check_error("dw", hg::test::relative_error(ref.dw, dw_first), tolerance<T>(), where);
  check_error("db", hg::test::relative_error(ref.db, db_first), tolerance<T>(), where);

  // Parameter gradients alone, again: bit-identical (fixed-order reduction), dx untouched.
  dweight.poison();
  dbias.poison();
  dx.poison();
  hg::cuda::layer_norm_backward(dx_in.ptr + offset, ddy.ptr + offset, wp, mean.ptr, rstd.ptr, static_cast<T*>(nullptr),
                                dweight.ptr, dbias.ptr, rows, cols);
  const std::vector<T> dw_again = dweight.download(), db_again = dbias.download();
  for (size_t k = 0; k < c; ++k) {
    CHECK(std::memcmp(&dw_again[k], &dw_first[k], sizeof(T)) == 0);
    CHECK(std::memcmp(&db_again[k], &db_first[k], sizeof(T)) == 0);
  }
  // dx alone.
  hg::cuda::layer_norm_backward(dx_in.ptr + offset, ddy.ptr + offset, wp, mean.ptr, rstd.ptr, dx.ptr + offset,
                                static_cast<T*>(nullptr), static_cast<T*>(nullptr), rows, cols);
  check_error("dx", hg::test::relative_error(ref.dx, tail(dx)), tolerance<T>(), where);
}

// Sets the kernel generation for a scope (both are kept: 2 is the default, 1 the kernels of run 1).
struct KernelVersion {
  int saved = hg::cuda::layer_norm_kernel_version();
  explicit KernelVersion(int v) { hg::cuda::set_layer_norm_kernel_version(v); }
  ~KernelVersion() { hg::cuda::set_layer_norm_kernel_version(saved); }
};

template <class T> void check_version_shapes(uint64_t seed);

template <class T> void check_all_shapes() {
  for (int version : {2, 1}) {
    INFO("kernel version ", version);
    KernelVersion v(version);
    check_version_shapes<T>(uint64_t(100 + 1000 * version));  // fresh inputs per version
  }
}

template <class T> void check_version_shapes(uint64_t seed) {
  // Version 2 (warp per row): every vectors-per-lane count, several rows per warp (prefetch), and
  // rows that fall back (fp32 over 1024 / 16-bit over 1536 columns backward, 8192 forward).
  for (int64_t cols : {8, 64, 128, 256, 512, 1536, 2048, 4096, 8192}) check_layer_norm<T>(41, cols, true, 0, 0.0, seed += 10);
  check_layer_norm<T>(4000, 768, true, 0, 0.0, seed += 10);
  check_layer_norm<T>(3001, 1024, true, 0, 3.0, seed += 10);
  check_layer_norm<T>(2500, 384, false, 0, 0.0, seed += 10);
  // cols 1: dx is exactly 0, so relative_error measures it absolutely (the case run 1 failed on).
  for (int64_t cols : {1, 7, 384, 768, 1000, 1024, 4099}) check_layer_norm<T>(37, cols, true, 0, 0.0, seed += 10);
  check_layer_norm<T>(3, 40001, true, 0, 4.0, seed += 10);   // re-read path, scalar
  check_layer_norm<T>(3, 32768, true, 0, 4.0, seed += 10);   // vectorised; forward in registers (16-bit) or re-read (fp32)
  check_layer_norm<T>(600, 768, true, 0, 0.0, seed += 10);   // many row blocks for the weight/bias partials
  check_layer_norm<T>(37, 768, false, 0, 0.0, seed += 10);   // no weight, no bias
  check_layer_norm<T>(37, 768, true, 1, 0.0, seed += 10);    // misaligned pointers: scalar path
  check_layer_norm<T>(5, 9000, true, 0, 0.0, seed += 10);    // weight/bias partials too big for shared memory
}

}  // namespace

TEST_CASE("cuda layer_norm: forward and backward against a float64 reference, float32") {
  HG_REQUIRE_GPU();
  check_all_shapes<float>();
}

TEST_CASE("cuda layer_norm: forward and backward against a float64 reference, bfloat16") {
  HG_REQUIRE_GPU();
  check_all_shapes<hg::bfloat16>();
}

TEST_CASE("cuda layer_norm: forward and backward against a float64 reference, float16") {
  HG_REQUIRE_GPU();
  check_all_shapes<hg::half>();
}

TEST_CASE("cuda layer_norm: zero rows leave the outputs alone and zero the parameter gradients") {
  HG_REQUIRE_GPU();
  CHECK_THROWS_WITH_AS(hg::cuda::set_layer_norm_kernel_version(0),
                       doctest::Contains("cuda::set_layer_norm_kernel_version: expected 1 or 2"), hg::Error);
  DeviceBuffer<float> x(4), y(4), mean(1), rstd(1), dw(4), db(4);
  hg::cuda::layer_norm_forward<float>(x.ptr, nullptr, nullptr, y.ptr, mean.ptr, rstd.ptr, 0, 4, 1e-5);
  hg::cuda::layer_norm_backward<float>(x.ptr, x.ptr, nullptr, mean.ptr, rstd.ptr, nullptr, dw.ptr, db.ptr, 0, 4);
  CHECK(hg::test::relative_error(std::vector<double>(4, 0.0), dw.download()) == 0.0);
  CHECK(hg::test::relative_error(std::vector<double>(4, 0.0), db.download()) == 0.0);
  CHECK_THROWS_WITH_AS(hg::cuda::layer_norm_forward<float>(x.ptr, nullptr, nullptr, y.ptr, mean.ptr, rstd.ptr, -1, 4,
                                                           1e-5),
                       doctest::Contains("cuda::layer_norm_forward: expected non-negative sizes"), hg::Error);
}
