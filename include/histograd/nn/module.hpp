// The Module base. A module lists its own parameters, buffers and direct children in one
// visit() (dlib's visitor idea), so naming, state_dict()/load_state_dict(), train()/eval()
// and the weight-decay split are written once here, and keys come out exactly as the
// reference state dicts spell them ("blocks.3.attn.qkv.weight"). Modules hold Tensor handles:
// copying a module shares its weights, as assigning a torch.nn.Module reference would.
#pragma once
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace histograd::nn {

template <class T> class Module;

template <class T> using StateDict = std::map<std::string, Tensor<T>>;

// What a module shows a walker. Undefined tensors (a Linear without bias) are skipped.
template <class T>
struct ModuleVisitor {
  virtual ~ModuleVisitor() = default;
  virtual void parameter(const std::string& name, Tensor<T>& value) = 0;
  virtual void buffer(const std::string& name, Tensor<T>& value) = 0;
  virtual void module(const std::string& name, Module<T>& child) = 0;
};

// Parameters split for AdamW: weights decay; biases, norm scales, LayerScale gammas and
// tokens do not (DINO's get_params_groups: every parameter of one dimension or named *.bias;
// timm adds the names a model lists in no_weight_decay(), e.g. pos_embed and cls_token).
template <class T>
struct ParameterGroups {
  std::vector<Tensor<T>> decay, no_decay;
  std::vector<std::string> decay_names, no_decay_names;
};

template <class T>
class Module {
 public:
  virtual ~Module() = default;

  // Requires: lists parameters, then buffers, then children, in the reference's order.
  virtual void visit(ModuleVisitor<T>& visitor) = 0;
  // Parameter names (relative to this module) that never take weight decay.
  virtual std::set<std::string> no_weight_decay() const { return {}; }
  // Renames a published checkpoint's keys (prefixes, another codebase's naming) into this
  // module's own; io::load_weights calls it before load_state_dict. Default: unchanged.
  virtual StateDict<T> translate_checkpoint(StateDict<T> checkpoint) const { return checkpoint; }

  void train(bool mode = true) {
    for_each_module([mode](const std::string&, Module<T>& m) { m.training_ = mode; });
  }
  void eval() { train(false); }
  bool training() const { return training_; }

  // Calls fn(qualified name, module) for this module ("" ) and every descendant, parents first.
  void for_each_module(const std::function<void(const std::string&, Module<T>&)>& fn, const std::string& prefix = "") {
    fn(prefix, *this);
    struct Walker : ModuleVisitor<T> {
      const std::function<void(const std::string&, Module<T>&)>& fn;
      const std::string& prefix;
      Walker(const std::function<void(const std::string&, Module<T>&)>& f, const std::string& p) : fn(f), prefix(p) {}
      void parameter(const std::string&, Tensor<T>&) override {}
      void buffer(const std::string&, Tensor<T>&) override {}
      void module(const std::string& name, Module<T>& child) override { child.for_each_module(fn, join(prefix, name)); }
    } walker(fn, prefix);
    visit(walker);
  }

  // (qualified name, handle) pairs; the handles share storage with the module.
  std::vector<std::pair<std::string, Tensor<T>>> named_parameters() { return collect(true, false); }
  std::vector<std::pair<std::string, Tensor<T>>> named_buffers() { return collect(false, true); }
  std::vector<Tensor<T>> parameters() {
    std::vector<Tensor<T>> out;
    for (auto& [name, p] : named_parameters()) out.push_back(p);
    return out;
  }
  int64_t num_parameters() {
    int64_t n = 0;
    for (auto& [name, p] : named_parameters()) n += p.numel();
    return n;
  }
  void requires_grad_(bool on = true) {
    for (auto& [name, p] : named_parameters()) p.requires_grad_(on);
  }
  void zero_grad() {
    for (auto& [name, p] : named_parameters()) p.zero_grad();
  }

  // Parameters and buffers by qualified name; tensors are detached handles sharing storage.
  StateDict<T> state_dict() {
    StateDict<T> out;
    for (auto& [name, t] : collect(true, true)) out.emplace(name, t.detach());
    return out;
  }

  // Loads values by qualified name. strict: a missing, unexpected or mis-shaped key throws one
  // Error listing every problem; non-strict loads what matches and ignores the rest (shape
  // mismatches still throw, as in PyTorch). assign=false copies into the existing tensors, so
  // handles taken earlier (an optimizer's) stay valid; assign=true makes each parameter share
  // the source's storage (zero copy from a memory-mapped file), keeping requires_grad.
  void load_state_dict(const StateDict<T>& source, bool strict = true, bool assign = false) {
    std::vector<std::string> missing, mismatched;
    std::set<std::string> used;
    Walk walker(true, true, [&](const std::string& name, Tensor<T>& target, bool /*is_parameter*/) {
      auto it = source.find(name);
      if (it == source.end()) {
        missing.push_back(name);
        return;
      }
      used.insert(name);
      if (it->second.shape() != target.shape()) {
        mismatched.push_back(name + " (model " + to_string(target.shape()) + ", checkpoint " +
                             to_string(it->second.shape()) + ")");
        return;
      }
      NoGradGuard no_grad;
      if (assign && it->second.is_contiguous()) {
        const bool wants_grad = target.requires_grad();
        target = it->second.detach();
        if (wants_grad) target.requires_grad_(true);
      } else {
        target.copy_(it->second);
      }
    });
    visit_recursive(walker, "");
    std::vector<std::string> unexpected;
    for (const auto& [name, value] : source)
      if (!used.count(name)) unexpected.push_back(name);
    if (!mismatched.empty() || (strict && (!missing.empty() || !unexpected.empty()))) {
      std::ostringstream message;
      auto list = [&](const char* what, const std::vector<std::string>& names) {
        if (names.empty()) return;
        message << "\n  " << what << " (" << names.size() << "):";
        for (const auto& n : names) message << "\n    " << n;
      };
      list("missing keys", strict ? missing : std::vector<std::string>{});
      list("unexpected keys", strict ? unexpected : std::vector<std::string>{});
      list("shape mismatches", mismatched);
      fail("load_state_dict", "the checkpoint does not match the model:", message.str());
    }
  }

  // torch's module.to(device): every parameter and buffer not already on `device` is replaced
  // by a contiguous copy there (gradients are not carried), parameters keeping requires_grad; a
  // tensor the tree lists twice (tied weights) stays one tensor. Handles taken earlier (an
  // optimizer's, a copy of this module) keep the old tensors, so move a model before building
  // its optimizer, as in PyTorch. Returns *this.
  Module& to(const Device& device) {
    NoGradGuard no_grad;
    std::map<const TensorImpl<T>*, Tensor<T>> moved;
    // Every copy is made before any tensor is replaced, so a failed copy (no device, out of
    // memory) leaves the module whole on its old device.
    Walk copy_all(true, true, [&](const std::string&, Tensor<T>& target, bool) {
      if (target.device() == device) return;
      auto [it, first_visit] = moved.try_emplace(target.impl().get());
      if (first_visit) {
        it->second = target.detach().to(device);
        if (target.requires_grad()) it->second.requires_grad_(true);
      }
    });
    visit_recursive(copy_all, "");
    Walk replace_all(true, true, [&](const std::string&, Tensor<T>& target, bool) {
      if (auto it = moved.find(target.impl().get()); it != moved.end()) target = it->second;
    });
    visit_recursive(replace_all, "");
    return *this;
  }
  Module& cuda(int index = 0) { return to(Device::cuda(index)); }
  Module& cpu() { return to(kCPU); }

  // The AdamW split described at ParameterGroups.
  ParameterGroups<T> parameter_groups() {
    std::set<std::string> exempt;
    for_each_module([&exempt](const std::string& prefix, Module<T>& m) {
      for (const auto& name : m.no_weight_decay()) exempt.insert(join(prefix, name));
    });
    ParameterGroups<T> groups;
    for (auto& [name, p] : named_parameters()) {
      const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
      if (p.dim() <= 1 || is_bias || name == "bias" || exempt.count(name)) {
        groups.no_decay.push_back(p);
        groups.no_decay_names.push_back(name);
      } else {
        groups.decay.push_back(p);
        groups.decay_names.push_back(name);
      }
    }
    return groups;
  }

  static std::string join(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : name.empty() ? prefix : prefix + "." + name;
  }

 private:
  // Visits every defined tensor of the tree with its qualified name.
  struct Walk : ModuleVisitor<T> {
    bool parameters, buffers;
    std::function<void(const std::string&, Tensor<T>&, bool)> fn;
    std::string prefix;
    Walk(bool p, bool b, std::function<void(const std::string&, Tensor<T>&, bool)> f)
        : parameters(p), buffers(b), fn(std::move(f)) {}
    void parameter(const std::string& name, Tensor<T>& value) override {
      if (parameters && value.defined()) fn(join(prefix, name), value, true);
    }
    void buffer(const std::string& name, Tensor<T>& value) override {
      if (buffers && value.defined()) fn(join(prefix, name), value, false);
    }
    void module(const std::string& name, Module<T>& child) override {
      const std::string saved = prefix;
      prefix = join(prefix, name);
      child.visit(*this);
      prefix = saved;
    }
  };
  void visit_recursive(Walk& walker, const std::string& prefix) {
    walker.prefix = prefix;
    visit(walker);
  }
  std::vector<std::pair<std::string, Tensor<T>>> collect(bool parameters, bool buffers) {
    std::vector<std::pair<std::string, Tensor<T>>> out;
    Walk walker(parameters, buffers,
                [&out](const std::string& name, Tensor<T>& t, bool) { out.emplace_back(name, t); });
    visit_recursive(walker, "");
    return out;
  }

  bool training_ = true;
};

// A list of same-typed children named "0", "1", ... (torch.nn.ModuleList), e.g. ViT blocks.
template <class M>
struct ModuleList {
  std::vector<M> items;
  M& operator[](size_t i) { return items[i]; }
  const M& operator[](size_t i) const { return items[i]; }
  size_t size() const { return items.size(); }
  auto begin() { return items.begin(); }
  auto end() { return items.end(); }
  auto begin() const { return items.begin(); }
  auto end() const { return items.end(); }
  template <class T>
  void visit(ModuleVisitor<T>& visitor, const std::string& name) {
    for (size_t i = 0; i < items.size(); ++i) visitor.module(name + "." + std::to_string(i), items[i]);
  }
};

}  // namespace histograd::nn
