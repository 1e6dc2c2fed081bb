// Device tensors: host <-> device copies of contiguous and strided views, the caching
// allocator's accounting, and the clear errors when a CUDA tensor reaches a CPU-only path.
#include "cuda/cuda_test_util.hpp"
#include "histograd/histograd.hpp"

using hg::test::DeviceBuffer;

TEST_CASE("cuda runtime: devices are reported or the reason they are not") {
  if (!hg::cuda::available()) {
    CHECK(!hg::cuda::unavailable_reason().empty());
    CHECK_THROWS_WITH_AS(hg::Tensor<float>({4}, hg::Device::cuda()), doctest::Contains("no usable CUDA device"),
                         hg::Error);
  }
  HG_REQUIRE_GPU();
  CHECK(hg::cuda::device_count() >= 1);
  MESSAGE("device 0: " << hg::cuda::device_name(0));
}

TEST_CASE("cuda tensors: to(cuda) and back is exact for contiguous and strided views") {
  HG_REQUIRE_GPU();
  for (bool transposed : {false, true}) {
    hg::Tensor<float> host = random_t<float>({5, 7, 3}, 11, transposed);
    hg::Tensor<float> device = host.cuda();
    CHECK(device.device() == hg::Device::cuda(0));
    CHECK(device.shape() == host.shape());
    CHECK(device.to_vector() == host.to_vector());
    // A strided view of a device tensor (slice with a step, permute) comes back laid out right.
    hg::Tensor<float> view = device.permute({2, 0, 1}).slice(1, 1, 5, 2);
    CHECK(view.cpu().to_vector() == host.permute({2, 0, 1}).slice(1, 1, 5, 2).contiguous().to_vector());
  }
  hg::Tensor<double> d = random_input({129}, 3);
  CHECK(d.cuda().cpu().to_vector() == d.to_vector());
  hg::Tensor<hg::bfloat16> b = random_t<float>({33}, 4).to<hg::bfloat16>();
  std::vector<hg::bfloat16> back = b.cuda().to_vector();
  for (size_t i = 0; i < back.size(); ++i) CHECK(back[i].bits == b.to_vector()[i].bits);
}

TEST_CASE("cuda tensors: host access to device memory is refused with a clear Error") {
  HG_REQUIRE_GPU();
  hg::Tensor<float> device = random_t<float>({4, 4}, 5).cuda();
  CHECK_THROWS_WITH_AS(device.data(), doctest::Contains("host access to a cuda:0 tensor"), hg::Error);
  CHECK_THROWS_WITH_AS(device.at({0, 0}), doctest::Contains("no CUDA kernel yet"), hg::Error);
  // item() copies the one element back (a loss read by a training loop).
  const hg::Tensor<float> host = random_t<float>({1}, 6);
  CHECK(host.cuda().item() == host.item());
  CHECK_THROWS_WITH_AS(device.item(), doctest::Contains("item: expected a tensor with one element"), hg::Error);
}

TEST_CASE("cuda allocator: freed blocks are reused, and the accounting follows") {
  HG_REQUIRE_GPU();
  hg::cuda::empty_cache();
  const size_t before = hg::cuda::allocated_bytes();
  const float* first = nullptr;
  {
    hg::Tensor<float> a({1 << 20}, hg::Device::cuda());
    first = a.device_data();
    CHECK(hg::cuda::allocated_bytes() >= before + (size_t(4) << 20));
  }
  CHECK(hg::cuda::allocated_bytes() == before);
  CHECK(hg::cuda::cached_bytes() >= (size_t(4) << 20));
  hg::Tensor<float> b({1 << 20}, hg::Device::cuda());
  CHECK(b.device_data() == first);  // the same block, no cudaMalloc
  CHECK(hg::cuda::peak_allocated_bytes() >= before + (size_t(4) << 20));
}

TEST_CASE("cuda buffers: poisoned bytes read back as NaN and fail relative_error") {
  HG_REQUIRE_GPU();
  DeviceBuffer<float> buffer(10);
  std::vector<float> host = buffer.download();
  CHECK(std::isnan(host[3]));
  CHECK(hg::test::relative_error(std::vector<double>(10, 1.0), host) == std::numeric_limits<double>::infinity());
}
