// The backward pass: topologically order the graph below a root, walk it from the root,
// call each node's closure and accumulate the gradients it returns. Leaves that require
// grad receive them in .grad() (summed across backward calls, like PyTorch). Each node's
// closure (its saved tensors) and its links to its inputs are released as soon as it has run,
// so activations are freed during the walk, not after it, as PyTorch does (pass retain_graph
// to keep the graph for a second backward).
#pragma once
#include <memory>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../core/tensor.hpp"
#include "../cuda/elementwise.hpp"
#include "node.hpp"

namespace histograd {
namespace autograd {

// sum = a + b for same-shape tensors, as a new contiguous tensor (never aliases a or b); on the
// GPU when the gradients live there.
template <class T>
Tensor<T> add_same_shape(const Tensor<T>& a, const Tensor<T>& b) {
  HG_CHECK(a.device() == b.device(), "backward", "gradients on different devices: ", a.device().str(), " and ",
           b.device().str());
#ifdef HISTOGRAD_WITH_CUDA
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    if (a.device().is_cuda()) {
      Tensor<T> out(a.shape(), a.device());
      cuda::binary<T>(cuda::BinaryOp::Add, out.shape(), out.device_data(), out.strides(), a.device_data(), a.strides(),
                      b.device_data(), b.strides());
      return out;
    }
  }
#endif
  Tensor<T> ac = a.contiguous(), bc = b.contiguous(), out(a.shape());
  const T *pa = ac.data(), *pb = bc.data();
  T* po = out.data();
  for (int64_t i = 0, n = out.numel(); i < n; ++i) po[i] = pa[i] + pb[i];
  return out;
}

template <class T>
void accumulate_grad(TensorImpl<T>& impl, const Tensor<T>& grad) {
  // The first gradient is kept as is when nothing else can see its memory; otherwise it is
  // copied, since it may alias graph data or another input's gradient.
  bool exclusive = grad.is_contiguous() && grad.storage_offset() == 0 && grad.impl().use_count() == 1 &&
                   grad.storage().use_count() == 1;
  if (!impl.grad) impl.grad = exclusive ? grad.impl() : grad.contiguous().clone().impl();
  else impl.grad = add_same_shape(Tensor<T>(impl.grad), grad).impl();
}

// Post-order of the vertices reachable from root (inputs before their users). The order owns
// a reference to each, so a vertex outlives the release of its users' links until it is visited.
template <class T>
std::vector<std::shared_ptr<TensorImpl<T>>> topological_order(const std::shared_ptr<TensorImpl<T>>& root) {
  std::vector<std::shared_ptr<TensorImpl<T>>> order;
  std::unordered_set<TensorImpl<T>*> seen{root.get()};
  std::vector<std::pair<std::shared_ptr<TensorImpl<T>>, size_t>> stack{{root, 0}};  // explicit stack: deep graphs
  while (!stack.empty()) {
    auto& [impl, next] = stack.back();
    const auto* node = impl->grad_fn.get();
    if (node && next < node->inputs.size()) {
      const std::shared_ptr<TensorImpl<T>>& child = node->inputs[next++];
      if (child && seen.insert(child.get()).second) stack.push_back({child, 0});
    } else {
      order.push_back(std::move(impl));
      stack.pop_back();
    }
  }
  return order;
}

// Frees what a node holds for its backward: the closure with its saved tensors, and its inputs.
template <class T>
void release_node(Node<T>& node) {
  node.backward = nullptr;
  node.inputs.assign(node.inputs.size(), nullptr);
  node.needs.assign(node.needs.size(), false);
}

template <class T>
void run_backward(const Tensor<T>& root, const Tensor<T>& root_grad, bool retain_graph) {
  HG_CHECK(root.requires_grad(), "backward",
           "the tensor does not require grad (no input had requires_grad_(true), or it was computed under NoGradGuard)");
  std::vector<std::shared_ptr<TensorImpl<T>>> order = topological_order(root.impl());
  std::unordered_map<TensorImpl<T>*, Tensor<T>> grads;
  grads[root.impl().get()] = root_grad;
  NoGradGuard no_grad;  // gradients are computed without recording a graph of their own
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    // Every user of this vertex has run (reverse post-order): after it runs, nothing in the walk
    // needs it, so drop the walk's reference and, unless the graph is retained, its node's.
    const std::shared_ptr<TensorImpl<T>> vertex = std::move(*it);
    TensorImpl<T>* impl = vertex.get();
    Node<T>* node = impl->grad_fn.get();
    struct Release {  // also on the paths that skip the node or throw
      Node<T>* node;
      bool retain;
      ~Release() {
        if (node && !retain) release_node(*node);
      }
    } release{node, retain_graph};
    auto found = grads.find(impl);
    if (found == grads.end()) continue;
    Tensor<T> grad = std::move(found->second);
    grads.erase(found);
    if (!node || impl->retains_grad) accumulate_grad(*impl, node ? grad.detach() : std::move(grad));
    if (!node) continue;
    HG_CHECK(node->backward != nullptr, "backward",
             "trying to backward through the graph of '", node->name,
             "' a second time; its saved tensors were freed (pass retain_graph=true to the first backward)");
    std::vector<Tensor<T>> input_grads = node->backward(grad, node->needs);
    HG_CHECK(input_grads.size() == node->inputs.size(), node->name, "backward returned ", input_grads.size(),
             " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      if (!node->needs[i]) continue;
      const Tensor<T>& g = input_grads[i];
      HG_CHECK(g.defined() && g.shape() == node->input_shapes[i], node->name, "backward gave gradient of shape ",
               g.defined() ? to_string(g.shape()) : "undefined", " for input ", i, " of shape ",
               to_string(node->input_shapes[i]));
      TensorImpl<T>* input = node->inputs[i].get();
      auto slot = grads.find(input);
      if (slot == grads.end()) grads.emplace(input, g);
      else slot->second = add_same_shape(slot->second, g);
    }
  }
}

}  // namespace autograd

template <class T>
void Tensor<T>::backward(const Tensor<T>& grad_output, bool retain_graph) const {
  Tensor<T> seed = grad_output;
  if (!seed.defined()) {
    HG_CHECK(numel() == 1, "backward", "grad can be implicitly created only for a scalar output, got shape ",
             to_string(shape()), "; pass a gradient of that shape");
    seed = Tensor<T>(shape(), device());
    seed.fill_(T(1));
  }
  HG_CHECK(seed.shape() == shape(), "backward", "gradient of shape ", to_string(seed.shape()),
           " given for an output of shape ", to_string(shape()));
  HG_CHECK(seed.device() == device(), "backward", "gradient on ", seed.device().str(), " given for an output on ",
           device().str());
  autograd::run_backward(*this, seed, retain_graph);
}

template <class T>
std::string Tensor<T>::grad_fn_name() const {
  return impl_ && impl_->grad_fn ? std::string(impl_->grad_fn->name) + "Backward" : std::string();
}

}  // namespace histograd
