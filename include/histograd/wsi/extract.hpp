// Slide -> tissue -> patch grid -> one embedding per patch, for one slide or a folder of them,
// written in the files CLAM and TRIDENT read (hdf5.hpp). Patches are read at the target
// resolution (resolution.hpp: best level, then resized) by worker threads, each with its own
// Slide handle kept for the whole slide, while the model runs the previous batch; then the
// preset's published transform (resize, centre crop, normalise) and models::vit. Every output is
// written to a temporary name and renamed, so a slide is either done (its features file exists:
// a rerun skips it) or leaves nothing behind but its finished earlier stages.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../core/autocast.hpp"
#include "../data/transforms.hpp"
#include "../io/checkpoint.hpp"
#include "../io/image.hpp"
#include "../io/npy.hpp"
#include "../models/presets.hpp"
#include "hdf5.hpp"
#include "patching.hpp"
#include "qc_slide.hpp"
#include "resolution.hpp"
#include "slide.hpp"
#include "tissue.hpp"

namespace histograd::wsi {

// ---------------------------------------------------------------------------------------------
// Slide-level segmentation.

struct SlideTissue {
  int level = 0;                    // the level segmented
  double downsample_x = 1, downsample_y = 1;  // level-0 pixels per pixel of that level, per axis (CLAM)
  int64_t width = 0, height = 0;    // of that level
  std::vector<TissueRegion> regions;  // level 0
};

// CLAM's segmentTissue on a slide: seg_level −1 is the best level for downsample 64 (level 0 on a
// one-level slide), read whole, composited on white (transparent pixels have saturation 0, as in
// CLAM). Downsamples per axis are W0/Wl and H0/Hl (CLAM's _assertLevelDownsamples). A level above
// 1e8 pixels is refused as CLAM refuses it, with the way out in the message. With blur_qc (the
// "histograd" preset) the slide is also read at blur_mpp for the blur QC, which needs the level-0
// mpp: user_mpp, else the metadata.
inline SlideTissue segment_slide(const Slide& slide, const SegmentationParams& params,
                                 std::optional<double> user_mpp = std::nullopt) {
  SlideTissue t;
  t.level = params.seg_level >= 0 ? params.seg_level : slide.best_level_for_downsample(64.0);
  HG_CHECK(t.level < slide.level_count(), "segment_slide", slide.path(), ": seg_level ", t.level, " but the slide has ",
           slide.level_count(), " levels");
  const auto [w0, h0] = slide.dimensions(0);
  std::tie(t.width, t.height) = slide.dimensions(t.level);
  HG_CHECK(double(t.width) * double(t.height) <= max_segmentation_pixels, "segment_slide", slide.path(), ": level ",
           t.level, " is ", t.width, "x", t.height, " pixels, over CLAM's limit of 1e8 for segmentation; choose a "
           "smaller level (seg_level)");
  t.downsample_x = double(w0) / double(t.width);
  t.downsample_y = double(h0) / double(t.height);
  const io::Image image = slide.read_region(0, 0, t.level, t.width, t.height, Background::White);
  std::optional<QcImage> qc;
  if (params.blur_qc) qc = read_blur_qc_image(slide, params.blur_mpp, user_mpp);
  t.regions = segment_tissue(image, t.downsample_x, t.downsample_y, params, qc ? &*qc : nullptr);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Options, results and output paths.

struct ExtractOptions {
  std::string model = "dino_vits16";        // preset name: names features_<model>/ and the encoder attribute
  std::optional<models::ViTConfig> config;  // replaces the preset's config (tests use tiny ones)
  std::string weights;                      // checkpoint for io::load_weights; empty: random weights
  PatchParams patch;                        // target resolution, size, overlap, keep rules
  SegmentationParams segmentation = SegmentationParams::preset("histograd");  // CLAM + pen filter + blur QC, a_t = 1
  std::optional<double> mpp;                // level-0 mpp for every slide, over the metadata
  std::map<std::string, double> mpp_table;  // per slide (file name or name without extension), from read_mpp_csv
  std::string out_dir = "wsi_out";
  int64_t batch = 32;
  int threads = 2;             // patch-reading workers, each with its own Slide handle
  bool npy = false;            // also features_<model>/<slide>.npy
  bool skip_existing = true;   // a slide whose features file exists is not redone
  bool progress = true;        // progress bars on stderr
  int64_t picture_side = 2048; // longest side of the visualisation and mask pictures
  Device device = kCPU;        // where the encoder runs (patches are read and cut on the host)
  bool mixed_precision = false;  // bf16 autocast for the encoder's matrix products and attention
};

struct SlideResult {
  std::string slide, name;
  std::string status;  // "ok", "skipped" or "failed"
  std::string message;
  int64_t patches = 0;
  double seconds = 0, feature_seconds = 0;
};

struct SlideOutputs {
  std::string mask, patches, features, npy, visualization;
};

inline std::string slide_name(const std::string& path) { return std::filesystem::path(path).stem().string(); }

inline SlideOutputs slide_outputs(const ExtractOptions& o, const std::string& slide_path) {
  namespace fs = std::filesystem;
  const std::string name = slide_name(slide_path);
  const fs::path out(o.out_dir);
  return {(out / "masks" / (name + ".png")).string(), (out / "patches" / (name + "_patches.h5")).string(),
          (out / ("features_" + o.model) / (name + ".h5")).string(),
          (out / ("features_" + o.model) / (name + ".npy")).string(),
          (out / "visualization" / (name + ".png")).string()};
}

// The user's level-0 mpp for a slide: --mpp, else its row in the table (read_mpp_csv: by path or
// file name, then by name without extension); nullopt lets level0_mpp read the metadata.
inline std::optional<double> user_mpp(const ExtractOptions& o, const std::string& slide_path) {
  if (o.mpp) return o.mpp;
  if (auto v = mpp_for(o.mpp_table, slide_path)) return v;
  if (auto it = o.mpp_table.find(slide_name(slide_path)); it != o.mpp_table.end()) return it->second;
  return std::nullopt;
}

// Files, folders (their slide files, sorted, not recursive) and @lists (one path per line, # comments).
inline std::vector<std::string> expand_slide_inputs(const std::vector<std::string>& inputs) {
  namespace fs = std::filesystem;
  static const std::vector<std::string> exts = {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu",
                                                ".scn", ".mrxs", ".svslide", ".bif"};
  auto is_slide = [&](const fs::path& p) {
    std::string e = p.extension().string();
    std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return std::find(exts.begin(), exts.end(), e) != exts.end();
  };
  std::vector<std::string> out;
  for (const std::string& input : inputs) {
    if (input.size() > 1 && input[0] == '@') {
      std::ifstream list(input.substr(1));
      HG_CHECK(list.good(), "wsi_extract", "cannot open list file '", input.substr(1), "'");
      for (std::string line; std::getline(list, line);) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (!line.empty() && line[0] != '#') out.push_back(line);
      }
    } else if (fs::is_directory(input)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::directory_iterator(input))
        if (entry.is_regular_file() && is_slide(entry.path())) found.push_back(entry.path().string());
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else {
      out.push_back(input);  // a missing file becomes that slide's failure, not the run's
    }
  }
  return out;
}

namespace detail {

inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

inline void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    HG_CHECK(out.good(), "wsi_extract", "cannot write '", temp, "'");
    out << text;
    out.flush();
    HG_CHECK(out.good(), "wsi_extract", "write to '", temp, "' failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  HG_CHECK(!ec, "wsi_extract", "cannot rename '", temp, "' to '", path, "': ", ec.message());
}

inline void progress_bar(const std::string& label, int64_t done, int64_t total, double seconds) {
  const int width = 28;
  const int filled = total > 0 ? int(width * done / total) : width;
  const double rate = seconds > 0 ? double(done) / seconds : 0;
  std::fprintf(stderr, "\r%s [%.*s%*s] %ld/%ld patches %.1f/s ", label.c_str(), filled,
               "============================", width - filled, "", long(done), long(total), rate);
  std::fflush(stderr);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// The extractor: the model is built once, slides go through one by one.

class Extractor {
 public:
  explicit Extractor(ExtractOptions options) : o_(std::move(options)), config_(o_.config ? *o_.config : models::preset(o_.model)) {
    HG_CHECK(o_.batch >= 1, "Extractor", "expected a batch size >= 1, got ", o_.batch);
    HG_CHECK(o_.threads >= 1, "Extractor", "expected at least one reading thread, got ", o_.threads);
    HG_CHECK(!config_.input_is_feature_grid, "Extractor", "model '", o_.model,
             "' takes a grid of ViT_256 features, not image patches");
    if (o_.weights.empty()) {
      model_.emplace(config_);
    } else {
      nn::SkipInit skip;  // the strict load replaces every weight
      model_.emplace(config_);
      io::load_weights(*model_, o_.weights, /*strict=*/true);
    }
    model_->eval();
    model_->to(o_.device);
    preprocess_ = data::Preprocess::for_model(config_);
  }

  const ExtractOptions& options() const { return o_; }
  const models::ViTConfig& config() const { return config_; }
  int64_t feature_dim() const { return config_.embed_dim; }

  // One slide, all stages; throws on failure (process() and run() catch).
  SlideResult extract(const std::string& slide_path, const std::string& label = "") {
    namespace fs = std::filesystem;
    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    SlideResult result{slide_path, slide_name(slide_path), "ok", "", 0, 0, 0};
    const SlideOutputs out = slide_outputs(o_, slide_path);
    for (const std::string& f : {out.mask, out.patches, out.features, out.visualization})
      fs::create_directories(fs::path(f).parent_path());

    SlidePool pool(slide_path, o_.threads);
    const Slide& slide = pool.slide(0);
    const double mpp0 = level0_mpp(slide, user_mpp(o_, slide_path));
    const SlideTissue tissue = segment_slide(slide, o_.segmentation, user_mpp(o_, slide_path));
    const auto [w0, h0] = slide.dimensions(0);
    const PatchGrid grid = patch_grid(tissue.regions, w0, h0, mpp0, o_.patch);
    const std::optional<int> nominal = nominal_magnification(mpp0);
    const double magnification0 = objective_power(slide).value_or(nominal ? double(*nominal) : 10.0 / mpp0);
    const PatchGridInfo info = grid_info(grid, result.name, fs::path(out.patches).parent_path().string(), magnification0,
                                         slide.downsamples());
    result.patches = int64_t(grid.coords.size());
    std::ostringstream a_t;
    a_t << o_.segmentation.a_t;
    if (tissue.regions.empty())
      result.message = "no tissue found: CLAM's a_t = " + a_t.str() +
                       " (in 512x512 level-0 patches) may exceed this slide's tissue; for biopsies or small regions try "
                       "the bwh_biopsy preset (a_t = 1)";
    else if (grid.coords.empty())
      result.message = "tissue found but no patch kept by the keep rule / minimum tissue fraction";

    // Coordinates first, then the pictures on a side thread while the model runs (they are what a
    // user checks when features look wrong, and cost ~0.5 s of PNG encoding on a small slide).
    write_coords(out.patches, grid.coords, info);
    auto pictures = std::async(std::launch::async, [&] {
      const double picture_scale = std::min(1.0 / std::max(tissue.downsample_x, tissue.downsample_y),
                                            double(o_.picture_side) / double(std::max(w0, h0)));
      io::write_png(out.mask, tissue_mask_image(tissue.regions, std::max<int64_t>(1, std::llround(double(w0) * picture_scale)),
                                                std::max<int64_t>(1, std::llround(double(h0) * picture_scale)), picture_scale));
      io::Image picture = thumbnail(slide, o_.picture_side);
      const double thumb_scale = double(picture.width) / double(w0);
      draw_regions(picture, tissue.regions, thumb_scale, Rgb{0, 255, 0}, 2, Rgb{0, 0, 255});
      draw_patches(picture, grid.coords, grid.patch_size_level0, thumb_scale, Rgb{255, 0, 0}, 1);
      io::write_png(out.visualization, picture);
    });

    const auto feature_start = std::chrono::steady_clock::now();
    std::vector<float> features;
    try {
      features = embed_patches(pool, grid, label.empty() ? result.name : label);
    } catch (...) {
      pictures.wait();  // the side thread uses this frame's objects
      throw;
    }
    result.feature_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - feature_start).count();
    pictures.get();  // rethrows a picture's Error
    const int64_t dim = config_.embed_dim;
    if (o_.npy) {
      Tensor<float> t({result.patches, dim});
      std::copy(features.begin(), features.end(), t.data());
      io::save_npy(out.npy, t);
    }
    write_features(out.features, features.data(), result.patches, dim, grid.coords, info, o_.model);
    result.seconds = elapsed();
    return result;
  }

  // One slide with its failure caught and its skip decided: never throws for a slide's fault.
  SlideResult process(const std::string& slide_path, const std::string& label = "") {
    const SlideOutputs out = slide_outputs(o_, slide_path);
    if (o_.skip_existing && std::filesystem::exists(out.features)) {
      SlideResult r{slide_path, slide_name(slide_path), "skipped", "features exist: " + out.features, 0, 0, 0};
      return r;
    }
    const auto start = std::chrono::steady_clock::now();
    try {
      return extract(slide_path, label);
    } catch (const std::exception& e) {
      if (o_.progress) std::fprintf(stderr, "\n");
      SlideResult r{slide_path, slide_name(slide_path), "failed", e.what(), 0, 0, 0};
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return r;
    }
  }

  // Every slide in turn; DIR/failures.csv (slide,status,message) is rewritten after each slide
  // with this run's failures, so it is current even if the run is killed.
  std::vector<SlideResult> run(const std::vector<std::string>& slides,
                               const std::function<void(const SlideResult&)>& on_done = {}) {
    std::filesystem::create_directories(o_.out_dir);
    std::vector<SlideResult> results;
    std::string failures = "slide,status,message\n";
    const std::string failures_path = (std::filesystem::path(o_.out_dir) / "failures.csv").string();
    detail::write_text_atomic(failures_path, failures);
    for (size_t i = 0; i < slides.size(); ++i) {
      const std::string label = "[" + std::to_string(i + 1) + "/" + std::to_string(slides.size()) + "] " + slide_name(slides[i]);
      results.push_back(process(slides[i], label));
      const SlideResult& r = results.back();
      if (r.status == "failed") {
        failures += detail::csv_field(r.slide) + "," + r.status + "," + detail::csv_field(r.message) + "\n";
        detail::write_text_atomic(failures_path, failures);
      }
      if (on_done) on_done(r);
    }
    return results;
  }

 private:
  // Features for every patch of the grid, row by row in grid order.
  std::vector<float> embed_patches(SlidePool& pool, const PatchGrid& grid, const std::string& label) {
    const int64_t n = int64_t(grid.coords.size()), dim = config_.embed_dim, crop = config_.crop_size;
    const int64_t batches = (n + o_.batch - 1) / o_.batch;
    std::vector<float> features(size_t(n * dim));
    const auto start = std::chrono::steady_clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    // Batch b read by o_.threads workers: worker w takes patches w, w + threads, ... with handle w.
    auto prepare = [&, this](int64_t b) {
      const int64_t begin = b * o_.batch, count = std::min(o_.batch, n - begin);
      Tensor<float> images({count, 3, crop, crop});
      std::vector<std::future<void>> workers;
      for (int w = 0; w < o_.threads; ++w)
        workers.push_back(std::async(std::launch::async, [&, w] {
          NoGradGuard no_grad;
#ifdef _OPENMP
          omp_set_num_threads(1);  // the model's forward owns the OpenMP team; readers stay serial
#endif
          const Slide& handle = pool.slide(w);
          for (int64_t i = w; i < count; i += o_.threads) {
            const Coord c = grid.coords[size_t(begin + i)];
            const io::Image patch = read_region_resized(handle, c.x, c.y, grid.patch_size_level0, grid.patch_size_level0,
                                                        grid.patch_size, grid.patch_size, Background::White);
            const Tensor<float> x = preprocess_(patch).contiguous();
            std::copy(x.data(), x.data() + 3 * crop * crop, images.data() + i * 3 * crop * crop);
          }
        }));
      for (auto& f : workers) f.get();  // rethrows a worker's Error
      return images;
    };
    NoGradGuard no_grad;
    std::future<Tensor<float>> next;
    if (batches > 0) next = std::async(std::launch::async, prepare, int64_t(0));
    for (int64_t b = 0; b < batches; ++b) {
      Tensor<float> images = next.get();
      if (b + 1 < batches) next = std::async(std::launch::async, prepare, b + 1);  // read ahead while the model runs
      Tensor<float> out;
      {
        AutocastGuard autocast(o_.mixed_precision);
        out = model_->forward(images.to(o_.device)).cpu().contiguous();
      }
      std::copy(out.data(), out.data() + out.numel(), features.begin() + b * o_.batch * dim);
      if (o_.progress) detail::progress_bar(label, std::min(n, (b + 1) * o_.batch), n, seconds());
    }
    if (o_.progress) {
      if (batches == 0) detail::progress_bar(label, 0, 0, 0);
      std::fprintf(stderr, "\n");
    }
    return features;
  }

  ExtractOptions o_;
  models::ViTConfig config_;
  std::optional<models::VisionTransformer<float>> model_;
  data::Preprocess preprocess_;
};

}  // namespace histograd::wsi
