// The README's 15-line tour, built with the examples so it can never drift from the API.
#include <histograd/histograd.hpp>
#include <iostream>
namespace hg = histograd;

int main() {
  auto x = hg::randn<float>({8, 197, 384});                      // tokens
  auto w = (hg::randn<float>({1152, 384}) * 0.02f).requires_grad_();
  auto qkv = hg::linear(x, w, hg::Tensor<float>())               // [8, 197, 1152]
                 .reshape({8, 197, 3, 6, 64}).permute({2, 0, 3, 1, 4});
  auto out = hg::scaled_dot_product_attention(qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2));
  auto loss = hg::mean(hg::gelu(out) * out);
  loss.backward();                                               // w.grad(): [1152, 384]
  { hg::NoGradGuard no_grad; auto y = hg::layer_norm(x, hg::Tensor<float>(), hg::Tensor<float>(), 1e-6); }
  std::cout << "loss " << loss.item() << ", grad shape " << hg::to_string(w.grad().shape()) << "\n";
}
