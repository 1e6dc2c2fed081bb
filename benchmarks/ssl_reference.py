"""The PyTorch side of benchmarks/ssl_bench.cpp: one DINO and one MAE training step, built from
the reference repositories' own code, timed per phase.

  python3 ssl_reference.py dino STEPS THREADS [--dino-repo DIR]
  python3 ssl_reference.py mae  STEPS THREADS [--mae-repo DIR]

Prints "key value" lines: <kind>_seconds (median step), <kind>_forward_seconds,
<kind>_backward_seconds, <kind>_optimizer_seconds (DINO: _teacher_, _student_, _loss_seconds
in place of _forward_; the medians of each phase over the same
steps), <kind>_loss (of the last step), <kind>_peak_rss_mib (getrusage of this process, which
runs one kind only), torch_threads. One warm-up step, then STEPS timed steps.

The reference code is imported, not rewritten. DINO: vision_transformer.py (vit_small,
DINOHead), utils.py (MultiCropWrapper, get_params_groups, clip_gradients,
cancel_gradients_last_layer) and main_dino.py (DINOLoss) of facebookresearch/dino. The step is
the body of main_dino.train_one_epoch on one process without DistributedDataParallel (DINOLoss's
all-reduce runs in a one-process gloo group, as world size 1): schedules set the groups' lr and
weight decay, teacher(images[:2]) under no_grad, student(images), DINOLoss, zero_grad,
backward, clip_gradients(3.0), cancel_gradients_last_layer (epoch 1, freeze 1: a no-op, so the
last layer is trained as in every step after the first epoch), AdamW.step, the EMA update
loop of train_one_epoch. main_dino's defaults: ViT-S/16 with drop_path_rate 0.1 for the
student, DINOHead(384, 65536, norm_last_layer=True), 2 global crops at 224 + 8 local at 96.
MAE: models_mae.py (mae_vit_base_patch16, norm_pix_loss=True) with util/pos_embed.py; the step
of engine_pretrain.train_one_epoch on the CPU without its loss scaler (no autocast, no
clipping): model(imgs, mask_ratio=0.75), loss.backward(), AdamW(betas 0.9, 0.95) over timm's
weight-decay groups (main_pretrain.py's add_weight_decay), step, zero_grad. The scaler's
gradient-norm readout (logging only) is left out on both sides. Two shims let the 2021 code
run on timm 1.0 / numpy 2 without changing its arithmetic (see install_mae_shims).

DIR (or $DINO_REPO / $MAE_REPO) defaults to a checkout extracted from the fetched mirror (/work/.mirror/<owner>+<repo>/repo)
into a temporary folder; nothing is printed when neither exists (the C++ table prints n/a).
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

MIRRORS = {"dino": "/work/.mirror/facebookresearch+dino/repo", "mae": "/work/.mirror/facebookresearch+mae/repo"}
FILES = {"dino": ["main_dino.py", "utils.py", "vision_transformer.py"],
         "mae": ["models_mae.py", "util/pos_embed.py", "util/__init__.py"]}
BATCH = 16


def reference_dir(kind, given, tmp):
    """A folder holding the reference files: the given checkout, else extracted from the mirror."""
    if given:
        return given
    out = os.path.join(tmp, kind)
    for name in FILES[kind]:
        os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
        text = subprocess.run(["git", "--git-dir", MIRRORS[kind], "show", "HEAD:" + name], capture_output=True).stdout
        with open(os.path.join(out, name), "wb") as f:
            f.write(text)  # util/__init__.py is absent upstream: an empty file makes util a package
    return out


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PhaseTimer:
    """Wall time of the named phases of each step; median per phase over the timed steps."""

    def __init__(self):
        self.steps = []
        self.peaks = []
        self.cpu = []
        self.setup_peak = peak_rss_mib()  # the model and optimizer exist when the timer is made

    def step(self):
        if self.steps:
            self.cpu.append(time.process_time() - self.cpu_start)
        self.steps.append({})
        self.cpu_start = time.process_time()  # CPU seconds of every thread: less sensitive to a busy machine
        self.last = time.perf_counter()

    def mark(self, phase):
        now = time.perf_counter()
        self.steps[-1][phase] = self.steps[-1].get(phase, 0.0) + now - self.last
        if len(self.steps) == 1:
            self.peaks.append((phase, peak_rss_mib()))  # where the peak is reached
        self.last = now

    def report(self, kind):
        self.cpu.append(time.process_time() - self.cpu_start)
        timed = self.steps[1:]  # the first step is the warm-up
        print(f"{kind}_seconds", statistics.median(sum(s.values()) for s in timed))
        print(f"{kind}_cpu_seconds", statistics.median(self.cpu[1:]))
        for phase in timed[0]:
            print(f"{kind}_{phase}_seconds", statistics.median(s[phase] for s in timed))
        print(f"{kind}_peak_setup_mib", self.setup_peak)
        for phase, peak in self.peaks:
            print(f"{kind}_peak_after_{phase}_mib", peak)


def dino(steps, repo):
    import torch.distributed as dist
    tmp = tempfile.mkdtemp()
    dist.init_process_group("gloo", init_method="file://" + os.path.join(tmp, "pg"), rank=0, world_size=1)
    sys.path.insert(0, repo)
    import main_dino
    import utils
    import vision_transformer as vits

    student = utils.MultiCropWrapper(vits.vit_small(patch_size=16, drop_path_rate=0.1),
                                     vits.DINOHead(384, 65536, use_bn=False, norm_last_layer=True))
    teacher = utils.MultiCropWrapper(vits.vit_small(patch_size=16), vits.DINOHead(384, 65536, False))
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    ncrops = 10
    dino_loss = main_dino.DINOLoss(65536, ncrops, 0.04, 0.04, 0, 100)
    optimizer = torch.optim.AdamW(utils.get_params_groups(student))
    lr, wd, momentum, epoch = 0.0005 * BATCH / 256, 0.04, 0.996, 1

    g = torch.Generator().manual_seed(0)
    images = [torch.randn(BATCH, 3, 224, 224, generator=g) for _ in range(2)]
    images += [torch.randn(BATCH, 3, 96, 96, generator=g) for _ in range(ncrops - 2)]

    timer = PhaseTimer()
    for _ in range(steps + 1):
        timer.step()
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = lr
            if i == 0:
                group["weight_decay"] = wd
        with torch.no_grad():  # the teacher requires no grad: the same as the reference's graph-free forward
            teacher_output = teacher(images[:2])
        timer.mark("teacher")
        student_output = student(images)
        timer.mark("student")
        loss = dino_loss(student_output, teacher_output, epoch)
        value = loss.item()
        timer.mark("loss")
        optimizer.zero_grad()
        loss.backward()
        timer.mark("backward")
        utils.clip_gradients(student, 3.0)
        utils.cancel_gradients_last_layer(epoch, student, 1)
        optimizer.step()
        with torch.no_grad():
            for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                param_k.data.mul_(momentum).add_((1 - momentum) * param_q.detach().data)
        timer.mark("optimizer")
    timer.report("dino")
    print("dino_loss", value)
    dist.destroy_process_group()


def install_mae_shims():
    """models_mae.py targets timm 0.3.2 and numpy < 1.24: np.float (float64) is gone from numpy 2,
    and timm's Block no longer takes qk_scale (models_mae passes None, the default scale)."""
    import numpy as np
    if not hasattr(np, "float"):
        np.float = float
    import timm.models.vision_transformer as tvt

    class Block(tvt.Block):
        def __init__(self, *args, qk_scale=None, **kwargs):
            assert qk_scale is None
            super().__init__(*args, **kwargs)

    tvt.Block = Block


def mae(steps, repo):
    sys.path.insert(0, repo)
    install_mae_shims()
    import models_mae
    from timm.optim import param_groups_weight_decay

    model = models_mae.mae_vit_base_patch16(norm_pix_loss=True)
    model.train()
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, 0.05), lr=1.5e-4 * BATCH / 256,
                                  betas=(0.9, 0.95))
    imgs = torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    timer = PhaseTimer()
    for _ in range(steps + 1):
        timer.step()
        loss, _, _ = model(imgs, mask_ratio=0.75)
        value = loss.item()
        timer.mark("forward")
        loss.backward()
        timer.mark("backward")
        optimizer.step()
        optimizer.zero_grad()
        timer.mark("optimizer")
    timer.report("mae")
    print("mae_loss", value)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["dino", "mae"])
    parser.add_argument("steps", type=int)
    parser.add_argument("threads", type=int)
    parser.add_argument("--dino-repo", default=os.environ.get("DINO_REPO"))
    parser.add_argument("--mae-repo", default=os.environ.get("MAE_REPO"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    repo = reference_dir(args.kind, args.dino_repo if args.kind == "dino" else args.mae_repo, tmp)
    (dino if args.kind == "dino" else mae)(args.steps, repo)
    print(f"{args.kind}_peak_rss_mib", peak_rss_mib())
    print("torch_threads", torch.get_num_threads())


if __name__ == "__main__":
    main()
