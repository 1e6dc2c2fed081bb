"""Parity fixtures for the ViT presets (tests/models/vit_parity_test.cpp).

Every family is built at its real width (the real head count, MLP/SwiGLU width, token layout and
pos-embed grid) with fewer blocks: 2 for widths <= 1024, 1 above. The weights are not stored.
They come from a counter-based formula that tests/models/synthetic_weights.hpp computes
bit-identically in C++: for a tensor named K (the CHECKPOINT's own key) and element i,
    h = splitmix64(fnv1a64(K) ^ (i * 0x9E3779B97F4A7C15)),  u = (h >> 40) * 2^-24,
    value = float32(base + (u - 0.5) * 2^exp)     (computed exactly in float64, rounded once)
with (base, exp) chosen per key below and written into the fixture next to the key and shape.
The script loads that state dict into the reference model with strict=True, runs it in float32
on two threads, and saves only outputs: the pooled embedding, a few token rows and the L2 norm of
every token (so a wrong token anywhere shows), for the final and intermediate layers, and rows
of the last block's attention.

References (dev-only; nothing here is vendored):
  timm (pip)                       uni, uni2_h, h_optimus_0, virchow, virchow2
  facebookresearch/dino checkout   dino_vit{s,b}{16,8}            --dino-repo  or $DINO_REPO
  facebookresearch/dinov2 checkout dinov2_vit{s,b,l,g}14[_reg4]   --dinov2-repo or $DINOV2_REPO
  mahmoodlab/HIPT checkout         hipt_vit256_16, hipt_vit4k_256 --hipt-repo  or $HIPT_REPO
  transformers (pip) Dinov2WithRegistersModel, loaded by from_pretrained from the published HF
                                   Dinov2 key names             hibou_b, hibou_l
Hibou's HF checkpoints run on custom modeling code (trust_remote_code) that was not read; the
reference here is transformers' own Dinov2WithRegisters with Hibou's settings (SwiGLU, 4
registers, LayerScale, antialiased bicubic resampling), which is HistAI/hibou's DINOv2 model.
Setup (dev only): pip install timm; pip install --no-deps transformers tokenizers (transformers
5.24 was used; --no-deps keeps the installed torch).
Run: python3 scripts/gen_vit_fixtures.py --dino-repo D --dinov2-repo D2 --hipt-repo H [--only NAME]
     (the checkouts: github.com/facebookresearch/dino, /dinov2, mahmoodlab/HIPT)
"""
import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "vit")
BATCH = 2

# ---------------------------------------------------------------------------------------------
# The synthetic values (mirror of tests/models/synthetic_weights.hpp)

M64 = (1 << 64) - 1


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & M64
    return h


def splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def synthetic(key, shape, exp, base):
    n = int(np.prod(shape)) if len(shape) else 1
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        h = splitmix64(np.uint64(fnv1a64(key)) ^ (i * np.uint64(0x9E3779B97F4A7C15)))
    u = (h >> np.uint64(40)).astype(np.float64) * 2.0 ** -24
    value = (base + (u - 0.5) * 2.0 ** exp).astype(np.float32)
    return torch.from_numpy(value.reshape(shape))


NORM_NAMES = {"norm", "norm1", "norm2", "layernorm", "fc_norm", "norm_pre"}


def scale_rule(key, shape):
    """(exp, base) for a checkpoint key: keeps activations O(1) at any width."""
    leaf = key.rsplit(".", 1)[-1]
    is_norm = any(part in NORM_NAMES for part in key.split("."))
    if is_norm and leaf == "weight":
        return -2, 1.0                        # LayerNorm scale in [0.875, 1.125)
    if is_norm and leaf == "bias":
        return -2, 0.0
    if leaf in ("gamma", "lambda1"):
        return 1, 0.0                         # LayerScale in [-1, 1): residual branches matter
    if leaf in ("cls_token", "pos_embed", "reg_token", "register_tokens", "mask_token",
                "position_embeddings"):
        return 0, 0.0
    if leaf == "bias":
        return -3, 0.0
    # A weight with fan-in f: uniform of width 2^exp has variance 2^(2 exp)/12; aim near 1/f so
    # every projection keeps unit scale.
    fan_in = int(np.prod(shape[1:]))
    exp = int(round(np.log2(np.sqrt(12.0 / fan_in))))
    return exp, 0.0


def synthetic_state_dict(keys_shapes, rounding=None):
    """keys_shapes: list of (key, shape). Returns (state dict, spec lines)."""
    sd, spec = OrderedDict(), []
    for key, shape in keys_shapes:
        exp, base = scale_rule(key, shape)
        t = synthetic(key, list(shape), exp, base)
        if rounding is not None:
            t = t.to(rounding).float()
        sd[key] = t
        spec.append(f"{key}\t{','.join(str(s) for s in shape)}\t{exp}\t{base:g}")
    return sd, spec


INPUT_EXP = 2  # inputs in [-2, 2): normalised images


# ---------------------------------------------------------------------------------------------
# Loading reference code from a checkout without copying it


def load_module(path, name, extra_path=None):
    """Imports a file as module `name`; extra_path goes first on sys.path while it loads (for the
    checkout's own sibling imports, e.g. DINO's `from utils import trunc_normal_`)."""
    saved_path = list(sys.path)
    clashing = {k: sys.modules.pop(k) for k in ("utils", "vision_transformer") if k in sys.modules}
    if extra_path:
        sys.path.insert(0, extra_path)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
        for k in ("utils", "vision_transformer"):
            sys.modules.pop(k, None)
        sys.modules.update(clashing)
    return module


class Refs:
    def __init__(self, args):
        self.args = args
        self._dino = self._hipt256 = self._hipt4k = self._dinov2 = None

    def dino(self):
        if self._dino is None:
            repo = self.args.dino_repo
            self._dino = load_module(os.path.join(repo, "vision_transformer.py"), "ref_dino_vit", repo)
        return self._dino

    def hipt256(self):
        if self._hipt256 is None:
            d = os.path.join(self.args.hipt_repo, "HIPT_4K")
            self._hipt256 = load_module(os.path.join(d, "vision_transformer.py"), "ref_hipt_vit256", d)
        return self._hipt256

    def hipt4k(self):
        if self._hipt4k is None:
            d = os.path.join(self.args.hipt_repo, "HIPT_4K")
            self._hipt4k = load_module(os.path.join(d, "vision_transformer4k.py"), "ref_hipt_vit4k", d)
        return self._hipt4k

    def dinov2(self):
        if self._dinov2 is None:
            sys.path.insert(0, self.args.dinov2_repo)
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from dinov2.models import vision_transformer as vits  # noqa: E402
                from dinov2.layers import MemEffAttention, NestedTensorBlock
            self._dinov2 = (vits, MemEffAttention, NestedTensorBlock)
        return self._dinov2


# ---------------------------------------------------------------------------------------------
# Model builders: each returns (model, runner) where runner(images) -> dict of full outputs:
#   pooled [B,E], features [B,N,D], intermediate [list of [B,N,D]] (optional),
#   attention [B,H,N,N] (optional)


def truncate_blocks(model, depth):
    model.blocks = model.blocks[:depth]
    return model


def dino_like(model):
    def run(x):
        out = {"pooled": model(x)}
        inter = model.get_intermediate_layers(x, n=2)
        out["intermediate"] = inter
        out["features"] = inter[-1]
        out["attention"] = model.get_last_selfattention(x)
        return out
    return run


def build_dino(refs, arch, patch, depth):
    vit = refs.dino()
    model = getattr(vit, arch)(patch_size=patch)  # the hub factory: eps 1e-6, qkv_bias
    return truncate_blocks(model, depth), dino_like


def build_hipt256(refs, depth):
    model = refs.hipt256().vit_small(patch_size=16)
    return truncate_blocks(model, depth), dino_like


def build_hipt4k(refs, depth):
    model = refs.hipt4k().vit4k_xs()
    return truncate_blocks(model, depth), dino_like


DINOV2_ARCH = {  # dinov2/models/vision_transformer.py factories (embed, heads, ffn)
    "s": (384, 6, "mlp"), "b": (768, 12, "mlp"), "l": (1024, 16, "mlp"), "g": (1536, 24, "swiglufused"),
}


def build_dinov2(refs, size, reg, depth, img_size=518):
    vits, MemEffAttention, Block = refs.dinov2()
    from functools import partial
    embed, heads, ffn = DINOV2_ARCH[size]
    # hub/backbones.py _make_dinov2_model settings; registers switch pos-embed resampling to (B).
    model = vits.DinoVisionTransformer(
        img_size=img_size, patch_size=14, embed_dim=embed, depth=depth, num_heads=heads, mlp_ratio=4,
        block_fn=partial(Block, attn_class=MemEffAttention), init_values=1.0, ffn_layer=ffn,
        block_chunks=0, num_register_tokens=4 if reg else 0, interpolate_antialias=reg,
        interpolate_offset=0.0 if reg else 0.1)

    def runner(m):
        def run(x):
            out = {"pooled": m(x)}
            inter = m._get_intermediate_layers_not_chunked(x, n=min(2, depth))
            out["intermediate"] = [m.norm(t) for t in inter]
            out["features"] = m.norm(m.forward_features(x)["x_prenorm"])
            return out
        return run
    return model, runner


def timm_kwargs(preset):
    import timm
    from timm.layers import SwiGLUPacked
    if preset == "uni":
        return "vit_large_patch16_224", dict(img_size=224, patch_size=16, init_values=1e-5, num_classes=0,
                                             dynamic_img_size=True)
    if preset == "uni2_h":
        return "vit_giant_patch14_224", dict(
            img_size=224, patch_size=14, num_heads=24, init_values=1e-5, embed_dim=1536,
            mlp_ratio=2.66667 * 2, num_classes=0, no_embed_class=True, mlp_layer=SwiGLUPacked,
            act_layer=torch.nn.SiLU, reg_tokens=8, dynamic_img_size=True)
    if preset == "h_optimus_0":
        from timm.layers import GluMlp
        from functools import partial
        return None, dict(patch_size=14, embed_dim=1536, num_heads=24, init_values=1e-05,
                          mlp_ratio=5.33334, mlp_layer=partial(GluMlp, act_layer=torch.nn.SiLU, gate_last=False),
                          act_layer=torch.nn.SiLU, reg_tokens=4, no_embed_class=True, img_size=224,
                          num_classes=0, in_chans=3, dynamic_img_size=False)
    if preset in ("virchow", "virchow2"):
        kw = dict(img_size=224, init_values=1e-5, num_classes=0, mlp_ratio=5.3375, global_pool="",
                  dynamic_img_size=True, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU)
        if preset == "virchow2":
            kw["reg_tokens"] = 4
        return "vit_huge_patch14_224", kw
    raise KeyError(preset)


def build_timm(preset, depth):
    import timm
    name, kw = timm_kwargs(preset)
    kw = dict(kw, depth=depth)
    if name is None:  # H-optimus-0's README builds the class directly
        model = timm.models.VisionTransformer(**kw)
    else:
        model = timm.create_model(name, pretrained=False, **kw)
    prefix = model.num_prefix_tokens

    def runner(m):
        def run(x):
            feats = m.forward_features(x)
            if preset in ("virchow", "virchow2"):  # model card: cat(CLS, mean of patch tokens)
                pooled = torch.cat([feats[:, 0], feats[:, prefix:].mean(1)], dim=-1)
                assert torch.equal(m.forward_head(feats), feats)  # global_pool "" keeps every token
            else:
                pooled = m.forward_head(feats)
            blocks = m.get_intermediate_layers(x, n=min(2, depth), norm=True, return_prefix_tokens=True)
            inter = [torch.cat([p, t], dim=1) for t, p in blocks]
            return {"pooled": pooled, "features": feats, "intermediate": inter}
        return run
    return model, runner


HIBOU = {  # hidden, heads (HistAI/hibou build_model: vit_base / vit_large, SwiGLU, 4 registers)
    "hibou_b": (768, 12), "hibou_l": (1024, 16),
}


def build_hibou(preset, depth, keys_holder):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    hidden, heads = HIBOU[preset]
    config = Dinov2WithRegistersConfig(
        hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads, mlp_ratio=4,
        image_size=224, patch_size=14, num_channels=3, qkv_bias=True, layerscale_value=1e-5,
        layer_norm_eps=1e-6, use_swiglu_ffn=True, num_register_tokens=4, hidden_act="gelu",
        drop_path_rate=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    keys_holder["config"] = config
    model = Dinov2WithRegistersModel(config)

    def runner(m):
        def run(x):
            out = m(pixel_values=x, output_hidden_states=True)
            hs = out.hidden_states  # embeddings, then each layer (pre-norm)
            inter = [m.layernorm(t) for t in hs[-min(2, depth):]]
            return {"pooled": out.pooler_output, "features": out.last_hidden_state, "intermediate": inter}
        return run
    return model, runner


def hf_dinov2_checkpoint_keys(model):
    """The published HF Dinov2 names (fused SwiGLU `weights_in`/`weights_out`, separate
    query/key/value), which transformers' conversion map renames when it loads."""
    keys = []
    for k, v in model.state_dict().items():
        k2 = (k.replace("attention.q_proj", "attention.attention.query")
               .replace("attention.k_proj", "attention.attention.key")
               .replace("attention.v_proj", "attention.attention.value")
               .replace("attention.o_proj", "attention.output.dense")
               .replace("mlp.down_proj", "mlp.weights_out"))
        if ".mlp.up_proj." in k2:
            continue
        if ".mlp.gate_proj." in k2:
            k2 = k2.replace("mlp.gate_proj", "mlp.weights_in")
            shape = [2 * v.shape[0]] + list(v.shape[1:])
        else:
            shape = list(v.shape)
        keys.append((k2, shape))
    return keys


# ---------------------------------------------------------------------------------------------
# Cases

# name: (preset, depth, input shape [C,H,W], reference kind, extra)
CASES = [
    # DINO v1 (hub code): native 224, plus a non-square input (variant A resampling)
    ("dino_vits16", "dino_vits16", 2, (3, 224, 224), "dino", {}),
    ("dino_vits16_160x208", "dino_vits16", 2, (3, 160, 208), "dino", {}),
    ("dino_vits8", "dino_vits8", 2, (3, 224, 224), "dino", {}),
    ("dino_vitb16", "dino_vitb16", 2, (3, 224, 224), "dino", {}),
    ("dino_vitb8", "dino_vitb8", 2, (3, 224, 224), "dino", {}),
    # DINOv2 hub models are native at 518 (37x37 grid): run at 224, which resamples 37 -> 16
    # (variant A without registers, B with), plus a non-square input each.
    ("dinov2_vits14", "dinov2_vits14", 2, (3, 224, 224), "dinov2", {}),
    ("dinov2_vits14_168x224", "dinov2_vits14", 2, (3, 168, 224), "dinov2", {}),
    ("dinov2_vitb14", "dinov2_vitb14", 2, (3, 224, 224), "dinov2", {}),
    ("dinov2_vitl14", "dinov2_vitl14", 2, (3, 224, 224), "dinov2", {}),
    ("dinov2_vitg14", "dinov2_vitg14", 1, (3, 224, 224), "dinov2", {}),
    ("dinov2_vits14_reg4", "dinov2_vits14_reg4", 2, (3, 224, 224), "dinov2", {}),
    ("dinov2_vits14_reg4_224x182", "dinov2_vits14_reg4", 2, (3, 224, 182), "dinov2", {}),
    ("dinov2_vitb14_reg4", "dinov2_vitb14_reg4", 2, (3, 224, 224), "dinov2", {}),
    ("dinov2_vitl14_reg4", "dinov2_vitl14_reg4", 2, (3, 224, 224), "dinov2", {}),
    ("dinov2_vitg14_reg4", "dinov2_vitg14_reg4", 1, (3, 224, 224), "dinov2", {}),
    # RudolfV (config only): its assumed architecture, DINOv2 ViT-L/14 at 224, native size
    ("rudolfv", "rudolfv", 2, (3, 224, 224), "dinov2", {}),
    # timm-built pathology models at their native 224, plus UNI at a non-square size (timm's
    # resample_abs_pos_embed, variant B, with the CLS prefix split off)
    ("uni", "uni", 2, (3, 224, 224), "timm", {}),
    ("uni_192x256", "uni", 2, (3, 192, 256), "timm", {}),
    ("uni2_h", "uni2_h", 1, (3, 224, 224), "timm", {}),
    ("h_optimus_0", "h_optimus_0", 1, (3, 224, 224), "timm", {}),
    ("virchow", "virchow", 1, (3, 224, 224), "timm", {}),
    ("virchow2", "virchow2", 1, (3, 224, 224), "timm", {}),
    # Hibou through transformers' Dinov2WithRegisters and the HF key names
    ("hibou_b", "hibou_b", 2, (3, 224, 224), "hibou", {}),
    ("hibou_l", "hibou_l", 2, (3, 224, 224), "hibou", {}),
    # HIPT: ViT_256 at its working size 256 (14 -> 16 grid), ViT_4K on a 16x16 grid of 384-d features
    ("hipt_vit256_16", "hipt_vit256_16", 2, (3, 256, 256), "hipt256", {}),
    ("hipt_vit4k_256", "hipt_vit4k_256", 2, (384, 16, 16), "hipt4k", {}),
    # The same ViT_4K at depth 1 saved as a real DINO training checkpoint (.pth, fp16 storage):
    # {'teacher': {'backbone.*': ..., 'head.*': ...}, 'epoch': 0}
    ("hipt_vit4k_256_pth", "hipt_vit4k_256", 1, (384, 16, 16), "hipt4k", {"pth": True}),
]


def build(refs, kind, preset, depth, holder):
    if kind == "dino":
        arch = "vit_small" if "vits" in preset else "vit_base"
        patch = int(preset.split("vit")[1][1:])
        model, runner = build_dino(refs, arch, patch, depth)
    elif kind == "dinov2" and preset == "rudolfv":
        # No public weights or code: the preset's assumption (DINOv2 ViT-L/14, no registers,
        # pos_embed for 224) checked against DINOv2's own model with those settings.
        model, runner = build_dinov2(refs, "l", False, depth, img_size=224)
    elif kind == "dinov2":
        size = preset.split("vit")[1][0]
        model, runner = build_dinov2(refs, size, preset.endswith("_reg4"), depth)
    elif kind == "timm":
        model, runner = build_timm(preset, depth)
    elif kind == "hibou":
        model, runner = build_hibou(preset, depth, holder)
    elif kind == "hipt256":
        model, runner = build_hipt256(refs, depth)
    elif kind == "hipt4k":
        model, runner = build_hipt4k(refs, depth)
    else:
        raise KeyError(kind)
    return model.eval(), runner


REFERENCE_NAMES = {
    "dino": "facebookresearch/dino vision_transformer.py",
    "dinov2": "facebookresearch/dinov2 dinov2/models/vision_transformer.py (hub settings)",
    "timm": "timm " + __import__("timm").__version__,
    "hibou": "transformers Dinov2WithRegistersModel",
    "hipt256": "mahmoodlab/HIPT HIPT_4K/vision_transformer.py",
    "hipt4k": "mahmoodlab/HIPT HIPT_4K/vision_transformer4k.py",
}


def patch_size_of(model, kind):
    if kind == "hipt4k":
        return 1  # its "patches" are the cells of the feature grid
    if kind == "hibou":
        return model.config.patch_size
    p = model.patch_embed.patch_size
    return p[0] if isinstance(p, (tuple, list)) else p


def token_rows(n_tokens, prefix, grid_w):
    """CLS, the first register (if any), the first patch, the end of the first patch row and
    the last patch. The per-token norms cover every other token."""
    rows = [0, 1 if prefix > 1 else 0, prefix, prefix + grid_w - 1, n_tokens - 1]
    return sorted(set(r for r in rows if r < n_tokens))


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def generate(refs, case, outdir):
    name, preset, depth, in_shape, kind, extra = case
    t0 = time.time()
    holder = {}
    model, runner = build(refs, kind, preset, depth, holder)

    # The checkpoint's key names and shapes
    if kind == "hibou":
        keys = hf_dinov2_checkpoint_keys(model)
    else:
        keys = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    pth = extra.get("pth", False)
    sd, spec = synthetic_state_dict(keys, rounding=torch.float16 if pth else None)

    if kind == "hibou":
        # Through transformers' own loader (conversion map: weights_in -> gate/up, q/k/v names).
        from safetensors.torch import save_file as save_st
        with tempfile.TemporaryDirectory() as tmp:
            holder["config"].save_pretrained(tmp)
            save_st(dict(sd), os.path.join(tmp, "model.safetensors"))
            from transformers import Dinov2WithRegistersModel
            model, info = Dinov2WithRegistersModel.from_pretrained(tmp, output_loading_info=True,
                                                                   dtype=torch.float32)
            bad = {k: v for k, v in info.items() if v}
            assert not bad, f"{name}: HF loading problems {bad}"
            model.eval()
        # transformers >= 5 splits weights_in on load: check it kept DINOv2's order (gate first).
        loaded = model.state_dict()
        if "encoder.layer.0.mlp.gate_proj.weight" in loaded:
            w_in = sd["encoder.layer.0.mlp.weights_in.weight"]
            gate = loaded["encoder.layer.0.mlp.gate_proj.weight"]
            assert torch.equal(gate, w_in[: gate.shape[0]]), "weights_in split"
    else:
        model.load_state_dict(sd, strict=True)
    run = runner(model)

    images = synthetic("images", [BATCH, *in_shape], INPUT_EXP, 0.0)
    with torch.no_grad():
        out = run(images)
        # How far float32 itself is from float64 on this case: the floor any fp32
        # implementation can be held to (printed, and kept in the fixture's metadata).
        out64 = runner(model.double())(images.double())
        model.float()
    fp32_error = max(rel_err(out[k], out64[k]) for k in ("pooled", "features"))
    for k in ("pooled", "features"):
        assert torch.isfinite(out[k]).all(), f"{name}: non-finite {k}"

    features = out["features"]
    n_tokens, dim = features.shape[1], features.shape[2]
    prefix = {"dino": 1, "hipt256": 1, "hipt4k": 1}.get(kind)
    if prefix is None:
        prefix = 1 + (4 if preset.endswith("reg4") or preset in ("h_optimus_0", "virchow2", "hibou_b", "hibou_l")
                      else 8 if preset == "uni2_h" else 0)
    patch = patch_size_of(model, kind)
    grid_h, grid_w = in_shape[1] // patch, in_shape[2] // patch
    assert n_tokens == prefix + grid_h * grid_w, (name, n_tokens, prefix, grid_h, grid_w)
    rows = token_rows(n_tokens, prefix, grid_w)

    tensors = {
        "pooled": out["pooled"],
        "features.rows": features[:, rows],
        "features.norms": features.norm(dim=-1),
    }
    short_rows = [rows[0], rows[-1]]  # CLS and the last patch
    for j, t in enumerate(out.get("intermediate", [])):
        tensors[f"intermediate.{j}.rows"] = t[:, short_rows]
        tensors[f"intermediate.{j}.norms"] = t.norm(dim=-1)
    if "attention" in out:  # the CLS query (what heatmaps show) and the last patch's
        tensors["attention.rows"] = out["attention"][:, :, short_rows]
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}

    meta = {
        "preset": preset, "depth": str(depth), "reference": REFERENCE_NAMES[kind],
        "input_shape": ",".join(str(s) for s in (BATCH, *in_shape)), "input_key": "images",
        "input_exp": str(INPUT_EXP), "token_rows": ",".join(map(str, rows)),
        "short_rows": ",".join(map(str, short_rows)),
        "intermediate_n": str(len(out.get("intermediate", []))),
        "torch": torch.__version__, "reference_fp32_vs_fp64": f"{fp32_error:.2e}",
    }
    if pth:
        # A DINO training dict: teacher = MultiCropWrapper(backbone, head). The head is a tiny
        # stand-in (real ones are 65536-wide) so that loaders are seen to drop head.* keys.
        teacher = OrderedDict(("backbone." + k, v.half()) for k, v in sd.items())
        teacher["head.mlp.0.weight"] = synthetic("head.mlp.0.weight", [8, dim], -3, 0.0).half()
        teacher["head.mlp.0.bias"] = synthetic("head.mlp.0.bias", [8], -3, 0.0).half()
        teacher["head.last_layer.weight_g"] = torch.ones(4, 1).half()
        teacher["head.last_layer.weight_v"] = synthetic("head.last_layer.weight_v", [4, 8], -3, 0.0).half()
        pth_name = name + ".pth"
        torch.save({"teacher": teacher, "epoch": 0}, os.path.join(outdir, pth_name))
        meta["checkpoint"] = pth_name
    else:
        meta["weights"] = "\n".join(spec)
    path = os.path.join(outdir, name + ".safetensors")
    save_file(tensors, path, metadata=meta)
    os.chmod(path, 0o644)
    print(f"{name:28s} {kind:8s} depth {depth} tokens {n_tokens:4d} dim {dim:4d}  fp32 vs fp64 {fp32_error:.1e}"
          f"  {time.time() - t0:.1f}s", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dino-repo", default=os.environ.get("DINO_REPO"))
    p.add_argument("--dinov2-repo", default=os.environ.get("DINOV2_REPO"))
    p.add_argument("--hipt-repo", default=os.environ.get("HIPT_REPO"))
    p.add_argument("--out", default=OUT)
    p.add_argument("--only", nargs="*", help="case names to (re)generate")
    args = p.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    refs = Refs(args)
    cases = [c for c in CASES if not args.only or c[0] in args.only]
    for case in cases:
        kind = case[4]
        need = {"dino": "dino_repo", "dinov2": "dinov2_repo", "hipt256": "hipt_repo", "hipt4k": "hipt_repo"}.get(kind)
        if need and not getattr(args, need):
            sys.exit(f"case {case[0]} needs --{need.replace('_', '-')} (a checkout of the reference code)")
        generate(refs, case, args.out)
    with open(os.path.join(args.out, "index.txt"), "w") as f:
        f.write("# Cases of tests/models/vit_parity_test.cpp, written by scripts/gen_vit_fixtures.py\n")
        for case in CASES:
            f.write(case[0] + "\n")


if __name__ == "__main__":
    main()
