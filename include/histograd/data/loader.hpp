// DataLoader: batches of augmented views from a Dataset, built by worker threads ahead of the
// consumer (a bounded number of batches in flight) and delivered in order. Everything random is a
// function of (seed, epoch) for the shuffle and (seed, epoch, sample index) for a sample's
// augmentations, so the batches are the same for any worker count and a run resumed with
// start_at(epoch, batch) sees exactly what an uninterrupted one would.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "dataset.hpp"

namespace histograd::data {

// Per-sample augmentation: an image and that sample's generator in, one tensor per view out
// (MultiCropAugmentation and MaskedAutoencoderAugmentation fit). Called from several threads.
using SampleTransform = std::function<std::vector<Tensor<float>>(const io::Image&, Generator&)>;

struct Batch {
  std::vector<Tensor<float>> views;  // one [B, C, H, W] per view
  std::vector<int> labels;           // per sample; -1 for unlabeled datasets
  std::vector<size_t> indices;       // the dataset index each sample came from (after any skip)
  int64_t epoch = 0, batch_index = 0;
};

struct DataLoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = true;
  int num_workers = 2;           // 0: batches are built on the consumer's thread
  int64_t prefetch_batches = 4;  // batches built ahead of the consumer, at most
  uint64_t seed = 0;
};

namespace detail {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace detail

// The Philox key of sample `index`'s augmentations in `epoch`.
inline uint64_t sample_seed(uint64_t seed, int64_t epoch, size_t index) {
  return detail::splitmix64(detail::splitmix64(detail::splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^ index);
}

// The sample order of an epoch: Fisher-Yates, swap partner of position i drawn from Philox block
// (i, epoch) under a key derived from the seed, so it needs no sequential generator state.
inline std::vector<size_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  const uint64_t key = detail::splitmix64(seed ^ 0x53485546464C45ull);  // "SHUFFLE"
  for (size_t i = n; i-- > 1;) {
    const auto bits = Philox4x32::block(i, static_cast<uint64_t>(epoch), key);
    const uint64_t r = (static_cast<uint64_t>(bits[0]) << 32) | bits[1];
    std::swap(order[i], order[static_cast<size_t>(r % (i + 1))]);  // bias below n / 2^64
  }
  return order;
}

class DataLoader {
 public:
  DataLoader(std::shared_ptr<Dataset> dataset, SampleTransform transform, DataLoaderOptions options = {})
      : dataset_(std::move(dataset)), transform_(std::move(transform)), options_(options) {
    HG_CHECK(dataset_ != nullptr, "DataLoader", "expected a dataset, got a null pointer");
    HG_CHECK(static_cast<bool>(transform_), "DataLoader", "expected a transform, got an empty function");
    HG_CHECK(options_.batch_size > 0, "DataLoader", "expected a positive batch size, got ", options_.batch_size);
    HG_CHECK(options_.num_workers >= 0, "DataLoader", "expected a non-negative number of workers, got ",
             options_.num_workers);
    HG_CHECK(options_.prefetch_batches > 0, "DataLoader", "expected a positive prefetch depth, got ",
             options_.prefetch_batches);
    size_ = dataset_->size();
    HG_CHECK(size_ > 0, "DataLoader", "expected a non-empty dataset, got 0 samples");
    const int64_t n = static_cast<int64_t>(size_), b = options_.batch_size;
    batches_ = options_.drop_last ? n / b : (n + b - 1) / b;
    HG_CHECK(batches_ > 0, "DataLoader", "expected at least batch_size = ", b, " samples with drop_last, got ", n);
    for (int w = 0; w < options_.num_workers; ++w) workers_.emplace_back([this] { work(); });
  }
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  ~DataLoader() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_workers_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  int64_t batches_per_epoch() const { return batches_; }
  const Dataset& dataset() const { return *dataset_; }
  // The position of the next batch next() delivers (after an epoch's last batch: epoch + 1, 0).
  int64_t epoch() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return position_ / batches_;
  }
  int64_t batch_index() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return position_ % batches_;
  }

  // Continues from batch `batch_index` of `epoch`; batches built ahead are dropped.
  void start_at(int64_t epoch, int64_t batch_index) {
    HG_CHECK(epoch >= 0 && batch_index >= 0 && batch_index < batches_, "DataLoader::start_at",
             "expected epoch >= 0 and 0 <= batch_index < ", batches_, ", got epoch ", epoch, ", batch ", batch_index);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      position_ = claimed_ = epoch * batches_ + batch_index;
      ready_.clear();
      epoch_done_ = false;
      ++generation_;
    }
    wake_workers_.notify_all();
  }

  // The next batch of the current epoch, or nullopt once after its last batch (the following
  // call starts the next epoch). A sample that fails rethrows here, naming its file.
  std::optional<Batch> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (epoch_done_) {
      epoch_done_ = false;
      return std::nullopt;
    }
    const int64_t pos = position_;
    Slot slot;
    if (workers_.empty()) {
      lock.unlock();
      slot = build_slot(pos);
      lock.lock();
    } else {
      wake_workers_.notify_all();
      batch_ready_.wait(lock, [&] { return ready_.count(pos) > 0; });
      slot = std::move(ready_[pos]);
      ready_.erase(pos);
    }
    if (slot.error) {
      ready_[pos] = slot;  // stays the current batch: asking again rethrows
      std::rethrow_exception(slot.error);
    }
    position_ = pos + 1;
    epoch_done_ = position_ % batches_ == 0;
    lock.unlock();
    wake_workers_.notify_all();
    return std::move(slot.batch);
  }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_workers_.wait(lock, [&] { return stop_ || claimed_ < position_ + options_.prefetch_batches; });
      if (stop_) return;
      const int64_t pos = claimed_++;
      const uint64_t generation = generation_;
      lock.unlock();
      Slot slot = build_slot(pos);
      lock.lock();
      if (generation == generation_) {
        ready_[pos] = std::move(slot);
        batch_ready_.notify_all();
      }
    }
  }

  std::shared_ptr<const std::vector<size_t>> order_of(int64_t epoch) {
    std::lock_guard<std::mutex> lock(order_mutex_);
    auto it = orders_.find(epoch);
    if (it != orders_.end()) return it->second;
    std::vector<size_t> order;
    if (options_.shuffle) {
      order = epoch_permutation(size_, options_.seed, epoch);
    } else {
      order.resize(size_);
      for (size_t i = 0; i < size_; ++i) order[i] = i;
    }
    while (orders_.size() >= 4) orders_.erase(orders_.begin());  // epochs in flight: at most two
    return orders_[epoch] = std::make_shared<const std::vector<size_t>>(std::move(order));
  }

  Slot build_slot(int64_t pos) {
    Slot slot;
    try {
      slot.batch = build(pos);
    } catch (...) {
      slot.error = std::current_exception();
    }
    return slot;
  }

  // Loads sample `index`, or under OnBadImage::Skip the next one that decodes.
  std::pair<io::Image, size_t> load_or_next(size_t index) {
    size_t j = index;
    for (size_t tries = 0; tries < size_; ++tries, j = (j + 1) % size_) {
      try {
        return {dataset_->load(j), j};
      } catch (const SkippedImage&) {
      }
    }
    fail("DataLoader", "no image of the dataset decodes (", size_, " skipped)");
  }

  Batch build(int64_t pos) {
    Batch batch;
    batch.epoch = pos / batches_;
    batch.batch_index = pos % batches_;
    const std::shared_ptr<const std::vector<size_t>> order = order_of(batch.epoch);
    const size_t first = static_cast<size_t>(batch.batch_index * options_.batch_size);
    const size_t last = std::min(size_, first + static_cast<size_t>(options_.batch_size));
    std::vector<std::vector<Tensor<float>>> samples;
    for (size_t p = first; p < last; ++p) {
      const size_t index = (*order)[p];
      size_t used = index;
      try {
        auto [image, j] = load_or_next(index);
        used = j;
        Generator gen(sample_seed(options_.seed, batch.epoch, index));
        samples.push_back(transform_(image, gen));
      } catch (const std::exception& e) {
        fail("DataLoader", "sample ", used, " ('", dataset_->path(used), "') of epoch ", batch.epoch, ": ", e.what());
      }
      batch.indices.push_back(used);
      batch.labels.push_back(dataset_->label(used));
    }
    const size_t views = samples.front().size();
    HG_CHECK(views > 0, "DataLoader", "expected the transform to give at least one view, got none");
    for (size_t v = 0; v < views; ++v) {
      const Shape shape = samples.front()[v].shape();
      Shape batched{static_cast<int64_t>(samples.size())};
      batched.insert(batched.end(), shape.begin(), shape.end());
      Tensor<float> out(batched);
      const int64_t numel = samples.front()[v].numel();
      for (size_t s = 0; s < samples.size(); ++s) {
        HG_CHECK(samples[s].size() == views && samples[s][v].shape() == shape, "DataLoader",
                 "expected every sample to give ", views, " views shaped as the first sample's (view ", v, ": ",
                 to_string(shape), "), sample ", batch.indices[s], " ('", dataset_->path(batch.indices[s]),
                 "') differs");
        const Tensor<float> x = samples[s][v].contiguous();
        std::memcpy(out.data() + static_cast<int64_t>(s) * numel, x.data(), sizeof(float) * static_cast<size_t>(numel));
      }
      batch.views.push_back(std::move(out));
    }
    return batch;
  }

  std::shared_ptr<Dataset> dataset_;
  SampleTransform transform_;
  DataLoaderOptions options_;
  size_t size_ = 0;
  int64_t batches_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable wake_workers_, batch_ready_;
  bool stop_ = false, epoch_done_ = false;
  int64_t position_ = 0;  // epoch · batches_per_epoch + batch index of the next batch delivered
  int64_t claimed_ = 0;   // the next position a worker will build
  uint64_t generation_ = 0;
  std::map<int64_t, Slot> ready_;
  std::vector<std::thread> workers_;

  std::mutex order_mutex_;
  std::map<int64_t, std::shared_ptr<const std::vector<size_t>>> orders_;
};

}  // namespace histograd::data
