// Optimizers over parameter groups: SGD (momentum, Nesterov, weight decay; torch.optim.SGD's
// update order) and AdamW (Loshchilov & Hutter; torch.optim.AdamW's update order, bias
// correction counted per parameter). Groups carry lr / weight decay and DINOv2's multipliers
// (dinov2/train/train.py apply_optim_scheduler), so schedules are driven per iteration the way
// DINO (main_dino.py) and DINOv2 do it. step() runs under NoGradGuard and writes in place.
// Parameters on a GPU are updated by cuda/optim.cu's multi-tensor kernels, all of them in one
// launch, with the same per-element arithmetic (update_rules.hpp) as the CPU loop.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/factories.hpp"
#include "../core/tensor.hpp"
#include "../cpu/parallel.hpp"
#include "../cuda/optim.hpp"
#include "../nn/module.hpp"
#include "../ops/device.hpp"
#include "update_rules.hpp"

namespace histograd::optim {

// One torch-style param group. The step uses lr·lr_multiplier and weight_decay·wd_multiplier,
// so a schedule writes the base values every iteration and the multipliers (DINOv2's
// layer-wise decay, patch_embed_lr_mult, wd 0 for norms) stay put. `names` is empty or one
// name per parameter; names become the keys of the optimizer state.
template <class T>
struct ParamGroup {
  std::vector<Tensor<T>> params;
  std::vector<std::string> names;
  double lr = 0, weight_decay = 0, lr_multiplier = 1, wd_multiplier = 1;
  bool is_last_layer = false;  // DINOv2: takes the last-layer lr schedule (zero while frozen)

  double effective_lr() const { return lr * lr_multiplier; }
  double effective_weight_decay() const { return weight_decay * wd_multiplier; }
};

// Everything an optimizer needs to continue exactly: per-parameter tensors (moments, momentum
// buffers) and scalars (step counts, the groups' current lr / weight decay).
template <class T>
struct OptimizerState {
  std::map<std::string, Tensor<T>> tensors;
  std::map<std::string, double> scalars;
};

// Which parameters decay in make_param_groups.
enum class DecayRule {
  module_default,  // nn::Module::parameter_groups(): 1-D, *.bias and the model's no_weight_decay() names
  dino_reference,  // DINO utils.get_params_groups exactly: 1-D or *.bias only (pos_embed, cls_token decay)
};

// DINO's two groups: {regularized, weight_decay = weight_decay}, {not_regularized, weight_decay = 0}.
// Parameters with requires_grad off are left out, as get_params_groups does.
template <class T>
std::vector<ParamGroup<T>> make_param_groups(nn::Module<T>& module, double weight_decay, double lr = 0,
                                             DecayRule rule = DecayRule::module_default) {
  ParamGroup<T> regularized, not_regularized;
  regularized.lr = not_regularized.lr = lr;
  regularized.weight_decay = weight_decay;
  auto add = [](ParamGroup<T>& group, const std::string& name, const Tensor<T>& p) {
    if (!p.requires_grad()) return;
    group.params.push_back(p);
    group.names.push_back(name);
  };
  if (rule == DecayRule::module_default) {
    nn::ParameterGroups<T> split = module.parameter_groups();
    for (size_t i = 0; i < split.decay.size(); ++i) add(regularized, split.decay_names[i], split.decay[i]);
    for (size_t i = 0; i < split.no_decay.size(); ++i) add(not_regularized, split.no_decay_names[i], split.no_decay[i]);
  } else {
    for (auto& [name, p] : module.named_parameters()) {
      const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
      add(is_bias || p.dim() == 1 ? not_regularized : regularized, name, p);
    }
  }
  return {regularized, not_regularized};
}

// DINOv2's groups for one student submodule (dinov2/utils/param_groups.py
// get_params_groups_with_decay + fuse_params_groups): lr_multiplier = lr_decay_rate^(num_blocks +
// 1 − layer_id), layer_id 0 for tokens, pos_embed and patch_embed, i+1 for "blocks.i.", and
// num_blocks + 1 otherwise; patch_embed's multiplier times patch_embed_lr_mult; wd_multiplier 0
// for *.bias and names containing "norm" or "gamma"; is_last_layer for "last_layer". Pass
// num_blocks = 0 for a head (every multiplier 1). Parameters sharing (lr_multiplier,
// wd_multiplier, is_last_layer) are fused into one group, in order of first appearance; every
// group starts with lr 0 and the given base weight_decay (set both per iteration).
template <class T>
std::vector<ParamGroup<T>> make_dinov2_param_groups(nn::Module<T>& module, int64_t num_blocks, double lr_decay_rate = 1.0,
                                                    double patch_embed_lr_mult = 1.0, double weight_decay = 0) {
  auto contains = [](const std::string& name, const char* part) { return name.find(part) != std::string::npos; };
  std::vector<ParamGroup<T>> groups;
  for (auto& [name, p] : module.named_parameters()) {
    if (!p.requires_grad()) continue;
    int64_t layer_id = num_blocks + 1;
    if (num_blocks > 0) {
      if (contains(name, "pos_embed") || contains(name, "patch_embed") || contains(name, "mask_token") ||
          contains(name, "cls_token") || contains(name, "register_tokens")) {
        layer_id = 0;
      } else if (const size_t at = name.find("blocks."); at != std::string::npos && !contains(name, "residual.")) {
        const size_t begin = at + 7, end = name.find('.', begin);
        const std::string index = name.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
        HG_CHECK(!index.empty() && index.find_first_not_of("0123456789") == std::string::npos,
                 "make_dinov2_param_groups", "expected a block index after 'blocks.' in '", name, "'");
        layer_id = std::stoll(index) + 1;
      }
    }
    double lr_multiplier = std::pow(lr_decay_rate, double(num_blocks + 1 - layer_id));
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const double wd_multiplier = is_bias || contains(name, "norm") || contains(name, "gamma") ? 0.0 : 1.0;
    if (contains(name, "patch_embed")) lr_multiplier *= patch_embed_lr_mult;
    const bool is_last_layer = contains(name, "last_layer");
    auto same = [&](const ParamGroup<T>& g) {
      return g.lr_multiplier == lr_multiplier && g.wd_multiplier == wd_multiplier && g.is_last_layer == is_last_layer;
    };
    auto it = std::find_if(groups.begin(), groups.end(), same);
    if (it == groups.end()) {
      ParamGroup<T> group;
      group.weight_decay = weight_decay;
      group.lr_multiplier = lr_multiplier;
      group.wd_multiplier = wd_multiplier;
      group.is_last_layer = is_last_layer;
      groups.push_back(group);
      it = groups.end() - 1;
    }
    it->params.push_back(p);
    it->names.push_back(name);
  }
  return groups;
}

template <class T>
class Optimizer {
 public:
  Optimizer(std::vector<ParamGroup<T>> groups, const char* name) : groups_(std::move(groups)), name_(name) {
    std::set<std::string> seen;
    for (size_t g = 0; g < groups_.size(); ++g) {
      const ParamGroup<T>& group = groups_[g];
      HG_CHECK(group.names.empty() || group.names.size() == group.params.size(), name_, "group ", g, " has ",
               group.params.size(), " parameters but ", group.names.size(), " names (expected none or one each)");
      base_weight_decay_.push_back(group.weight_decay);
      constructed_counts_.push_back(group.params.size());
      for (size_t i = 0; i < group.params.size(); ++i) {
        const Tensor<T>& p = group.params[i];
        HG_CHECK(p.defined() && p.is_leaf() && p.is_contiguous(), name_,
                 "parameters must be defined contiguous leaf tensors (group ", g, ", parameter ", i, ")");
        HG_CHECK(seen.insert(key(g, i)).second, name_, "parameter name '", key(g, i), "' appears twice");
      }
    }
  }
  virtual ~Optimizer() = default;
  virtual void step() = 0;

  void zero_grad() {
    for (auto& group : groups_)
      for (auto& p : group.params) p.zero_grad();
  }
  // The groups, to change lr / weight_decay / multipliers between steps. Their parameter lists
  // must not change after construction (step() checks the counts).
  std::vector<ParamGroup<T>>& groups() { return groups_; }
  const std::vector<ParamGroup<T>>& groups() const { return groups_; }
  std::vector<Tensor<T>> params() const {
    std::vector<Tensor<T>> out;
    for (const auto& group : groups_) out.insert(out.end(), group.params.begin(), group.params.end());
    return out;
  }

  // Every group's lr (DINO: param_group["lr"] = lr_schedule[it] on all groups).
  void set_lr(double lr) {
    for (auto& group : groups_) group.lr = lr;
  }
  // DINOv2: groups marked is_last_layer take last_layer_lr, the others lr.
  void set_lr(double lr, double last_layer_lr) {
    for (auto& group : groups_) group.lr = group.is_last_layer ? last_layer_lr : lr;
  }
  // The rule: only groups built with a non-zero weight_decay take the new value, so DINO's
  // not_regularized group (built with 0) stays at 0 as main_dino.py keeps it; DINOv2's groups
  // are all built with the base value and zeroed by wd_multiplier where they must not decay.
  void set_weight_decay(double weight_decay) {
    for (size_t g = 0; g < groups_.size(); ++g)
      if (base_weight_decay_[g] != 0) groups_[g].weight_decay = weight_decay;
  }

  // State keys use the parameter's name, or "group<g>.<i>" where the group has no names:
  // "group<g>.lr" / ".weight_decay" / ".lr_multiplier" / ".wd_multiplier" and the subclass's
  // per-parameter entries.
  OptimizerState<T> state() const {
    OptimizerState<T> out;
    for (size_t g = 0; g < groups_.size(); ++g) {
      const std::string prefix = "group" + std::to_string(g) + ".";
      out.scalars[prefix + "lr"] = groups_[g].lr;
      out.scalars[prefix + "weight_decay"] = groups_[g].weight_decay;
      out.scalars[prefix + "lr_multiplier"] = groups_[g].lr_multiplier;
      out.scalars[prefix + "wd_multiplier"] = groups_[g].wd_multiplier;
    }
    export_state(out);
    return out;
  }
  // Restores state(). Everything is checked before anything is written: a missing, unexpected
  // or mis-shaped entry throws naming its key and leaves the optimizer as it was.
  void load_state(const OptimizerState<T>& state) {
    std::map<std::string, Shape> tensors;
    std::set<std::string> scalars;
    for (size_t g = 0; g < groups_.size(); ++g)
      for (const char* field : {"lr", "weight_decay", "lr_multiplier", "wd_multiplier"})
        scalars.insert("group" + std::to_string(g) + "." + field);
    expected_entries(tensors, scalars);
    const std::string counts = ::histograd::detail::concat("expected ", tensors.size(), " tensors and ", scalars.size(),
                                              " scalars, got ", state.tensors.size(), " and ", state.scalars.size());
    for (const auto& [k, shape] : tensors) {
      auto it = state.tensors.find(k);
      HG_CHECK(it != state.tensors.end(), name_, "load_state: missing tensor '", k, "' (", counts, ")");
      HG_CHECK(it->second.defined() && it->second.shape() == shape, name_, "load_state: tensor '", k, "' has shape ",
               it->second.defined() ? to_string(it->second.shape()) : "undefined", ", expected ", to_string(shape));
    }
    for (const auto& k : scalars)
      HG_CHECK(state.scalars.count(k), name_, "load_state: missing scalar '", k, "' (", counts, ")");
    for (const auto& [k, v] : state.tensors)
      HG_CHECK(tensors.count(k), name_, "load_state: unexpected tensor '", k, "' (", counts, ")");
    for (const auto& [k, v] : state.scalars)
      HG_CHECK(scalars.count(k), name_, "load_state: unexpected scalar '", k, "' (", counts, ")");
    check_scalars(state);
    for (size_t g = 0; g < groups_.size(); ++g) {
      const std::string prefix = "group" + std::to_string(g) + ".";
      groups_[g].lr = state.scalars.at(prefix + "lr");
      groups_[g].weight_decay = state.scalars.at(prefix + "weight_decay");
      groups_[g].lr_multiplier = state.scalars.at(prefix + "lr_multiplier");
      groups_[g].wd_multiplier = state.scalars.at(prefix + "wd_multiplier");
    }
    NoGradGuard no_grad;
    import_state(state);
  }

 protected:
  // A subclass adds its per-parameter entries to a state, names them with shapes, checks
  // their values, and reads them back (after load_state has validated keys and shapes).
  virtual void export_state(OptimizerState<T>& out) const = 0;
  virtual void expected_entries(std::map<std::string, Shape>& tensors, std::set<std::string>& scalars) const = 0;
  virtual void check_scalars(const OptimizerState<T>&) const {}
  virtual void import_state(const OptimizerState<T>& state) = 0;

  std::string key(size_t g, size_t i) const {
    const ParamGroup<T>& group = groups_[g];
    return group.names.empty() ? "group" + std::to_string(g) + "." + std::to_string(i) : group.names[i];
  }
  // One zero tensor per parameter.
  std::vector<std::vector<Tensor<T>>> make_buffers() const {
    std::vector<std::vector<Tensor<T>>> out(groups_.size());
    for (size_t g = 0; g < groups_.size(); ++g)
      for (const auto& p : groups_[g].params) out[g].push_back(zeros<T>(p.shape(), p.device()));
    return out;
  }
  // Calls fn(g, i, key) for every parameter.
  template <class Fn>
  void for_each_param(Fn&& fn) const {
    for (size_t g = 0; g < groups_.size(); ++g)
      for (size_t i = 0; i < groups_[g].params.size(); ++i) fn(g, i, key(g, i));
  }
  // The parameter's gradient as a contiguous tensor of its shape, or undefined when it has none.
  Tensor<T> gradient(size_t g, size_t i) const {
    HG_CHECK(groups_[g].params.size() == constructed_counts_[g], name_, "group ", g, " had ", constructed_counts_[g],
             " parameters at construction, now ", groups_[g].params.size(),
             " (build a new optimizer to change the parameter list)");
    const Tensor<T>& p = groups_[g].params[i];
    Tensor<T> grad = p.grad();
    if (!grad.defined()) return grad;
    HG_CHECK(grad.shape() == p.shape(), name_, "gradient of '", key(g, i), "' has shape ", to_string(grad.shape()),
             ", expected the parameter's ", to_string(p.shape()));
    HG_CHECK(grad.device() == p.device(), name_, "gradient of '", key(g, i), "' is on ", grad.device().str(),
             ", the parameter on ", p.device().str());
    return grad.contiguous();  // a user's set_grad() may have installed a strided view
  }
  void bump(size_t g, size_t i) { groups_[g].params[i].storage()->bump_version(); }

  std::vector<ParamGroup<T>> groups_;
  const char* name_;

 private:
  std::vector<double> base_weight_decay_;
  std::vector<size_t> constructed_counts_;
};

template <class T>
class SGD : public Optimizer<T> {
 public:
  SGD(std::vector<ParamGroup<T>> groups, double momentum = 0, bool nesterov = false)
      : Optimizer<T>(std::move(groups), "SGD"), momentum(momentum), nesterov(nesterov) {
    HG_CHECK(!nesterov || momentum > 0, "SGD", "Nesterov momentum requires momentum > 0, got ", momentum);
    buffers_ = this->make_buffers();
    for (const auto& group : this->groups_) has_buffer_.emplace_back(group.params.size(), false);
  }
  // The original one-group form.
  SGD(std::vector<Tensor<T>> params, double lr, double momentum = 0, double weight_decay = 0, bool nesterov = false)
      : SGD(std::vector<ParamGroup<T>>{ParamGroup<T>{std::move(params), {}, lr, weight_decay}}, momentum, nesterov) {}

  // g += wd p;  b = g on a parameter's first step, else μ b + g;  p -= lr (nesterov ? g + μ b : b).
  // A parameter without a gradient is skipped and its buffer starts when its first gradient comes.
  void step() override {
    NoGradGuard no_grad;
    std::vector<cuda::SGDTensor<T>> device_entries;
    std::vector<Tensor<T>> device_tensors;  // the gradients launched: alive until then, one device
    for (size_t g = 0; g < this->groups_.size(); ++g) {
      for (size_t i = 0; i < this->groups_[g].params.size(); ++i) {
        Tensor<T> grad = this->gradient(g, i);
        if (!grad.defined()) continue;
        const SGDCoefficients<T> c{T(this->groups_[g].effective_lr()), T(this->groups_[g].effective_weight_decay()),
                                   T(momentum), momentum != 0, nesterov, !has_buffer_[g][i]};
        Tensor<T>& param = this->groups_[g].params[i];
        if (::histograd::detail::is_cuda(param)) {
          device_entries.push_back({param.device_data(), grad.device_data(), buffers_[g][i].device_data(), param.numel(), c});
          device_tensors.push_back(grad);
        } else {
          T* p = param.data();
          T* b = buffers_[g][i].data();
          const T* gr = grad.data();
          cpu::parallel_for(grad.numel(), 8, [&](int64_t begin, int64_t end) {
            for (int64_t k = begin; k < end; ++k) sgd_update(p[k], b[k], gr[k], c);
          });
        }
        if (momentum != 0) has_buffer_[g][i] = true;
        this->bump(g, i);
      }
    }
    ::histograd::detail::launch_on_device<::histograd::detail::one_of<T, float, double>>(
        device_tensors, this->name_, [&] { cuda::sgd_step(device_entries.data(), int64_t(device_entries.size())); });
  }

  double momentum;
  bool nesterov;

 protected:
  // "<name>.momentum_buffer" tensors and "<name>.has_momentum_buffer" (0/1) scalars.
  void export_state(OptimizerState<T>& out) const override {
    this->for_each_param([&](size_t g, size_t i, const std::string& k) {
      out.tensors[k + ".momentum_buffer"] = buffers_[g][i].clone();
      out.scalars[k + ".has_momentum_buffer"] = has_buffer_[g][i] ? 1 : 0;
    });
  }
  void expected_entries(std::map<std::string, Shape>& tensors, std::set<std::string>& scalars) const override {
    this->for_each_param([&](size_t g, size_t i, const std::string& k) {
      tensors[k + ".momentum_buffer"] = this->groups_[g].params[i].shape();
      scalars.insert(k + ".has_momentum_buffer");
    });
  }
  void import_state(const OptimizerState<T>& state) override {
    this->for_each_param([&](size_t g, size_t i, const std::string& k) {
      buffers_[g][i].copy_(state.tensors.at(k + ".momentum_buffer"));
      has_buffer_[g][i] = state.scalars.at(k + ".has_momentum_buffer") != 0;
    });
  }

 private:
  std::vector<std::vector<Tensor<T>>> buffers_;
  std::vector<std::vector<bool>> has_buffer_;
};

template <class T>
class AdamW : public Optimizer<T> {
 public:
  AdamW(std::vector<ParamGroup<T>> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
      : Optimizer<T>(std::move(groups), "AdamW"), beta1(beta1), beta2(beta2), eps(eps) {
    HG_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "AdamW", "expected betas in [0, 1), got (",
             beta1, ", ", beta2, ")");
    exp_avg_ = this->make_buffers();
    exp_avg_sq_ = this->make_buffers();
    for (const auto& group : this->groups_) steps_.emplace_back(group.params.size(), 0);
  }
  // The original one-group form.
  AdamW(std::vector<Tensor<T>> params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 1e-2)
      : AdamW(std::vector<ParamGroup<T>>{ParamGroup<T>{std::move(params), {}, lr, weight_decay}}, beta1, beta2, eps) {}

  // Per parameter with a gradient, t its own step count:
  // p *= 1 - lr wd;  m += (1-β1)(g - m);  v = β2 v + (1-β2) g²;
  // p -= lr / (1-β1^t) · m / (sqrt(v) / sqrt(1-β2^t) + eps)
  void step() override {
    NoGradGuard no_grad;
    std::vector<cuda::AdamWTensor<T>> device_entries;
    std::vector<Tensor<T>> device_tensors;  // the gradients launched: alive until then, one device
    for (size_t g = 0; g < this->groups_.size(); ++g) {
      const double lr = this->groups_[g].effective_lr(), weight_decay = this->groups_[g].effective_weight_decay();
      for (size_t i = 0; i < this->groups_[g].params.size(); ++i) {
        Tensor<T> grad = this->gradient(g, i);
        if (!grad.defined()) continue;
        const int64_t t = ++steps_[g][i];
        const double correction1 = 1 - std::pow(beta1, double(t)), correction2 = 1 - std::pow(beta2, double(t));
        const AdamWCoefficients<T> c{T(1 - lr * weight_decay), T(-(lr / correction1)), T(std::sqrt(correction2)),
                                     T(1 - beta1), T(beta2), T(1 - beta2), T(eps)};
        Tensor<T>& param = this->groups_[g].params[i];
        if (::histograd::detail::is_cuda(param)) {
          device_entries.push_back({param.device_data(), grad.device_data(), exp_avg_[g][i].device_data(),
                                    exp_avg_sq_[g][i].device_data(), param.numel(), c});
          device_tensors.push_back(grad);
        } else {
          T* p = param.data();
          T* m = exp_avg_[g][i].data();
          T* v = exp_avg_sq_[g][i].data();
          const T* gr = grad.data();
          cpu::parallel_for(grad.numel(), 12, [&](int64_t begin, int64_t end) {
            for (int64_t k = begin; k < end; ++k) adamw_update(p[k], m[k], v[k], gr[k], c);
          });
        }
        this->bump(g, i);
      }
    }
    ::histograd::detail::launch_on_device<::histograd::detail::one_of<T, float, double>>(
        device_tensors, this->name_, [&] { cuda::adamw_step(device_entries.data(), int64_t(device_entries.size())); });
  }

  // Steps taken by the parameters (the largest per-parameter count).
  int64_t steps() const {
    int64_t most = 0;
    for (const auto& group : steps_)
      for (int64_t s : group) most = std::max(most, s);
    return most;
  }

  double beta1, beta2, eps;

 protected:
  // "<name>.exp_avg", "<name>.exp_avg_sq" tensors and "<name>.step" scalars.
  void export_state(OptimizerState<T>& out) const override {
    this->for_each_param([&](size_t g, size_t i, const std::string& k) {
      out.tensors[k + ".exp_avg"] = exp_avg_[g][i].clone();
      out.tensors[k + ".exp_avg_sq"] = exp_avg_sq_[g][i].clone();
      out.scalars[k + ".step"] = double(steps_[g][i]);
    });
  }
  void expected_entries(std::map<std::string, Shape>& tensors, std::set<std::string>& scalars) const override {
    this->for_each_param([&](size_t g, size_t i, const std::string& k) {
      tensors[k + ".exp_avg"] = tensors[k + ".exp_avg_sq"] = this->groups_[g].params[i].shape();
      scalars.insert(k + ".step");
    });
  }
  void check_scalars(const OptimizerState<T>& state) const override {
    this->for_each_param([&](size_t, size_t, const std::string& k) {
      const double step = state.scalars.at(k + ".step");
      HG_CHECK(step >= 0 && step == std::floor(step), "AdamW", "load_state: '", k,
               ".step' must be a non-negative integer, got ", step);
    });
  }
  void import_state(const OptimizerState<T>& state) override {
    this->for_each_param([&](size_t g, size_t i, const std::string& k) {
      exp_avg_[g][i].copy_(state.tensors.at(k + ".exp_avg"));
      exp_avg_sq_[g][i].copy_(state.tensors.at(k + ".exp_avg_sq"));
      steps_[g][i] = static_cast<int64_t>(state.scalars.at(k + ".step"));
    });
  }

 private:
  std::vector<std::vector<Tensor<T>>> exp_avg_, exp_avg_sq_;
  std::vector<std::vector<int64_t>> steps_;
};

}  // namespace histograd::optim
