// k-NN and linear-probe evaluation against DINO's eval_knn.py / eval_linear.py (fixtures from
// scripts/gen_eval_fixtures.py, which runs the reference functions), a naive k-NN written here,
// and extract_features over a synthetic tissue dataset.
#include <algorithm>
#include <cmath>
#include <histograd/data/synthetic_tissue.hpp>
#include <histograd/ssl/evaluation.hpp>
#include <numeric>

#include "test_util.hpp"

namespace {

const std::string kFixtures = std::string(HISTOGRAD_FIXTURES_DIR) + "/eval/";

// The k-NN vote written plainly: normalise, score every training row, sort all of them, vote.
template <class T>
std::vector<int64_t> naive_knn(const hg::Tensor<T>& train, const std::vector<int64_t>& train_labels, const hg::Tensor<T>& test,
                               int64_t k, double temperature, int64_t classes) {
  const int64_t n = train.size(0), m = test.size(0), d = train.size(1);
  auto row = [d](const hg::Tensor<T>& x, int64_t r) {
    std::vector<double> v(static_cast<size_t>(d));
    double norm = 0;
    for (int64_t c = 0; c < d; ++c) norm += double(x.at({r, c})) * double(x.at({r, c}));
    for (int64_t c = 0; c < d; ++c) v[size_t(c)] = double(x.at({r, c})) / std::max(std::sqrt(norm), 1e-12);
    return v;
  };
  std::vector<int64_t> out;
  for (int64_t i = 0; i < m; ++i) {
    const std::vector<double> q = row(test, i);
    std::vector<std::pair<double, int64_t>> scored;
    for (int64_t j = 0; j < n; ++j) {
      const std::vector<double> t = row(train, j);
      scored.push_back({-std::inner_product(q.begin(), q.end(), t.begin(), 0.0), j});
    }
    std::sort(scored.begin(), scored.end());
    std::vector<double> votes(static_cast<size_t>(classes), 0.0);
    for (int64_t j = 0; j < k; ++j) votes[size_t(train_labels[size_t(scored[size_t(j)].second)])] += std::exp(-scored[size_t(j)].first / temperature);
    out.push_back(std::max_element(votes.begin(), votes.end()) - votes.begin());
  }
  return out;
}

// Rows around `classes` centres spread far apart: linearly separable.
template <class T>
std::pair<hg::Tensor<T>, hg::Tensor<int64_t>> separable(int64_t rows, int64_t dim, int64_t classes, uint64_t seed) {
  hg::Generator gen(seed);
  hg::Tensor<T> centres = hg::randn<T>({classes, dim}, gen) * T(4);
  hg::Tensor<T> x = hg::randn<T>({rows, dim}, gen) * T(0.3);
  hg::Tensor<int64_t> y({rows});
  for (int64_t i = 0; i < rows; ++i) {
    y.data()[i] = i % classes;
    for (int64_t c = 0; c < dim; ++c) x.at({i, c}) += centres.at({i % classes, c});
  }
  return {x, y};
}

}  // namespace

TEST_CASE("knn_classify matches DINO's knn_classifier") {
  // Predictions and accuracies are compared for equality: the similarities are fp32 dot
  // products of unit vectors summed in another order than torch's (differences ~1e-7), which
  // could only flip a neighbour or a vote sitting within 1e-7 of another; none does here.
  const auto fixture = hg::io::load_safetensors<float>(kFixtures + "knn.safetensors");
  hg::io::SafetensorsFile file(kFixtures + "knn.safetensors");
  for (const std::string name : {"clusters", "three_classes", "many_classes"}) {
    CAPTURE(name);
    const std::vector<int64_t> params = file.get<int64_t>(name + ".params").to_vector();
    const int64_t k = params[0], classes = params[1];
    const double temperature = file.get<double>(name + ".temperature").item();
    const std::vector<double> accuracy = file.get<double>(name + ".accuracy").to_vector();
    const hg::Tensor<int64_t> train_labels = file.get<int64_t>(name + ".train_labels");
    const hg::Tensor<int64_t> test_labels = file.get<int64_t>(name + ".test_labels");
    const hg::Tensor<int64_t> ranking = file.get<int64_t>(name + ".ranking");
    const hg::Tensor<float> train = fixture.at(name + ".train_features"), test = fixture.at(name + ".test_features");

    const hg::ssl::KnnResult result = hg::ssl::knn_classify(train, train_labels, test, test_labels, k, temperature, classes);
    const std::vector<int64_t> expected_ranking = ranking.to_vector();
    REQUIRE(result.ranking.size() == expected_ranking.size());
    CHECK(result.ranking == expected_ranking);
    std::vector<int64_t> expected_predictions;
    for (int64_t r = 0; r < ranking.size(0); ++r) expected_predictions.push_back(ranking.at({r, 0}));
    CHECK(result.predictions == expected_predictions);
    CHECK(result.top1 == accuracy[0]);
    if (classes >= 5) {
      REQUIRE(result.top5.has_value());
      CHECK(*result.top5 == accuracy[2]);  // equal votes ranked by class index
      CHECK(*result.top5 == accuracy[1]);  // DINO's own figure: no tie fell on the top-5 boundary here
    } else {
      CHECK_FALSE(result.top5.has_value());
    }
    // chunking the test rows changes nothing
    for (int64_t chunk : {1, 7, 1000}) {
      const hg::ssl::KnnResult chunked =
          hg::ssl::knn_classify(train, train_labels, test, test_labels, k, temperature, classes, chunk);
      CHECK(chunked.ranking == result.ranking);
    }
    // num_classes inferred from the labels
    if (name == "clusters") CHECK(hg::ssl::knn_classify(train, train_labels, test, test_labels, k, temperature).top1 == accuracy[0]);
  }
}

TEST_CASE_TEMPLATE("knn_predict against a naive vote", T, float, double) {
  hg::Generator gen(17);
  const int64_t classes = 6;
  hg::Tensor<T> train = hg::randn<T>({90, 12}, gen), test = hg::randn<T>({37, 12}, gen);
  std::vector<int64_t> labels(90);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int64_t((i * 7) % classes);
  const auto label_tensor = hg::from_vector<int64_t>(labels);
  for (int64_t k : {1, 5, 20, 90})
    for (double temperature : {0.07, 1.0}) {
      CAPTURE(k);
      CAPTURE(temperature);
      const auto result = hg::ssl::knn_predict(train, label_tensor, test, k, temperature, classes);
      CHECK(result.predictions == naive_knn(train, labels, test, k, temperature, classes));
    }
  // a non-contiguous view and rows rescaled by positive factors give the same neighbours
  hg::Tensor<T> scaled = test * T(5.5);
  hg::Tensor<T> transposed = test.mT().contiguous().mT();
  CHECK(!transposed.is_contiguous());
  const auto base = hg::ssl::knn_predict(train, label_tensor, test, 10, 0.07, classes).predictions;
  CHECK(hg::ssl::knn_predict(train, label_tensor, scaled, 10, 0.07, classes).predictions == base);
  CHECK(hg::ssl::knn_predict(train, label_tensor, transposed, 10, 0.07, classes).predictions == base);
}

TEST_CASE("knn_classify: a hand-worked vote") {
  // Unit vectors at 0° and 30° (class 0) and 55° (class 1); the query at 45° has cosine
  // similarities cos 45° = 0.7071, cos 15° = 0.9659, cos 10° = 0.9848. k = 1 and 2: class 1
  // leads. k = 3 at T = 0.5: class 0 gets e^1.932 + e^1.414 = 11.02 against e^1.970 = 7.17 and
  // wins; at T = 0.07: e^13.80 + e^10.10 = 1.009e6 against e^14.07 = 1.290e6, class 1 wins.
  const double pi = 3.14159265358979323846;
  auto unit = [pi](double degrees) { return std::vector<double>{std::cos(degrees * pi / 180), std::sin(degrees * pi / 180)}; };
  std::vector<double> points;
  for (double a : {0.0, 30.0, 55.0})
    for (double v : unit(a)) points.push_back(v);
  const auto train = hg::from_vector<double>(points, {3, 2});
  const auto labels = hg::tensor<int64_t>({0, 0, 1});
  const auto query = hg::from_vector<double>(unit(45), {1, 2}) * 7.0;  // the length does not matter
  const auto truth = hg::from_vector<int64_t>({1}, {1});
  CHECK(hg::ssl::knn_classify(train, labels, query, truth, 1, 0.5, 2).predictions == std::vector<int64_t>{1});
  CHECK(hg::ssl::knn_classify(train, labels, query, truth, 2, 0.5, 2).top1 == 100.0);
  const auto warm = hg::ssl::knn_classify(train, labels, query, truth, 3, 0.5, 2);
  CHECK(warm.predictions == std::vector<int64_t>{0});
  CHECK(warm.ranking == std::vector<int64_t>{0, 1});
  CHECK(warm.top1 == 0.0);
  CHECK_FALSE(warm.top5.has_value());
  CHECK(hg::ssl::knn_classify(train, labels, query, truth, 3, 0.07, 2).predictions == std::vector<int64_t>{1});
}

TEST_CASE("knn_classify: bad arguments") {
  const auto train = hg::randn<float>({10, 4}), test = hg::randn<float>({3, 4});
  const auto labels = hg::zeros<int64_t>({10}), test_labels = hg::zeros<int64_t>({3});
  CHECK_THROWS_WITH_AS(hg::ssl::knn_classify(train, labels, test, test_labels, 11),
                       doctest::Contains("knn_classify: expected k in [1, 10] (the training rows), got 11"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::knn_classify(train, labels, hg::randn<float>({3, 5}), test_labels, 5),
                       doctest::Contains("knn_classify: expected test features of width 4"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::knn_classify(train, hg::zeros<int64_t>({9}), test, test_labels, 5),
                       doctest::Contains("knn_classify: expected training labels of shape [10], got [9]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::knn_classify(train, labels, test, hg::full<int64_t>({3}, 4), 5, 0.07, 3),
                       doctest::Contains("knn_classify: expected test labels in [0, 3), got 4"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::knn_classify(train, labels, test, test_labels, 5, 0.0),
                       doctest::Contains("knn_classify: expected a positive temperature"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::knn_predict(hg::randn<float>({10}), labels, test),
                       doctest::Contains("knn_classify: expected features of shape [N, D] and [M, D]"), hg::Error);
}

TEST_CASE("LinearProbe matches DINO's LinearClassifier trained by eval_linear.py") {
  // fp32 on both sides; the GEMMs and log-softmax sum in other orders (~1e-7 per step), which
  // after at most 24 momentum steps stays well inside the 1e-5 asked of a training step.
  hg::io::SafetensorsFile file(kFixtures + "linear.safetensors");
  for (const std::string name : {"batches", "full_batch"}) {
    CAPTURE(name);
    const std::vector<int64_t> params = file.get<int64_t>(name + ".params").to_vector();
    const hg::Tensor<float> features = file.get<float>(name + ".features");
    hg::ssl::LinearProbeOptions options;
    options.batch_size = params[1];
    options.epochs = params[2];
    options.lr = file.get<double>(name + ".lr").item();
    options.shuffle = false;  // the reference ran its batches in order
    hg::ssl::LinearProbe<float> probe(features.size(1), params[0], options);
    probe.linear.weight.detach().copy_(file.get<float>(name + ".initial_weight"));
    probe.linear.bias.detach().copy_(file.get<float>(name + ".initial_bias"));
    const std::vector<double> losses = probe.fit(features, file.get<int64_t>(name + ".labels"));
    check_close(hg::from_vector<double>(losses), file.get<double>(name + ".losses").to_vector(), 1e-5);
    check_close(probe.linear.weight, file.get<float>(name + ".weight").contiguous(), 1e-5);
    check_close(probe.linear.bias, file.get<float>(name + ".bias").contiguous(), 1e-5);
    CHECK(probe.accuracy(features, file.get<int64_t>(name + ".labels")) == file.get<double>(name + ".accuracy").item());
  }
}

TEST_CASE_TEMPLATE("LinearProbe separates linearly separable classes", T, float, double) {
  auto [train_x, train_y] = separable<T>(240, 10, 5, 3);
  hg::ssl::LinearProbeOptions options;
  options.epochs = 20;
  options.batch_size = 32;
  options.lr = 0.05;
  options.seed = 9;
  hg::ssl::LinearProbe<T> probe(10, 5, options);
  // the initial weights are DINO's: N(0, 0.01²), zero bias
  CHECK(probe.linear.bias.to_vector() == std::vector<T>(5, T(0)));
  double sum_sq = 0;
  for (T w : probe.linear.weight.to_vector()) sum_sq += double(w) * double(w);
  CHECK(std::sqrt(sum_sq / 50) == doctest::Approx(0.01).epsilon(0.3));
  train_x.requires_grad_(true);  // frozen features: the probe must not send gradients back
  const std::vector<double> losses = probe.fit(train_x, train_y);
  CHECK_FALSE(train_x.grad().defined());
  CHECK(losses.size() == 20);
  CHECK(losses.back() < 0.1 * losses.front());
  CHECK(probe.accuracy(train_x.detach(), train_y) == 100.0);
  // held-out rows from the same centres (same seed draws the same centres first)
  auto [test_x, test_y] = separable<T>(300, 10, 5, 3);
  CHECK(probe.accuracy(test_x.slice(0, 240, 300), test_y.slice(0, 240, 300)) == 100.0);
  // deterministic: the same seed gives the same weights, shuffles included
  hg::ssl::LinearProbe<T> again(10, 5, options);
  again.fit(train_x.detach(), train_y);
  CHECK(again.linear.weight.to_vector() == probe.linear.weight.to_vector());
  options.seed = 10;
  hg::ssl::LinearProbe<T> other(10, 5, options);
  other.fit(train_x.detach(), train_y);
  CHECK(other.linear.weight.to_vector() != probe.linear.weight.to_vector());
}

TEST_CASE("LinearProbe: bad arguments") {
  hg::ssl::LinearProbe<float> probe(4, 3);
  CHECK_THROWS_WITH_AS(probe.fit(hg::randn<float>({6, 5}), hg::zeros<int64_t>({6})),
                       doctest::Contains("LinearProbe.fit: expected features of shape [N, 4], got [6, 5]"), hg::Error);
  CHECK_THROWS_WITH_AS(probe.fit(hg::randn<float>({6, 4}), hg::full<int64_t>({6}, 3)),
                       doctest::Contains("LinearProbe.fit: expected labels in [0, 3), got 3"), hg::Error);
  CHECK_THROWS_WITH_AS(probe.accuracy(hg::randn<float>({6, 4}), hg::zeros<int64_t>({5})),
                       doctest::Contains("LinearProbe.accuracy: expected labels of shape [6], got [5]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::ssl::LinearProbe<float>(0, 3), doctest::Contains("LinearProbe: expected a positive feature width"),
                       hg::Error);
}

namespace {
// A stand-in backbone with forward(): the per-channel mean of each image, [B, 3].
struct ChannelMeans {
  int calls = 0;
  hg::Tensor<float> forward(const hg::Tensor<float>& images) {
    ++calls;
    CHECK_FALSE(hg::GradMode::is_enabled());
    return hg::mean(images, {-2, -1});
  }
};
}  // namespace

TEST_CASE("extract_features runs a backbone over a dataset in batches") {
  hg::data::SyntheticTissue tiles(3, 24, 1);
  ChannelMeans backbone;
  auto preprocess = [](const hg::io::Image& image) { return hg::data::to_tensor<float>(image); };
  const hg::ssl::FeatureSet set = hg::ssl::extract_features(backbone, tiles, preprocess, 4);  // 15 = 4+4+4+3
  CHECK(backbone.calls == 4);
  REQUIRE(set.features.shape() == hg::Shape{15, 3});
  CHECK(set.labels.to_vector() == std::vector<int64_t>{0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4});
  for (size_t i = 0; i < tiles.size(); ++i) {
    const hg::io::Image image = tiles.load(i);
    for (int64_t c = 0; c < 3; ++c) {
      double sum = 0;
      for (size_t p = 0; p < image.pixels.size() / 3; ++p) sum += image.pixels[p * 3 + size_t(c)];
      CHECK(set.features.at({int64_t(i), c}) == doctest::Approx(sum / double(image.pixels.size() / 3) / 255.0).epsilon(1e-5));
    }
  }
  // a plain callable works too, and the features feed knn_classify directly
  auto lambda_model = [](const hg::Tensor<float>& images) { return hg::mean(images, {-2, -1}); };
  const hg::ssl::FeatureSet again = hg::ssl::extract_features(lambda_model, tiles, preprocess, 64);
  CHECK(again.features.to_vector() == set.features.to_vector());
  const auto knn = hg::ssl::knn_classify(set.features, set.labels, again.features, again.labels, 1, 0.07);
  CHECK(knn.top1 == 100.0);  // each tile is its own nearest neighbour

  auto wrong_rows = [](const hg::Tensor<float>& images) { return hg::mean(images, {-2, -1}).slice(0, 0, 1); };
  CHECK_THROWS_WITH_AS(hg::ssl::extract_features(wrong_rows, tiles, preprocess, 4),
                       doctest::Contains("extract_features: expected the model to map a batch of 4 images to features [4, D], got [1, 3]"),
                       hg::Error);
}
