// embed: images -> one embedding per image, from any ViT preset and its published checkpoint.
//
//   embed --model uni --weights pytorch_model.bin --out features  tiles/  more.png  @list.txt
//
// Inputs are image files, folders (their .png/.jpg/.jpeg files, sorted by name) and @files
// listing one path per line. Each image goes through the preset's published transform
// (resize, center crop, normalise), then the model, in batches; the next batch is decoded on
// a background thread while the current one runs. Writes PREFIX.npy ([N, E] float32) and
// PREFIX.safetensors ("embeddings" plus the model, weights and image paths as metadata), both
// atomically. An image that does not decode is reported and skipped (--strict stops instead).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <histograd/histograd.hpp>
#include <iostream>
#include <string>
#include <vector>

namespace hg = histograd;
namespace fs = std::filesystem;

namespace {

struct Options {
  std::string model = "dino_vits16", weights, out = "embeddings";
  int64_t batch = 32;
  int threads = 0;  // 0: OpenMP's default
  hg::Device device = hg::kCPU;
  bool strict = false, quiet = false, mixed_precision = false;
  std::vector<std::string> inputs;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: embed [--model PRESET] [--weights FILE] [--out PREFIX] [--batch N] [--threads N]\n"
               "             [--device cpu|cuda|cuda:N] [--mixed-precision] [--strict] [--quiet] [--list-models] INPUT...\n"
               "  INPUT: image files (PNG, JPEG), folders of them, or @file with one path per line\n"
               "  writes PREFIX.npy and PREFIX.safetensors with one embedding row per image\n"
               "  --device: where the model runs; --mixed-precision: bf16 autocast for its matrix products and\n"
               "  attention (fp32 weights; on the CPU an emulation, slower)\n");
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options o;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "embed: %s needs a value\n", argv[i]);
      usage(2);
    }
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model") o.model = value(i);
    else if (arg == "--weights") o.weights = value(i);
    else if (arg == "--out") o.out = value(i);
    else if (arg == "--batch") o.batch = std::max<int64_t>(1, std::stoll(value(i)));
    else if (arg == "--threads") o.threads = std::stoi(value(i));
    else if (arg == "--device") o.device = hg::Device::parse(value(i));
    else if (arg == "--mixed-precision") o.mixed_precision = true;
    else if (arg == "--strict") o.strict = true;
    else if (arg == "--quiet") o.quiet = true;
    else if (arg == "--help" || arg == "-h") usage(0);
    else if (arg == "--list-models") {
      for (const auto& name : hg::models::preset_names()) std::printf("%s\n", name.c_str());
      std::exit(0);
    } else if (arg.rfind("--", 0) == 0) {
      std::fprintf(stderr, "embed: unknown option %s\n", arg.c_str());
      usage(2);
    } else o.inputs.push_back(arg);
  }
  if (o.inputs.empty()) usage(2);
  return o;
}

bool is_image(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> paths;
  for (const auto& input : inputs) {
    if (input.size() > 1 && input[0] == '@') {
      std::ifstream list(input.substr(1));
      HG_CHECK(list.good(), "embed", "cannot open list file '", input.substr(1), "'");
      for (std::string line; std::getline(list, line);)
        if (!line.empty() && line[0] != '#') paths.push_back(line);
    } else if (fs::is_directory(input)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::directory_iterator(input))
        if (entry.is_regular_file() && is_image(entry.path())) found.push_back(entry.path().string());
      std::sort(found.begin(), found.end());
      paths.insert(paths.end(), found.begin(), found.end());
    } else {
      HG_CHECK(fs::exists(input), "embed", "no such file or folder '", input, "'");
      paths.push_back(input);
    }
  }
  return paths;
}

// One batch decoded and preprocessed: the pixels, and which paths made it.
struct Batch {
  hg::Tensor<float> images;  // [n, 3, H, W]; undefined when no image of the batch decoded
  std::vector<std::string> paths, failures;
};

Batch prepare(const std::vector<std::string>& paths, size_t begin, size_t end, const hg::data::Preprocess& preprocess,
              bool strict) {
  Batch batch;
  std::vector<hg::Tensor<float>> tensors;
  for (size_t i = begin; i < end; ++i) {
    try {
      tensors.push_back(preprocess(hg::io::read_image(paths[i])).unsqueeze(0));
      batch.paths.push_back(paths[i]);
    } catch (const hg::Error& e) {
      if (strict) throw;
      batch.failures.push_back(e.what());
    }
  }
  if (!tensors.empty()) batch.images = hg::cat<float>(tensors, 0);
  return batch;
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

void progress(size_t done, size_t total, double seconds) {
  const int width = 30;
  const int filled = total ? int(width * done / total) : width;
  const double rate = seconds > 0 ? done / seconds : 0;
  const double eta = rate > 0 ? (total - done) / rate : 0;
  std::fprintf(stderr, "\r[%.*s%*s] %zu/%zu images  %.1f img/s  ETA %.0fs ", filled,
               "==============================", width - filled, "", done, total, rate, eta);
  std::fflush(stderr);
}

}  // namespace

int main(int argc, char** argv) try {
  const Options options = parse(argc, argv);
#ifdef _OPENMP
  if (options.threads > 0) omp_set_num_threads(options.threads);
#endif
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };

  const hg::models::ViTConfig& config = hg::models::preset(options.model);
  auto build_and_load = [&] {
    if (options.weights.empty()) {
      std::fprintf(stderr, "embed: no --weights given: %s has random weights (useful for testing only)\n",
                   options.model.c_str());
      return hg::models::vit<float>(config);
    }
    hg::nn::SkipInit skip_init;  // the strict load below replaces every weight
    auto model = hg::models::vit<float>(config);
    hg::io::load_weights(model, options.weights, /*strict=*/true);
    return model;
  };
  auto model = build_and_load();
  model.eval();
  model.to(options.device);
  const double load_seconds = elapsed();

  const std::vector<std::string> paths = expand_inputs(options.inputs);
  HG_CHECK(!paths.empty(), "embed", "no images found in the inputs");
  HG_CHECK(!config.input_is_feature_grid, "embed", "preset '", options.model,
           "' takes a grid of ViT_256 features, not images");
  const auto preprocess = hg::data::Preprocess::for_model(config);  // the preset's published transform

  hg::NoGradGuard no_grad;
  std::vector<hg::Tensor<float>> embeddings;
  std::vector<std::string> embedded, failures;
  const size_t step = static_cast<size_t>(options.batch);
  auto launch = [&](size_t begin) {
    return std::async(std::launch::async, prepare, std::cref(paths), begin, std::min(paths.size(), begin + step),
                      std::cref(preprocess), options.strict);
  };
  std::future<Batch> next = launch(0);
  for (size_t begin = 0; begin < paths.size(); begin += step) {
    Batch batch = next.get();
    if (begin + step < paths.size()) next = launch(begin + step);  // decode ahead while the model runs
    for (const auto& f : batch.failures) std::fprintf(stderr, "\nembed: skipped: %s\n", f.c_str());
    failures.insert(failures.end(), batch.failures.begin(), batch.failures.end());
    if (batch.images.defined()) {
      hg::AutocastGuard autocast(options.mixed_precision);
      embeddings.push_back(model.forward(batch.images.to(options.device)).cpu());
      embedded.insert(embedded.end(), batch.paths.begin(), batch.paths.end());
    }
    if (!options.quiet) progress(std::min(paths.size(), begin + step), paths.size(), elapsed() - load_seconds);
  }
  if (!options.quiet) std::fprintf(stderr, "\n");
  HG_CHECK(!embedded.empty(), "embed", "none of the ", paths.size(), " images could be read");

  hg::Tensor<float> all = hg::cat<float>(embeddings, 0).contiguous();
  std::string joined;
  for (const auto& p : embedded) joined += p + "\n";
  hg::io::save_npy(options.out + ".npy", all);
  hg::io::save_safetensors<float>(options.out + ".safetensors", {{"embeddings", all}},
                                  {{"model", options.model}, {"weights", options.weights}, {"paths", joined}});
  const double total = elapsed(), run = total - load_seconds;
  std::printf("model        %s (%s)\n", options.model.c_str(), options.weights.empty() ? "random weights" : options.weights.c_str());
  std::printf("embeddings   %ld x %ld -> %s.npy, %s.safetensors\n", long(all.size(0)), long(all.size(1)),
              options.out.c_str(), options.out.c_str());
  std::printf("images       %zu embedded, %zu skipped\n", embedded.size(), failures.size());
  std::printf("time         %.2f s load, %.2f s embedding, %.2f images/s (%d threads)\n", load_seconds, run,
              embedded.size() / std::max(run, 1e-9), hg::cpu::max_threads());
  std::printf("peak memory  %.0f MiB\n", peak_rss_mib());
  return failures.empty() ? 0 : 3;  // 3: finished, but some images were skipped
} catch (const hg::Error& e) {
  std::fprintf(stderr, "\nembed: %s\n", e.what());
  return 1;
}
