// Optimizers over a list of parameter tensors: SGD (momentum, Nesterov, weight decay) and
// AdamW (Loshchilov & Hutter; torch.optim.AdamW's update order and bias correction).
// step() runs under NoGradGuard and writes parameters in place; zero_grad() drops grads.
#pragma once
#include <cmath>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"

namespace histograd::optim {

template <class T>
class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor<T>> params) : params_(std::move(params)) {
    for (const auto& p : params_)
      HG_CHECK(p.defined() && p.is_leaf() && p.is_contiguous(), "Optimizer",
               "parameters must be defined contiguous leaf tensors");
  }
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad() {
    for (auto& p : params_) p.zero_grad();
  }
  const std::vector<Tensor<T>>& params() const { return params_; }

 protected:
  std::vector<Tensor<T>> params_;
};

template <class T>
class SGD : public Optimizer<T> {
 public:
  SGD(std::vector<Tensor<T>> params, double lr, double momentum = 0, double weight_decay = 0, bool nesterov = false)
      : Optimizer<T>(std::move(params)), lr(lr), momentum(momentum), weight_decay(weight_decay), nesterov(nesterov) {
    for (const auto& p : this->params_) buffers_.push_back(zeros<T>(p.shape()));
  }
  // g += wd p;  b = μ b + g;  p -= lr (nesterov ? g + μ b : b)
  void step() override {
    NoGradGuard no_grad;
    for (size_t i = 0; i < this->params_.size(); ++i) {
      Tensor<T> grad = this->params_[i].grad();
      if (!grad.defined()) continue;
      grad = grad.contiguous();  // a user's set_grad() may have installed a strided view
      T* p = this->params_[i].data();
      T* b = buffers_[i].data();
      const T* g = grad.data();
      for (int64_t k = 0, n = grad.numel(); k < n; ++k) {
        T d = g[k] + T(weight_decay) * p[k];
        if (momentum != 0) {
          b[k] = first_step_ ? d : T(momentum) * b[k] + d;
          d = nesterov ? d + T(momentum) * b[k] : b[k];
        }
        p[k] -= T(lr) * d;
      }
      this->params_[i].storage()->bump_version();
    }
    first_step_ = false;
  }
  double lr, momentum, weight_decay;
  bool nesterov;

 private:
  std::vector<Tensor<T>> buffers_;
  bool first_step_ = true;
};

template <class T>
class AdamW : public Optimizer<T> {
 public:
  AdamW(std::vector<Tensor<T>> params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 1e-2)
      : Optimizer<T>(std::move(params)), lr(lr), beta1(beta1), beta2(beta2), eps(eps), weight_decay(weight_decay) {
    for (const auto& p : this->params_) {
      exp_avg_.push_back(zeros<T>(p.shape()));
      exp_avg_sq_.push_back(zeros<T>(p.shape()));
    }
  }
  // p *= 1 - lr wd;  m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;
  // p -= lr / (1-β1^t) · m / (sqrt(v / (1-β2^t)) + eps)
  void step() override {
    NoGradGuard no_grad;
    ++steps_;
    const double correction1 = 1 - std::pow(beta1, steps_), correction2 = 1 - std::pow(beta2, steps_);
    const double step_size = lr / correction1, sqrt_correction2 = std::sqrt(correction2);
    for (size_t i = 0; i < this->params_.size(); ++i) {
      Tensor<T> grad = this->params_[i].grad();
      if (!grad.defined()) continue;
      grad = grad.contiguous();
      T* p = this->params_[i].data();
      T* m = exp_avg_[i].data();
      T* v = exp_avg_sq_[i].data();
      const T* g = grad.data();
      for (int64_t k = 0, n = grad.numel(); k < n; ++k) {
        p[k] *= T(1 - lr * weight_decay);
        m[k] = T(beta1) * m[k] + T(1 - beta1) * g[k];
        v[k] = T(beta2) * v[k] + T(1 - beta2) * g[k] * g[k];
        p[k] -= T(step_size) * m[k] / (std::sqrt(v[k]) / T(sqrt_correction2) + T(eps));
      }
      this->params_[i].storage()->bump_version();
    }
  }
  int64_t steps() const { return steps_; }
  double lr, beta1, beta2, eps, weight_decay;

 private:
  std::vector<Tensor<T>> exp_avg_, exp_avg_sq_;
  int64_t steps_ = 0;
};

}  // namespace histograd::optim
