// Small pyramidal tiled TIFFs written with libtiff, so the wsi suites run on every machine without
// real slides. What OpenSlide 3.4.1 needs to see a pyramid (WSI.md §A6): directory 0 tiled, every
// further level tiled with SubfileType REDUCEDIMAGE. Generic TIFF gives no mpp on 3.4.1 (only the
// tiff.XResolution/ResolutionUnit properties); an "Aperio ..." ImageDescription makes it an Aperio
// slide, whose "AppMag = " and "MPP = " fields become openslide.objective-power and openslide.mpp-x/y.
#pragma once
#include <tiffio.h>

#include <algorithm>
#include <array>
#include <memory>
#include <cstdint>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <histograd/io/image.hpp>

namespace synthetic {

using histograd::io::Image;

enum class Compression { None, Deflate, Lzw };
enum class ResolutionUnit { None = RESUNIT_NONE, Inch = RESUNIT_INCH, Centimeter = RESUNIT_CENTIMETER };

struct PyramidOptions {
  int tile = 64;       // tile width = height; TIFF wants a multiple of 16; no level may be smaller than a tile
  int levels = 1;      // level l is level l-1 halved (floor sizes, 2x2 means): see pyramid_levels
  Compression compression = Compression::None;
  std::optional<double> x_resolution;  // written as XResolution and YResolution (pixels per unit)
  ResolutionUnit resolution_unit = ResolutionUnit::Centimeter;
  std::optional<std::string> description;  // ImageDescription of directory 0 (see aperio_description)
};

// An ImageDescription OpenSlide 3.4.1 reads as Aperio: the first line must start with "Aperio", the
// fields after the first '|' become aperio.* properties.
inline std::string aperio_description(int64_t width, int64_t height, int tile, std::optional<double> mpp,
                                      std::optional<double> app_mag) {
  std::ostringstream s;
  s << "Aperio Image Library vhistograd-test\r\n" << width << "x" << height << " (" << tile << "x" << tile << ") RGB";
  if (app_mag) s << "|AppMag = " << *app_mag;
  s << "|Filename = synthetic";
  if (mpp) s << "|MPP = " << *mpp;
  return s.str();
}

// Pixel-for-pixel the levels write_pyramid_tiff stores: level l+1 is (W/2)x(H/2) (floor), each pixel the
// rounded mean of a 2x2 block of level l. With sizes divisible by 2^(levels-1) the downsamples are exact powers of 2.
inline std::vector<Image> pyramid_levels(const Image& base, int levels) {
  std::vector<Image> out{base};
  for (int l = 1; l < levels; ++l) {
    const Image& p = out.back();
    Image q{p.width / 2, p.height / 2, {}};
    if (q.width < 1 || q.height < 1) throw std::runtime_error("pyramid_levels: level too small");
    q.pixels.resize(static_cast<size_t>(q.width * q.height * 3));
    for (int64_t y = 0; y < q.height; ++y)
      for (int64_t x = 0; x < q.width; ++x)
        for (int c = 0; c < 3; ++c) {
          auto at = [&](int64_t xx, int64_t yy) { return unsigned(p.pixels[static_cast<size_t>((yy * p.width + xx) * 3 + c)]); };
          const unsigned sum = at(2 * x, 2 * y) + at(2 * x + 1, 2 * y) + at(2 * x, 2 * y + 1) + at(2 * x + 1, 2 * y + 1);
          q.pixels[static_cast<size_t>((y * q.width + x) * 3 + c)] = static_cast<uint8_t>((sum + 2) / 4);
        }
    out.push_back(std::move(q));
  }
  return out;
}

// An image from a pixel function f(x, y) -> {r, g, b}.
inline Image make_image(int64_t width, int64_t height, const std::function<std::array<uint8_t, 3>(int64_t, int64_t)>& f) {
  Image im{width, height, std::vector<uint8_t>(static_cast<size_t>(width * height * 3))};
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x) {
      const auto rgb = f(x, y);
      for (int c = 0; c < 3; ++c) im.pixels[static_cast<size_t>((y * width + x) * 3 + c)] = rgb[static_cast<size_t>(c)];
    }
  return im;
}

namespace detail {

inline void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("synthetic TIFF writer: " + what);
}

// One tiled directory of `channels` interleaved 8-bit samples (3 = RGB, 4 = RGB + unassociated alpha).
inline void write_directory(TIFF* tif, const uint8_t* pixels, int64_t width, int64_t height, int channels, bool reduced,
                            const PyramidOptions& o, bool first) {
  const uint32_t tile = static_cast<uint32_t>(o.tile);
  check(TIFFSetField(tif, TIFFTAG_SUBFILETYPE, reduced ? FILETYPE_REDUCEDIMAGE : 0) == 1, "SubfileType");
  TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, static_cast<uint32_t>(width));
  TIFFSetField(tif, TIFFTAG_IMAGELENGTH, static_cast<uint32_t>(height));
  TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, 8);
  TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, channels);
  TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
  TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  if (channels == 4) {
    const uint16_t extra[1] = {EXTRASAMPLE_UNASSALPHA};
    TIFFSetField(tif, TIFFTAG_EXTRASAMPLES, 1, extra);
  }
  const int compression = o.compression == Compression::Deflate ? COMPRESSION_ADOBE_DEFLATE
                          : o.compression == Compression::Lzw   ? COMPRESSION_LZW
                                                                : COMPRESSION_NONE;
  TIFFSetField(tif, TIFFTAG_COMPRESSION, compression);
  TIFFSetField(tif, TIFFTAG_TILEWIDTH, tile);
  TIFFSetField(tif, TIFFTAG_TILELENGTH, tile);
  if (o.x_resolution) {
    TIFFSetField(tif, TIFFTAG_XRESOLUTION, static_cast<float>(*o.x_resolution));
    TIFFSetField(tif, TIFFTAG_YRESOLUTION, static_cast<float>(*o.x_resolution));
    TIFFSetField(tif, TIFFTAG_RESOLUTIONUNIT, static_cast<uint16_t>(o.resolution_unit));
  }
  if (first && o.description) TIFFSetField(tif, TIFFTAG_IMAGEDESCRIPTION, o.description->c_str());
  std::vector<uint8_t> buf(static_cast<size_t>(tile) * tile * static_cast<size_t>(channels));
  for (int64_t ty = 0; ty < height; ty += tile)
    for (int64_t tx = 0; tx < width; tx += tile) {
      std::fill(buf.begin(), buf.end(), uint8_t(0));
      for (int64_t y = ty; y < std::min<int64_t>(ty + tile, height); ++y)
        for (int64_t x = tx; x < std::min<int64_t>(tx + tile, width); ++x)
          for (int c = 0; c < channels; ++c)
            buf[static_cast<size_t>(((y - ty) * tile + (x - tx)) * channels + c)] =
                pixels[static_cast<size_t>((y * width + x) * channels + c)];
      const ttile_t index = TIFFComputeTile(tif, static_cast<uint32_t>(tx), static_cast<uint32_t>(ty), 0, 0);
      check(TIFFWriteEncodedTile(tif, index, buf.data(), static_cast<tmsize_t>(buf.size())) >= 0, "TIFFWriteEncodedTile");
    }
  check(TIFFWriteDirectory(tif) == 1, "TIFFWriteDirectory");
}

struct TiffCloser {
  void operator()(TIFF* t) const { TIFFClose(t); }
};

}  // namespace detail

// Writes `base` and options.levels - 1 halved levels (pyramid_levels) as a tiled pyramidal TIFF.
inline void write_pyramid_tiff(const std::string& path, const Image& base, const PyramidOptions& options = {}) {
  detail::check(options.tile > 0 && options.tile % 16 == 0, "tile size must be a positive multiple of 16");
  detail::check(options.levels >= 1, "need at least one level");
  const std::vector<Image> levels = pyramid_levels(base, options.levels);
  for (const Image& level : levels)
    detail::check(level.width >= options.tile && level.height >= options.tile,
                  "every level must be at least one tile wide and tall (OpenSlide 3.4.1 with this libtiff returns wrong "
                  "pixels for a level smaller than its tile); got a " + std::to_string(level.width) + "x" +
                      std::to_string(level.height) + " level with " + std::to_string(options.tile) + " px tiles");
  std::unique_ptr<TIFF, detail::TiffCloser> tif(TIFFOpen(path.c_str(), "w"));
  detail::check(tif != nullptr, "cannot create " + path);
  for (size_t l = 0; l < levels.size(); ++l)
    detail::write_directory(tif.get(), levels[l].pixels.data(), levels[l].width, levels[l].height, 3, l > 0, options, l == 0);
}

// The same from a pixel function f(x, y) -> {r, g, b} over width x height.
inline void write_pyramid_tiff(const std::string& path, int64_t width, int64_t height,
                               const std::function<std::array<uint8_t, 3>(int64_t, int64_t)>& f,
                               const PyramidOptions& options = {}) {
  write_pyramid_tiff(path, make_image(width, height, f), options);
}

// One level of RGBA with unassociated alpha (rgba: width·height·4 bytes). libtiff premultiplies it
// when OpenSlide decodes, so OpenSlide returns partly transparent premultiplied pixels: the input the
// ARGB -> RGB conversion is tested on.
inline void write_rgba_tiff(const std::string& path, int64_t width, int64_t height, const std::vector<uint8_t>& rgba,
                            const PyramidOptions& options = {}) {
  detail::check(rgba.size() == static_cast<size_t>(width * height * 4), "rgba needs width*height*4 bytes");
  detail::check(width >= options.tile && height >= options.tile, "the image must be at least one tile wide and tall");
  std::unique_ptr<TIFF, detail::TiffCloser> tif(TIFFOpen(path.c_str(), "w"));
  detail::check(tif != nullptr, "cannot create " + path);
  detail::write_directory(tif.get(), rgba.data(), width, height, 4, false, options, true);
}

}  // namespace synthetic
