// libFuzzer harness: SafetensorsFile over arbitrary bytes (see readers_fuzz.hpp).
#include "readers_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  histograd::fuzz::parse_safetensors(data, size);
  return 0;
}
