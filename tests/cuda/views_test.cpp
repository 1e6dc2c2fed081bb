// Views, copies and factories on CUDA tensors: contiguous()/clone() of permuted, sliced and
// expanded views, copy_ into strided destinations (poisoned first) with broadcasting and across
// devices, fill_, the backward of views (slice's zero-filled scatter, expand's sum_to),
// factories on a device, and gradient accumulation across two backward calls. Skipped without a GPU.
#include "cuda/parity_util.hpp"

using hg::test::check_parity_both;

TEST_CASE("cuda views: contiguous and clone of strided views are exact") {
  HG_REQUIRE_GPU();
  hg::Tensor<float> x = random_t<float>({4, 6, 5}, 40);
  hg::Tensor<float> g = x.cuda();
  auto same = [](const hg::Tensor<float>& host_view, const hg::Tensor<float>& device_view) {
    hg::Tensor<float> c = device_view.contiguous();
    CHECK(c.device().is_cuda());
    CHECK(c.is_contiguous());
    CHECK(c.cpu().to_vector() == host_view.contiguous().to_vector());
  };
  same(x.permute({2, 0, 1}), g.permute({2, 0, 1}));
  same(x.slice(1, 1, 6, 2), g.slice(1, 1, 6, 2));
  same(x.select(-1, 3), g.select(-1, 3));
  same(x.slice(0, 1, 2).expand({3, 1, 6, 5}), g.slice(0, 1, 2).expand({3, 1, 6, 5}));
  same(x.slice(1, 0, 0), g.slice(1, 0, 0));  // size 0
  same(x.reshape({-1}), g.reshape({-1}));
  same(x.mT().reshape({4, 30}), g.mT().reshape({4, 30}));  // reshape of a non-viewable layout copies
  hg::Tensor<float> c = g.clone();
  CHECK(c.device_data() != g.device_data());
}

TEST_CASE("cuda views: copy_ and fill_ write strided destinations, poisoned first") {
  HG_REQUIRE_GPU();
  hg::Tensor<double> dst_host = hg::full<double>({5, 8}, std::nan(""));
  hg::Tensor<double> dst = dst_host.cuda();
  hg::Tensor<double> src = random_input({4, 1}, 41);
  // a stepped, transposed destination view [4, 5], a broadcast source [4, 1]
  dst.slice(1, 1, 8, 2).mT().copy_(src.cuda());
  dst_host.slice(1, 1, 8, 2).mT().copy_(src);
  // and a transposed source into another stepped view
  hg::Tensor<double> src2 = random_input({5, 4}, 48);
  dst.slice(1, 0, 8, 2).copy_(src2.cuda().mT().contiguous().mT());
  dst_host.slice(1, 0, 8, 2).copy_(src2);
  std::vector<double> got = dst.cpu().to_vector(), want = dst_host.to_vector();
  for (size_t i = 0; i < got.size(); ++i) CHECK((got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i]))));
  // Across devices, both ways.
  hg::Tensor<double> host_src = random_input({5, 8}, 42), d2 = hg::full<double>({5, 8}, std::nan(""), hg::Device::cuda());
  d2.copy_(host_src);
  CHECK(d2.cpu().to_vector() == host_src.to_vector());
  hg::Tensor<double> back = hg::full<double>({8, 5}, std::nan(""));
  back.mT().copy_(d2);
  CHECK(back.mT().contiguous().to_vector() == host_src.to_vector());
  // Overlapping source and destination.
  hg::Tensor<double> o = host_src.cuda();
  o.slice(1, 1, 8).copy_(o.slice(1, 0, 7));
  hg::Tensor<double> oh = host_src.clone();
  oh.slice(1, 1, 8).copy_(oh.slice(1, 0, 7));
  CHECK(o.cpu().to_vector() == oh.to_vector());
  // fill_ of a strided view leaves the rest alone.
  hg::Tensor<float> f = hg::zeros<float>({6, 4}, hg::Device::cuda());
  f.slice(0, 0, 6, 3).fill_(2.5f);
  std::vector<float> fv = f.cpu().to_vector();
  for (int64_t i = 0; i < 24; ++i) CHECK(fv[i] == ((i / 4) % 3 == 0 ? 2.5f : 0.0f));
  CHECK_THROWS_WITH_AS(hg::Tensor<float>({3}, hg::Device::cuda()).copy_(random_t<float>({4}, 43)),
                       doctest::Contains("copy_"), hg::Error);
}

TEST_CASE("cuda views: factories on a device") {
  HG_REQUIRE_GPU();
  const hg::Device gpu = hg::Device::cuda();
  CHECK(hg::zeros<float>({3, 2}, gpu).cpu().to_vector() == std::vector<float>(6, 0.0f));
  CHECK(hg::ones<double>({4}, gpu).cpu().to_vector() == std::vector<double>(4, 1.0));
  CHECK(hg::full<float>({2, 2}, -1.5f, gpu).cpu().to_vector() == std::vector<float>(4, -1.5f));
  CHECK(hg::scalar_tensor<double>(3.0, gpu).cpu().item() == 3.0);
  CHECK(hg::empty<float>({0, 3}, gpu).numel() == 0);
  CHECK(hg::zeros_like(hg::ones<float>({2}, gpu)).device() == gpu);
  CHECK(hg::arange<float>(-1.3f, 7.9f, 0.37f, gpu).cpu().to_vector() == hg::arange<float>(-1.3f, 7.9f, 0.37f).to_vector());
  CHECK(hg::arange<double>(0.1, 50.0, 0.7, gpu).cpu().to_vector() == hg::arange<double>(0.1, 50.0, 0.7).to_vector());
  CHECK(hg::arange<int64_t>(10, gpu).cpu().to_vector() == hg::arange<int64_t>(10).to_vector());
  CHECK(hg::from_vector<float>({1, 2, 3}, {3}, gpu).cpu().to_vector() == std::vector<float>{1, 2, 3});
}

TEST_CASE("cuda views: backward through views, and accumulation across backward calls") {
  HG_REQUIRE_GPU();
  check_parity_both("slice/select/permute", [](const auto& v) {
    return hg::mul(v[0].permute({1, 0, 2}).slice(0, 1, 5, 2).select(-1, 1), 3.0); }, {random_input({3, 6, 4}, 44)});
  check_parity_both("expand/unsqueeze/squeeze", [](const auto& v) {
    return hg::exp(v[0].unsqueeze(1).squeeze(1).unsqueeze(0).expand({4, 3, 5})); }, {random_input({3, 5}, 45)});
  check_parity_both("reshape/flatten", [](const auto& v) { return hg::square(v[0].mT().flatten()); },
                    {random_input({4, 6}, 46)});
  // .grad() accumulates on the device over two backward calls.
  hg::Tensor<float> w = random_t<float>({3, 4}, 47).cuda().requires_grad_();
  hg::sum(hg::square(w)).backward();
  hg::sum(hg::mul(w, 2.0f)).backward();
  hg::Tensor<float> host = w.cpu();
  std::vector<float> grad = w.grad().cpu().to_vector(), x = host.to_vector();
  REQUIRE(w.grad().device().is_cuda());
  for (size_t i = 0; i < grad.size(); ++i) CHECK(grad[i] == doctest::Approx(2 * x[i] + 2).epsilon(1e-6));
  // A non-scalar backward with an explicit gradient on the device, and one on the wrong device.
  hg::Tensor<float> y = hg::mul(w, 3.0f);
  CHECK_THROWS_WITH_AS(y.backward(hg::ones<float>({3, 4})), doctest::Contains("backward: gradient on cpu"), hg::Error);
}
