// cuDNN convolution against a float64 loop on the same operands: the patch embedding
// (kernel = stride) and general stride/padding, forward and all three gradients.
#include "cuda/cuda_test_util.hpp"
#include "histograd/cuda/conv.hpp"

using hg::test::DeviceBuffer;

namespace {

struct Errors { double y, dx, dw, db; };

template <class T>
Errors run_case(const hg::cuda::Conv2dArgs& a, uint64_t seed) {
  const int64_t oh = a.out_height(), ow = a.out_width();
  const size_t nx = a.batch * a.in_channels * a.height * a.width, nw = a.out_channels * a.in_channels * a.kernel_h * a.kernel_w;
  const size_t ny = a.batch * a.out_channels * oh * ow;
  std::vector<T> x = hg::test::random_values<T>(nx, seed), w = hg::test::random_values<T>(nw, seed + 1, 0.2);
  std::vector<T> bias = hg::test::random_values<T>(a.out_channels, seed + 2), dy = hg::test::random_values<T>(ny, seed + 3);
  DeviceBuffer<T> dx_in(x), dw_in(w), dbias_in(bias), ddy(dy), y(ny), dx(nx), dw(nw), db(a.out_channels);
  hg::cuda::conv2d_forward<T>(a, dx_in.ptr, dw_in.ptr, dbias_in.ptr, y.ptr);
  hg::cuda::conv2d_backward<T>(a, dx_in.ptr, dw_in.ptr, ddy.ptr, dx.ptr, dw.ptr, db.ptr);
  std::vector<double> ry(ny, 0), rdx(nx, 0), rdw(nw, 0), rdb(a.out_channels, 0);
  auto X = [&](int64_t n, int64_t c, int64_t i, int64_t j) { return ((n * a.in_channels + c) * a.height + i) * a.width + j; };
  auto W = [&](int64_t o, int64_t c, int64_t i, int64_t j) { return ((o * a.in_channels + c) * a.kernel_h + i) * a.kernel_w + j; };
  for (int64_t n = 0; n < a.batch; ++n)
    for (int64_t o = 0; o < a.out_channels; ++o)
      for (int64_t p = 0; p < oh; ++p)
        for (int64_t q = 0; q < ow; ++q) {
          const size_t yi = ((n * a.out_channels + o) * oh + p) * ow + q;
          double acc = hg::test::to_double(bias[o]);
          const double g = hg::test::to_double(dy[yi]);
          rdb[o] += g;
          for (int64_t c = 0; c < a.in_channels; ++c)
            for (int64_t i = 0; i < a.kernel_h; ++i)
              for (int64_t j = 0; j < a.kernel_w; ++j) {
                const int64_t r = p * a.stride_h - a.pad_h + i, s = q * a.stride_w - a.pad_w + j;
                if (r < 0 || r >= a.height || s < 0 || s >= a.width) continue;
                acc += hg::test::to_double(x[X(n, c, r, s)]) * hg::test::to_double(w[W(o, c, i, j)]);
                rdx[X(n, c, r, s)] += g * hg::test::to_double(w[W(o, c, i, j)]);
                rdw[W(o, c, i, j)] += g * hg::test::to_double(x[X(n, c, r, s)]);
              }
          ry[yi] = acc;
        }
  return {hg::test::relative_error(ry, y.download()), hg::test::relative_error(rdx, dx.download()),
          hg::test::relative_error(rdw, dw.download()), hg::test::relative_error(rdb, db.download())};
}

std::vector<hg::cuda::Conv2dArgs> cases() {
  std::vector<hg::cuda::Conv2dArgs> out;
  hg::cuda::Conv2dArgs patch;  // a ViT-S/16-like patch embedding on a 48x32 image
  patch.batch = 2, patch.in_channels = 3, patch.height = 48, patch.width = 32, patch.out_channels = 24;
  patch.kernel_h = patch.kernel_w = patch.stride_h = patch.stride_w = 16;
  out.push_back(patch);
  hg::cuda::Conv2dArgs general = patch;  // 3x3, stride 2, padding 1, odd sizes
  general.height = 13, general.width = 11, general.out_channels = 5, general.kernel_h = general.kernel_w = 3;
  general.stride_h = general.stride_w = 2, general.pad_h = general.pad_w = 1;
  out.push_back(general);
  return out;
}

}  // namespace

TEST_CASE("cuda conv2d: fp32 forward and gradients within 1e-5 of float64") {
  HG_REQUIRE_GPU();
  uint64_t seed = 500;
  for (const auto& a : cases()) {
    Errors e = run_case<float>(a, seed += 5);
    INFO("kernel ", a.kernel_h, " stride ", a.stride_h);
    CHECK(e.y <= 1e-5);
    CHECK(e.dx <= 1e-5);
    CHECK(e.dw <= 1e-5);
    CHECK(e.db <= 1e-5);
  }
}

TEST_CASE("cuda conv2d: bf16 within 1e-2 and fp16 within 5e-3") {
  HG_REQUIRE_GPU();
  uint64_t seed = 600;
  for (const auto& a : cases()) {
    Errors b = run_case<hg::bfloat16>(a, seed += 5), h = run_case<hg::half>(a, seed += 5);
    for (double e : {b.y, b.dx, b.dw, b.db}) CHECK(e <= 1e-2);
    for (double e : {h.y, h.dx, h.dw, h.db}) CHECK(e <= 5e-3);
  }
}

TEST_CASE("cuda conv2d: a kernel larger than the input is an Error naming cuda::conv2d") {
  HG_REQUIRE_GPU();
  hg::cuda::Conv2dArgs a = cases()[0];
  a.height = 8;
  DeviceBuffer<float> buffer(4096);
  CHECK_THROWS_WITH_AS(hg::cuda::conv2d_forward<float>(a, buffer.ptr, buffer.ptr, nullptr, buffer.ptr),
                       doctest::Contains("cuda::conv2d: kernel"), hg::Error);
}
