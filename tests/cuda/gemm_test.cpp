// cuBLASLt products against a float64 reference on the same (rounded) operands: every
// transpose combination, padded row strides, strided batches, the bias and bias+GELU(tanh)
// epilogues, for fp32 (exact and TF32), bf16 and fp16.
#include "cuda/cuda_test_util.hpp"
#include "histograd/cuda/gemm.hpp"

using hg::test::DeviceBuffer;

namespace {

struct Case {
  int64_t m, n, k, batch;
  bool ta, tb;
  int64_t pad;  // extra elements at the end of every stored row
  hg::cuda::GemmEpilogue epilogue = hg::cuda::GemmEpilogue::None;
};

template <class T>
double run_case(const Case& c, hg::cuda::GemmMath math, uint64_t seed) {
  const int64_t a_rows = c.ta ? c.k : c.m, a_cols = (c.ta ? c.m : c.k), b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.n + c.pad;
  const int64_t sa = a_rows * lda, sb = b_rows * ldb, sc = c.m * ldc;
  std::vector<T> a = hg::test::random_values<T>(static_cast<size_t>(sa * c.batch), seed);
  std::vector<T> b = hg::test::random_values<T>(static_cast<size_t>(sb * c.batch), seed + 1);
  std::vector<T> bias = hg::test::random_values<T>(static_cast<size_t>(c.n), seed + 2);
  DeviceBuffer<T> da(a), db(b), dbias(bias), dc(static_cast<size_t>(sc * c.batch));
  hg::cuda::GemmArgs args;
  args.transpose_a = c.ta;
  args.transpose_b = c.tb;
  args.m = c.m, args.n = c.n, args.k = c.k, args.lda = lda, args.ldb = ldb, args.ldc = ldc;
  args.batch = c.batch, args.stride_a = sa, args.stride_b = sb, args.stride_c = sc;
  args.math = math;
  args.epilogue = c.epilogue;
  hg::cuda::gemm<T>(args, da.ptr, db.ptr, dc.ptr, c.epilogue == hg::cuda::GemmEpilogue::None ? nullptr : dbias.ptr);
  std::vector<T> out = dc.download();
  std::vector<double> reference, got_written;
  std::vector<T> got;
  for (int64_t p = 0; p < c.batch; ++p)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double acc = 0;
        for (int64_t q = 0; q < c.k; ++q) {
          const double x = hg::test::to_double(a[p * sa + (c.ta ? q * lda + i : i * lda + q)]);
          const double y = hg::test::to_double(b[p * sb + (c.tb ? j * ldb + q : q * ldb + j)]);
          acc += x * y;
        }
        if (c.epilogue != hg::cuda::GemmEpilogue::None) acc += hg::test::to_double(bias[j]);
        if (c.epilogue == hg::cuda::GemmEpilogue::BiasGelu)
          acc = 0.5 * acc * (1 + std::tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)));
        reference.push_back(acc);
        got.push_back(out[p * sc + i * ldc + j]);
      }
  return hg::test::relative_error(reference, got);
}

const std::vector<Case> kCases = {
    {1, 1, 1, 1, false, false, 0},    {7, 5, 3, 1, false, false, 0},  {197, 64, 96, 1, false, true, 0},
    {64, 197, 33, 1, true, false, 3}, {40, 50, 60, 1, true, true, 1}, {197, 197, 64, 6, false, true, 0},
    {33, 17, 130, 3, true, false, 2}, {128, 256, 64, 1, false, true, 0, hg::cuda::GemmEpilogue::Bias},
    {100, 384, 200, 1, false, true, 0, hg::cuda::GemmEpilogue::BiasGelu},
};

}  // namespace

TEST_CASE("cuda gemm: fp32 exact within 1e-5 of float64") {
  HG_REQUIRE_GPU();
  uint64_t seed = 100;
  for (const Case& c : kCases) {
    INFO("m=", c.m, " n=", c.n, " k=", c.k, " batch=", c.batch, " ta=", c.ta, " tb=", c.tb);
    CHECK(run_case<float>(c, hg::cuda::GemmMath::Exact, seed += 3) <= 1e-5);
  }
}

TEST_CASE("cuda gemm: fp32 with TF32 opt-in within 2e-3 (10-bit mantissa products)") {
  HG_REQUIRE_GPU();
  uint64_t seed = 200;
  for (const Case& c : kCases) CHECK(run_case<float>(c, hg::cuda::GemmMath::TF32, seed += 3) <= 2e-3);
}

TEST_CASE("cuda gemm: bf16 within 1e-2 and fp16 within 5e-3 (fp32 accumulation; output rounding dominates)") {
  HG_REQUIRE_GPU();
  uint64_t seed = 300;
  for (const Case& c : kCases) {
    INFO("m=", c.m, " n=", c.n, " k=", c.k);
    CHECK(run_case<hg::bfloat16>(c, hg::cuda::GemmMath::Exact, seed += 3) <= 1e-2);
    CHECK(run_case<hg::half>(c, hg::cuda::GemmMath::Exact, seed += 3) <= 5e-3);
  }
}

TEST_CASE("cuda gemm: bad arguments are Errors naming cuda::gemm") {
  HG_REQUIRE_GPU();
  hg::cuda::GemmArgs args;
  args.m = 4, args.n = 4, args.k = 4, args.lda = 2;
  DeviceBuffer<float> x(16);
  CHECK_THROWS_WITH_AS(hg::cuda::gemm<float>(args, x.ptr, x.ptr, x.ptr), doctest::Contains("cuda::gemm: row strides"),
                       hg::Error);
  args.lda = 0, args.epilogue = hg::cuda::GemmEpilogue::Bias;
  CHECK_THROWS_WITH_AS(hg::cuda::gemm<float>(args, x.ptr, x.ptr, x.ptr), doctest::Contains("needs a bias"), hg::Error);
  hg::cuda::GemmArgs bf;
  bf.m = bf.n = bf.k = 2, bf.math = hg::cuda::GemmMath::TF32;
  DeviceBuffer<hg::bfloat16> y(4);
  CHECK_THROWS_WITH_AS(hg::cuda::gemm<hg::bfloat16>(bf, y.ptr, y.ptr, y.ptr), doctest::Contains("TF32"), hg::Error);
}
