#!/usr/bin/env python3
"""Writes tests/fixtures/optim/*.safetensors: what torch.optim and the DINO / DINOv2 reference
functions give for the optimisation pieces of histograd::optim.

- schedules.safetensors: dino utils.cosine_scheduler, dinov2 CosineScheduler (+ the last-layer
  zeroing of dinov2/train/train.py) and DINOLoss.teacher_temp_schedule, as float64.
- adamw_f32/f64, sgd_f32/f64: 5 iterations of DINO's loop (main_dino.py train_one_epoch) on two
  param groups (regularized / not_regularized): lr and wd schedules set per iteration (wd on
  group 0 only), utils.clip_gradients(3.0), utils.cancel_gradients_last_layer(epoch, ., 1), then
  torch.optim.AdamW / SGD(momentum 0.9, nesterov). Group 1 takes lr·0.5 (a DINOv2-style
  lr_multiplier). Gradients are given, not computed, so only the optimisation is under test.
- clip_f32/f64: torch.nn.utils.clip_grad_norm_ with a clipping and a non-clipping max_norm.
- ema_f32: the teacher update of main_dino.py (param_k.mul_(m).add_((1 - m) * param_q)).

The reference functions are imported, not transcribed: utils.py from --dino-dir (default
/work/refs/dino), DINOLoss from --main-dino (main_dino.py of facebookresearch/dino @ 7c446df,
which imports utils and vision_transformer from --dino-dir), CosineScheduler from --dinov2-dir
(default /work/refs/dinov2). If main_dino.py is not given, the teacher temperature schedule is
a transcription of DINOLoss.__init__ and the script says so.

Run: python3 scripts/gen_optim_fixtures.py [--main-dino /path/to/main_dino.py]
"""
import argparse
import importlib.util
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optim")


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schedules(dino_utils, cosine_scheduler_class, teacher_temp_schedule):
    out = {}
    # (base, final, epochs, niter_per_ep, warmup_epochs, start_warmup_value)
    dino_cases = {
        "lr": (5e-4 * 64 / 256, 1e-6, 7, 13, 2, 0.0),
        "wd": (0.04, 0.4, 7, 13, 0, 0.0),
        "momentum": (0.996, 1.0, 7, 13, 0, 0.0),
        "warm_start": (0.3, 0.01, 4, 5, 1, 0.05),
        "one_iter_warmup": (1.0, 0.5, 3, 1, 1, 0.2),
    }
    for name, args in dino_cases.items():
        out[f"dino.{name}"] = torch.tensor(dino_utils.cosine_scheduler(*args[:4], warmup_epochs=args[4],
                                                                       start_warmup_value=args[5]), dtype=torch.float64)
    # (base, final, total_iters, warmup_iters, start_warmup_value, freeze_iters)
    dinov2_cases = {
        "lr": (0.004, 1e-6, 40, 7, 0.0, 0),
        "freeze": (0.004, 1e-6, 40, 7, 0.001, 5),
        "teacher_temp": (0.07, 0.07, 12, 12, 0.04, 0),
    }
    for name, args in dinov2_cases.items():
        s = cosine_scheduler_class(args[0], args[1], args[2], warmup_iters=args[3], start_warmup_value=args[4],
                                   freeze_iters=args[5])
        # index a few iterations past the end: the reference returns final_value there
        out[f"dinov2.{name}"] = torch.tensor([s[i] for i in range(args[2] + 3)], dtype=torch.float64)
    last_layer = cosine_scheduler_class(0.004, 1e-6, 40, warmup_iters=7)
    last_layer.schedule[:6] = 0  # train.py: schedule[: freeze_last_layer_epochs * OFFICIAL_EPOCH_LENGTH] = 0
    out["dinov2.last_layer_lr"] = torch.tensor([last_layer[i] for i in range(40)], dtype=torch.float64)
    out["dino.teacher_temp"] = torch.tensor(teacher_temp_schedule(0.04, 0.07, 30, 100), dtype=torch.float64)
    out["dino.teacher_temp_no_warmup"] = torch.tensor(teacher_temp_schedule(0.04, 0.04, 0, 10), dtype=torch.float64)
    return out


PARAMS = [  # (name, shape, group)
    ("head.mlp.weight", (5, 4), 0),
    ("head.last_layer.weight", (3, 5), 0),
    ("head.mlp.bias", (5,), 1),
    ("norm.weight", (4,), 1),
]
ITERS, ITERS_PER_EPOCH, EPOCHS, CLIP, LR_MULT_GROUP1 = 5, 2, 3, 3.0, 0.5


def dino_loop(dino_utils, kind, dtype):
    gen = torch.Generator().manual_seed(7 if kind == "adamw" else 8)
    init = {n: torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for n, s, _ in PARAMS}
    # matrices get norms above the clip (scaled), vectors mostly below (kept)
    grads = [{n: ((2.0 if len(s) == 2 else 0.5) * torch.randn(s, generator=gen, dtype=torch.float64)).to(dtype)
              for n, s, _ in PARAMS} for _ in range(ITERS)]
    lr_schedule = dino_utils.cosine_scheduler(0.1, 1e-3, EPOCHS, ITERS_PER_EPOCH, warmup_epochs=1)
    wd_schedule = dino_utils.cosine_scheduler(0.04, 0.4, EPOCHS, ITERS_PER_EPOCH)

    class Model(torch.nn.Module):  # named_parameters() in PARAMS order for utils.clip_gradients
        def __init__(self):
            super().__init__()
            for n, _, _ in PARAMS:
                self.register_parameter(n.replace(".", "__"), torch.nn.Parameter(init[n].clone()))

        def named_parameters(self, *args, **kwargs):
            for n, p in super().named_parameters(*args, **kwargs):
                yield n.replace("__", "."), p

    model = Model()
    by_name = dict(model.named_parameters())
    groups = [{"params": [by_name[n] for n, _, g in PARAMS if g == 0]},
              {"params": [by_name[n] for n, _, g in PARAMS if g == 1], "weight_decay": 0.0}]
    if kind == "adamw":
        optimizer = torch.optim.AdamW(groups, foreach=False)
    else:
        optimizer = torch.optim.SGD(groups, lr=0.0, momentum=0.9, nesterov=True, foreach=False)
    out = {f"init.{n}": v for n, v in init.items()}
    out["lr"] = torch.tensor(lr_schedule[:ITERS], dtype=torch.float64)
    out["wd"] = torch.tensor(wd_schedule[:ITERS], dtype=torch.float64)
    for it in range(ITERS):
        epoch = it // ITERS_PER_EPOCH
        for i, param_group in enumerate(optimizer.param_groups):  # main_dino.py, plus the group-1 multiplier
            param_group["lr"] = lr_schedule[it] * (LR_MULT_GROUP1 if i == 1 else 1.0)
            if i == 0:
                param_group["weight_decay"] = wd_schedule[it]
        optimizer.zero_grad()
        for n, _, _ in PARAMS:
            by_name[n].grad = grads[it][n].clone()
            out[f"grad.{it}.{n}"] = grads[it][n]
        norms = dino_utils.clip_gradients(model, CLIP)
        out[f"norms.{it}"] = torch.tensor(norms, dtype=torch.float64)
        dino_utils.cancel_gradients_last_layer(epoch, model, 1)
        optimizer.step()
        for n, _, _ in PARAMS:
            out[f"after.{it}.{n}"] = by_name[n].detach().clone()
    return out


def clip_cases(dtype):
    gen = torch.Generator().manual_seed(11)
    out = {}
    for case, max_norm in (("clipped", 1.0), ("unclipped", 100.0)):
        params = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in ((3, 4), (4,), (2, 2, 2))]
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
            out[f"{case}.grad.{i}"] = p.grad.clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        out[f"{case}.max_norm"] = torch.tensor([max_norm], dtype=torch.float64)
        out[f"{case}.total"] = torch.tensor([total.item()], dtype=torch.float64)
        for i, p in enumerate(params):
            out[f"{case}.clipped.{i}"] = p.grad.clone()
    return out


def ema_case():
    gen = torch.Generator().manual_seed(12)
    teacher = [torch.randn(s, generator=gen) for s in ((7, 3), (5,), (20000,))]
    student = [torch.randn(s, generator=gen) for s in ((7, 3), (5,), (20000,))]
    out = {f"teacher.{i}": t.clone() for i, t in enumerate(teacher)}
    out.update({f"student.{i}": s.clone() for i, s in enumerate(student)})
    m = 0.9961234
    with torch.no_grad():
        for param_q, param_k in zip(student, teacher):  # main_dino.py's EMA update
            param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
    out.update({f"updated.{i}": t for i, t in enumerate(teacher)})
    out["momentum"] = torch.tensor([m], dtype=torch.float64)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dino-dir", default="/work/refs/dino")
    parser.add_argument("--dinov2-dir", default="/work/refs/dinov2")
    parser.add_argument("--main-dino", default=None, help="main_dino.py of facebookresearch/dino")
    args = parser.parse_args()
    sys.path.insert(0, args.dino_dir)
    dino_utils = load_module("utils", os.path.join(args.dino_dir, "utils.py"))
    sys.modules["utils"] = dino_utils
    dinov2_utils = load_module("dinov2_utils", os.path.join(args.dinov2_dir, "dinov2", "utils", "utils.py"))

    if args.main_dino:
        main_dino = load_module("main_dino", args.main_dino)

        def teacher_temp_schedule(warmup, final, warmup_epochs, epochs):
            loss = main_dino.DINOLoss(8, 4, warmup, final, warmup_epochs, epochs)
            return loss.teacher_temp_schedule
    else:
        print("main_dino.py not given: the teacher temperature schedule is a transcription of DINOLoss.__init__")

        def teacher_temp_schedule(warmup, final, warmup_epochs, epochs):
            return np.concatenate((np.linspace(warmup, final, warmup_epochs), np.ones(epochs - warmup_epochs) * final))

    os.makedirs(OUT, exist_ok=True)
    save_file(schedules(dino_utils, dinov2_utils.CosineScheduler, teacher_temp_schedule),
              os.path.join(OUT, "schedules.safetensors"))
    for kind in ("adamw", "sgd"):
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            tensors = {k: v.contiguous() for k, v in dino_loop(dino_utils, kind, dtype).items()}
            save_file(tensors, os.path.join(OUT, f"{kind}_{tag}.safetensors"))
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        save_file(clip_cases(dtype), os.path.join(OUT, f"clip_{tag}.safetensors"))
    save_file(ema_case(), os.path.join(OUT, "ema_f32.safetensors"))
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
