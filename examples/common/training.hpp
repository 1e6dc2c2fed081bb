// What the training programs (train_dino, train_dinov2, train_mae) share around their loops:
// flags from the command line and a config file, the options they read the same way (data,
// k-NN sets, schedule, threads), a progress bar, a CSV log that continues on --resume, a PNG
// plot of the loss curve, and the stop on a non-finite loss.
// Checkpoints themselves are io/training_state.hpp.
#pragma once
#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <vector>

#include <histograd/core/device.hpp>
#include <histograd/core/error.hpp>
#include <histograd/data/dataset.hpp>
#include <histograd/data/synthetic_tissue.hpp>
#include <histograd/io/image.hpp>

namespace histograd::training {

// ---------------------------------------------------------------------------------------------
// Flags: declared options with defaults and help; values from `--key value`, `--key=value`,
// `--flag`, and `--config file` (lines `key = value`, # comments). The command line wins over
// the file whatever their order. '_' and '-' in names are the same ("batch_size" = "batch-size").
class Flags {
 public:
  explicit Flags(std::string program, std::string description = "")
      : program_(std::move(program)), description_(std::move(description)) {}

  // An option taking a value; `default_value` is what the getters give when it is not set.
  Flags& option(const std::string& name, const std::string& default_value, const std::string& help) {
    return declare(name, default_value, help, false);
  }
  // A switch: false unless given (`--name`, or `name = true` in the config file).
  Flags& flag(const std::string& name, const std::string& help) { return declare(name, "false", help, true); }

  // Requires: declarations done. Throws Error on an unknown key (listing the valid ones), a
  // missing value, a positional argument or an unreadable config file. `--help` only sets
  // help_requested(); the program prints help() and exits.
  void parse(int argc, const char* const argv[]) {
    std::map<std::string, std::string> command_line;
    std::string config_path;
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      HG_CHECK(arg.size() > 2 && arg.compare(0, 2, "--") == 0, "flags", "unexpected argument '", arg,
               "' (options are written --name value; see --help)");
      std::string name = arg.substr(2), value;
      const size_t equals = name.find('=');
      const bool inline_value = equals != std::string::npos;
      if (inline_value) {
        value = name.substr(equals + 1);
        name = name.substr(0, equals);
      }
      name = normalise(name);
      if (name == "help") {
        help_requested_ = true;
        continue;
      }
      if (name == "config") {
        if (!inline_value) {
          HG_CHECK(i + 1 < argc, "flags", "--config expects a file name");
          value = argv[++i];
        }
        config_path = value;
        continue;
      }
      const Option& opt = find(name, "--" + name);
      if (!inline_value) {
        if (opt.is_flag) {
          value = "true";
        } else {
          HG_CHECK(i + 1 < argc, "flags", "--", name, " expects a value (", opt.help, ")");
          value = argv[++i];
        }
      }
      command_line[name] = value;
    }
    if (!config_path.empty()) read_config(config_path);
    for (const auto& [name, value] : command_line) set(name, value, "command line");
  }

  bool help_requested() const { return help_requested_; }

  std::string help() const {
    std::ostringstream out;
    out << "usage: " << program_ << " [--option value ...] [--config file]\n";
    if (!description_.empty()) out << description_ << "\n";
    out << "\noptions:\n";
    size_t width = 16;
    for (const auto& name : order_) width = std::max(width, name.size() + (options_.at(name).is_flag ? 2 : 8));
    auto line = [&](const std::string& left, const std::string& text) {
      out << "  " << left << std::string(width + 2 - std::min(width + 1, left.size()), ' ') << text << "\n";
    };
    for (const auto& name : order_) {
      const Option& opt = options_.at(name);
      if (opt.is_flag)
        line("--" + name, opt.help);
      else
        line("--" + name + " VALUE", opt.help + (opt.default_value.empty() ? "" : " (default: " + opt.default_value + ")"));
    }
    line("--config FILE", "read options from 'key = value' lines; the command line wins");
    line("--help", "print this text");
    return out.str();
  }

  std::string get_string(const std::string& name) const { return lookup(name).value; }
  int64_t get_int(const std::string& name) const {
    const Option& opt = lookup(name);
    int64_t value = 0;
    auto [end, ec] = std::from_chars(opt.value.data(), opt.value.data() + opt.value.size(), value);
    HG_CHECK(ec == std::errc() && end == opt.value.data() + opt.value.size() && !opt.value.empty(), "flags", "--",
             opt.name, " expects an integer, got '", opt.value, "'", origin(opt));
    return value;
  }
  double get_double(const std::string& name) const {
    const Option& opt = lookup(name);
    char* end = nullptr;
    const double value = std::strtod(opt.value.c_str(), &end);
    HG_CHECK(!opt.value.empty() && end == opt.value.c_str() + opt.value.size(), "flags", "--", opt.name,
             " expects a number, got '", opt.value, "'", origin(opt));
    return value;
  }
  bool get_bool(const std::string& name) const {
    const Option& opt = lookup(name);
    std::string v = opt.value;
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
    if (v == "false" || v == "0" || v == "no" || v == "off") return false;
    fail("flags", "--", opt.name, " expects true or false, got '", opt.value, "'", origin(opt));
  }
  template <class V>
  V get(const std::string& name) const {
    if constexpr (std::is_same_v<V, bool>) return get_bool(name);
    else if constexpr (std::is_integral_v<V>) return static_cast<V>(get_int(name));
    else if constexpr (std::is_floating_point_v<V>) return static_cast<V>(get_double(name));
    else return get_string(name);
  }
  // Whether a value came from the command line or the config file (not the default).
  bool is_set(const std::string& name) const { return lookup(name).source != "default"; }
  // Every option's current value, e.g. to record the configuration in a checkpoint.
  std::map<std::string, std::string> values() const {
    std::map<std::string, std::string> out;
    for (const auto& [name, opt] : options_) out[name] = opt.value;
    return out;
  }

 private:
  struct Option {
    std::string name, default_value, help, value, source = "default";
    bool is_flag = false;
  };
  static std::string normalise(std::string name) {
    std::replace(name.begin(), name.end(), '_', '-');
    return name;
  }
  Flags& declare(const std::string& raw_name, const std::string& default_value, const std::string& help, bool is_flag) {
    const std::string name = normalise(raw_name);
    HG_CHECK(!name.empty() && name != "help" && name != "config" && !options_.count(name), "flags", "option '", name,
             "' is declared twice or reserved");
    options_[name] = Option{name, default_value, help, default_value, "default", is_flag};
    order_.push_back(name);
    return *this;
  }
  std::string valid_list() const {
    std::string out;
    for (const auto& [name, opt] : options_) out += (out.empty() ? "--" : ", --") + name;
    return out + ", --config, --help";
  }
  const Option& find(const std::string& name, const std::string& as_written) const {
    auto it = options_.find(name);
    HG_CHECK(it != options_.end(), "flags", "unknown option '", as_written, "' (valid: ", valid_list(), ")");
    return it->second;
  }
  const Option& lookup(const std::string& name) const {
    auto it = options_.find(normalise(name));
    HG_CHECK(it != options_.end(), "flags", "the program asked for undeclared option '", name, "'");
    return it->second;
  }
  static std::string origin(const Option& opt) { return opt.source == "default" ? " (its default)" : " (from the " + opt.source + ")"; }
  void set(const std::string& name, const std::string& value, const std::string& source) {
    Option& opt = options_.at(name);
    opt.value = value;
    opt.source = source;
  }
  static std::string trim(const std::string& s) {
    const size_t begin = s.find_first_not_of(" \t\r"), end = s.find_last_not_of(" \t\r");
    return begin == std::string::npos ? "" : s.substr(begin, end - begin + 1);
  }
  void read_config(const std::string& path) {
    std::ifstream in(path);
    HG_CHECK(in.good(), "flags", "cannot read config file '", path, "'");
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      const size_t hash = line.find('#');
      line = trim(hash == std::string::npos ? line : line.substr(0, hash));
      if (line.empty()) continue;
      const size_t equals = line.find('=');
      HG_CHECK(equals != std::string::npos, "flags", path, " line ", number, ": expected 'key = value', got '", line, "'");
      std::string key = trim(line.substr(0, equals));
      if (key.compare(0, 2, "--") == 0) key = key.substr(2);
      key = normalise(key);
      auto it = options_.find(key);
      HG_CHECK(it != options_.end(), "flags", path, " line ", number, ": unknown key '", key, "' (valid: ", valid_list(),
               ")");
      set(key, trim(line.substr(equals + 1)), "config file " + path);
    }
  }

  std::string program_, description_;
  std::map<std::string, Option> options_;
  std::vector<std::string> order_;
  bool help_requested_ = false;
};

// ---------------------------------------------------------------------------------------------
// Options the programs share, read into their configs. Each program declares its own (defaults
// and help differ, and the declaration order is the order of --help); the readers are templates
// over the trainer configs so this header needs no ssl/ include.

// --on-bad-image: skip or stop.
inline data::OnBadImage bad_image_policy(const std::string& value) {
  if (value == "skip") return data::OnBadImage::Skip;
  if (value == "stop") return data::OnBadImage::Stop;
  fail("flags", "--on-bad-image expects skip or stop, got '", value, "'");
}

// An ImageFolder when the folder has one sub-folder per class with images, else every image under it.
inline std::shared_ptr<data::Dataset> open_folder(const std::string& path, data::OnBadImage policy) {
  try {
    return std::make_shared<data::ImageFolder>(path, policy);
  } catch (const Error&) {
    return std::make_shared<data::UnlabeledImages>(path, policy);
  }
}

// The pretraining images of --data: "synthetic" is --tiles-per-class built-in H&E tiles per class
// of side --tile-size drawn with `seed`; anything else a folder, opened by open_folder or, with
// FolderLabels::None, as unlabeled images whatever its layout.
enum class FolderLabels { IfClasses, None };
inline std::shared_ptr<data::Dataset> open_data(const Flags& f, uint64_t seed, data::OnBadImage policy,
                                                FolderLabels labels = FolderLabels::IfClasses) {
  const std::string path = f.get_string("data");
  if (path == "synthetic")
    return std::make_shared<data::SyntheticTissue>(size_t(f.get_int("tiles-per-class")),
                                                   static_cast<int>(f.get_int("tile-size")), seed);
  if (labels == FolderLabels::None) return std::make_shared<data::UnlabeledImages>(path, policy);
  return open_folder(path, policy);
}

// The k-NN bank (labelled neighbours) and queries. Synthetic data: the pretraining set as the bank
// (or, with bank_tiles_per_class > 0, that many other tiles per class) and --eval-tiles-per-class
// held-out tiles as queries. A folder: --eval-train (default: the pretraining set) and --eval-test,
// none without --eval-test.
struct KnnSets {
  std::shared_ptr<data::Dataset> bank, queries;
  bool usable() const { return bank && queries && !bank->classes().empty() && !queries->classes().empty(); }
};
inline KnnSets knn_sets(const Flags& f, bool synthetic, const std::shared_ptr<data::Dataset>& pretraining, int tile,
                        uint64_t seed, data::OnBadImage policy, int64_t bank_tiles_per_class = 0) {
  KnnSets sets;
  if (synthetic) {
    sets.bank = bank_tiles_per_class > 0
                    ? std::make_shared<data::SyntheticTissue>(size_t(bank_tiles_per_class), tile, seed + 2000003)
                    : pretraining;
    sets.queries =
        std::make_shared<data::SyntheticTissue>(size_t(f.get_int("eval-tiles-per-class")), tile, seed + 1000003);
  } else if (!f.get_string("eval-test").empty()) {
    sets.bank = f.get_string("eval-train").empty() ? pretraining : open_folder(f.get_string("eval-train"), policy);
    sets.queries = open_folder(f.get_string("eval-test"), policy);
  }
  return sets;
}

// The ViT of DINO and DINOv2: image side --global-size, --patch-size, --embed-dim, --depth,
// --heads, MLP 4 x width. Drop path and the rest are the program's.
template <class ViTConfig>
void read_vit(const Flags& f, ViTConfig& b, const std::string& name) {
  b.name = name;
  b.image_size = f.get_int("global-size");
  b.patch_size = f.get_int("patch-size");
  b.embed_dim = f.get_int("embed-dim");
  b.depth = f.get_int("depth");
  b.num_heads = f.get_int("heads");
  b.mlp_hidden = 4 * b.embed_dim;
}

// Multi-crop sizes and scales (global crops cover [--global-scale-min, 1], local ones
// [0.05, --local-scale-max]), with vertical flips and right-angle turns: tissue has no up or down.
template <class MultiCropConfig>
void read_crops(const Flags& f, MultiCropConfig& crops) {
  crops.global_size = f.get_int("global-size");
  crops.local_size = f.get_int("local-size");
  crops.local_crops = f.get_int("local-crops");
  crops.global_scale = {f.get_double("global-scale-min"), 1.0};
  crops.local_scale = {0.05, f.get_double("local-scale-max")};
  crops.vertical_flip = true;
  crops.rotate90 = true;
}

// Run length and the AdamW schedule every trainer has: --epochs, --batch-size, --min-lr,
// --warmup-epochs, --weight-decay.
template <class Config>
void read_schedule(const Flags& f, Config& c) {
  c.epochs = f.get_int("epochs");
  c.batch_size = f.get_int("batch-size");
  c.min_lr = f.get_double("min-lr");
  c.warmup_epochs = f.get_int("warmup-epochs");
  c.weight_decay = f.get_double("weight-decay");
}

// What DINO and DINOv2 add to it: --lr, --weight-decay-end, the teacher's momentum and
// temperatures, --clip-grad.
template <class Config>
void read_teacher_schedule(const Flags& f, Config& c) {
  c.lr = f.get_double("lr");
  c.weight_decay_end = f.get_double("weight-decay-end");
  c.momentum_teacher = f.get_double("momentum-teacher");
  c.teacher_temp = f.get_double("teacher-temp");
  c.warmup_teacher_temp = f.get_double("warmup-teacher-temp");
  c.warmup_teacher_temp_epochs = f.get_int("warmup-teacher-temp-epochs");
  c.clip_grad = f.get_double("clip-grad");
}

// --seed, --threads (compute), --workers (data loader).
template <class Config>
void read_seed_and_threads(const Flags& f, Config& c) {
  c.seed = static_cast<uint64_t>(f.get_int("seed"));
  c.threads = static_cast<int>(f.get_int("threads"));
  c.num_workers = static_cast<int>(f.get_int("workers"));
}

// --device (where the models, optimizer state and batches live) and --mixed-precision (bf16
// autocast around the forward passes, fp32 master weights).
template <class Config>
void read_device(const Flags& f, Config& c) {
  c.device = Device::parse(f.get_string("device"));
  c.mixed_precision = f.get_bool("mixed-precision");
}

// --resume: continues `trainer` from that checkpoint, saying so on stderr.
template <class Trainer>
void resume_from(Trainer& trainer, const std::string& checkpoint) {
  if (checkpoint.empty()) return;
  trainer.load(checkpoint);
  std::cerr << "resumed from " << checkpoint << " at iteration " << trainer.iteration() << "\n";
}

// A program's main(): `run`, with any exception reported as one line on stderr and exit status 1.
inline int run_main(int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "\nerror: " << e.what() << "\n";
    return 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Progress on stderr: "[#####.....] 120/1000 loss 3.1416 | 12.3 img/s | ETA 01:23". On a terminal
// the line is redrawn in place; otherwise (a log file) a plain line is printed every
// `plain_every` iterations and at the end. Throughput and ETA count from construction, so a
// resumed run measures itself, not the run it continues.
class ProgressBar {
 public:
  explicit ProgressBar(int64_t total, int64_t start = 0, std::ostream& out = std::cerr, int is_tty = -1,
                       int64_t plain_every = 0)
      : total_(total), start_(start), out_(out), tty_(is_tty < 0 ? ::isatty(2) == 1 : is_tty != 0),
        plain_every_(plain_every > 0 ? plain_every : std::max<int64_t>(1, total / 50)),
        began_(std::chrono::steady_clock::now()) {}

  // `done`: iterations completed so far (of total); `images`: images processed by this step.
  void update(int64_t done, double loss, int64_t images) {
    images_ += images;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count();
    const std::string text = line(done, loss, elapsed);
    if (tty_) {
      out_ << "\r" << text << "\x1b[K" << std::flush;
      drawn_ = true;
    } else if (done % plain_every_ == 0 || done >= total_) {
      out_ << text << "\n" << std::flush;
    }
  }
  // Ends the redrawn line on a terminal.
  void finish() {
    if (tty_ && drawn_) out_ << "\n" << std::flush;
    drawn_ = false;
  }
  // The text for `done` iterations after `elapsed` seconds (exposed for tests).
  std::string line(int64_t done, double loss, double elapsed) const {
    const int width = 24;
    const double fraction = total_ > 0 ? std::clamp(double(done) / double(total_), 0.0, 1.0) : 1.0;
    const int filled = int(fraction * width);
    const int64_t run = done - start_;
    std::ostringstream s;
    s << "[" << std::string(size_t(filled), '#') << std::string(size_t(width - filled), '.') << "] " << done << "/"
      << total_;
    char buffer[96];
    std::snprintf(buffer, sizeof buffer, " loss %.4f", loss);
    s << buffer;
    if (elapsed > 0 && run > 0) {
      std::snprintf(buffer, sizeof buffer, " | %.1f img/s", double(images_) / elapsed);
      s << buffer << " | ETA " << format_duration(elapsed / double(run) * double(std::max<int64_t>(0, total_ - done)));
    }
    return s.str();
  }
  static std::string format_duration(double seconds) {
    const int64_t s = int64_t(std::llround(std::max(0.0, seconds)));
    char buffer[40];
    if (s >= 3600)
      std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                    (long long)(s % 60));
    else
      std::snprintf(buffer, sizeof buffer, "%02lld:%02lld", (long long)(s / 60), (long long)(s % 60));
    return buffer;
  }

 private:
  int64_t total_, start_;
  std::ostream& out_;
  bool tty_;
  int64_t plain_every_;
  std::chrono::steady_clock::time_point began_;
  int64_t images_ = 0;
  bool drawn_ = false;
};

// ---------------------------------------------------------------------------------------------
// A CSV log, one row per logged iteration, flushed per row so a crash keeps what was logged.
// Fresh (resume_from < 0): the file is replaced and the header written. Resume
// (resume_from = the first iteration the resumed run will do): the header must match, rows whose
// first column is >= resume_from are dropped (they were logged after the checkpoint and come
// again), and new rows are appended; a missing file is started fresh.
class CsvLogger {
 public:
  CsvLogger(std::string path, std::vector<std::string> columns, int64_t resume_from = -1)
      : path_(std::move(path)), columns_(std::move(columns)) {
    HG_CHECK(!columns_.empty(), "CsvLogger", "expected at least one column");
    const std::string header = join(columns_);
    std::vector<std::string> kept{header};
    if (resume_from >= 0 && std::filesystem::exists(path_)) {
      std::ifstream in(path_);
      std::string line;
      HG_CHECK(std::getline(in, line) && line == header, "CsvLogger", path_, ": cannot resume: its header is '", line,
               "', expected '", header, "'");
      while (std::getline(in, line)) {
        if (line.empty()) continue;
        const std::string first = line.substr(0, line.find(','));
        char* end = nullptr;
        const double iteration = std::strtod(first.c_str(), &end);
        if (end != first.c_str() && iteration < double(resume_from)) kept.push_back(line);
      }
    }
    const std::string temp = path_ + ".tmp";
    {
      std::ofstream out(temp, std::ios::trunc);
      HG_CHECK(out.good(), "CsvLogger", "cannot write '", temp, "'");
      for (const auto& line : kept) out << line << "\n";
      out.flush();
      HG_CHECK(out.good(), "CsvLogger", "write to '", temp, "' failed (disk full?)");
    }
    std::error_code ec;
    std::filesystem::rename(temp, path_, ec);
    HG_CHECK(!ec, "CsvLogger", "cannot rename '", temp, "' to '", path_, "': ", ec.message());
    out_.open(path_, std::ios::app);
    HG_CHECK(out_.good(), "CsvLogger", "cannot append to '", path_, "'");
  }

  void log(const std::vector<double>& row) {
    HG_CHECK(row.size() == columns_.size(), "CsvLogger", "expected ", columns_.size(), " values (", join(columns_),
             "), got ", row.size());
    for (size_t i = 0; i < row.size(); ++i) {
      char buffer[40];
      std::snprintf(buffer, sizeof buffer, "%.10g", row[i]);
      out_ << (i ? "," : "") << buffer;
    }
    out_ << "\n" << std::flush;
  }
  const std::string& path() const { return path_; }

 private:
  static std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (size_t i = 0; i < parts.size(); ++i) out += (i ? "," : "") + parts[i];
    return out;
  }
  std::string path_;
  std::vector<std::string> columns_;
  std::ofstream out_;
};

// Two numeric columns of a CSV written by CsvLogger (rows with a non-number are skipped).
inline std::pair<std::vector<double>, std::vector<double>> read_csv_columns(const std::string& path,
                                                                            const std::string& x_column,
                                                                            const std::string& y_column) {
  std::ifstream in(path);
  HG_CHECK(in.good(), "read_csv_columns", "cannot read '", path, "'");
  auto split = [](const std::string& line) {
    std::vector<std::string> cells;
    std::stringstream s(line);
    for (std::string cell; std::getline(s, cell, ',');) cells.push_back(cell);
    return cells;
  };
  std::string line;
  HG_CHECK(static_cast<bool>(std::getline(in, line)), "read_csv_columns", path, ": empty file");
  const auto header = split(line);
  auto index = [&](const std::string& name) {
    auto it = std::find(header.begin(), header.end(), name);
    HG_CHECK(it != header.end(), "read_csv_columns", path, ": no column '", name, "' (header '", line, "')");
    return size_t(it - header.begin());
  };
  const size_t xi = index(x_column), yi = index(y_column);
  std::vector<double> xs, ys;
  while (std::getline(in, line)) {
    const auto cells = split(line);
    if (cells.size() <= std::max(xi, yi)) continue;
    char *xe = nullptr, *ye = nullptr;
    const double x = std::strtod(cells[xi].c_str(), &xe), y = std::strtod(cells[yi].c_str(), &ye);
    if (xe == cells[xi].c_str() || ye == cells[yi].c_str()) continue;
    xs.push_back(x);
    ys.push_back(y);
  }
  return {xs, ys};
}

// ---------------------------------------------------------------------------------------------
// A loss-curve PNG: white canvas, axes with 5 ticks labelled by a 3x5 pixel font, grey grid,
// the curve as a blue polyline (non-finite values break it). Written with io::write_png
// (temporary name, rename).
namespace detail {
struct Canvas {
  int64_t width, height;
  std::vector<uint8_t> pixels;
  Canvas(int64_t w, int64_t h) : width(w), height(h), pixels(size_t(w * h * 3), 255) {}
  void put(int64_t x, int64_t y, const uint8_t (&rgb)[3]) {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    for (int c = 0; c < 3; ++c) pixels[size_t((y * width + x) * 3 + c)] = rgb[c];
  }
  void line(int64_t x0, int64_t y0, int64_t x1, int64_t y1, const uint8_t (&rgb)[3], int thickness = 1) {
    const int64_t dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int64_t err = dx + dy;
    while (true) {  // Bresenham
      for (int t = 0; t < thickness; ++t) {
        put(x0, y0 + t, rgb);
        put(x0 + t, y0, rgb);
      }
      if (x0 == x1 && y0 == y1) break;
      const int64_t e2 = 2 * err;
      if (e2 >= dy) { err += dy; x0 += sx; }
      if (e2 <= dx) { err += dx; y0 += sy; }
    }
  }
  // Text in a 3x5 font (digits . - + e), each font pixel drawn as scale x scale.
  void text(int64_t x, int64_t y, const std::string& s, int scale, const uint8_t (&rgb)[3]) {
    for (char ch : s) {
      const uint16_t bits = glyph(ch);
      for (int row = 0; row < 5; ++row)
        for (int col = 0; col < 3; ++col)
          if (bits >> (14 - (row * 3 + col)) & 1)
            for (int a = 0; a < scale; ++a)
              for (int b = 0; b < scale; ++b) put(x + col * scale + b, y + row * scale + a, rgb);
      x += 4 * scale;
    }
  }
  static uint16_t glyph(char ch) {
    switch (ch) {  // rows top to bottom, 3 bits each, most significant first
      case '0': return 0b111101101101111;
      case '1': return 0b010110010010111;
      case '2': return 0b111001111100111;
      case '3': return 0b111001111001111;
      case '4': return 0b101101111001001;
      case '5': return 0b111100111001111;
      case '6': return 0b111100111101111;
      case '7': return 0b111001001001001;
      case '8': return 0b111101111101111;
      case '9': return 0b111101111001111;
      case '.': return 0b000000000000010;
      case '-': return 0b000000111000000;
      case '+': return 0b000010111010000;
      case 'e': return 0b000111111100111;
      default: return 0;
    }
  }
};
inline std::string tick_label(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3g", v);
  return buffer;
}
}  // namespace detail

inline void plot_loss_curve(const std::string& path, const std::vector<double>& x, const std::vector<double>& y,
                            int64_t width = 800, int64_t height = 480) {
  HG_CHECK(x.size() == y.size(), "plot_loss_curve", "expected as many x as y values, got ", x.size(), " and ", y.size());
  HG_CHECK(width >= 200 && height >= 120, "plot_loss_curve", "expected an image of at least 200x120, got ", width, "x",
           height);
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (size_t i = 0; i < x.size(); ++i)
    if (std::isfinite(x[i]) && std::isfinite(y[i])) {
      x_lo = std::min(x_lo, x[i]);
      x_hi = std::max(x_hi, x[i]);
      y_lo = std::min(y_lo, y[i]);
      y_hi = std::max(y_hi, y[i]);
    }
  HG_CHECK(std::isfinite(x_lo), "plot_loss_curve", "no finite points to plot (", x.size(), " given)");
  if (x_hi == x_lo) x_hi = x_lo + 1;
  if (y_hi == y_lo) {
    y_lo -= 1;
    y_hi += 1;
  }
  const double pad = 0.05 * (y_hi - y_lo);
  y_lo -= pad;
  y_hi += pad;
  const int64_t left = 70, right = 20, top = 20, bottom = 40;
  const int64_t plot_w = width - left - right, plot_h = height - top - bottom;
  auto px = [&](double v) { return left + int64_t(std::lround((v - x_lo) / (x_hi - x_lo) * double(plot_w - 1))); };
  auto py = [&](double v) { return top + int64_t(std::lround((y_hi - v) / (y_hi - y_lo) * double(plot_h - 1))); };
  const uint8_t black[3] = {0, 0, 0}, grey[3] = {225, 225, 225}, blue[3] = {31, 119, 180};
  detail::Canvas canvas(width, height);
  for (int t = 0; t <= 4; ++t) {
    const double xv = x_lo + (x_hi - x_lo) * t / 4, yv = y_lo + (y_hi - y_lo) * t / 4;
    canvas.line(px(xv), top, px(xv), top + plot_h - 1, grey);
    canvas.line(left, py(yv), left + plot_w - 1, py(yv), grey);
    canvas.line(px(xv), top + plot_h, px(xv), top + plot_h + 4, black);
    canvas.line(left - 5, py(yv), left - 1, py(yv), black);
    const std::string xl = detail::tick_label(xv), yl = detail::tick_label(yv);
    canvas.text(px(xv) - int64_t(xl.size()) * 4, top + plot_h + 10, xl, 2, black);
    canvas.text(left - 10 - int64_t(yl.size()) * 8, py(yv) - 5, yl, 2, black);
  }
  canvas.line(left, top, left, top + plot_h - 1, black);
  canvas.line(left, top + plot_h - 1, left + plot_w - 1, top + plot_h - 1, black);
  bool have_previous = false;
  int64_t prev_x = 0, prev_y = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
      have_previous = false;
      continue;
    }
    const int64_t cx = px(x[i]), cy = py(y[i]);
    if (have_previous) canvas.line(prev_x, prev_y, cx, cy, blue, 2);
    else canvas.line(cx, cy, cx, cy, blue, 2);
    prev_x = cx;
    prev_y = cy;
    have_previous = true;
  }
  io::Image image;
  image.width = width;
  image.height = height;
  image.pixels = std::move(canvas.pixels);
  io::write_png(path, image);
}

// The curve of `y_column` against `x_column` of a CsvLogger file.
inline void plot_csv(const std::string& csv_path, const std::string& png_path, const std::string& x_column = "iteration",
                     const std::string& y_column = "loss") {
  auto [x, y] = read_csv_columns(csv_path, x_column, y_column);
  plot_loss_curve(png_path, x, y);
}

// ---------------------------------------------------------------------------------------------
// Stops training on a NaN or infinite loss, as main_dino.py does ("Loss is nan, stopping
// training"), with the iteration so the user can find it in the log.
inline void check_finite(double loss, int64_t iteration) {
  if (std::isfinite(loss)) return;
  fail("training stopped", "non-finite loss (", std::isnan(loss) ? "nan" : loss > 0 ? "inf" : "-inf",
       ") at iteration ", iteration, "; the last checkpoint is untouched (lower the learning rate or check the data)");
}

}  // namespace histograd::training
