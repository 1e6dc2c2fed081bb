#!/usr/bin/env python3
"""Fixtures for tests/ssl/dinov2_test.cpp: DINOv2's masks, losses and one complete training step.

Runs the reference repository's own modules, imported from --dinov2 (a checkout of
facebookresearch/dinov2): MaskingGenerator and collate_data_and_cast (dinov2/data), DINOLoss,
iBOTPatchLoss and KoLeoLoss (dinov2/loss), DINOHead (dinov2/layers), DinoVisionTransformer with
Block/MemEffAttention (dinov2/models, as vit_small builds it), get_params_groups_with_decay and
fuse_params_groups (dinov2/utils/param_groups.py). No pip package beyond torch and safetensors.

What is transcribed rather than imported, and why:
- SSLMetaArch.forward_backward (dinov2/train/ssl_meta_arch.py): the module asserts xFormers at
  import and wraps everything in FSDP. run_step() below follows it line by line, with two
  equivalent substitutions: the student backbone runs the global and the local crops in two calls
  (the reference's list call needs xFormers' nested blocks; attention is per sample, so the values
  are the same), and fmha.BlockDiagonalMask.from_tensor_list/split is torch.cat/split along dim 1
  (the head is applied per row).
- apply_optim_scheduler, the clip_grad_norm_ loop and update_teacher (dinov2/train/train.py,
  ssl_meta_arch.py): three-line loops, written out (torch.nn.utils.clip_grad_norm_ per student
  submodule stands for FSDP's, which computes the same global norm and coefficient).
- torch.distributed: a one-process gloo group is initialised, so the losses' all_reduce calls
  (iBOTPatchLoss.sinkhorn_knopp_teacher calls it unconditionally) are the identity.

Randomness: the masks' draws come from Python's `random`; a recording random.Random subclass
stands in for the module functions, so the fixture stores every random() and _randbelow(n) value
the reference consumed and the C++ test replays them (ssl::MaskDraws) to rebuild the masks.

Precision: weights and inputs are float32 values; the step runs in float64 (model.double()), so
the stored results are the reference's exact answer for those inputs, rounded to float32 where
the file would otherwise grow (parameters, gradients) and kept in float64 for the scalars. The
reference's Sinkhorn-Knopp casts to float32 even then, and so does histograd's by default.

Usage: python3 scripts/gen_dinov2_fixtures.py [--dinov2 /work/refs/dinov2] [--out tests/fixtures/dinov2]
"""
import argparse
import math
import os
import random
import sys
import tempfile
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file

parser = argparse.ArgumentParser()
parser.add_argument("--dinov2", default="/work/refs/dinov2")
parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "dinov2"))
args = parser.parse_args()
sys.path.insert(0, args.dinov2)
os.environ.setdefault("XFORMERS_DISABLED", "1")

from dinov2.data.collate import collate_data_and_cast  # noqa: E402
from dinov2.data.masking import MaskingGenerator  # noqa: E402
from dinov2.layers import DINOHead, MemEffAttention  # noqa: E402
from dinov2.layers.block import Block  # noqa: E402
from dinov2.loss import DINOLoss, iBOTPatchLoss, KoLeoLoss  # noqa: E402
from dinov2.models.vision_transformer import DinoVisionTransformer  # noqa: E402
from dinov2.utils.param_groups import fuse_params_groups, get_params_groups_with_decay  # noqa: E402

os.makedirs(args.out, exist_ok=True)
_store = tempfile.NamedTemporaryFile(delete=False)
dist.init_process_group("gloo", init_method="file://" + _store.name, rank=0, world_size=1)


class RecordingRandom(random.Random):
    """random.Random whose two primitives log what they return (uniform, randint and shuffle
    are built on them in CPython)."""

    def __init__(self, seed):
        self.uniforms, self.randbelow_values, self.randbelow_bounds = [], [], []
        super().__init__(seed)

    def random(self):
        value = super().random()
        self.uniforms.append(value)
        return value

    def _randbelow(self, n):
        value = self._randbelow_with_getrandbits(n)
        self.randbelow_values.append(value)
        self.randbelow_bounds.append(n)
        return value


def install(rng):
    for name in ("uniform", "randint", "shuffle", "random"):
        setattr(random, name, getattr(rng, name))


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def f64(t):
    return t.detach().to(torch.float64).contiguous()


def i64(values):
    return torch.tensor(list(values), dtype=torch.int64)


def collate_masks(seed, batch, grid, n_global=2):
    """collate_data_and_cast on dummy crops; returns its dict and the draws it consumed."""
    rng = RecordingRandom(seed)
    install(rng)
    n_tokens = grid * grid
    generator = MaskingGenerator(input_size=(grid, grid), max_num_patches=0.5 * grid * grid)
    samples = [({"global_crops": [torch.zeros(1)] * n_global, "local_crops": [torch.zeros(1)]}, ()) for _ in range(batch)]
    out = collate_data_and_cast(samples, mask_ratio_tuple=(0.1, 0.5), mask_probability=0.5, dtype=torch.float32,
                                n_tokens=n_tokens, mask_generator=generator)
    return out, rng


def mask_case_tensors(prefix, out, rng):
    return {
        prefix + "masks": out["collated_masks"].to(torch.uint8).contiguous(),
        prefix + "mask_indices": out["mask_indices_list"].to(torch.int64).contiguous(),
        prefix + "masks_weight": out["masks_weight"].to(torch.float32).contiguous(),
        prefix + "upperbound": i64([out["upperbound"]]),
        prefix + "draws_random": torch.tensor(rng.uniforms, dtype=torch.float64),
        prefix + "draws_randbelow": i64(rng.randbelow_values),
        prefix + "draws_randbelow_bounds": i64(rng.randbelow_bounds),
    }


# ---------------------------------------------------------------- masks
def masking_fixtures():
    tensors = {}
    cases = []
    # DINOv2's own grid (224 / 16 = 14) and the tiny step's (32 / 8 = 4), several seeds each.
    for grid, batch, seeds in ((14, 8, range(6)), (4, 4, range(4)), (16, 4, range(3))):
        for seed in seeds:
            name = f"collate_g{grid}_b{batch}_s{seed}_"
            out, rng = collate_masks(1000 * grid + seed, batch, grid)
            tensors.update(mask_case_tensors(name, out, rng))
            cases.append(name)
    # The generator alone with explicit targets (BEiT's defaults: max = target).
    for i, (grid, target, max_patches) in enumerate(((14, 75, None), (14, 98, 98.0), (8, 20, 10.0), (6, 3, 18.0))):
        rng = RecordingRandom(77 + i)
        install(rng)
        gen = MaskingGenerator(input_size=(grid, grid), num_masking_patches=target, max_num_patches=max_patches)
        mask = gen(target)
        name = f"generator_{i}_"
        tensors[name + "mask"] = torch.from_numpy(mask.astype("uint8")).flatten().contiguous()
        tensors[name + "args"] = torch.tensor([grid, target, -1 if max_patches is None else max_patches],
                                              dtype=torch.float64)
        tensors[name + "draws_random"] = torch.tensor(rng.uniforms, dtype=torch.float64)
        tensors[name + "draws_randbelow"] = i64(rng.randbelow_values)
    # torch.linspace in float32 for the ratio table.
    for n in range(1, 33):
        tensors[f"linspace_{n}"] = torch.linspace(0.1, 0.5, n + 1)
    save_file(tensors, os.path.join(args.out, "masking.safetensors"))
    return cases


# ---------------------------------------------------------------- losses on their own
def component_fixtures():
    g = torch.Generator().manual_seed(5)
    t = {}
    # Sinkhorn-Knopp, DINO (B = rows) and iBOT (B = masked-token count).
    scores = torch.randn(6, 10, generator=g, dtype=torch.float64) * 0.3
    t["sk_scores"] = scores
    t["sk_dino"] = f64(DINOLoss(10).sinkhorn_knopp_teacher(scores, teacher_temp=0.07))
    t["sk_ibot"] = f64(iBOTPatchLoss(10).sinkhorn_knopp_teacher(scores, teacher_temp=0.05,
                                                                n_masked_patches_tensor=torch.tensor([6])))
    # softmax centring and the centre EMA.
    dino = DINOLoss(10).double()
    dino.center = torch.randn(1, 10, generator=g, dtype=torch.float64) * 0.1
    t["center_before"] = f64(dino.center)
    t["center_probs"] = f64(dino.softmax_center_teacher(scores, teacher_temp=0.04))
    dino.update_center(scores)
    dino.apply_center_update()
    t["center_after"] = f64(dino.center)
    # DINO cross-entropy: 3 student chunks x 2 teacher targets.
    student = torch.randn(3, 4, 10, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.softmax(torch.randn(2, 4, 10, generator=g, dtype=torch.float64) / 0.3, -1)
    loss = DINOLoss(10)(list(student.unbind(0)), teacher)
    loss.backward()
    t["ce_student"], t["ce_teacher"], t["ce_loss"], t["ce_grad"] = f64(student), f64(teacher), f64(loss), f64(student.grad)
    # iBOT forward_masked: 3 images of 5 tokens, masks as a collate would give them.
    masks = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    m = int(masks.sum())
    weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    s = torch.randn(m, 10, generator=g, dtype=torch.float64, requires_grad=True)
    tt = torch.softmax(torch.randn(m, 10, generator=g, dtype=torch.float64), -1)
    loss = iBOTPatchLoss(10).forward_masked(s, tt, student_masks_flat=masks, n_masked_patches=m, masks_weight=weight)
    loss.backward()
    t["ibot_student"], t["ibot_teacher"], t["ibot_loss"], t["ibot_grad"] = f64(s), f64(tt), f64(loss), f64(s.grad)
    t["ibot_masks_weight"] = f32(weight)
    # KoLeo value and gradient.
    x = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    loss = KoLeoLoss()(x)
    loss.backward()
    t["koleo_x"], t["koleo_loss"], t["koleo_grad"] = f64(x), f64(loss), f64(x.grad)
    save_file(t, os.path.join(args.out, "components.safetensors"))


# ---------------------------------------------------------------- one training step
EMBED, DEPTH, HEADS, PATCH, REGISTERS = 32, 2, 2, 8, 1
GLOBAL_SIZE, LOCAL_SIZE, BATCH, N_LOCAL = 32, 16, 4, 2
HEAD = dict(nlayers=3, hidden_dim=48, bottleneck_dim=16)
DINO_PROTOTYPES, IBOT_PROTOTYPES = 64, 40


def build_backbone():
    # vit_small's construction with the tiny sizes (vit_small fixes embed_dim, so it is spelled out).
    return DinoVisionTransformer(img_size=GLOBAL_SIZE, patch_size=PATCH, embed_dim=EMBED, depth=DEPTH,
                                 num_heads=HEADS, mlp_ratio=4, block_fn=partial(Block, attn_class=MemEffAttention),
                                 num_register_tokens=REGISTERS, init_values=1e-5, ffn_layer="mlp", block_chunks=0,
                                 qkv_bias=True, proj_bias=True, ffn_bias=True, drop_path_rate=0.0,
                                 drop_path_uniform=True, interpolate_offset=0.1, interpolate_antialias=False)


def build_network(separate_head):
    net = {"backbone": build_backbone(),
           "dino_head": DINOHead(in_dim=EMBED, out_dim=DINO_PROTOTYPES, **HEAD)}
    if separate_head:
        net["ibot_head"] = DINOHead(in_dim=EMBED, out_dim=IBOT_PROTOTYPES, **HEAD)
    return torch.nn.ModuleDict(net)


def randomise(net, g, base=None):
    """Weights that make every part of the network matter: fan-in scaled matrices, LayerScale
    gammas, norm affines and tokens away from their init values; float32-representable."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if base is not None:
                p.copy_(base[name] + 0.05 * torch.randn(p.shape, generator=g))
            elif "gamma" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2 and "token" not in name and "pos_embed" not in name and "weight_g" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            p.copy_(p.float())


def run_step(student, teacher, batch, centering, separate_head, hp, dino_center=None, ibot_center=None):
    """One iteration of do_train: schedules applied, forward_backward, clip, AdamW, EMA."""
    dino_loss = DINOLoss(DINO_PROTOTYPES).double()
    ibot_patch_loss = iBOTPatchLoss(IBOT_PROTOTYPES if separate_head else DINO_PROTOTYPES).double()
    koleo_loss_fn = KoLeoLoss()
    if dino_center is not None:
        dino_loss.center = dino_center.clone()
        ibot_patch_loss.center = ibot_center.clone()

    params_groups = []
    for m in student.values():
        fused = fuse_params_groups(get_params_groups_with_decay(model=m, lr_decay_rate=0.9, patch_embed_lr_mult=0.2))
        for grp in fused:
            grp["foreach"] = True
        params_groups += fused
    optimizer = torch.optim.AdamW(params_groups, betas=(0.9, 0.999))
    for param_group in optimizer.param_groups:  # apply_optim_scheduler
        param_group["weight_decay"] = hp["wd"] * param_group["wd_multiplier"]
        param_group["lr"] = (hp["last_layer_lr"] if param_group["is_last_layer"] else hp["lr"]) * param_group["lr_multiplier"]
    optimizer.zero_grad(set_to_none=True)

    # ---- SSLMetaArch.forward_backward, line by line
    teacher_temp = hp["teacher_temp"]
    n_global_crops = 2
    n_local_crops = N_LOCAL
    global_crops = batch["collated_global_crops"]
    local_crops = batch["collated_local_crops"]
    masks = batch["collated_masks"]
    mask_indices_list = batch["mask_indices_list"]
    n_masked_patches_tensor = batch["n_masked_patches"]
    n_masked_patches = mask_indices_list.shape[0]
    upperbound = batch["upperbound"]
    masks_weight = batch["masks_weight"]
    n_local_crops_loss_terms = max(n_local_crops * n_global_crops, 1)
    n_global_crops_loss_terms = (n_global_crops - 1) * n_global_crops
    do_dino = do_ibot = True
    ibot_loss_scale = 1.0 / n_global_crops
    saved = {}

    @torch.no_grad()
    def get_teacher_output():
        x, n_global_crops_teacher = global_crops, n_global_crops
        teacher_backbone_output_dict = teacher.backbone(x, is_training=True)
        teacher_cls_tokens = teacher_backbone_output_dict["x_norm_clstoken"]
        teacher_cls_tokens = teacher_cls_tokens.chunk(n_global_crops_teacher)
        teacher_cls_tokens = torch.cat((teacher_cls_tokens[1], teacher_cls_tokens[0]))
        ibot_teacher_patch_tokens = teacher_backbone_output_dict["x_norm_patchtokens"]
        _dim = ibot_teacher_patch_tokens.shape[-1]
        n_cls_tokens = teacher_cls_tokens.shape[0]
        if do_ibot and not separate_head:
            buffer_tensor_teacher = ibot_teacher_patch_tokens.new_zeros(upperbound + n_cls_tokens, _dim)
            buffer_tensor_teacher[:n_cls_tokens].copy_(teacher_cls_tokens)
            torch.index_select(ibot_teacher_patch_tokens.flatten(0, 1), dim=0, index=mask_indices_list,
                               out=buffer_tensor_teacher[n_cls_tokens: n_cls_tokens + n_masked_patches])
            tokens_after_head = teacher.dino_head(buffer_tensor_teacher)
            teacher_cls_tokens_after_head = tokens_after_head[:n_cls_tokens]
            masked_teacher_patch_tokens_after_head = tokens_after_head[n_cls_tokens: n_cls_tokens + n_masked_patches]
        else:
            buffer_tensor_teacher = ibot_teacher_patch_tokens.new_zeros(upperbound, _dim)
            torch.index_select(ibot_teacher_patch_tokens.flatten(0, 1), dim=0, index=mask_indices_list,
                               out=buffer_tensor_teacher[:n_masked_patches])
            teacher_cls_tokens_after_head = teacher.dino_head(teacher_cls_tokens)
            masked_teacher_patch_tokens_after_head = teacher.ibot_head(buffer_tensor_teacher)[:n_masked_patches]
        saved["teacher_cls_after_head"] = teacher_cls_tokens_after_head.clone()
        saved["teacher_masked_after_head"] = masked_teacher_patch_tokens_after_head.clone()
        if centering == "centering":
            teacher_dino_softmaxed_centered_list = dino_loss.softmax_center_teacher(
                teacher_cls_tokens_after_head, teacher_temp=teacher_temp
            ).view(n_global_crops_teacher, -1, *teacher_cls_tokens_after_head.shape[1:])
            dino_loss.update_center(teacher_cls_tokens_after_head)
            masked_teacher_patch_tokens_after_head = masked_teacher_patch_tokens_after_head.unsqueeze(0)
            masked_teacher_ibot_softmaxed_centered = ibot_patch_loss.softmax_center_teacher(
                masked_teacher_patch_tokens_after_head[:, :n_masked_patches], teacher_temp=teacher_temp)
            masked_teacher_ibot_softmaxed_centered = masked_teacher_ibot_softmaxed_centered.squeeze(0)
            ibot_patch_loss.update_center(masked_teacher_patch_tokens_after_head[:n_masked_patches])
        else:
            teacher_dino_softmaxed_centered_list = dino_loss.sinkhorn_knopp_teacher(
                teacher_cls_tokens_after_head, teacher_temp=teacher_temp
            ).view(n_global_crops_teacher, -1, *teacher_cls_tokens_after_head.shape[1:])
            masked_teacher_ibot_softmaxed_centered = ibot_patch_loss.sinkhorn_knopp_teacher(
                masked_teacher_patch_tokens_after_head, teacher_temp=teacher_temp,
                n_masked_patches_tensor=n_masked_patches_tensor)
        return teacher_dino_softmaxed_centered_list, masked_teacher_ibot_softmaxed_centered

    teacher_dino_softmaxed_centered_list, masked_teacher_ibot_softmaxed_centered = get_teacher_output()
    saved["teacher_dino_targets"] = teacher_dino_softmaxed_centered_list
    saved["teacher_ibot_targets"] = masked_teacher_ibot_softmaxed_centered

    loss_dict = {}
    loss_accumulator = 0
    # the reference's single list call [global_crops, local_crops] with masks [masks, None]
    student_global_backbone_output_dict = student.backbone(global_crops, masks=masks, is_training=True)
    student_local_backbone_output_dict = student.backbone(local_crops, masks=None, is_training=True)
    inputs_for_student_head_list = []
    student_local_cls_tokens = student_local_backbone_output_dict["x_norm_clstoken"]
    inputs_for_student_head_list.append(student_local_cls_tokens.unsqueeze(0))
    student_global_cls_tokens = student_global_backbone_output_dict["x_norm_clstoken"]
    inputs_for_student_head_list.append(student_global_cls_tokens.unsqueeze(0))
    _dim = student_global_backbone_output_dict["x_norm_clstoken"].shape[-1]
    ibot_student_patch_tokens = student_global_backbone_output_dict["x_norm_patchtokens"]
    buffer_tensor_patch_tokens = ibot_student_patch_tokens.new_zeros(upperbound, _dim)
    buffer_tensor_patch_tokens[:n_masked_patches].copy_(
        torch.index_select(ibot_student_patch_tokens.flatten(0, 1), dim=0, index=mask_indices_list))
    if not separate_head:
        inputs_for_student_head_list.append(buffer_tensor_patch_tokens.unsqueeze(0))
    else:
        student_global_masked_patch_tokens_after_head = student.ibot_head(buffer_tensor_patch_tokens)[:n_masked_patches]
    # fmha.BlockDiagonalMask.from_tensor_list(...) / _attn_bias.split(...): cat and split along dim 1
    sizes = [t.shape[1] for t in inputs_for_student_head_list]
    cat_inputs = torch.cat(inputs_for_student_head_list, dim=1)
    outputs_list = list(torch.split(student.dino_head(cat_inputs), sizes, dim=1))
    student_local_cls_tokens_after_head = outputs_list.pop(0).squeeze(0)
    student_global_cls_tokens_after_head = outputs_list.pop(0).squeeze(0)
    if not separate_head:
        student_global_masked_patch_tokens_after_head = outputs_list.pop(0).squeeze(0)[:n_masked_patches]

    dino_local_crops_loss = dino_loss(
        student_output_list=student_local_cls_tokens_after_head.chunk(n_local_crops),
        teacher_out_softmaxed_centered_list=teacher_dino_softmaxed_centered_list,
    ) / (n_global_crops_loss_terms + n_local_crops_loss_terms)
    loss_dict["dino_local_crops_loss"] = dino_local_crops_loss
    loss_accumulator += 1.0 * dino_local_crops_loss
    loss_scales = 2
    dino_global_crops_loss = (
        dino_loss(student_output_list=[student_global_cls_tokens_after_head],
                  teacher_out_softmaxed_centered_list=[teacher_dino_softmaxed_centered_list.flatten(0, 1)])
        * loss_scales / (n_global_crops_loss_terms + n_local_crops_loss_terms))
    loss_dict["dino_global_crops_loss"] = dino_global_crops_loss
    loss_accumulator += 1.0 * dino_global_crops_loss
    student_cls_tokens = student_global_cls_tokens
    koleo_loss = 0.1 * sum(koleo_loss_fn(p) for p in student_cls_tokens.chunk(2))
    loss_accumulator += koleo_loss
    loss_dict["koleo_loss"] = koleo_loss / loss_scales
    ibot_patch_loss_value = (
        ibot_patch_loss.forward_masked(student_global_masked_patch_tokens_after_head,
                                       masked_teacher_ibot_softmaxed_centered, student_masks_flat=masks,
                                       n_masked_patches=n_masked_patches, masks_weight=masks_weight)
        * loss_scales * ibot_loss_scale)
    loss_dict["ibot_loss"] = ibot_patch_loss_value / 2
    loss_accumulator += 1.0 * ibot_patch_loss_value
    loss_accumulator.backward()
    # ---- end of forward_backward

    grads = {f"{k}.{n}": p.grad.clone() for k in student.keys() for n, p in student[k].named_parameters()}
    norms = []
    for v in student.values():  # cfg.optim.clip_grad per student submodule
        norms.append(float(torch.nn.utils.clip_grad_norm_(v.parameters(), hp["clip_grad"])))
    optimizer.step()
    with torch.no_grad():  # update_teacher(mom)
        student_param_list, teacher_param_list = [], []
        for k in student.keys():
            student_param_list += list(student[k].parameters())
            teacher_param_list += list(teacher[k].parameters())
        torch._foreach_mul_(teacher_param_list, hp["momentum"])
        torch._foreach_add_(teacher_param_list, student_param_list, alpha=1 - hp["momentum"])
    dino_loss.apply_center_update()
    ibot_patch_loss.apply_center_update()

    out = {
        "loss_total": f64(loss_accumulator.reshape(1)),
        "loss_dino_local": f64(loss_dict["dino_local_crops_loss"].reshape(1)),
        "loss_dino_global": f64(loss_dict["dino_global_crops_loss"].reshape(1)),
        "loss_koleo_display": f64(loss_dict["koleo_loss"].reshape(1)),
        "loss_ibot_display": f64(loss_dict["ibot_loss"].reshape(1)),
        "grad_norms": torch.tensor(norms, dtype=torch.float64),
        "teacher_dino_targets": f64(saved["teacher_dino_targets"]),
        "teacher_ibot_targets": f64(saved["teacher_ibot_targets"]),
        "teacher_cls_after_head": f64(saved["teacher_cls_after_head"]),
        "teacher_masked_after_head": f64(saved["teacher_masked_after_head"]),
        "dino_center_after": f64(dino_loss.center),
        "ibot_center_after": f64(ibot_patch_loss.center),
    }
    for name, g in grads.items():
        out["grad." + name] = f32(g)
    for k in student.keys():
        for n, p in student[k].named_parameters():
            out[f"student_after.{k}.{n}"] = f32(p)
        for n, p in teacher[k].named_parameters():
            out[f"teacher_after.{k}.{n}"] = f32(p)
    return out


def step_fixtures():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(11)
    student = build_network(True)
    randomise(student, g)
    teacher = build_network(True)
    base = {n: p.detach().clone() for n, p in student.named_parameters()}
    randomise(teacher, g, base)
    init = {}
    for n, p in student.named_parameters():
        init["student." + n] = f32(p)
    for n, p in teacher.named_parameters():
        init["teacher." + n] = f32(p)

    # Crops and masks through collate_data_and_cast, crop-major as the reference stacks them.
    samples = []
    for _ in range(BATCH):
        crops = {"global_crops": [torch.randn(3, GLOBAL_SIZE, GLOBAL_SIZE, generator=g) for _ in range(2)],
                 "local_crops": [torch.randn(3, LOCAL_SIZE, LOCAL_SIZE, generator=g) for _ in range(N_LOCAL)]}
        samples.append((crops, ()))
    rng = RecordingRandom(2024)
    install(rng)
    grid = GLOBAL_SIZE // PATCH
    mask_generator = MaskingGenerator(input_size=(grid, grid),
                                      max_num_patches=0.5 * GLOBAL_SIZE // PATCH * GLOBAL_SIZE // PATCH)
    batch = collate_data_and_cast(samples, mask_ratio_tuple=(0.1, 0.5), mask_probability=0.5, dtype=torch.float64,
                                  n_tokens=grid * grid, mask_generator=mask_generator)
    init["global_crops"] = f32(batch["collated_global_crops"])
    init["local_crops"] = f32(batch["collated_local_crops"])
    init.update(mask_case_tensors("step_", batch, rng))
    init["dino_center_before"] = f64(torch.randn(1, DINO_PROTOTYPES, generator=g, dtype=torch.float64) * 0.2)
    init["ibot_center_before"] = f64(torch.randn(1, 1, DINO_PROTOTYPES, generator=g, dtype=torch.float64) * 0.2)
    save_file(init, os.path.join(args.out, "step_init.safetensors"))
    print("masked per image:", batch["collated_masks"].sum(-1).tolist(), "upperbound", batch["upperbound"])

    hp = dict(lr=2e-3, last_layer_lr=1e-3, wd=0.04, momentum=0.992, teacher_temp=0.06, clip_grad=3.0)

    def fresh(separate_head, which):
        net = build_network(separate_head).double()
        sd = {n[len(which) + 1:]: v.double() for n, v in init.items() if n.startswith(which + ".")}
        net.load_state_dict({k: v for k, v in sd.items() if separate_head or not k.startswith("ibot_head.")})
        return net

    for centering, separate in (("sinkhorn_knopp", True), ("centering", False)):
        s, t = fresh(separate, "student"), fresh(separate, "teacher")
        kwargs = {}
        if centering == "centering":
            kwargs = dict(dino_center=init["dino_center_before"], ibot_center=init["ibot_center_before"])
        out = run_step(s, t, batch, centering, separate, hp, **kwargs)
        out["hyper"] = torch.tensor([hp["lr"], hp["last_layer_lr"], hp["wd"], hp["momentum"], hp["teacher_temp"],
                                     hp["clip_grad"]], dtype=torch.float64)
        name = "step_sk_separate" if separate else "step_centering_shared"
        save_file(out, os.path.join(args.out, name + ".safetensors"))
        print(name, {k: float(v[0]) for k, v in out.items() if k.startswith("loss_")}, "grad norms",
              out["grad_norms"].tolist())


cases = masking_fixtures()
component_fixtures()
step_fixtures()
total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
print(f"wrote {len(os.listdir(args.out))} files, {total / 1e6:.2f} MB to {args.out}")
dist.destroy_process_group()
if os.path.exists(_store.name):
    os.unlink(_store.name)
for f in os.listdir(args.out):
    os.chmod(os.path.join(args.out, f), 0o644)
