// A training checkpoint: every tensor of a run (student, teacher, optimizer moments, the DINO
// centre, ...) under a prefix, and its scalars and strings (iteration, epoch, RNG seed/offset,
// data position, model name) as safetensors metadata, in one safetensors file written
// atomically (temporary file, fsync, rename), so a crash never leaves a torn checkpoint where a
// good one was. Doubles are stored with 17 significant digits, so they read back bit for bit.
#pragma once
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <type_traits>
#include <unistd.h>
#include <fcntl.h>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "../nn/module.hpp"
#include "../optim/optimizer.hpp"
#include "safetensors.hpp"

namespace histograd::io {

inline constexpr const char* kTrainingStateFormat = "histograd.training_state.v1";

// Tensors by key and metadata strings by key. The put/get helpers below keep the usual layout:
// "student.", "teacher.", "optimizer." (optimizer scalars go to metadata under the same
// prefix), "loss." (e.g. "loss.center"), and metadata "iteration", "epoch", "rng.seed", ...
template <class T>
struct TrainingState {
  std::map<std::string, Tensor<T>> tensors;
  std::map<std::string, std::string> metadata;

  // A module's state_dict() (or any StateDict) under prefix; get_state_dict strips it again.
  void put_state_dict(const std::string& prefix, const nn::StateDict<T>& dict) {
    for (const auto& [name, t] : dict) tensors[prefix + name] = t;
  }
  nn::StateDict<T> get_state_dict(const std::string& prefix) const {
    nn::StateDict<T> out;
    for (auto it = tensors.lower_bound(prefix); it != tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0;
         ++it)
      out.emplace(it->first.substr(prefix.size()), it->second);
    HG_CHECK(!out.empty(), "TrainingState", "no tensors under '", prefix, "' (the checkpoint holds ", describe(), ")");
    return out;
  }
  bool has_prefix(const std::string& prefix) const {
    auto it = tensors.lower_bound(prefix);
    return it != tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0;
  }

  void put_optimizer(const optim::OptimizerState<T>& state, const std::string& prefix = "optimizer.") {
    for (const auto& [k, t] : state.tensors) tensors[prefix + k] = t;
    for (const auto& [k, v] : state.scalars) set_double(prefix + k, v);
  }
  // Every tensor and every metadata entry under prefix, read back as an OptimizerState.
  optim::OptimizerState<T> get_optimizer(const std::string& prefix = "optimizer.") const {
    optim::OptimizerState<T> out;
    for (const auto& [k, t] : tensors)
      if (k.compare(0, prefix.size(), prefix) == 0) out.tensors.emplace(k.substr(prefix.size()), t);
    for (const auto& [k, v] : metadata)
      if (k.compare(0, prefix.size(), prefix) == 0) out.scalars.emplace(k.substr(prefix.size()), get_double(k));
    HG_CHECK(!out.tensors.empty() || !out.scalars.empty(), "TrainingState", "no optimizer state under '", prefix, "'");
    return out;
  }

  void set_string(const std::string& key, const std::string& value) { metadata[key] = value; }
  void set_int(const std::string& key, int64_t value) { metadata[key] = std::to_string(value); }
  void set_uint(const std::string& key, uint64_t value) { metadata[key] = std::to_string(value); }
  void set_double(const std::string& key, double value) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.17g", value);
    metadata[key] = buffer;
  }
  bool has(const std::string& key) const { return metadata.count(key) > 0; }
  const std::string& get_string(const std::string& key) const {
    auto it = metadata.find(key);
    HG_CHECK(it != metadata.end(), "TrainingState", "no entry '", key, "' in the checkpoint's metadata");
    return it->second;
  }
  int64_t get_int(const std::string& key) const { return parse_integer<int64_t>(key); }
  uint64_t get_uint(const std::string& key) const { return parse_integer<uint64_t>(key); }
  double get_double(const std::string& key) const {
    const std::string& text = get_string(key);
    char* end = nullptr;
    errno = 0;
    const double value = std::strtod(text.c_str(), &end);
    HG_CHECK(!text.empty() && end == text.c_str() + text.size() && errno != ERANGE, "TrainingState", "entry '", key,
             "' = '", text, "' is not a number");
    return value;
  }
  std::string get_string(const std::string& key, const std::string& fallback) const { return has(key) ? get_string(key) : fallback; }
  int64_t get_int(const std::string& key, int64_t fallback) const { return has(key) ? get_int(key) : fallback; }
  double get_double(const std::string& key, double fallback) const { return has(key) ? get_double(key) : fallback; }

  // A Generator's (seed, offset) under "<name>.seed" / "<name>.offset"; restore puts them back,
  // so the draws after a resume are the draws an uninterrupted run makes.
  void put_generator(const Generator& generator, const std::string& name = "rng") {
    set_uint(name + ".seed", generator.seed());
    set_uint(name + ".offset", generator.offset());
  }
  void restore_generator(Generator& generator, const std::string& name = "rng") const {
    generator.manual_seed(get_uint(name + ".seed"));
    generator.set_offset(get_uint(name + ".offset"));
  }

 private:
  template <class I>
  I parse_integer(const std::string& key) const {
    const std::string& text = get_string(key);
    I value{};
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    HG_CHECK(ec == std::errc() && end == text.data() + text.size(), "TrainingState", "entry '", key, "' = '", text,
             "' is not an ", std::is_signed_v<I> ? "integer" : "unsigned integer");
    return value;
  }
  std::string describe() const {
    std::set<std::string> prefixes;
    for (const auto& [k, t] : tensors) prefixes.insert(k.substr(0, k.find('.') + 1));
    std::string out;
    for (const auto& p : prefixes) out += (out.empty() ? "'" : ", '") + p + "'";
    return out.empty() ? "no tensors" : out;
  }
};

// Writes the state to `path` atomically through save_safetensors (temporary file in the same
// directory, flush, fsync, rename), then fsyncs the directory so the rename itself is durable.
// On any failure the file already at `path` is untouched and the temporary file is removed.
template <class T>
void save_training_state(const std::string& path, const TrainingState<T>& state) {
  for (const auto& [key, t] : state.tensors)
    HG_CHECK(t.defined(), "save_training_state", path, ": tensor '", key, "' is undefined; nothing was written");
  HG_CHECK(!state.metadata.count("format"), "save_training_state", "metadata key 'format' is reserved");
  std::map<std::string, std::string> metadata = state.metadata;
  metadata["format"] = kTrainingStateFormat;
  const std::string temp = path + ".tmp" + std::to_string(::getpid());  // save_safetensors' temporary name
  try {
    save_safetensors(path, state.tensors, metadata);
  } catch (...) {
    std::error_code ec;
    if (!std::filesystem::is_directory(temp, ec)) std::filesystem::remove(temp, ec);
    throw;
  }
  std::filesystem::path directory = std::filesystem::path(path).parent_path();
  if (directory.empty()) directory = ".";
  if (int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Reads a checkpoint written by save_training_state. A truncated, corrupt or foreign file is an
// Error naming the file and what is wrong (the safetensors reader validates the whole file
// before anything is handed out). Tensors alias the file's private mapping.
template <class T>
TrainingState<T> load_training_state(const std::string& path) {
  TrainingState<T> state;
  std::map<std::string, std::string> metadata;
  try {
    SafetensorsFile file(path);
    metadata = file.metadata();
    auto format = metadata.find("format");
    HG_CHECK(format != metadata.end() && format->second == kTrainingStateFormat, "load_training_state", path,
             ": not a histograd training state (metadata 'format' is ",
             format == metadata.end() ? std::string("missing") : "'" + format->second + "'", ", expected '",
             kTrainingStateFormat, "')");
    for (const auto& key : file.keys()) state.tensors.emplace(key, file.get<T>(key));
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind("load_training_state", 0) == 0) throw;
    fail("load_training_state", "cannot resume from '", path, "': ", what);
  }
  metadata.erase("format");
  state.metadata = std::move(metadata);
  return state;
}

// Refuses a checkpoint of another model: metadata `model_key` must equal model_name (when
// model_name is non-empty), and the tensors under `prefix` must have exactly the expected keys
// and shapes. The message names the first mismatching key.
template <class T>
void check_compatible(const TrainingState<T>& state, const std::string& model_name,
                      const std::map<std::string, Shape>& param_shapes, const std::string& prefix = "student.",
                      const std::string& model_key = "model") {
  if (!model_name.empty()) {
    auto it = state.metadata.find(model_key);
    HG_CHECK(it != state.metadata.end(), "check_compatible", "the checkpoint does not say which model wrote it (no '",
             model_key, "' entry); expected '", model_name, "'");
    HG_CHECK(it->second == model_name, "check_compatible", "the checkpoint was written by model '", it->second,
             "', this run is '", model_name, "'");
  }
  for (const auto& [key, shape] : param_shapes) {
    auto it = state.tensors.find(prefix + key);
    HG_CHECK(it != state.tensors.end(), "check_compatible", "the checkpoint has no '", prefix + key,
             "' (a checkpoint of a different model?)");
    HG_CHECK(it->second.shape() == shape, "check_compatible", "'", prefix + key, "' has shape ",
             to_string(it->second.shape()), " in the checkpoint but ", to_string(shape), " in the model");
  }
  for (auto it = state.tensors.lower_bound(prefix);
       it != state.tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    HG_CHECK(param_shapes.count(it->first.substr(prefix.size())), "check_compatible", "the checkpoint has '", it->first,
             "', which the model does not (a checkpoint of a different model?)");
}

// The same with the shapes of a module's state_dict().
template <class T>
void check_compatible(const TrainingState<T>& state, const std::string& model_name, nn::Module<T>& model,
                      const std::string& prefix = "student.", const std::string& model_key = "model") {
  std::map<std::string, Shape> shapes;
  for (const auto& [name, t] : model.state_dict()) shapes.emplace(name, t.shape());
  check_compatible(state, model_name, shapes, prefix, model_key);
}

}  // namespace histograd::io
