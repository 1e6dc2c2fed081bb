// libFuzzer harness: the PNG (inflate, filters, Adam7) and JPEG (Huffman, progressive, IDCT,
// upsampling) decoders over arbitrary bytes. Any input either decodes to width*height*3
// pixels or throws histograd::Error; every pixel is read so a short buffer trips ASan.
#include <histograd/io/image.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    histograd::io::Image image = histograd::io::decode_image(data, size, "fuzz.img");
    if (image.pixels.size() != static_cast<size_t>(image.width * image.height * 3)) __builtin_trap();
    unsigned sum = 0;
    for (uint8_t v : image.pixels) sum += v;
    if (sum == 0xFFFFFFFFu) __builtin_trap();  // keeps the reads
  } catch (const histograd::Error&) {
  }
  return 0;
}
