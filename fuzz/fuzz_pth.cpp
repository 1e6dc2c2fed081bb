// libFuzzer harness: read_pth (zip directory, restricted unpickler, tensor views) over arbitrary bytes.
#include "readers_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  histograd::fuzz::parse_pth(data, size);
  return 0;
}
