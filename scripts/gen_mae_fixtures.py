#!/usr/bin/env python3
"""Fixtures for tests/ssl/mae_test.cpp: one MAE pretraining step run by the reference code.

Imports the real models_mae.py and util/pos_embed.py, util/lr_sched.py of facebookresearch/mae
from --mae-repo (a checkout; from a bare mirror:
  git --git-dir=<mirror> archive HEAD models_mae.py util | tar -x -C /tmp/mae_ref ).
The reference pins timm 0.3.2 and an old numpy; with timm 1.0.31 / numpy 2 two shims are needed,
neither of which changes the arithmetic:
  * timm's Block lost the `qk_scale` argument (models_mae passes qk_scale=None, which in 0.3.2
    meant the default head_dim**-0.5): a Block subclass that drops qk_scale=None is installed
    in timm.models.vision_transformer before models_mae is imported.
  * numpy 2 removed np.float (pos_embed.py uses dtype=np.float, i.e. float64): np.float = float.
util/misc.py (NativeScalerWithGradNormCount) imports torch._six, gone from torch 2, so the step of
engine_pretrain.py is written out here: adjust_learning_rate (the reference's util/lr_sched.py),
forward, loss.backward(), optimizer.step(). On the CPU the reference's autocast and GradScaler are
disabled and clip_grad is None, so that is the same step. The optimizer is main_pretrain.py's:
AdamW(betas=(0.9, 0.95)) over timm's add_weight_decay groups (timm 1.0: param_groups_weight_decay,
the same split: no decay for 1-D params and *.bias, decay for the rest incl. cls/mask tokens;
pos_embed and decoder_pos_embed are requires_grad=False and stay out of the optimizer).

The noise of random_masking is fixed by replacing torch.rand for the duration of the forward.

Writes tests/fixtures/mae/:
  weights.safetensors           the tiny model's state dict before the step (float32, incl. the
                                sin-cos pos embeddings from the reference init)
  step_normpix{0,1}_f32.safetensors  imgs, noise, mask, ids_restore, pred, loss, lr,
                                grad.<name>, updated.<name> (float32 model)
  step_normpix1_f64.safetensors the same step on model.double() loaded from the same weights
                                (pred, loss, grad.<name>, updated.<name>)
  pos_embed.safetensors         get_2d_sincos_pos_embed(48, 5, cls_token=True) in float64
"""
import argparse
import functools
import math
import os
import sys
import types

import numpy as np
import torch

TINY = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2,
            decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlp_ratio=4.0)
BATCH = 2
MASK_RATIO = 0.75
WEIGHT_DECAY = 0.05
BASE_LR = 1e-3            # args.lr
WARMUP_EPOCHS, EPOCHS, MIN_LR = 2, 10, 0.0
EPOCH_POSITION = 0.5      # data_iter_step / len(data_loader) + epoch


def install_shims():
    if not hasattr(np, "float"):
        np.float = float
    import timm.models.vision_transformer as tvt
    if getattr(tvt.Block, "_mae_shim", False):
        return

    class Block(tvt.Block):
        _mae_shim = True

        def __init__(self, *args, qk_scale=None, **kwargs):
            assert qk_scale is None, "the shim only covers qk_scale=None (timm's default scale)"
            super().__init__(*args, **kwargs)

    tvt.Block = Block


def import_reference(repo):
    sys.path.insert(0, repo)
    install_shims()
    import models_mae
    from util import lr_sched, pos_embed
    return models_mae, lr_sched, pos_embed


class FixedRand:
    """torch.rand returns `noise` (shape checked) while active."""

    def __init__(self, noise):
        self.noise, self.calls = noise, 0

    def __enter__(self):
        self.saved = torch.rand

        def rand(*size, device=None, **kwargs):
            shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)
            assert shape == tuple(self.noise.shape), (shape, self.noise.shape)
            self.calls += 1
            return self.noise.clone()

        torch.rand = rand
        return self

    def __exit__(self, *exc):
        torch.rand = self.saved


def one_step(model, imgs, noise, lr_sched):
    import timm.optim
    groups = timm.optim.param_groups_weight_decay(model, WEIGHT_DECAY)
    optimizer = torch.optim.AdamW(groups, lr=BASE_LR, betas=(0.9, 0.95))
    args = types.SimpleNamespace(lr=BASE_LR, min_lr=MIN_LR, warmup_epochs=WARMUP_EPOCHS, epochs=EPOCHS)
    model.train(True)
    optimizer.zero_grad()
    lr = lr_sched.adjust_learning_rate(optimizer, EPOCH_POSITION, args)
    with FixedRand(noise) as fixed:
        loss, pred, mask = model(imgs, mask_ratio=MASK_RATIO)
    assert fixed.calls == 1
    assert math.isfinite(loss.item())
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    updated = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    # ids_restore of the same noise, as random_masking computes it.
    ids_restore = torch.argsort(torch.argsort(noise, dim=1), dim=1)
    return dict(loss=loss.detach(), pred=pred.detach(), mask=mask.detach(), ids_restore=ids_restore,
                lr=torch.tensor([lr], dtype=torch.float64), grads=grads, updated=updated,
                groups=[len(g["params"]) for g in groups])


def pack(step, extra):
    out = dict(extra)
    for key in ("loss", "pred", "mask", "ids_restore", "lr"):
        out[key] = step[key].reshape(-1) if key == "loss" else step[key]
    for n, g in step["grads"].items():
        out["grad." + n] = g
    for n, p in step["updated"].items():
        out["updated." + n] = p
    return {k: v.contiguous() for k, v in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mae-repo", required=True, help="checkout of facebookresearch/mae")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "mae"))
    args = parser.parse_args()
    from safetensors.torch import save_file

    models_mae, lr_sched, pos_embed = import_reference(args.mae_repo)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    norm_layer = functools.partial(torch.nn.LayerNorm, eps=1e-6)  # as in the mae_vit_* presets
    base = models_mae.MaskedAutoencoderViT(**TINY, norm_layer=norm_layer, norm_pix_loss=False)
    weights = {k: v.detach().clone().contiguous() for k, v in base.state_dict().items()}
    save_file(weights, os.path.join(args.out, "weights.safetensors"))

    gen = torch.Generator().manual_seed(1)
    imgs = torch.randn(BATCH, 3, TINY["img_size"], TINY["img_size"], generator=gen)
    num_patches = (TINY["img_size"] // TINY["patch_size"]) ** 2
    noise = torch.rand(BATCH, num_patches, generator=gen)

    for norm_pix in (False, True):
        model = models_mae.MaskedAutoencoderViT(**TINY, norm_layer=norm_layer, norm_pix_loss=norm_pix)
        model.load_state_dict(weights)
        step = one_step(model, imgs.clone(), noise, lr_sched)
        print(f"norm_pix_loss={norm_pix}: loss {step['loss'].item():.8f}, lr {step['lr'].item()}, "
              f"groups (no_decay, decay) sizes {step['groups']}, mask {step['mask'].tolist()}")
        save_file(pack(step, {"imgs": imgs, "noise": noise}),
                  os.path.join(args.out, f"step_normpix{int(norm_pix)}_f32.safetensors"))
        if norm_pix:
            model64 = models_mae.MaskedAutoencoderViT(**TINY, norm_layer=norm_layer, norm_pix_loss=True).double()
            model64.load_state_dict({k: v.double() for k, v in weights.items()})
            step64 = one_step(model64, imgs.double(), noise.double(), lr_sched)
            print(f"float64: loss {step64['loss'].item():.15f}")
            # How far the reference's own float32 step is from its float64 step (the yardstick
            # for the C++ float32 tolerance): max|a - b| / max|b| per tensor, worst over tensors.
            worst = max(((step["grads"][n].double() - g).abs().max() / g.abs().max()).item()
                        for n, g in step64["grads"].items())
            pred_gap = ((step["pred"].double() - step64["pred"]).abs().max() / step64["pred"].abs().max()).item()
            print(f"reference float32 vs float64: pred {pred_gap:.2e}, worst gradient {worst:.2e}")
            save_file(pack(step64, {}), os.path.join(args.out, "step_normpix1_f64.safetensors"))

    table = pos_embed.get_2d_sincos_pos_embed(48, 5, cls_token=True)
    save_file({"sincos_48_5_cls": torch.from_numpy(np.ascontiguousarray(table, dtype=np.float64))},
              os.path.join(args.out, "pos_embed.safetensors"))
    for name in sorted(os.listdir(args.out)):
        print(name, os.path.getsize(os.path.join(args.out, name)), "bytes")


if __name__ == "__main__":
    main()
