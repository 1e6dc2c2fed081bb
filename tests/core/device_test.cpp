// Device names: str() and parse() are inverses, and a --device flag's "cuda" means cuda:0;
// anything else is refused with the accepted forms named.
#include "test_util.hpp"

TEST_CASE("Device::parse reads what str() writes, and refuses anything else") {
  CHECK(hg::Device::parse("cpu") == hg::kCPU);
  CHECK(hg::Device::parse("cuda") == hg::Device::cuda(0));
  CHECK(hg::Device::parse("cuda:3") == hg::Device::cuda(3));
  for (const hg::Device d : {hg::kCPU, hg::Device::cuda(0), hg::Device::cuda(12)}) CHECK(hg::Device::parse(d.str()) == d);
  for (const char* bad : {"", "gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda:99999", "cpu:0"})
    CHECK_THROWS_WITH_AS(hg::Device::parse(bad), doctest::Contains("Device: expected cpu, cuda or cuda:N, got '"),
                         hg::Error);
}
