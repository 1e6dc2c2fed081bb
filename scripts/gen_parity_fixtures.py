"""Generate the PyTorch parity fixture for the core engine (tests/ops/parity_test.cpp).

A small random transformer-block graph touching matmul/linear, layer_norm, scaled dot-product
attention, GELU, mean and cross-entropy (hard labels with label smoothing, and soft targets as
DINO's H(t, s)). Saves inputs, parameters, intermediate outputs, the loss and every gradient
as float32 safetensors. Run: python3 scripts/gen_parity_fixtures.py  (needs torch, safetensors)
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
B, N, D, H, C, HIDDEN = 2, 7, 16, 2, 5, 32
hd = D // H


def param(*shape, scale=0.3):
    return (torch.randn(*shape) * scale).requires_grad_()


tensors = {
    "x": torch.randn(B, N, D).requires_grad_(),
    "ln1.weight": (1 + 0.1 * torch.randn(D)).requires_grad_(),
    "ln1.bias": param(D, scale=0.1),
    "qkv.weight": param(3 * D, D),
    "qkv.bias": param(3 * D, scale=0.1),
    "proj.weight": param(D, D),
    "proj.bias": param(D, scale=0.1),
    "ln2.weight": (1 + 0.1 * torch.randn(D)).requires_grad_(),
    "ln2.bias": param(D, scale=0.1),
    "fc1.weight": param(HIDDEN, D),
    "fc1.bias": param(HIDDEN, scale=0.1),
    "fc2.weight": param(D, HIDDEN),
    "fc2.bias": param(D, scale=0.1),
    "head.weight": param(C, D),
    "head.bias": param(C, scale=0.1),
    "teacher_logits": torch.randn(B, C),
}
labels = torch.tensor([3, 1])
t = tensors

h = F.layer_norm(t["x"], (D,), t["ln1.weight"], t["ln1.bias"], eps=1e-6)
qkv = F.linear(h, t["qkv.weight"], t["qkv.bias"]).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
q, k, v = qkv[0], qkv[1], qkv[2]
attn = F.scaled_dot_product_attention(q, k, v)
attn_tokens = attn.transpose(1, 2).reshape(B, N, D)
x2 = t["x"] + F.linear(attn_tokens, t["proj.weight"], t["proj.bias"])
mlp_hidden = F.gelu(F.linear(F.layer_norm(x2, (D,), t["ln2.weight"], t["ln2.bias"], eps=1e-6), t["fc1.weight"], t["fc1.bias"]))
x3 = x2 + F.linear(mlp_hidden, t["fc2.weight"], t["fc2.bias"])
logits = F.linear(x3.mean(1), t["head.weight"], t["head.bias"])
hard = F.cross_entropy(logits, labels, label_smoothing=0.1)
teacher = F.softmax(t["teacher_logits"] / 0.04, dim=-1)
soft = torch.sum(-teacher * F.log_softmax(logits / 0.1, dim=-1), dim=-1).mean()
loss = hard + soft
loss.backward()

out = {name: value.detach().clone() for name, value in tensors.items()}
out["labels"] = labels
for name, value in {"h": h, "attn": attn, "x2": x2, "mlp_hidden": mlp_hidden, "x3": x3, "logits": logits,
                    "loss_hard": hard, "loss_soft": soft, "loss": loss}.items():
    out["out." + name] = value.detach().clone().reshape(value.shape)
for name, value in tensors.items():
    if value.grad is not None:
        out["grad." + name] = value.grad.detach().clone()
here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "tests", "fixtures", "parity", "block_graph.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, path, metadata={"torch": torch.__version__})
print("wrote", os.path.normpath(path), "loss", loss.item())
