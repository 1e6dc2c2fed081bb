// Tiles of whole-slide images as a data::Dataset, so pretraining and k-NN read slides the way they
// read image folders: each slide is segmented once (extract.hpp's segment_slide, a tissue preset),
// its patch grid laid at a target magnification or mpp (patching.hpp, TRIDENT's grid and CLAM's keep
// rules), optionally subsampled per slide, and load(i) reads one patch as wsi_extract reads it
// (resolution.hpp's read_region_resized: best level, then resized). Labels are slide indices.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

// tensor.hpp before anything that reaches ops/device.hpp (extract.hpp -> data/transforms.hpp ->
// core/factories.hpp): factories.hpp includes ops/device.hpp before tensor.hpp, and tensor.hpp's
// tail then parses ops/views.hpp before device.hpp has declared detail::is_cuda.
#include "../core/tensor.hpp"
#include "../core/error.hpp"
#include "../data/dataset.hpp"
#include "../io/image.hpp"
#include "extract.hpp"
#include "patching.hpp"
#include "resolution.hpp"
#include "slide.hpp"
#include "tissue.hpp"

namespace histograd::wsi {

struct SlideTilesOptions {
  int64_t patch_size = 224;  // side of a tile, in pixels at the target resolution
  // The target resolution: one of the two; neither means 20x (mpp = 10 / magnification, TRIDENT's rule).
  std::optional<double> magnification, mpp;
  std::string tissue_preset = "histograd";  // SegmentationParams::preset name, wsi_extract's default
  double min_tissue_fraction = 0;           // 0 keeps what the keep rule keeps, as wsi_extract does
  KeepRule rule = KeepRule::FourPt;
  int64_t max_tiles_per_slide = 0;  // 0: every tile; else a subsample drawn from `seed`, kept in grid order
  uint64_t seed = 0;
  std::optional<double> slide_mpp;  // level-0 mpp for every slide, over metadata (for slides without one)
  Background background = Background::White;
  // Slides where segmentation finds no tissue (or the grid keeps no tile): an Error naming the slide,
  // or, when true, a warning on stderr and no tiles from it (its class stays, so labels keep their meaning).
  bool skip_slides_without_tiles = false;
  // Handles per slide. One handle is already safe to share between loader threads (OpenSlide: "all
  // functions except openslide_close() are thread-safe"); more avoid its per-handle serialisation of
  // tile decoding, at one tile cache (32 MiB in 3.4.1) each.
  int handles_per_slide = 1;
};

// Where tile i comes from: level-0 top-left (x, y), side size_level0 level-0 pixels, read from
// pyramid level `level` (then resized to patch_size when that level's side differs).
struct TileCoordinate {
  size_t slide = 0;
  int level = 0;
  int64_t x = 0, y = 0;
  int64_t size_level0 = 0;
};

namespace detail {

// SplitMix64: the subsample depends on (seed, slide index) alone, on every platform (std::shuffle's
// and the std distributions' outputs are implementation-defined).
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// k of the indices 0..n-1 (k < n), sorted: the first k of a partial Fisher-Yates shuffle.
inline std::vector<size_t> subsample_indices(size_t n, size_t k, uint64_t seed, uint64_t stream) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  uint64_t state = seed ^ (0xD1B54A32D192ED03ull * (stream + 1));
  for (size_t i = 0; i < k; ++i) {
    const uint64_t range = uint64_t(n - i);
    // Rejection keeps the draw uniform: values at or above the largest multiple of range are redrawn.
    const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t r;
    do r = splitmix64(state);
    while (r >= limit);
    std::swap(idx[i], idx[i + size_t(r % range)]);
  }
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace detail

class SlideTiles : public data::Dataset {
 public:
  SlideTiles(const std::vector<std::string>& slide_paths, SlideTilesOptions options = {}) : o_(std::move(options)) {
    HG_CHECK(!slide_paths.empty(), "SlideTiles", "expected at least one slide path, got none");
    HG_CHECK(o_.patch_size > 0, "SlideTiles", "expected a positive patch size, got ", o_.patch_size);
    HG_CHECK(o_.max_tiles_per_slide >= 0, "SlideTiles", "expected max_tiles_per_slide >= 0 (0: all), got ",
             o_.max_tiles_per_slide);
    HG_CHECK(o_.handles_per_slide >= 1, "SlideTiles", "expected handles_per_slide >= 1, got ", o_.handles_per_slide);
    HG_CHECK(o_.min_tissue_fraction >= 0 && o_.min_tissue_fraction <= 1, "SlideTiles",
             "expected min_tissue_fraction in [0, 1], got ", o_.min_tissue_fraction);
    HG_CHECK(!(o_.magnification && o_.mpp), "SlideTiles", "give a target magnification or a target mpp, not both");
    const SegmentationParams seg = [&] {
      try {
        return SegmentationParams::preset(o_.tissue_preset);
      } catch (const Error& e) {
        fail("SlideTiles", "unknown tissue preset: ", e.what());
      }
    }();
    PatchParams pp;
    pp.magnification = o_.magnification;
    pp.mpp = o_.mpp;
    pp.patch_size = o_.patch_size;
    pp.rule = o_.rule;
    pp.min_tissue_fraction = o_.min_tissue_fraction;
    const double want_mpp = [&] {
      try {
        return target_mpp(pp);
      } catch (const Error& e) {
        fail("SlideTiles", e.what());
      }
    }();
    offsets_.push_back(0);
    for (size_t s = 0; s < slide_paths.size(); ++s) {
      add_slide(s, slide_paths[s], seg, pp, want_mpp);
      offsets_.push_back(coords_.size());
    }
    HG_CHECK(!coords_.empty(), "SlideTiles", "no tiles in any of the ", slide_paths.size(),
             " slide(s): every slide was skipped for having no tissue");
  }

  explicit SlideTiles(const std::string& slide_path, SlideTilesOptions options = {})
      : SlideTiles(std::vector<std::string>{slide_path}, std::move(options)) {}

  size_t size() const override { return coords_.size(); }

  // Thread-safe: the slide handles are OpenSlide's thread-safe ones (see handles_per_slide) and
  // nothing else here changes after construction.
  io::Image load(size_t i) override {
    const TileCoordinate& c = coordinates(i);
    Source& src = *sources_[c.slide];
    if (src.pool->size() == 1)
      return read_region_resized(src.pool->slide(0), c.x, c.y, c.size_level0, c.size_level0, o_.patch_size,
                                 o_.patch_size, o_.background);
    const SlidePool::Lease lease = src.pool->acquire();
    return read_region_resized(*lease, c.x, c.y, c.size_level0, c.size_level0, o_.patch_size, o_.patch_size,
                               o_.background);
  }

  int label(size_t i) const override { return int(coordinates(i).slide); }
  std::vector<std::string> classes() const override { return names_; }

  std::string path(size_t i) const override {
    const TileCoordinate& c = coordinates(i);
    std::ostringstream s;
    s << paths_[c.slide] << " tile at (" << c.x << ", " << c.y << ") level-0 px, " << c.size_level0 << " px wide";
    return s.str();
  }

  const TileCoordinate& coordinates(size_t i) const {
    HG_CHECK(i < coords_.size(), "SlideTiles", "expected a tile index below ", coords_.size(), ", got ", i);
    return coords_[i];
  }

  size_t slide_count() const { return paths_.size(); }
  const std::string& slide_path(size_t s) const {
    HG_CHECK(s < paths_.size(), "SlideTiles", "expected a slide index below ", paths_.size(), ", got ", s);
    return paths_[s];
  }
  // Tiles [begin, end) of this dataset come from slide s.
  std::pair<size_t, size_t> slide_range(size_t s) const {
    HG_CHECK(s < paths_.size(), "SlideTiles", "expected a slide index below ", paths_.size(), ", got ", s);
    return {offsets_[s], offsets_[s + 1]};
  }
  // The slide's full grid (before subsampling): resolution, sizes, candidates looked at.
  const PatchGrid& grid(size_t s) const {
    HG_CHECK(s < paths_.size(), "SlideTiles", "expected a slide index below ", paths_.size(), ", got ", s);
    return sources_[s]->grid;
  }
  const SlideTilesOptions& options() const { return o_; }

 private:
  struct Source {
    std::unique_ptr<SlidePool> pool;
    PatchGrid grid;
  };

  void add_slide(size_t s, const std::string& path, const SegmentationParams& seg, const PatchParams& pp,
                 double want_mpp) {
    std::error_code ec;
    HG_CHECK(std::filesystem::exists(path, ec), "SlideTiles", "slide '", path, "' does not exist");
    paths_.push_back(path);
    names_.push_back(std::filesystem::path(path).stem().string());
    auto src = std::make_unique<Source>();
    std::vector<TissueRegion> regions;
    double mpp0 = 0;
    try {
      src->pool = std::make_unique<SlidePool>(path, o_.handles_per_slide);
      const Slide& slide = src->pool->slide(0);
      mpp0 = level0_mpp(slide, o_.slide_mpp);
      // Finer than level 0 would be invented detail. 10% slack: scanners' "20x" is 0.49-0.55 µm/px
      // and "40x" 0.24-0.27, so a nominal request is served from the nearest level-0 resolution.
      if (want_mpp < mpp0 / 1.1) {
        std::ostringstream m;
        m << "slide '" << path << "' cannot provide " << 10.0 / want_mpp << "x (" << want_mpp
          << " µm/px): its level 0 is " << mpp0 << " µm/px (" << 10.0 / mpp0 << "x); ask for at most "
          << 10.0 / mpp0 << "x (mpp >= " << mpp0 << ")";
        fail("SlideTiles", m.str());
      }
      regions = segment_slide(slide, seg, o_.slide_mpp).regions;
      const auto [w0, h0] = slide.dimensions(0);
      src->grid = patch_grid(regions, w0, h0, mpp0, pp);
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.rfind("SlideTiles: ", 0) == 0) throw;
      fail("SlideTiles", "cannot use slide '", path, "': ", what);
    }
    const PatchGrid& g = src->grid;
    if (g.coords.empty()) {
      std::ostringstream m;
      if (regions.empty())
        m << "no tissue found in slide '" << path << "' with the '" << o_.tissue_preset
          << "' tissue preset (the presets: histograd, clam, tcga, bwh_biopsy, bwh_resection; a slide's thumbnail "
             "shows whether it holds tissue)";
      else
        m << "tissue found in slide '" << path << "' but no " << o_.patch_size << " px tile at " << 10.0 / g.target_mpp
          << "x kept (min_tissue_fraction " << o_.min_tissue_fraction << "); lower the fraction or the tile size";
      HG_CHECK(o_.skip_slides_without_tiles, "SlideTiles", m.str());
      std::cerr << "warning: SlideTiles: " << m.str() << "; skipping it\n";
    }
    const Slide& slide = src->pool->slide(0);
    // read_region_resized's level rule, recorded so users see where a tile's pixels come from.
    const double want_ds = double(g.patch_size_level0) / double(o_.patch_size);
    const int level = slide.best_level_for_downsample(want_ds * 1.01);
    std::vector<size_t> keep;
    const size_t n = g.coords.size();
    if (o_.max_tiles_per_slide > 0 && n > size_t(o_.max_tiles_per_slide))
      keep = detail::subsample_indices(n, size_t(o_.max_tiles_per_slide), o_.seed, s);
    else
      for (size_t k = 0; k < n; ++k) keep.push_back(k);
    for (size_t k : keep)
      coords_.push_back(TileCoordinate{s, level, g.coords[k].x, g.coords[k].y, g.patch_size_level0});
    sources_.push_back(std::move(src));
  }

  SlideTilesOptions o_;
  std::vector<std::string> paths_, names_;
  std::vector<std::unique_ptr<Source>> sources_;
  std::vector<TileCoordinate> coords_;
  std::vector<size_t> offsets_;  // slide s owns tiles [offsets_[s], offsets_[s + 1])
};

}  // namespace histograd::wsi
