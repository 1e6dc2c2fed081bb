// Multi-head self-attention with one fused qkv projection, as timm, DINO and DINOv2 write it
// (timm/layers/attention.py, dinov2/layers/attention.py; MODELS.md §0.1): qkv rows [0:D] are
// q, [D:2D] k, [2D:3D] v, head h owns rows h·hd..(h+1)·hd-1 of each. The product runs in the
// engine's tiled scaled_dot_product_attention; attention_map() forms the softmax explicitly
// for the heat maps of DINO's get_last_selfattention.
#pragma once
#include <array>
#include <cmath>

#include "../ops/attention.hpp"
#include "../ops/softmax.hpp"
#include "layers.hpp"

namespace histograd::nn {

template <class T>
class Attention : public Module<T> {
 public:
  Attention() = default;
  Attention(int64_t dim, int64_t num_heads, bool qkv_bias, Generator& gen)
      : qkv(dim, 3 * dim, qkv_bias, gen), proj(dim, dim, true, gen), num_heads(num_heads) {
    HG_CHECK(num_heads > 0 && dim % num_heads == 0, "Attention", "expected an embedding dim divisible by the head count, got dim ",
             dim, " and ", num_heads, " heads");
  }

  // x [B, N, D] -> [B, N, D]
  Tensor<T> forward(const Tensor<T>& x) const {
    const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
    auto [q, k, v] = split_heads(x);
    Tensor<T> attended = scaled_dot_product_attention(q, k, v);
    return proj.forward(attended.transpose(1, 2).reshape({batch, tokens, dim}));
  }

  // softmax(q k^T / sqrt(hd)) for every head: x [B, N, D] -> [B, heads, N, N]
  Tensor<T> attention_map(const Tensor<T>& x) const {
    auto [q, k, v] = split_heads(x);
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
    return softmax(matmul(q, k.mT()) * scale, -1);
  }

  void visit(ModuleVisitor<T>& v) override {
    v.module("qkv", qkv);
    v.module("proj", proj);
  }

  Linear<T> qkv, proj;
  int64_t num_heads = 1;

 private:
  // q, k, v as [B, heads, N, hd] views of one qkv product.
  std::array<Tensor<T>, 3> split_heads(const Tensor<T>& x) const {
    HG_CHECK(x.dim() == 3 && x.size(2) == proj.out_features(), "Attention", "expected tokens [B, N, ",
             proj.out_features(), "], got ", to_string(x.shape()));
    const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
    Tensor<T> heads = qkv.forward(x).reshape({batch, tokens, 3, num_heads, dim / num_heads}).permute({2, 0, 3, 1, 4});
    return {heads.select(0, 0), heads.select(0, 1), heads.select(0, 2)};
  }
};

}  // namespace histograd::nn
