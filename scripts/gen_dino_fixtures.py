"""Parity fixtures for one DINO training step (tests/ssl/dino_test.cpp).

The reference is facebookresearch/dino itself, imported from a checkout (nothing is copied):
vision_transformer.py (VisionTransformer, DINOHead), utils.py (MultiCropWrapper,
get_params_groups, cosine_scheduler, clip_gradients, cancel_gradients_last_layer) and
main_dino.py (DINOLoss, train_one_epoch). The step is main_dino.train_one_epoch itself, run on a
one-batch loader in a single-process gloo group with the student wrapped in a real CPU
DistributedDataParallel, exactly as train_dino builds it. Only what needs a GPU is patched:
Tensor.cuda returns the tensor, cuda.synchronize is a no-op, and the logger's per-meter
all-reduce (which allocates on 'cuda') is skipped; none of them touches the numbers.

Everything runs in float64 so the C++ check can be tight (the model is tiny: ViT embed 16,
depth 2, heads 2, patch 8 at 32 px, head 16 -> 32 -> 32 -> 16 -> 64 prototypes). Each case
file holds: the initial student weights (before/*; the teacher starts as their copy), the
crops, the teacher and student outputs, the loss, every raw gradient (grad/*), the
per-parameter norms clip_gradients returned (in named_parameters order, names in metadata),
the centre before and after, the updated student (student_after/*) and teacher
(teacher_after/*), and the schedule values used, in __metadata__.

Cases:
  case0  norm_last_layer=True (g frozen), epoch 0 with freeze_last_layer=1 (last layer's
         gradients cancelled), centre starting at 0 as in training, clip 3.0, 3 local crops.
  case1  norm_last_layer=False (g trained, in the decayed group), epoch 1 (warm-up teacher
         temperature, last layer updated), a nonzero centre (as after earlier steps), clip 0.05
         so that some parameters are clipped and some are not, 2 local crops.

Run: python3 scripts/gen_dino_fixtures.py [--dino-dir /work/refs/dino] [--main-dino PATH]
  --dino-dir holds utils.py and vision_transformer.py; --main-dino is main_dino.py (default:
  <dino-dir>/main_dino.py, else extracted from the fetched mirror of facebookresearch/dino).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import warnings
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "dino")
MIRROR = "/work/.mirror/facebookresearch+dino/repo"

MODEL = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=4, out_dim=64,
             hidden_dim=32, bottleneck_dim=16, nlayers=3, batch=2, global_size=32, local_size=16)

CASES = {
    "case0": dict(norm_last_layer=True, epoch=0, iteration_in_epoch=1, local_crops=3, clip_grad=3.0,
                  nonzero_center=False, seed=0),
    "case1": dict(norm_last_layer=False, epoch=1, iteration_in_epoch=1, local_crops=2, clip_grad=0.05,
                  nonzero_center=True, seed=1),
}
# main_dino's arguments that the schedules and the loss read (small epochs so the schedules move).
ARGS = dict(lr=0.1, min_lr=1e-4, epochs=4, warmup_epochs=1, niter_per_ep=3, weight_decay=0.04,
            weight_decay_end=0.4, momentum_teacher=0.9, warmup_teacher_temp=0.04, teacher_temp=0.07,
            warmup_teacher_temp_epochs=3, freeze_last_layer=1)


def import_reference(dino_dir, main_dino_path):
    sys.path.insert(0, dino_dir)
    spec = importlib.util.spec_from_file_location("main_dino", main_dino_path)
    main_dino = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main_dino)
    import utils
    import vision_transformer as vits
    return main_dino, utils, vits


class OneBatchLoader:
    """Yields one batch but reports niter_per_ep batches, so train_one_epoch's global iteration
    index (len(loader) * epoch + it) is that of the chosen point of the schedules."""

    def __init__(self, images, niter_per_ep):
        self.images, self.niter = images, niter_per_ep

    def __len__(self):
        return self.niter

    def __iter__(self):
        # train_one_epoch enumerates from 0; the case's iteration index inside the epoch is
        # reached by offsetting the schedules instead (see run_case).
        yield self.images, torch.zeros(self.images[0].shape[0])


def run_case(name, case, main_dino, utils, vits):
    torch.manual_seed(case["seed"])
    m = MODEL
    ncrops = 2 + case["local_crops"]
    student = vits.VisionTransformer(img_size=[m["img_size"]], patch_size=m["patch_size"], embed_dim=m["embed_dim"],
                                     depth=m["depth"], num_heads=m["num_heads"], mlp_ratio=m["mlp_ratio"],
                                     qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                     drop_path_rate=0.0)
    teacher = vits.VisionTransformer(img_size=[m["img_size"]], patch_size=m["patch_size"], embed_dim=m["embed_dim"],
                                     depth=m["depth"], num_heads=m["num_heads"], mlp_ratio=m["mlp_ratio"],
                                     qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    head_kw = dict(nlayers=m["nlayers"], hidden_dim=m["hidden_dim"], bottleneck_dim=m["bottleneck_dim"])
    student = utils.MultiCropWrapper(student, vits.DINOHead(m["embed_dim"], m["out_dim"], use_bn=False,
                                                            norm_last_layer=case["norm_last_layer"], **head_kw))
    teacher = utils.MultiCropWrapper(teacher, vits.DINOHead(m["embed_dim"], m["out_dim"], False, **head_kw))
    student, teacher = student.double(), teacher.double()
    # The reference's init leaves pos_embed/cls_token at trunc_normal(.02) and LayerNorm at 1/0;
    # perturb the norms and biases so a swapped or ignored one shows in the step.
    with torch.no_grad():
        for pname, p in student.named_parameters():
            if pname.endswith(".bias") or (p.dim() == 1):
                p.add_(0.05 * torch.randn_like(p))
    student = torch.nn.parallel.DistributedDataParallel(student)
    teacher_without_ddp = teacher
    teacher_without_ddp.load_state_dict(student.module.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False

    dino_loss = main_dino.DINOLoss(m["out_dim"], ncrops, ARGS["warmup_teacher_temp"], ARGS["teacher_temp"],
                                   ARGS["warmup_teacher_temp_epochs"], ARGS["epochs"]).double()
    if case["nonzero_center"]:
        dino_loss.center = 0.3 * torch.randn(1, m["out_dim"], dtype=torch.float64)
    center_before = dino_loss.center.clone()

    params_groups = utils.get_params_groups(student)
    optimizer = torch.optim.AdamW(params_groups)

    niter = ARGS["niter_per_ep"]
    lr_schedule = utils.cosine_scheduler(ARGS["lr"] * (m["batch"] * utils.get_world_size()) / 256., ARGS["min_lr"],
                                         ARGS["epochs"], niter, warmup_epochs=ARGS["warmup_epochs"])
    wd_schedule = utils.cosine_scheduler(ARGS["weight_decay"], ARGS["weight_decay_end"], ARGS["epochs"], niter)
    momentum_schedule = utils.cosine_scheduler(ARGS["momentum_teacher"], 1, ARGS["epochs"], niter)
    global_it = niter * case["epoch"] + case["iteration_in_epoch"]
    # train_one_epoch runs its first batch at global iteration niter * epoch; shifting the
    # schedules by iteration_in_epoch makes that batch read the values of global_it.
    shift = case["iteration_in_epoch"]
    lr_s, wd_s, mom_s = lr_schedule[shift:], wd_schedule[shift:], momentum_schedule[shift:]

    g = torch.Generator().manual_seed(100 + case["seed"])
    crops = [torch.randn(m["batch"], 3, m["global_size"], m["global_size"], generator=g, dtype=torch.float64)
             for _ in range(2)]
    crops += [torch.randn(m["batch"], 3, m["local_size"], m["local_size"], generator=g, dtype=torch.float64)
              for _ in range(case["local_crops"])]

    before = {k: v.detach().clone() for k, v in student.module.state_dict().items()}

    record = {}
    outputs = {}
    teacher.register_forward_hook(lambda mod, inp, out: outputs.__setitem__("teacher", out.detach().clone()))
    student.module.register_forward_hook(lambda mod, inp, out: outputs.__setitem__("student", out.detach().clone()))
    real_forward = dino_loss.forward

    def loss_forward(s, t, epoch):
        loss = real_forward(s, t, epoch)
        record["loss"] = loss.detach().clone()
        return loss
    dino_loss.forward = loss_forward
    real_clip = utils.clip_gradients

    def clip_and_record(model, clip):
        record["grads"] = {n[len("module."):]: p.grad.detach().clone() for n, p in model.named_parameters()
                           if p.grad is not None}
        record["clip_names"] = [n[len("module."):] for n, p in model.named_parameters() if p.grad is not None]
        norms = real_clip(model, clip)
        record["norms"] = norms
        return norms
    utils.clip_gradients = clip_and_record

    class Args:
        epochs = ARGS["epochs"]
        clip_grad = case["clip_grad"]
        freeze_last_layer = ARGS["freeze_last_layer"]

    loader = OneBatchLoader(crops, niter)
    main_dino.train_one_epoch(student, teacher, teacher_without_ddp, dino_loss, loader, optimizer, lr_s, wd_s, mom_s,
                              case["epoch"], None, Args)
    utils.clip_gradients = real_clip

    tensors = {}
    for k, v in before.items():
        tensors["before/" + k] = v
    for i, c in enumerate(crops):
        tensors[f"crop/{i}"] = c
    tensors["teacher_output"] = outputs["teacher"]
    tensors["student_output"] = outputs["student"]
    tensors["loss"] = record["loss"].reshape(1)
    for k, v in record["grads"].items():
        tensors["grad/" + k] = v
    tensors["clip_norms"] = torch.tensor(record["norms"], dtype=torch.float64)
    tensors["center_before"] = center_before
    tensors["center_after"] = dino_loss.center.detach().clone()
    for k, v in student.module.state_dict().items():
        tensors["student_after/" + k] = v.detach().clone()
    for k, v in teacher_without_ddp.state_dict().items():
        tensors["teacher_after/" + k] = v.detach().clone()
    tensors = {k: v.contiguous() for k, v in tensors.items()}

    meta = dict(MODEL)
    meta.update(ARGS)
    meta.update(dict(norm_last_layer=case["norm_last_layer"], epoch=case["epoch"], global_iteration=global_it,
                     local_crops=case["local_crops"], clip_grad=case["clip_grad"],
                     lr_value=float(lr_schedule[global_it]), wd_value=float(wd_schedule[global_it]),
                     momentum_value=float(momentum_schedule[global_it]),
                     teacher_temp_value=float(dino_loss.teacher_temp_schedule[case["epoch"]]),
                     clip_names=record["clip_names"],
                     decay_names=[n[len("module."):] for n, p in student.named_parameters()
                                  if p.requires_grad and not (n.endswith(".bias") or p.dim() == 1)]))
    metadata = {k: json.dumps(v) for k, v in meta.items()}
    path = os.path.join(OUT, name + ".safetensors")
    save_file(tensors, path, metadata=metadata)
    clipped = sum(1 for n in record["norms"] if case["clip_grad"] / (n + 1e-6) < 1)
    print(f"{name}: loss {record['loss'].item():.10f}, {len(record['grads'])} grads, {clipped} clipped, "
          f"lr {meta['lr_value']:.6g} wd {meta['wd_value']:.6g} m {meta['momentum_value']:.6g} "
          f"tt {meta['teacher_temp_value']:.6g} -> {path} ({os.path.getsize(path)} bytes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dino-dir", default="/work/refs/dino")
    parser.add_argument("--main-dino", default=None)
    args = parser.parse_args()
    main_path = args.main_dino or os.path.join(args.dino_dir, "main_dino.py")
    tmp = tempfile.mkdtemp()
    if not os.path.exists(main_path):
        main_path = os.path.join(tmp, "main_dino.py")
        with open(main_path, "wb") as f:
            f.write(subprocess.check_output(["git", "--git-dir", MIRROR, "show", "HEAD:main_dino.py"]))
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    # A one-process group: DINOLoss.update_center all-reduces, and DDP needs a group.
    dist.init_process_group("gloo", init_method="file://" + os.path.join(tmp, "pg"), rank=0, world_size=1)
    main_dino, utils, vits = import_reference(args.dino_dir, main_path)
    # What needs a GPU in train_one_epoch, made inert on the CPU (the numbers are untouched).
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None
    utils.SmoothedValue.synchronize_between_processes = lambda self: None
    os.makedirs(OUT, exist_ok=True)
    for name, case in CASES.items():
        run_case(name, case, main_dino, utils, vits)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
