// The smallest user program: one forward and backward through histograd.
#include <histograd/histograd.hpp>
#include <iostream>

namespace hg = histograd;

int main() {
  auto x = hg::tensor<float>({1, 2, 3, 4}, {2, 2}).requires_grad_();
  auto loss = hg::sum(hg::gelu(x) * x);
  loss.backward();
  std::cout << "loss " << loss.item() << " grad " << x.grad() << "\n";
  return x.grad().shape() == hg::Shape{2, 2} ? 0 : 1;
}
