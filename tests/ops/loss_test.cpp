#include "test_util.hpp"

using Inputs = std::vector<hg::Tensor<double>>;
using hg::Reduction;

namespace {
hg::Tensor<int64_t> labels(std::initializer_list<int64_t> values, hg::Shape shape = {}) {
  return hg::tensor<int64_t>(values, std::move(shape));
}

// Naive cross-entropy of [N, C, rest] logits (rest flattened), straight from the definition
// in torch's docs: log p = s - log Σ exp s; per element (1-ε)(-log p_t) + (ε/C) Σ_c -log p_c.
std::vector<double> reference_cross_entropy(const hg::Tensor<double>& logits, const hg::Tensor<int64_t>& target,
                                            int64_t ignore_index, double smoothing) {
  auto s = logits.contiguous();
  const int64_t n = s.size(0), classes = s.size(1), rest = s.numel() / (n * classes);
  auto t = target.contiguous();
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < rest; ++k) {
      int64_t label = t.data()[i * rest + k];
      if (label == ignore_index) {
        out.push_back(0.0);
        continue;
      }
      auto logit = [&](int64_t c) { return s.data()[(i * classes + c) * rest + k]; };
      double total = 0;
      for (int64_t c = 0; c < classes; ++c) total += std::exp(logit(c));
      double log_total = std::log(total), sum_neg_logp = 0;
      for (int64_t c = 0; c < classes; ++c) sum_neg_logp += log_total - logit(c);
      out.push_back((1 - smoothing) * (log_total - logit(label)) + smoothing / double(classes) * sum_neg_logp);
    }
  return out;
}

// Logits and targets shared by the torch-literal cases below.
hg::Tensor<double> torch_logits() {
  return hg::tensor<double>({1.0, -2.0, 0.5, 3.0, 0.1, 0.2, 0.3, 0.4, -1.0, 2.0, -3.0, 0.0}, {3, 4});
}
}  // namespace

TEST_CASE("cross_entropy matches PyTorch on literal inputs") {
  // Values from torch 2.15: F.cross_entropy(x, t, label_smoothing=ls, reduction=r) in float64
  // with x = torch_logits() and t = [3, -100, 1].
  auto x = torch_logits();
  auto t = labels({3, -100, 1});
  check_close(hg::cross_entropy(x, t), {0.18888440514803312}, 1e-12);
  check_close(hg::cross_entropy(x, t, -100, 0.0, Reduction::Sum), {0.37776881029606624}, 1e-12);
  check_close(hg::cross_entropy(x, t, -100, 0.0, Reduction::None), {0.20225344767935172, 0.0, 0.1755153626167145}, 1e-12);
  check_close(hg::cross_entropy(x, t, -100, 0.2), {0.6763844051480332}, 1e-12);
  check_close(hg::cross_entropy(x, t, -100, 0.2, Reduction::Sum), {1.3527688102960664}, 1e-12);
  check_close(hg::cross_entropy(x, t, -100, 0.2, Reduction::None), {0.6772534476793519, 0.0, 0.6755153626167145}, 1e-12);

  // x.grad after F.cross_entropy(x, t, label_smoothing=0.2).backward()
  x.requires_grad_();
  hg::cross_entropy(x, t, -100, 0.2).backward();
  check_close(x.grad(), {0.030276875180869613, -0.022247926436208165, 0.00852711957030574, -0.0165560683149672, 0.0, 0.0,
                         0.0, 0.0, -0.004113714742324768, -0.005487746268733958, -0.022173348668891837, 0.03177480967995064},
              1e-12);

  // [N, C, d] logits: x3 = torch.arange(12.).reshape(2, 3, 2).sin(), t3 = [[0, 2], [-100, 1]],
  // F.cross_entropy(x3, t3, label_smoothing=0.1, reduction='none' / 'mean')
  auto x3 = hg::sin(hg::arange<double>(12.0).reshape({2, 3, 2}));
  auto t3 = labels({0, 2, -100, 1}, {2, 2});
  check_close(hg::cross_entropy(x3, t3, -100, 0.1, Reduction::None), {1.3690733081791895, 2.21152178202925, 0.0, 0.9635961246791203},
              1e-12);
  check_close(hg::cross_entropy(x3, t3, -100, 0.1), {1.5147304049625199}, 1e-12);
}

TEST_CASE("soft-target cross_entropy matches PyTorch on literal inputs") {
  // torch 2.15, float64: p = [[.1,.2,.3,.4],[.25]*4,[0,1,0,0]]; l = F.cross_entropy(x, p); l.backward()
  auto x = torch_logits();
  auto p = hg::tensor<double>({0.1, 0.2, 0.3, 0.4, 0.25, 0.25, 0.25, 0.25, 0.0, 1.0, 0.0, 0.0}, {3, 4});
  x.requires_grad_();
  p.requires_grad_();
  auto loss = hg::cross_entropy(x, p);
  check_close(loss, {1.2401014465837432}, 1e-12);
  loss.backward();
  check_close(x.grad(), {0.0035179167872464137, -0.06483195095747211, -0.0776485869531295, 0.13896262112335525,
                         -0.012053926544671864, -0.004557405892820776, 0.0037275307183585182, 0.012883801719134114,
                         0.013924190171783486, -0.053658497512489335, 0.001884434220738777, 0.037849873119967084},
              1e-12);
  check_close(p.grad(), {0.7340844825597839, 1.7340844825597839, 0.9007511492264505, 0.06741781589311724,
                         0.5141785098183875, 0.4808451764850542, 0.44751184315172093, 0.41417850981838755,
                         1.058505120872238, 0.058505120872238164, 1.7251717875389048, 0.7251717875389048},
              1e-12);
  // F.cross_entropy(x, p, label_smoothing=0.1, reduction='none')
  check_close(hg::cross_entropy(x.detach(), p.detach(), 0.1, Reduction::None),
              {2.194753447679352, 1.3925355294551627, 0.4255153626167145}, 1e-12);
}

TEST_CASE("cross_entropy matches a naive reference on random shapes, in float and double") {
  hg::Generator gen(21);
  for (hg::Shape shape : {hg::Shape{7, 5}, hg::Shape{3, 4, 6}, hg::Shape{2, 3, 2, 3}}) {
    auto x = hg::randn<double>(shape, gen) * 3.0;
    hg::Shape target_shape = shape;
    target_shape.erase(target_shape.begin() + 1);
    auto t = hg::randint<int64_t>(-1, shape[1], target_shape, gen);  // -1 doubles as ignore_index
    for (double smoothing : {0.0, 0.3}) {
      auto expected = reference_cross_entropy(x, t, -1, smoothing);
      check_close(hg::cross_entropy(x, t, -1, smoothing, Reduction::None), expected, 1e-12);
      check_close(hg::cross_entropy(x.to<float>(), t, -1, smoothing, Reduction::None), expected, 1e-6);
      double total = 0;
      int64_t count = 0;
      for (size_t i = 0; i < expected.size(); ++i) {
        total += expected[i];
        count += t.contiguous().data()[i] != -1;
      }
      check_close(hg::cross_entropy(x, t, -1, smoothing, Reduction::Sum), {total}, 1e-12);
      check_close(hg::cross_entropy(x, t, -1, smoothing), {total / double(count)}, 1e-12);
      check_close(hg::cross_entropy(x.to<float>(), t, -1, smoothing), {total / double(count)}, 1e-6);
    }
  }
  // unbatched: logits [C], target 0-d
  auto row = hg::tensor<double>({0.5, -1.0, 2.0});
  auto expected = reference_cross_entropy(row.reshape({1, 3}), labels({2}, {1}), -100, 0.0);
  check_close(hg::cross_entropy(row, hg::scalar_tensor<int64_t>(2)), expected, 1e-12);
}

TEST_CASE("cross_entropy edge cases: all targets ignored, extreme logits") {
  auto x = torch_logits();
  CHECK(std::isnan(hg::cross_entropy(x, labels({-100, -100, -100})).item()));  // torch gives nan too
  CHECK(hg::cross_entropy(x, labels({-100, -100, -100}), -100, 0.0, Reduction::Sum).item() == 0.0);
  // large logits stay finite thanks to the max shift
  auto big = hg::tensor<float>({1000.f, 0.f, -1000.f, 990.f}, {1, 4});
  CHECK(hg::cross_entropy(big, labels({3}, {1})).item() == doctest::Approx(10.0 + std::log1p(std::exp(-10.0))).epsilon(1e-6));
}

TEST_CASE("mse_loss matches hand values") {
  auto a = hg::tensor<double>({1, 2, 3, 4}, {2, 2}), b = hg::tensor<double>({0, 2, 5, 3}, {2, 2});
  check_close(hg::mse_loss(a, b), {1.5});
  check_close(hg::mse_loss(a, b, Reduction::Sum), {6});
  check_close(hg::mse_loss(a, b, Reduction::None), {1, 0, 4, 1});
  check_close(hg::mse_loss(a.to<float>(), b.to<float>()), {1.5});
}

TEST_CASE("loss errors name the op") {
  auto x = hg::zeros<float>({4, 10});
  CHECK_THROWS_WITH_AS(hg::cross_entropy(x, labels({1, 2, 3, 12})),
                       doctest::Contains("cross_entropy: target 12 out of range for 10 classes"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::cross_entropy(x, labels({1, 2, -1, 3})),
                       doctest::Contains("cross_entropy: target -1 out of range for 10 classes"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::cross_entropy(x, labels({1, 2, 3, 4, 5})),
                       doctest::Contains("cross_entropy: expected target of shape [4] for logits of shape [4, 10], got [5]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::cross_entropy(x, labels({1, 2, 3, 4}), -100, 1.5),
                       doctest::Contains("cross_entropy: label_smoothing must be in [0, 1], got 1.5"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::cross_entropy(x, hg::zeros<float>({4, 9})),
                       doctest::Contains("cross_entropy: expected target probabilities of the logits' shape [4, 10], got [4, 9]"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::cross_entropy(hg::scalar_tensor<float>(1), hg::scalar_tensor<int64_t>(0)),
                       doctest::Contains("cross_entropy: expected logits of shape [N, C]"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::mse_loss(x, hg::zeros<float>({10})),
                       doctest::Contains("mse_loss: expected input and target of the same shape, got [4, 10] and [10]"),
                       hg::Error);
}

TEST_CASE("gradcheck: cross_entropy with ignore_index and label smoothing") {
  auto x = random_input({5, 4}, 31, true);
  auto t = labels({3, -100, 0, 3, 1});
  for (double smoothing : {0.0, 0.25})
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None})
      check_gradients([t, smoothing, r](const Inputs& in) { return hg::cross_entropy(in[0], t, -100, smoothing, r); }, {x});
  // [N, C, d1, d2] through a non-contiguous view
  auto x4 = random_input({2, 3, 2, 4}, 32).permute({0, 3, 2, 1});  // [2, 4, 2, 3], classes = 4
  auto t3 = labels({0, 3, 7, 1, 2, 2, 7, 0, 1, 3, 3, 0}, {2, 2, 3});
  check_gradients([t3](const Inputs& in) { return hg::cross_entropy(in[0], t3, 7, 0.1); }, {x4});
  check_gradients([t3](const Inputs& in) { return hg::cross_entropy(in[0], t3, 7, 0.0, Reduction::None); }, {x4});
}

TEST_CASE("gradcheck: soft-target cross_entropy (gradient to logits and targets)") {
  auto x = random_input({4, 6}, 33, true);
  auto p = hg::abs(random_input({4, 6}, 34));  // not normalised: the gradient must not assume Σt = 1
  for (double smoothing : {0.0, 0.2})
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None})
      check_gradients([smoothing, r](const Inputs& in) { return hg::cross_entropy(in[0], in[1], smoothing, r); }, {x, p});
  // DINO's form: targets are a softmax of teacher logits
  auto teacher = random_input({4, 6}, 35);
  check_gradients([](const Inputs& in) { return hg::cross_entropy(in[0], hg::exp(in[1]) / hg::sum(hg::exp(in[1]), {-1}, true)); },
                  {x, teacher});
  auto x3 = random_input({2, 5, 3}, 36, true);
  auto p3 = random_input({2, 5, 3}, 37);
  check_gradients([](const Inputs& in) { return hg::cross_entropy(in[0], in[1] * in[1]); }, {x3, p3});
}

TEST_CASE("gradcheck: mse_loss") {
  auto a = random_input({3, 4}, 38, true), b = random_input({3, 4}, 39);
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None})
    check_gradients([r](const Inputs& in) { return hg::mse_loss(in[0], in[1], r); }, {a, b});
}
