// Evaluating frozen self-supervised features: the weighted k-NN classifier of DINO's
// eval_knn.py (knn_classifier: L2-normalised features, cosine similarity, top-k neighbours voting
// with weight exp(sim / T), ranked by vote), the linear probe of eval_linear.py (LinearClassifier:
// one Linear, weight N(0, 0.01²), bias 0, SGD momentum 0.9 without weight decay, cosine learning
// rate per epoch, cross-entropy), and extract_features, which runs a backbone over a dataset.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/factories.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "../cpu/parallel.hpp"
#include "../nn/layers.hpp"
#include "../ops/indexing.hpp"
#include "../ops/loss.hpp"
#include "../ops/matmul.hpp"
#include "../optim/optimizer.hpp"

namespace histograd::ssl {

namespace detail {

inline void check_labels(const char* op, const char* what, const Tensor<int64_t>& labels, int64_t rows) {
  HG_CHECK(labels.dim() == 1 && labels.size(0) == rows, op, "expected ", what, " of shape [", rows, "], got ",
           to_string(labels.shape()));
}

inline int64_t infer_classes(const std::vector<const Tensor<int64_t>*>& label_sets) {
  int64_t largest = -1;
  for (const auto* labels : label_sets)
    if (labels && labels->defined())
      for (int64_t v : labels->to_vector()) largest = std::max(largest, v);
  return largest + 1;
}

inline void check_label_range(const char* op, const char* what, const Tensor<int64_t>& labels, int64_t classes) {
  for (int64_t v : labels.to_vector())
    HG_CHECK(v >= 0 && v < classes, op, "expected ", what, " in [0, ", classes, "), got ", v);
}

// Rows scaled to unit L2 norm, as F.normalize(x, dim=1): x / max(‖x‖, 1e-12), in T.
template <class T>
Tensor<T> l2_normalize_rows(const Tensor<T>& x) {
  Tensor<T> out = x.detach().contiguous().clone();
  const int64_t rows = out.size(0), cols = out.size(1);
  T* data = out.data();
  cpu::parallel_for(rows, cols, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* row = data + r * cols;
      T squares = 0;
      for (int64_t c = 0; c < cols; ++c) squares += row[c] * row[c];
      const T norm = std::max(std::sqrt(squares), T(1e-12));
      for (int64_t c = 0; c < cols; ++c) row[c] /= norm;
    }
  });
  return out;
}

// Classes ranked by score, highest first; equal scores keep the lower class first (a stable
// descending sort, which is what torch's CPU sort gives the zero-vote classes).
template <class T>
void rank_classes(const T* scores, int64_t classes, int64_t* order) {
  std::iota(order, order + classes, int64_t(0));
  std::stable_sort(order, order + classes, [scores](int64_t a, int64_t b) { return scores[a] > scores[b]; });
}

}  // namespace detail

// What knn_classify and knn_predict return. Accuracies in percent, as eval_knn.py prints them.
struct KnnResult {
  std::vector<int64_t> predictions;  // the top-ranked class of each test row
  std::vector<int64_t> ranking;      // [M, min(5, k, classes)] classes by vote, best first
  double top1 = 0;
  std::optional<double> top5;        // present when there are at least 5 classes
};

// Weighted k-NN as DINO's knn_classifier, without labels for the test rows: both feature sets are
// L2-normalised, each test row takes its k most cosine-similar training rows (ties: the lower
// index first), each neighbour votes for its class with weight exp(similarity / temperature), and
// the classes are ranked by their summed votes. Test rows are processed `chunk_rows` at a time, so
// memory is chunk_rows · N similarities; the result does not depend on the chunking.
// num_classes 0 means 1 + the largest training label.
template <class T>
KnnResult knn_predict(const Tensor<T>& train_features, const Tensor<int64_t>& train_labels, const Tensor<T>& test_features,
                      int64_t k = 20, double temperature = 0.07, int64_t num_classes = 0, int64_t chunk_rows = 256) {
  HG_CHECK(train_features.dim() == 2 && test_features.dim() == 2, "knn_classify",
           "expected features of shape [N, D] and [M, D], got ", to_string(train_features.shape()), " and ",
           to_string(test_features.shape()));
  const int64_t train_rows = train_features.size(0), test_rows = test_features.size(0), dim = train_features.size(1);
  HG_CHECK(test_features.size(1) == dim, "knn_classify", "expected test features of width ", dim,
           " (as the training features), got ", test_features.size(1));
  HG_CHECK(train_rows > 0, "knn_classify", "expected at least one training row, got 0");
  detail::check_labels("knn_classify", "training labels", train_labels, train_rows);
  HG_CHECK(k >= 1 && k <= train_rows, "knn_classify", "expected k in [1, ", train_rows, "] (the training rows), got ", k);
  HG_CHECK(temperature > 0, "knn_classify", "expected a positive temperature, got ", temperature);
  HG_CHECK(chunk_rows >= 1, "knn_classify", "expected chunk_rows >= 1, got ", chunk_rows);
  if (num_classes == 0) num_classes = detail::infer_classes({&train_labels});
  HG_CHECK(num_classes >= 1, "knn_classify", "expected num_classes >= 1, got ", num_classes);
  detail::check_label_range("knn_classify", "training labels", train_labels, num_classes);

  NoGradGuard no_grad;
  const Tensor<T> train = detail::l2_normalize_rows(train_features), test = detail::l2_normalize_rows(test_features);
  const Tensor<int64_t> labels = train_labels.contiguous();
  const int64_t* label = labels.data();
  const int64_t ranked = std::min({int64_t(5), k, num_classes});
  KnnResult result;
  result.predictions.resize(static_cast<size_t>(test_rows));
  result.ranking.resize(static_cast<size_t>(test_rows * ranked));
  const T temperature_t = static_cast<T>(temperature);  // divided, not multiplied by its inverse: as div_(T)
  for (int64_t chunk = 0; chunk < test_rows; chunk += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, test_rows - chunk);
    const Tensor<T> similarity = matmul(test.narrow(0, chunk, rows), train.mT());  // [rows, N], contiguous
    const T* sim = similarity.data();
    cpu::parallel_for(rows, train_rows * 4, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> neighbours(static_cast<size_t>(train_rows)), order(static_cast<size_t>(num_classes));
      std::vector<T> votes(static_cast<size_t>(num_classes));
      for (int64_t r = begin; r < end; ++r) {
        const T* s = sim + r * train_rows;
        std::iota(neighbours.begin(), neighbours.end(), int64_t(0));
        std::partial_sort(neighbours.begin(), neighbours.begin() + k, neighbours.end(),
                          [s](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
        std::fill(votes.begin(), votes.end(), T(0));
        // exp(sim / T) summed per class in neighbour order, as the one-hot product sums over k
        for (int64_t j = 0; j < k; ++j) {
          const int64_t n = neighbours[static_cast<size_t>(j)];
          votes[static_cast<size_t>(label[n])] += std::exp(s[n] / temperature_t);
        }
        detail::rank_classes(votes.data(), num_classes, order.data());
        const int64_t row = chunk + r;
        result.predictions[static_cast<size_t>(row)] = order[0];
        std::copy(order.begin(), order.begin() + ranked, result.ranking.begin() + row * ranked);
      }
    });
  }
  return result;
}

// knn_predict plus DINO's accuracies against test_labels: top-1, and top-5 (the label among the
// first min(5, k) ranked classes) when there are at least 5 classes, both in percent.
template <class T>
KnnResult knn_classify(const Tensor<T>& train_features, const Tensor<int64_t>& train_labels, const Tensor<T>& test_features,
                       const Tensor<int64_t>& test_labels, int64_t k = 20, double temperature = 0.07,
                       int64_t num_classes = 0, int64_t chunk_rows = 256) {
  HG_CHECK(test_features.dim() == 2, "knn_classify", "expected test features of shape [M, D], got ",
           to_string(test_features.shape()));
  detail::check_labels("knn_classify", "test labels", test_labels, test_features.size(0));
  HG_CHECK(test_features.size(0) > 0, "knn_classify", "expected at least one test row, got 0");
  if (num_classes == 0) num_classes = detail::infer_classes({&train_labels, &test_labels});
  detail::check_label_range("knn_classify", "test labels", test_labels, num_classes);
  KnnResult result = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes, chunk_rows);
  const std::vector<int64_t> truth = test_labels.to_vector();
  const size_t rows = truth.size(), ranked = result.ranking.size() / rows;
  const size_t top5_width = std::min<size_t>(ranked, 5);
  double top1 = 0, top5 = 0;
  for (size_t i = 0; i < rows; ++i) {
    top1 += result.predictions[i] == truth[i];
    for (size_t j = 0; j < top5_width; ++j) top5 += result.ranking[i * ranked + j] == truth[i];
  }
  result.top1 = top1 * 100.0 / double(rows);
  if (num_classes >= 5) result.top5 = top5 * 100.0 / double(rows);
  return result;
}

// How LinearProbe trains. DINO's defaults are 100 epochs at batch 128 (per GPU) with lr
// 0.001 · batch / 256; here `lr` is the rate itself, and the default suits features of unit-order
// entries (a ViT's final LayerNorm output) on small data sets.
struct LinearProbeOptions {
  int64_t epochs = 100;
  int64_t batch_size = 128;
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 0;  // DINO applies none
  bool shuffle = true;      // a fresh permutation of the rows every epoch (DistributedSampler.set_epoch)
  uint64_t seed = 0;        // the initial weights and the permutations
};

// A linear classifier on frozen features, DINO's LinearClassifier and its training loop: logits =
// x W^T + b with W [classes, D] ~ N(0, 0.01²) and b = 0; each epoch runs over the rows in
// mini-batches (the last one partial), minimising the mean cross-entropy with SGD (momentum,
// weight decay as set) at lr · (1 + cos(π · epoch / epochs)) / 2, the CosineAnnealingLR schedule
// stepped once per epoch. Features are detached: no gradient reaches the backbone.
template <class T>
class LinearProbe {
 public:
  LinearProbe(int64_t feature_dim, int64_t num_classes, LinearProbeOptions options = {}) : options(options) {
    HG_CHECK(feature_dim >= 1 && num_classes >= 1, "LinearProbe", "expected a positive feature width and class count, got ",
             feature_dim, " and ", num_classes);
    Generator init(options.seed);
    linear = nn::Linear<T>(feature_dim, num_classes, true, init, 0.01);
  }

  // Trains on features [N, D] with labels [N] in [0, classes); returns the mean batch loss of each
  // epoch (the average of the batches' losses, as DINO's MetricLogger reports it).
  std::vector<double> fit(const Tensor<T>& features, const Tensor<int64_t>& labels) {
    check_features("LinearProbe.fit", features);
    detail::check_labels("LinearProbe.fit", "labels", labels, features.size(0));
    detail::check_label_range("LinearProbe.fit", "labels", labels, num_classes());
    HG_CHECK(options.epochs >= 1 && options.batch_size >= 1, "LinearProbe.fit",
             "expected epochs >= 1 and batch_size >= 1, got ", options.epochs, " and ", options.batch_size);
    const Tensor<T> x = features.detach().contiguous();
    const Tensor<int64_t> y = labels.contiguous();
    const int64_t rows = x.size(0);
    optim::SGD<T> sgd({linear.weight, linear.bias}, options.lr, options.momentum, options.weight_decay);
    Generator shuffler(options.seed ^ 0x5DEECE66Dull);
    std::vector<double> epoch_losses;
    for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
      sgd.set_lr(options.lr * 0.5 * (1 + std::cos(M_PI * double(epoch) / double(options.epochs))));
      const Tensor<int64_t> order = options.shuffle ? permutation(rows, shuffler) : Tensor<int64_t>();
      double total = 0;
      int64_t batches = 0;
      for (int64_t start = 0; start < rows; start += options.batch_size) {
        const int64_t count = std::min(options.batch_size, rows - start);
        Tensor<T> batch = x.narrow(0, start, count);
        Tensor<int64_t> target = y.narrow(0, start, count);
        if (options.shuffle) {
          const Tensor<int64_t> picked = order.narrow(0, start, count);
          batch = index_select(x, 0, picked);
          target = index_select(y, 0, picked);
        }
        Tensor<T> loss = cross_entropy(linear.forward(batch), target.contiguous());
        sgd.zero_grad();
        loss.backward();
        sgd.step();
        total += double(loss.item());
        ++batches;
      }
      epoch_losses.push_back(total / double(batches));
    }
    return epoch_losses;
  }

  Tensor<T> logits(const Tensor<T>& features) const {
    check_features("LinearProbe.logits", features);
    NoGradGuard no_grad;
    return linear.forward(features.detach());
  }

  // The arg-max class of each row (ties: the lower class).
  std::vector<int64_t> predict(const Tensor<T>& features) const {
    const Tensor<T> scores = logits(features).contiguous();
    const int64_t classes = scores.size(1);
    std::vector<int64_t> out(static_cast<size_t>(scores.size(0)));
    for (size_t r = 0; r < out.size(); ++r) {
      const T* row = scores.data() + static_cast<int64_t>(r) * classes;
      out[r] = std::max_element(row, row + classes) - row;
    }
    return out;
  }

  // Top-1 accuracy in percent (eval_linear.py's acc1).
  double accuracy(const Tensor<T>& features, const Tensor<int64_t>& labels) const {
    check_features("LinearProbe.accuracy", features);
    detail::check_labels("LinearProbe.accuracy", "labels", labels, features.size(0));
    HG_CHECK(features.size(0) > 0, "LinearProbe.accuracy", "expected at least one row, got 0");
    const std::vector<int64_t> predicted = predict(features), truth = labels.to_vector();
    size_t correct = 0;
    for (size_t i = 0; i < truth.size(); ++i) correct += predicted[i] == truth[i];
    return double(correct) * 100.0 / double(truth.size());
  }

  int64_t feature_dim() const { return linear.in_features(); }
  int64_t num_classes() const { return linear.out_features(); }

  nn::Linear<T> linear;
  LinearProbeOptions options;

 private:
  void check_features(const char* op, const Tensor<T>& features) const {
    HG_CHECK(features.dim() == 2 && features.size(1) == feature_dim(), op, "expected features of shape [N, ", feature_dim(),
             "], got ", to_string(features.shape()));
  }
  // A uniformly random permutation of [0, n) (Fisher–Yates over Philox uniforms).
  static Tensor<int64_t> permutation(int64_t n, Generator& gen) {
    const Tensor<double> u = rand<double>({n}, gen);
    Tensor<int64_t> out = arange<int64_t>(n);
    int64_t* p = out.data();
    for (int64_t i = n - 1; i > 0; --i) {
      const int64_t j = std::min(i, static_cast<int64_t>(u.data()[i] * double(i + 1)));
      std::swap(p[i], p[j]);
    }
    return out;
  }
};

// Features of a whole dataset: features [N, D] (float) and labels [N].
struct FeatureSet {
  Tensor<float> features;
  Tensor<int64_t> labels;
};

// Runs `model` over `dataset` in batches of `batch_size` under NoGradGuard and stacks the outputs.
// model: a callable, or an object with forward(), mapping images [B, 3, H, W] to features [B, D];
// put a module in eval() first. dataset: anything with size(), load(i) and label(i) (data::Dataset);
// preprocess: maps what load(i) returns to a float tensor [3, H, W] (data::Preprocess, or
// data::to_tensor composed with normalize). device: where the model lives; each batch is moved
// there and the features come back to the host.
template <class Model, class DatasetLike, class Preprocess>
FeatureSet extract_features(Model& model, DatasetLike& dataset, const Preprocess& preprocess, int64_t batch_size = 64,
                            Device device = kCPU) {
  HG_CHECK(batch_size >= 1, "extract_features", "expected batch_size >= 1, got ", batch_size);
  const int64_t rows = static_cast<int64_t>(dataset.size());
  HG_CHECK(rows > 0, "extract_features", "expected a non-empty dataset, got 0 samples");
  NoGradGuard no_grad;
  auto run = [&model](const Tensor<float>& images) -> Tensor<float> {
    if constexpr (requires { model.forward(images); })
      return model.forward(images);
    else
      return model(images);
  };
  std::vector<Tensor<float>> parts;
  std::vector<int64_t> labels(static_cast<size_t>(rows));
  for (int64_t start = 0; start < rows; start += batch_size) {
    const int64_t count = std::min(batch_size, rows - start);
    std::vector<Tensor<float>> images;
    images.reserve(static_cast<size_t>(count));
    for (int64_t i = start; i < start + count; ++i) {
      images.push_back(preprocess(dataset.load(static_cast<size_t>(i))));
      labels[static_cast<size_t>(i)] = dataset.label(static_cast<size_t>(i));
    }
    const Tensor<float> out = run(stack(images, 0).to(device)).cpu();
    HG_CHECK(out.dim() == 2 && out.size(0) == count, "extract_features", "expected the model to map a batch of ", count,
             " images to features [", count, ", D], got ", to_string(out.shape()));
    HG_CHECK(parts.empty() || out.size(1) == parts.front().size(1), "extract_features",
             "expected every batch's features to have width ", parts.empty() ? 0 : parts.front().size(1), ", got ",
             out.size(1));
    parts.push_back(out.detach().contiguous());
  }
  return {parts.size() == 1 ? parts.front() : cat(parts, 0), from_vector<int64_t>(labels, Shape{rows})};
}

}  // namespace histograd::ssl
