// CPU-vs-CUDA parity for whole ops (forward and backward): the same op runs on CPU float64
// leaves and on CUDA float32/float64 leaves holding the same (float-representable) values, the
// loss sum(y * w) with a fixed random w is backpropagated on both, and the CUDA output and every
// CUDA leaf gradient (which must stay on the device) are compared by float64 relative error.
#pragma once
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "histograd/histograd.hpp"

namespace histograd::test {

template <class T> double parity_tolerance() { return std::is_same_v<T, float> ? 1e-5 : 1e-12; }

// Values a float holds exactly, so the float64 reference sees the float run's inputs.
inline hg::Tensor<double> float_exact(const hg::Tensor<double>& t) { return t.to<float>().to<double>(); }

template <class T>
double error_vs(const hg::Tensor<double>& reference, const hg::Tensor<T>& got) {
  REQUIRE(got.shape() == reference.shape());
  return relative_error(reference.contiguous().to_vector(), got.cpu().to_vector());
}

template <class T>
using LeafOp = std::function<hg::Tensor<T>(const std::vector<hg::Tensor<T>>&)>;

// `op_double` and `op_float` are the same expression instantiated twice (a generic lambda
// passed to both). `differentiable` leaves out the backward part.
template <class T>
void check_op_parity(const std::string& name, const LeafOp<double>& reference_op, const LeafOp<T>& op,
                     const std::vector<hg::Tensor<double>>& inputs, double tolerance = parity_tolerance<T>(),
                     bool differentiable = true) {
  INFO(name << " (" << hg::dtype_name<T>() << ")");
  std::vector<hg::Tensor<double>> ref_leaves;
  std::vector<hg::Tensor<T>> leaves;
  for (const auto& input : inputs) {
    hg::Tensor<double> exact = float_exact(input);
    ref_leaves.push_back(exact.clone().requires_grad_(differentiable));
    leaves.push_back(exact.to<T>().cuda().requires_grad_(differentiable));
  }
  hg::Tensor<double> ref = reference_op(ref_leaves);
  hg::Tensor<T> got = op(leaves);
  REQUIRE(got.device() == hg::Device::cuda(0));
  CHECK(error_vs(ref, got) <= tolerance);
  if (!differentiable || ref.numel() == 0) return;
  hg::Tensor<double> w = float_exact(random_input(ref.shape(), 977));
  hg::sum(hg::mul(ref, w)).backward();
  hg::sum(hg::mul(got, w.to<T>().cuda())).backward();
  for (size_t i = 0; i < leaves.size(); ++i) {
    INFO("gradient of input " << i);
    REQUIRE(leaves[i].grad().defined());
    CHECK(leaves[i].grad().device() == hg::Device::cuda(0));
    CHECK(error_vs(ref_leaves[i].grad(), leaves[i].grad()) <= tolerance);
  }
}

// Runs check_op_parity for float and double with one generic expression.
template <class Op>
void check_parity_both(const std::string& name, Op op, const std::vector<hg::Tensor<double>>& inputs,
                       double float_tolerance = 1e-5, bool differentiable = true) {
  LeafOp<double> ref = [op](const std::vector<hg::Tensor<double>>& x) { return op(x); };
  LeafOp<float> f = [op](const std::vector<hg::Tensor<float>>& x) { return op(x); };
  check_op_parity<float>(name, ref, f, inputs, float_tolerance, differentiable);
  check_op_parity<double>(name, ref, ref, inputs, 1e-12, differentiable);
}

}  // namespace histograd::test
