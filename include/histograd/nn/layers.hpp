// The small modules every ViT here is made of: Linear, LayerNorm, LayerScale, Conv2d (the
// patch stem), the GELU Mlp and the SwiGLU feed-forward in its three spellings (timm's packed
// GluMlp, DINOv2's fused w12/w3, timm's unpacked fc1_g/fc1_x). Math: MODELS.md §0.1; names and
// shapes are those of the reference state dicts (timm/layers/{mlp,layer_scale}.py,
// dinov2/layers/{mlp,swiglu_ffn,layer_scale}.py), so checkpoints map key for key.
#pragma once
#include <string>

#include "../core/factories.hpp"
#include "../core/random.hpp"
#include "../ops/conv.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/matmul.hpp"
#include "../ops/norm.hpp"
#include "module.hpp"

namespace histograd::nn {

// While a SkipInit lives on this thread, new parameters are allocated but not initialised (the
// pages are not even touched): for a model whose every weight a strict checkpoint load will
// replace, where drawing ViT-g's 1.1 billion normals first would cost most of a minute.
class SkipInit {
 public:
  SkipInit() : previous_(active()) { active() = true; }
  ~SkipInit() { active() = previous_; }
  SkipInit(const SkipInit&) = delete;
  SkipInit& operator=(const SkipInit&) = delete;
  static bool& active() {
    thread_local bool skip = false;
    return skip;
  }

 private:
  bool previous_;
};

// A parameter drawn from N(0, std²). timm's trunc_normal_(std=.02) truncates at ±2 in absolute
// value, a hundred standard deviations out, so what it draws is this normal.
template <class T>
Tensor<T> normal_parameter(const Shape& shape, double std, Generator& gen) {
  Tensor<T> p = SkipInit::active() ? empty<T>(shape) : randn<T>(shape, gen) * static_cast<T>(std);
  p.requires_grad_(true);
  return p;
}
template <class T>
Tensor<T> constant_parameter(const Shape& shape, double value) {
  Tensor<T> p = SkipInit::active() ? empty<T>(shape) : full<T>(shape, static_cast<T>(value));
  p.requires_grad_(true);
  return p;
}

// y = x W^T + b; weight [out, in], bias [out] (absent when built without bias).
template <class T>
class Linear : public Module<T> {
 public:
  Linear() = default;
  Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator& gen, double init_std = 0.02)
      : weight(normal_parameter<T>({out_features, in_features}, init_std, gen)) {
    if (with_bias) bias = constant_parameter<T>({out_features}, 0.0);
  }
  Tensor<T> forward(const Tensor<T>& x) const { return linear(x, weight, bias); }
  void visit(ModuleVisitor<T>& v) override {
    v.parameter("weight", weight);
    v.parameter("bias", bias);
  }
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }

  Tensor<T> weight, bias;
};

// LayerNorm over the last dim with an affine weight (ones) and bias (zeros).
template <class T>
class LayerNorm : public Module<T> {
 public:
  LayerNorm() = default;
  explicit LayerNorm(int64_t dim, double eps = 1e-6)
      : weight(constant_parameter<T>({dim}, 1.0)), bias(constant_parameter<T>({dim}, 0.0)), eps(eps) {}
  Tensor<T> forward(const Tensor<T>& x) const { return layer_norm(x, weight, bias, eps); }
  void visit(ModuleVisitor<T>& v) override {
    v.parameter("weight", weight);
    v.parameter("bias", bias);
  }

  Tensor<T> weight, bias;
  double eps = 1e-6;
};

// x * gamma per channel (CaiT's LayerScale; key "gamma"). Built with init_value 0 it holds no
// parameter and is the identity, which is how a block without LayerScale is expressed.
template <class T>
class LayerScale : public Module<T> {
 public:
  LayerScale() = default;
  LayerScale(int64_t dim, double init_value) {
    if (init_value != 0) gamma = constant_parameter<T>({dim}, init_value);
  }
  Tensor<T> forward(const Tensor<T>& x) const { return gamma.defined() ? x * gamma : x; }
  bool enabled() const { return gamma.defined(); }
  void visit(ModuleVisitor<T>& v) override { v.parameter("gamma", gamma); }

  Tensor<T> gamma;
};

// A square-kernel convolution without padding (the ViT stem: kernel == stride gives one GEMM
// over the patches; see ops/conv.hpp). weight [out, in, k, k].
template <class T>
class Conv2d : public Module<T> {
 public:
  Conv2d() = default;
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, bool with_bias, Generator& gen,
         double init_std = 0.02)
      : weight(normal_parameter<T>({out_channels, in_channels, kernel, kernel}, init_std, gen)), stride(stride) {
    if (with_bias) bias = constant_parameter<T>({out_channels}, 0.0);
  }
  Tensor<T> forward(const Tensor<T>& x) const { return conv2d(x, weight, bias, stride); }
  void visit(ModuleVisitor<T>& v) override {
    v.parameter("weight", weight);
    v.parameter("bias", bias);
  }

  Tensor<T> weight, bias;
  int64_t stride = 1;
};

// fc2(gelu(fc1(x))) with the exact-erf GELU (timm Mlp, DINO/DINOv2 Mlp).
template <class T>
class Mlp : public Module<T> {
 public:
  Mlp() = default;
  Mlp(int64_t dim, int64_t hidden, Generator& gen) : fc1(dim, hidden, true, gen), fc2(hidden, dim, true, gen) {}
  Tensor<T> forward(const Tensor<T>& x) const { return fc2.forward(gelu(fc1.forward(x))); }
  void visit(ModuleVisitor<T>& v) override {
    v.module("fc1", fc1);
    v.module("fc2", fc2);
  }

  Linear<T> fc1, fc2;
};

// How a SwiGLU spells its weights. Packed and Fused are the same math on the same [2H, D]
// matrix (SiLU on the first half, MODELS.md §0.1) under timm's and DINOv2's names; Unpacked
// keeps the gate and value projections apart (timm SwiGLU: silu(fc1_g x) * fc1_x x).
enum class SwiGLUStyle { Packed /*fc1, fc2*/, Fused /*w12, w3*/, Unpacked /*fc1_g, fc1_x, fc2*/ };

// out = fc2(silu(x1) * x2) with [x1 | x2] = fc1(x) split in two contiguous halves of width
// `hidden` each. In the Unpacked style x1 = fc1_g(x), x2 = fc1_x(x).
template <class T>
class SwiGLU : public Module<T> {
 public:
  SwiGLU() = default;
  SwiGLU(int64_t dim, int64_t hidden, SwiGLUStyle style, Generator& gen) : hidden(hidden), style(style) {
    if (style == SwiGLUStyle::Unpacked) {
      fc1_g = Linear<T>(dim, hidden, true, gen);
      fc1_x = Linear<T>(dim, hidden, true, gen);
    } else {
      fc1 = Linear<T>(dim, 2 * hidden, true, gen);
    }
    fc2 = Linear<T>(hidden, dim, true, gen);
  }
  Tensor<T> forward(const Tensor<T>& x) const {
    if (style == SwiGLUStyle::Unpacked) return fc2.forward(silu(fc1_g.forward(x)) * fc1_x.forward(x));
    Tensor<T> both = fc1.forward(x);
    return fc2.forward(silu(both.narrow(-1, 0, hidden)) * both.narrow(-1, hidden, hidden));
  }
  void visit(ModuleVisitor<T>& v) override {
    switch (style) {
      case SwiGLUStyle::Packed:
        v.module("fc1", fc1);
        v.module("fc2", fc2);
        break;
      case SwiGLUStyle::Fused:
        v.module("w12", fc1);
        v.module("w3", fc2);
        break;
      case SwiGLUStyle::Unpacked:
        v.module("fc1_g", fc1_g);
        v.module("fc1_x", fc1_x);
        v.module("fc2", fc2);
        break;
    }
  }

  Linear<T> fc1 /*[2H, D]; "w12" in the Fused style*/, fc1_g, fc1_x, fc2 /*[D, H]; "w3" in the Fused style*/;
  int64_t hidden = 0;
  SwiGLUStyle style = SwiGLUStyle::Packed;
};

}  // namespace histograd::nn
