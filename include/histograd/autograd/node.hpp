// A graph vertex: the op that produced a tensor, the inputs it needs gradients for, and
// the backward closure written beside that op's forward (micrograd style). Closures save
// what they need as detached handles, never the output itself, so no reference cycle forms.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "../core/tensor_fwd.hpp"
#include "grad_mode.hpp"

namespace histograd {

// needs[i]: whether input i wants a gradient; closures skip the work for the others.
using NeedsGrad = std::vector<bool>;

template <class T>
struct Node {
  const char* name = "";
  std::vector<std::shared_ptr<TensorImpl<T>>> inputs;  // null where the input needs no grad
  std::vector<Shape> input_shapes;
  NeedsGrad needs;
  // grad_output -> one gradient per input (undefined where needs[i] is false)
  std::function<std::vector<Tensor<T>>(const Tensor<T>&, const NeedsGrad&)> backward;
};

namespace autograd {

template <class T>
bool needs_grad(std::initializer_list<const Tensor<T>*> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor<T>* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}
template <class T, class... Rest>
bool needs_grad(const Tensor<T>& first, const Rest&... rest) {
  return needs_grad<T>({&first, &rest...});
}

// Makes `out` a non-leaf produced by `name` from `inputs`, when any input requires grad and
// grad mode is on; otherwise does nothing (the closure is dropped unused).
template <class T, class Backward>
void record(Tensor<T>& out, const char* name, std::vector<Tensor<T>> inputs, Backward&& backward) {
  if (!GradMode::is_enabled()) return;
  auto node = std::make_shared<Node<T>>();
  bool any = false;
  for (const Tensor<T>& input : inputs) {
    bool needs = input.defined() && input.requires_grad();
    any |= needs;
    node->needs.push_back(needs);
    node->inputs.push_back(needs ? input.impl() : nullptr);
    node->input_shapes.push_back(input.defined() ? input.shape() : Shape{});
  }
  if (!any) return;
  node->name = name;
  node->backward = std::forward<Backward>(backward);
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

}  // namespace autograd
}  // namespace histograd
