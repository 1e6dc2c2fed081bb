// Random draws on the GPU reproduce the CPU draws of the same Generator state: uniform bits
// exactly, normals within float64 rounding of the device's log/sin/cos, dropout masks exactly
// (and dropout's backward), drop_path's per-sample mask; the generator advances by the same
// number of blocks on both devices. Skipped without a GPU.
#include "cuda/cuda_test_util.hpp"
#include "histograd/histograd.hpp"

TEST_CASE("cuda random: rand equals the CPU draw bit for bit, and advances the generator alike") {
  HG_REQUIRE_GPU();
  for (int64_t n : {1, 3, 4, 5, 1000, 4099}) {
    hg::Generator a(1234), b(1234);
    a.set_offset(77);
    b.set_offset(77);
    hg::Tensor<float> cpu = hg::rand<float>({n}, a);
    hg::Tensor<float> gpu = hg::rand<float>({n}, b, hg::Device::cuda());
    CHECK(gpu.device().is_cuda());
    CHECK(gpu.cpu().to_vector() == cpu.to_vector());
    CHECK(a.offset() == b.offset());
    CHECK(hg::rand<double>({n}, hg::Device::cuda(), b).cpu().to_vector() == hg::rand<double>({n}, a).to_vector());
  }
}

TEST_CASE("cuda random: randn matches the CPU's Box-Muller") {
  HG_REQUIRE_GPU();
  hg::Generator a(99), b(99);
  std::vector<double> cpu = hg::randn<double>({4097}, a).to_vector();
  std::vector<double> gpu = hg::randn<double>({4097}, b, hg::Device::cuda()).cpu().to_vector();
  CHECK(hg::test::relative_error(cpu, gpu) <= 1e-14);
  std::vector<float> cpu_f = hg::randn<float>({333}, a).to_vector();
  std::vector<float> gpu_f = hg::randn<float>({333}, b, hg::Device::cuda()).cpu().to_vector();
  size_t equal = 0;
  for (size_t i = 0; i < cpu_f.size(); ++i) {
    CHECK(std::abs(cpu_f[i] - gpu_f[i]) <= 1e-6f * std::max(1.0f, std::abs(cpu_f[i])));
    equal += cpu_f[i] == gpu_f[i];
  }
  CHECK(equal >= cpu_f.size() * 9 / 10);  // double math rounded to float: nearly always identical
  CHECK(hg::randn_like(hg::zeros<float>({3}, hg::Device::cuda())).device().is_cuda());
}

TEST_CASE("cuda random: dropout and drop_path masks equal the CPU's, backward included") {
  HG_REQUIRE_GPU();
  hg::Tensor<float> x = random_t<float>({6, 37}, 50, true);  // non-contiguous
  hg::Generator a(5), b(5);
  hg::Tensor<float> xc = x.clone().requires_grad_(), xg = x.cuda().requires_grad_();
  hg::Tensor<float> yc = hg::dropout(xc, 0.3, true, a), yg = hg::dropout(xg, 0.3, true, b);
  CHECK(yg.device().is_cuda());
  CHECK(yg.cpu().to_vector() == yc.to_vector());
  hg::Tensor<float> w = random_t<float>({6, 37}, 51);
  hg::sum(hg::mul(yc, w)).backward();
  hg::sum(hg::mul(yg, w.cuda())).backward();
  CHECK(xg.grad().device().is_cuda());
  CHECK(xg.grad().cpu().to_vector() == xc.grad().to_vector());
  CHECK(a.offset() == b.offset());
  hg::Tensor<double> z = random_input({9, 3, 4}, 52);
  CHECK(hg::drop_path(z.cuda(), 0.5, true, b).cpu().to_vector() == hg::drop_path(z, 0.5, true, a).to_vector());
  CHECK(hg::dropout(z.cuda(), 1.0, true, b).cpu().to_vector() == hg::dropout(z, 1.0, true, a).to_vector());
  CHECK(a.offset() == b.offset());
}
