// gradcheck: compares autograd's gradients with central differences, in double.
// f maps the inputs to one tensor; we check d(Σ f · w)/dx for a fixed random weight w, so
// every output element contributes and a wrong sign or a missing term anywhere shows.
#pragma once
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "../core/factories.hpp"
#include "../core/tensor.hpp"

namespace histograd {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string report;  // the first mismatching element of each input, when !ok
};

inline GradcheckResult gradcheck(const std::function<Tensor<double>(const std::vector<Tensor<double>>&)>& f,
                                 std::vector<Tensor<double>> inputs, double eps = 1e-6, double atol = 1e-5,
                                 double rtol = 1e-4) {
  for (auto& x : inputs) x.requires_grad_(true);
  Generator weight_gen(1234);
  Tensor<double> probe = f(inputs);
  Tensor<double> weight = randn<double>(probe.shape(), weight_gen);
  auto weighted_sum = [&](const Tensor<double>& y) {
    Tensor<double> yc = y.detach().contiguous();
    double s = 0;
    for (int64_t i = 0; i < yc.numel(); ++i) s += yc.data()[i] * weight.data()[i];
    return s;
  };
  for (auto& x : inputs) x.zero_grad();
  Tensor<double> y = f(inputs);
  HG_CHECK(y.requires_grad(), "gradcheck", "the function's output does not require grad");
  y.backward(weight);

  GradcheckResult result;
  std::ostringstream report;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor<double> analytic = inputs[i].grad();
    Tensor<double> x = inputs[i].detach();  // perturbs the same storage the graph reads
    bool reported = false;
    std::vector<double> values = x.to_vector();
    for (int64_t e = 0; e < x.numel(); ++e) {
      // locate element e of the strided input
      int64_t offset = x.storage_offset(), rest = e;
      for (int64_t d = x.dim() - 1; d >= 0; --d) {
        offset += (rest % x.shape()[d]) * x.strides()[d];
        rest /= x.shape()[d];
      }
      double& slot = x.storage()->data()[offset];
      double saved = slot, plus, minus;
      {
        NoGradGuard no_grad;
        slot = saved + eps;
        plus = weighted_sum(f(inputs));
        slot = saved - eps;
        minus = weighted_sum(f(inputs));
        slot = saved;
      }
      double numeric = (plus - minus) / (2 * eps);
      double got = analytic.defined() ? analytic.contiguous().data()[e] : 0.0;
      double err = std::abs(numeric - got);
      result.max_abs_error = std::max(result.max_abs_error, err);
      if (err > atol + rtol * std::abs(numeric)) {
        result.ok = false;
        if (!reported) report << "input " << i << " element " << e << ": numeric " << numeric << ", analytic " << got << "\n";
        reported = true;
      }
    }
  }
  result.report = report.str();
  return result;
}

}  // namespace histograd
