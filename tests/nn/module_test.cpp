// The Module base on two hand-written modules: qualified names, state_dict, strict and
// non-strict loading (copy and assign), train/eval, the weight-decay split and the
// checkpoint-translation hook.
#include <histograd/nn/layers.hpp>

#include "test_util.hpp"

namespace {

struct Affine : hg::nn::Module<float> {
  hg::Tensor<float> weight = hg::ones<float>({2, 3}), bias = hg::zeros<float>({2});
  void visit(hg::nn::ModuleVisitor<float>& v) override {
    v.parameter("weight", weight);
    v.parameter("bias", bias);
  }
};

struct Net : hg::nn::Module<float> {
  hg::Tensor<float> cls_token = hg::zeros<float>({1, 1, 3});
  hg::Tensor<float> running = hg::zeros<float>({4});  // a buffer
  hg::Tensor<float> absent;                           // undefined: skipped everywhere
  hg::nn::ModuleList<Affine> blocks;
  Affine head;
  Net() { blocks.items.resize(2); }
  void visit(hg::nn::ModuleVisitor<float>& v) override {
    v.parameter("cls_token", cls_token);
    v.parameter("absent", absent);
    v.buffer("running", running);
    blocks.visit(v, "blocks");
    v.module("head", head);
  }
  std::set<std::string> no_weight_decay() const override { return {"cls_token"}; }
  hg::nn::StateDict<float> translate_checkpoint(hg::nn::StateDict<float> raw) const override {
    hg::nn::StateDict<float> out;
    for (auto& [k, t] : raw) out.emplace(k.rfind("module.", 0) == 0 ? k.substr(7) : k, t);
    return out;
  }
};

std::vector<std::string> names(const std::vector<std::pair<std::string, hg::Tensor<float>>>& named) {
  std::vector<std::string> out;
  for (const auto& [n, t] : named) out.push_back(n);
  return out;
}

}  // namespace

TEST_CASE("modules name parameters and buffers by their qualified reference keys") {
  Net net;
  CHECK(names(net.named_parameters()) ==
        std::vector<std::string>{"cls_token", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias",
                                 "head.weight", "head.bias"});
  CHECK(names(net.named_buffers()) == std::vector<std::string>{"running"});
  CHECK(net.num_parameters() == 3 + 3 * 8);
  auto sd = net.state_dict();
  CHECK(sd.size() == 8);
  CHECK(sd.count("running") == 1);
  // state_dict shares storage: writing through it changes the module.
  sd.at("head.bias").copy_(hg::full<float>({2}, 5.f));
  check_close(net.head.bias, {5, 5}, 0);
}

TEST_CASE("train and eval reach every descendant") {
  Net net;
  CHECK(net.training());
  net.eval();
  CHECK(!net.training());
  CHECK(!net.blocks[1].training());
  CHECK(!net.head.training());
  net.train();
  CHECK(net.blocks[0].training());
}

TEST_CASE("load_state_dict copies by default and shares storage with assign") {
  Net source, target;
  int k = 0;
  for (auto& [name, p] : source.named_parameters()) p.copy_(hg::full<float>(p.shape(), float(++k)));
  hg::Tensor<float> held = target.head.weight;  // e.g. an optimizer's handle
  target.load_state_dict(source.state_dict());
  check_close(target.head.weight, source.head.weight, 0);
  CHECK(held.data() == target.head.weight.data());  // copied in place: old handles stay valid
  CHECK(target.head.weight.data() != source.head.weight.data());

  Net assigned;
  assigned.head.weight.requires_grad_(true);
  assigned.load_state_dict(source.state_dict(), true, /*assign=*/true);
  CHECK(assigned.head.weight.data() == source.head.weight.data());
  CHECK(assigned.head.weight.requires_grad());
  CHECK(!assigned.head.bias.requires_grad());
}

TEST_CASE("strict loading lists every missing, unexpected and mis-shaped key") {
  Net net;
  auto sd = net.state_dict();
  sd.erase("blocks.1.bias");
  sd.erase("running");
  sd.emplace("head.extra", hg::zeros<float>({1}));
  sd["head.weight"] = hg::zeros<float>({3, 2});
  try {
    net.load_state_dict(sd);
    FAIL("expected an Error");
  } catch (const hg::Error& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.find("load_state_dict") != std::string::npos);
    CHECK(message.find("missing keys (2)") != std::string::npos);
    CHECK(message.find("blocks.1.bias") != std::string::npos);
    CHECK(message.find("running") != std::string::npos);
    CHECK(message.find("unexpected keys (1)") != std::string::npos);
    CHECK(message.find("head.extra") != std::string::npos);
    CHECK(message.find("head.weight (model [2, 3], checkpoint [3, 2])") != std::string::npos);
  }
  // Non-strict ignores missing and unexpected keys but never a wrong shape.
  sd["head.weight"] = hg::full<float>({2, 3}, 7.f);
  net.load_state_dict(sd, /*strict=*/false);
  check_close(net.head.weight, std::vector<double>(6, 7.0), 0);
  sd["head.bias"] = hg::zeros<float>({3});
  CHECK_THROWS_WITH_AS(net.load_state_dict(sd, false), doctest::Contains("head.bias (model [2], checkpoint [3])"),
                       hg::Error);
}

TEST_CASE("weight decay skips biases, one-dimensional parameters and listed names") {
  Net net;
  auto groups = net.parameter_groups();
  CHECK(groups.decay_names == std::vector<std::string>{"blocks.0.weight", "blocks.1.weight", "head.weight"});
  CHECK(groups.no_decay_names == std::vector<std::string>{"cls_token", "blocks.0.bias", "blocks.1.bias", "head.bias"});
  CHECK(groups.decay.size() == 3);
  CHECK(groups.no_decay[0].data() == net.cls_token.data());
}

TEST_CASE("translate_checkpoint renames before loading") {
  Net net;
  hg::nn::StateDict<float> raw;
  for (auto& [k, t] : net.state_dict()) raw.emplace("module." + k, hg::full<float>(t.shape(), 2.f));
  CHECK_THROWS_AS(net.load_state_dict(raw), hg::Error);
  net.load_state_dict(net.translate_checkpoint(raw));
  check_close(net.cls_token, {2, 2, 2}, 0);
}

TEST_CASE("SkipInit allocates without drawing, only while it lives, and a strict load fills every weight") {
  hg::Generator gen(3);
  hg::nn::StateDict<float> weights;
  {
    hg::nn::Linear<float> reference(4, 3, true, gen);
    weights = reference.state_dict();
  }
  CHECK(!hg::nn::SkipInit::active());
  {
    hg::nn::SkipInit skip;
    CHECK(hg::nn::SkipInit::active());
    hg::nn::Linear<float> layer(4, 3, true, gen);
    CHECK(layer.weight.shape() == hg::Shape{3, 4});
    CHECK(layer.weight.requires_grad());
    layer.load_state_dict(weights, /*strict=*/true, /*assign=*/true);
    check_close(layer.weight, weights.at("weight"), 0);
  }
  CHECK(!hg::nn::SkipInit::active());
  hg::nn::Linear<float> drawn(4, 3, true, gen);  // initialised again: zero bias, non-zero weights
  check_close(drawn.bias, {0, 0, 0}, 0);
  CHECK(hg::amax(hg::abs(drawn.weight)).item() > 0);
}

TEST_CASE("to(Device): a no-op on the device already held; a failed move leaves the module whole") {
  Net net;
  net.head.weight.requires_grad_(true);
  const hg::Tensor<float> weight_before = net.head.weight, running_before = net.running;
  CHECK(&net.to(hg::kCPU) == &net);
  CHECK(net.head.weight.is_same(weight_before));  // nothing copied
  CHECK(net.running.is_same(running_before));
  // This machine (and CI) has no GPU, or histograd was built without CUDA: either way the move
  // must fail with a histograd::Error and leave every tensor where it was. With a GPU the suite
  // tests/cuda/optim_test.cpp checks the move itself.
  bool moved = false;
  try {
    net.cuda();
    moved = true;
  } catch (const hg::Error&) {
  }
  if (!moved) {
    for (auto& [name, t] : net.state_dict()) {
      CAPTURE(name);
      CHECK(t.device().is_cpu());
    }
    CHECK(net.head.weight.is_same(weight_before));
    CHECK(net.head.weight.requires_grad());
  } else {
    for (auto& [name, t] : net.state_dict()) CHECK(t.device().is_cuda());
    CHECK(net.head.weight.requires_grad());
    net.cpu();
    CHECK(net.head.weight.device().is_cpu());
  }
}

TEST_CASE("to(Device) keeps a tied weight one tensor") {
  struct Tied : hg::nn::Module<float> {
    Affine a, b;
    void visit(hg::nn::ModuleVisitor<float>& v) override {
      v.module("a", a);
      v.module("b", b);
    }
  } tied;
  tied.b.weight = tied.a.weight;  // as a shared head would
  // A move to the CPU copies nothing, so the tie is checked where it must hold on any machine.
  tied.to(hg::kCPU);
  CHECK(tied.a.weight.is_same(tied.b.weight));
  try {
    tied.cuda();
  } catch (const hg::Error&) {
  }
  CHECK(tied.a.weight.is_same(tied.b.weight));
}
