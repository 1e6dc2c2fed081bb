// Whole-slide images through OpenSlide's C API (Debian's 3.4.1 here; later versions work the same):
// an RAII handle with the pyramid geometry, properties, associated images, and read_region converted
// from OpenSlide's premultiplied ARGB to RGB over a documented background. Facts from openslide.h and
// ../shared/docs/WSI.md §A5-A6 (openslide-python's un-premultiply, CLAM/TRIDENT/TIAToolbox backgrounds).
#pragma once
#include <openslide.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../io/image.hpp"

namespace histograd::wsi {

// What a transparent or partly transparent pixel becomes (OpenSlide gives 0x00000000 outside the
// slide and in unscanned areas; alpha between 0 and 255 only where a level was resampled at an edge).
//   White      : composited over white, as openslide-python's get_thumbnail/DeepZoom and TIAToolbox's
//                background_composite do: pixel = blend(un-premultiplied colour, 255, alpha).
//   Black      : what CLAM and TRIDENT feed their models after PIL's .convert('RGB'), which DROPS alpha:
//                transparent pixels are (0,0,0), partly transparent ones keep their un-premultiplied colour.
//   SlideColor : like White but over the slide's openslide.background-color (white when absent), as
//                openslide-python's DeepZoomGenerator does.
enum class Background { White, Black, SlideColor };

namespace detail {

struct OpenSlideCloser {
  void operator()(openslide_t* osr) const noexcept {
    if (osr) openslide_close(osr);
  }
};

// Larger reads are a caller's bug (a level-0 read of a whole slide), not a request: 2^31 pixels is 6 GiB of RGB.
inline constexpr int64_t kMaxReadPixels = int64_t(1) << 31;
// One OpenSlide call reads at most this many pixels (64 MiB of ARGB), so the temporary buffer stays small.
inline constexpr int64_t kReadChunkPixels = int64_t(1) << 24;

// PIL's DIV255 (v in [0, 255·255]): round(v / 255), bit-exact with Pillow's paste(mask=...).
inline uint8_t div255(uint32_t v) {
  const uint32_t t = v + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

// Premultiplied 0xAARRGGBB -> RGB. Un-premultiplying is openslide-python's _convert.c (c·255/a,
// truncating); compositing is PIL's paste(tile, mask=alpha) onto the background, which is what
// openslide-python's get_thumbnail does, so both agree to the bit.
inline void argb_to_rgb(const uint32_t* argb, int64_t count, const std::array<uint8_t, 3>& bg, bool drop_alpha,
                        uint8_t* rgb) {
  for (int64_t i = 0; i < count; ++i, rgb += 3) {
    const uint32_t p = argb[i];
    const uint32_t a = p >> 24;
    const uint32_t c[3] = {(p >> 16) & 0xFF, (p >> 8) & 0xFF, p & 0xFF};
    if (a == 255) {
      rgb[0] = static_cast<uint8_t>(c[0]), rgb[1] = static_cast<uint8_t>(c[1]), rgb[2] = static_cast<uint8_t>(c[2]);
    } else if (a == 0) {
      const uint8_t z = 0;
      for (int k = 0; k < 3; ++k) rgb[k] = drop_alpha ? z : bg[k];
    } else {
      for (int k = 0; k < 3; ++k) {
        const uint32_t u = c[k] * 255 / a;  // a valid premultiplied pixel has c <= a, so u <= 255
        const uint32_t uc = u > 255 ? 255 : u;
        rgb[k] = drop_alpha ? static_cast<uint8_t>(uc) : div255(bg[k] * (255 - a) + uc * a);
      }
    }
  }
}

// "RRGGBB" (openslide.background-color) -> bytes; nullopt when malformed.
inline std::optional<std::array<uint8_t, 3>> parse_hex_rgb(const std::string& s) {
  if (s.size() != 6) return std::nullopt;
  std::array<uint8_t, 3> out{};
  for (int k = 0; k < 3; ++k) {
    int v = 0;
    for (int j = 0; j < 2; ++j) {
      const char ch = s[static_cast<size_t>(2 * k + j)];
      int d = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + d;
    }
    out[static_cast<size_t>(k)] = static_cast<uint8_t>(v);
  }
  return out;
}

}  // namespace detail

// One open slide. Geometry and properties are read once at construction (so they stay valid even
// after a failed read has put OpenSlide into its terminal error state). All const methods are safe to
// call from several threads at once: OpenSlide documents every call but close as thread-safe on one
// openslide_t, and everything else here is immutable after construction. Keep the Slide alive and
// reuse it: re-opening per read costs ~100x (WSI.md §A7.6).
class Slide {
 public:
  explicit Slide(const std::string& path) : path_(path) {
    std::error_code ec;
    HG_CHECK(std::filesystem::exists(path, ec), "Slide", path, ": no such file");
    osr_.reset(openslide_open(path.c_str()));
    HG_CHECK(osr_ != nullptr, "Slide", path,
             ": not a file OpenSlide can recognise (openslide_open returned NULL: an unsupported format, a stripped "
             "rather than tiled TIFF, or a truncated file)");
    if (const char* err = openslide_get_error(osr_.get())) {
      const std::string message = err;
      osr_.reset();
      fail("Slide", path, ": OpenSlide opened it into an error state: ", message);
    }
    const int32_t n = openslide_get_level_count(osr_.get());
    HG_CHECK(n >= 1, "Slide", path, ": OpenSlide reports ", n, " levels");
    for (int32_t l = 0; l < n; ++l) {
      int64_t w = -1, h = -1;
      openslide_get_level_dimensions(osr_.get(), l, &w, &h);
      const double ds = openslide_get_level_downsample(osr_.get(), l);
      HG_CHECK(w > 0 && h > 0 && ds > 0, "Slide", path, ": level ", l, " has size ", w, "x", h, " and downsample ", ds);
      dims_.emplace_back(w, h);
      downsamples_.push_back(ds);
    }
    if (const char* const* names = openslide_get_property_names(osr_.get()))
      for (; *names; ++names)
        if (const char* v = openslide_get_property_value(osr_.get(), *names)) properties_[*names] = v;
    if (const char* const* names = openslide_get_associated_image_names(osr_.get()))
      for (; *names; ++names) associated_.emplace_back(*names);
    if (const char* err = openslide_get_error(osr_.get())) fail("Slide", path, ": OpenSlide error while reading metadata: ", err);
    const auto it = properties_.find("openslide.background-color");
    if (it != properties_.end())
      if (auto rgb = detail::parse_hex_rgb(it->second)) slide_background_ = *rgb;
  }

  Slide(Slide&&) noexcept = default;
  Slide& operator=(Slide&&) noexcept = default;
  Slide(const Slide&) = delete;
  Slide& operator=(const Slide&) = delete;

  const std::string& path() const { return path_; }
  int level_count() const { return static_cast<int>(dims_.size()); }

  // (width, height) of `level` in its own pixels.
  std::pair<int64_t, int64_t> dimensions(int level = 0) const {
    check_level("dimensions", level);
    return dims_[static_cast<size_t>(level)];
  }
  // Level-0 pixels per pixel of `level`, as OpenSlide reports it (its ((W0/Wl)+(H0/Hl))/2 when the file has none).
  double downsample(int level) const {
    check_level("downsample", level);
    return downsamples_[static_cast<size_t>(level)];
  }
  const std::vector<double>& downsamples() const { return downsamples_; }

  // OpenSlide's rule: the largest level whose downsample is <= d (level 0 when d is below every level).
  int best_level_for_downsample(double d) const {
    HG_CHECK(std::isfinite(d) && d > 0, "best_level_for_downsample", path_, ": expected a positive downsample, got ", d);
    if (d < downsamples_[0]) return 0;
    for (size_t i = 1; i < downsamples_.size(); ++i)
      if (d < downsamples_[i]) return static_cast<int>(i) - 1;
    return level_count() - 1;
  }

  std::optional<std::string> property(const std::string& name) const {
    const auto it = properties_.find(name);
    if (it == properties_.end()) return std::nullopt;
    return it->second;
  }
  const std::map<std::string, std::string>& properties() const { return properties_; }

  // "thumbnail", "label", "macro", ... as the format provides them.
  const std::vector<std::string>& associated_image_names() const { return associated_; }

  std::pair<int64_t, int64_t> associated_image_dimensions(const std::string& name) const {
    check_associated(name);
    check_not_failed("associated_image");
    int64_t w = -1, h = -1;
    openslide_get_associated_image_dimensions(osr_.get(), name.c_str(), &w, &h);
    check_after("associated_image", " reading associated image '" + name + "'");
    return {w, h};
  }

  io::Image associated_image(const std::string& name, Background background = Background::White) const {
    const auto [w, h] = associated_image_dimensions(name);
    HG_CHECK(w > 0 && h > 0 && w <= detail::kMaxReadPixels / h, "associated_image", path_, ": image '", name,
             "' has an unusable size ", w, "x", h);
    std::vector<uint32_t> argb(static_cast<size_t>(w * h));
    openslide_read_associated_image(osr_.get(), name.c_str(), argb.data());
    check_after("associated_image", " reading associated image '" + name + "'");
    io::Image out{w, h, std::vector<uint8_t>(static_cast<size_t>(w * h * 3))};
    detail::argb_to_rgb(argb.data(), w * h, background_rgb(background), background == Background::Black, out.pixels.data());
    return out;
  }

  // The RGB a fully transparent pixel becomes under `background`.
  std::array<uint8_t, 3> background_rgb(Background background) const {
    switch (background) {
      case Background::Black: return {0, 0, 0};
      case Background::SlideColor: return slide_background_;
      case Background::White: break;
    }
    return {255, 255, 255};
  }

  // The w x h pixels of `level` whose top-left is level-0 (x0, y0), as RGB over `background`.
  // Pixels outside the slide are transparent, i.e. the background colour. Reads above 2^24 pixels go
  // to OpenSlide in blocks whose level-0 origin is x0 + round(i·downsample); for a fractional
  // downsample those origins may differ by under half a level-0 pixel from one big read.
  io::Image read_region(int64_t x0, int64_t y0, int level, int64_t w, int64_t h,
                        Background background = Background::White) const {
    check_read_size(level, w, h);
    io::Image out{w, h, std::vector<uint8_t>(static_cast<size_t>(w * h * 3))};
    read_region_into(out.pixels.data(), x0, y0, level, w, h, background);
    return out;
  }

  // read_region into caller memory (w·h·3 bytes), for workers that reuse their buffers.
  void read_region_into(uint8_t* rgb, int64_t x0, int64_t y0, int level, int64_t w, int64_t h,
                        Background background = Background::White) const {
    read_region_chunked(rgb, x0, y0, level, w, h, background, detail::kReadChunkPixels);
  }

  // The same with an explicit block size (tests use it to exercise the blocking on small slides).
  void read_region_chunked(uint8_t* rgb, int64_t x0, int64_t y0, int level, int64_t w, int64_t h,
                           Background background, int64_t chunk_pixels) const {
    check_read_size(level, w, h);
    HG_CHECK(chunk_pixels > 0, "read_region", "expected a positive block size, got ", chunk_pixels);
    check_not_failed("read_region");
    const double ds = downsamples_[static_cast<size_t>(level)];
    const int64_t bw = std::min(w, chunk_pixels), bh = std::max<int64_t>(1, std::min(h, chunk_pixels / bw));
    const std::array<uint8_t, 3> bg = background_rgb(background);
    std::vector<uint32_t> argb(static_cast<size_t>(bw * bh));
    for (int64_t by = 0; by < h; by += bh) {
      const int64_t rows = std::min(bh, h - by);
      for (int64_t bx = 0; bx < w; bx += bw) {
        const int64_t cols = std::min(bw, w - bx);
        const int64_t lx = x0 + std::llround(static_cast<double>(bx) * ds);
        const int64_t ly = y0 + std::llround(static_cast<double>(by) * ds);
        openslide_read_region(osr_.get(), argb.data(), lx, ly, level, cols, rows);
        if (const char* err = openslide_get_error(osr_.get()))
          fail("read_region", path_, ": OpenSlide failed reading level ", level, " at (", lx, ", ", ly, ") size ", cols,
               "x", rows, ": ", err, " (OpenSlide's error state is terminal: this slide handle cannot read any more)");
        for (int64_t r = 0; r < rows; ++r)
          detail::argb_to_rgb(argb.data() + r * cols, cols, bg, background == Background::Black,
                              rgb + ((by + r) * w + bx) * 3);
      }
    }
  }

  // The raw handle, for OpenSlide calls this class does not wrap. Never close it.
  openslide_t* handle() const { return osr_.get(); }

 private:
  void check_level(const char* op, int level) const {
    HG_CHECK(osr_ != nullptr, op, "use of a moved-from Slide");
    HG_CHECK(level >= 0 && level < level_count(), op, path_, ": level ", level, " out of range (the slide has ",
             level_count(), " level", level_count() == 1 ? "" : "s", ")");
  }
  void check_read_size(int level, int64_t w, int64_t h) const {
    check_level("read_region", level);
    HG_CHECK(w > 0 && h > 0, "read_region", path_, ": expected a positive size, got ", w, "x", h);
    HG_CHECK(w <= detail::kMaxReadPixels / h, "read_region", path_, ": ", w, "x", h, " pixels is more than one read may ask for (",
             detail::kMaxReadPixels, " pixels); read a lower level or in tiles");
  }
  void check_associated(const std::string& name) const {
    HG_CHECK(osr_ != nullptr, "associated_image", "use of a moved-from Slide");
    for (const auto& n : associated_)
      if (n == name) return;
    std::string have;
    for (const auto& n : associated_) have += (have.empty() ? "" : ", ") + n;
    fail("associated_image", path_, ": no associated image '", name, "' (the slide has: ", have.empty() ? "none" : have, ")");
  }
  void check_not_failed(const char* op) const {
    if (const char* err = openslide_get_error(osr_.get()))
      fail(op, path_, ": the slide is in OpenSlide's terminal error state from an earlier failure: ", err);
  }
  void check_after(const char* op, const std::string& what) const {
    if (const char* err = openslide_get_error(osr_.get())) fail(op, path_, ": OpenSlide failed", what, ": ", err);
  }

  std::string path_;
  std::unique_ptr<openslide_t, detail::OpenSlideCloser> osr_;
  std::vector<std::pair<int64_t, int64_t>> dims_;
  std::vector<double> downsamples_;
  std::map<std::string, std::string> properties_;
  std::vector<std::string> associated_;
  std::array<uint8_t, 3> slide_background_{255, 255, 255};
};

// Handles on one slide for a pool of workers. One Slide is already safe to share between threads;
// several handles avoid OpenSlide's internal serialisation (its per-handle tile cache and decoder
// locks, WSI.md §A7.6) at the cost of one cache (32 MiB in 3.4.1) per handle. Either index a handle
// by worker number (slide(i)) or borrow any free one for a while (acquire()).
class SlidePool {
 public:
  SlidePool(const std::string& path, int handles) {
    HG_CHECK(handles >= 1, "SlidePool", path, ": expected at least one handle, got ", handles);
    for (int i = 0; i < handles; ++i) slides_.emplace_back(path);
    busy_.assign(static_cast<size_t>(handles), false);
  }
  SlidePool(const SlidePool&) = delete;
  SlidePool& operator=(const SlidePool&) = delete;

  int size() const { return static_cast<int>(slides_.size()); }
  const Slide& slide(int worker) const {
    HG_CHECK(worker >= 0 && worker < size(), "SlidePool", "worker ", worker, " out of range for ", size(), " handles");
    return slides_[static_cast<size_t>(worker)];
  }

  // A borrowed handle, given back when the Lease is destroyed.
  class Lease {
   public:
    Lease(Lease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), index_(o.index_) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (pool_) pool_->release(index_);
    }
    const Slide& operator*() const { return pool_->slides_[index_]; }
    const Slide* operator->() const { return &pool_->slides_[index_]; }

   private:
    friend class SlidePool;
    Lease(SlidePool* pool, size_t index) : pool_(pool), index_(index) {}
    SlidePool* pool_;
    size_t index_;
  };

  // Waits until a handle is free.
  Lease acquire() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      for (size_t i = 0; i < busy_.size(); ++i)
        if (!busy_[i]) {
          busy_[i] = true;
          return Lease(this, i);
        }
      freed_.wait(lock);
    }
  }

 private:
  void release(size_t i) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_[i] = false;
    }
    freed_.notify_one();
  }

  std::vector<Slide> slides_;
  std::vector<bool> busy_;
  std::mutex mutex_;
  std::condition_variable freed_;
};

}  // namespace histograd::wsi
