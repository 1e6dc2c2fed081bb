"""The PyTorch side of benchmarks/cuda/dino_step_bench.cpp: one DINO training step on the GPU with
facebookresearch/dino's own code (vision_transformer.vit_base + DINOHead, utils.MultiCropWrapper,
get_params_groups, clip_gradients, main_dino.DINOLoss), as main_dino.train_one_epoch runs it:
teacher(crops[:2]) and student(crops) and the loss under torch.autocast (bf16 mode; DINO itself
uses fp16 with a GradScaler, which bf16 does not need), zero_grad, backward, clip_gradients(3.0),
AdamW step, the EMA loop. ViT-B/16 (student drop_path 0.1), DINOHead(768, 65536), 2x224 + 8x96
crops. Modes fp32 (TF32 off), tf32 (matmul and cuDNN TF32 on), bf16 (autocast).

  python3 torch_dino_step.py [steps=5] [batch=32] [modes=fp32,tf32,bf16]

The reference files come from $DINO_REPO or .devdeps/dino (copied from the fetched mirror; the
GPU machine has no network). Prints the same RESULT lines as the C++ side.
"""
import os
import statistics
import sys
import tempfile
import time

import torch


def run(mode, steps, batch, main_dino, utils, vits):
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    student = utils.MultiCropWrapper(vits.vit_base(patch_size=16, drop_path_rate=0.1),
                                     vits.DINOHead(768, 65536, use_bn=False, norm_last_layer=True)).cuda()
    teacher = utils.MultiCropWrapper(vits.vit_base(patch_size=16), vits.DINOHead(768, 65536, False)).cuda()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    dino_loss = main_dino.DINOLoss(65536, 10, 0.04, 0.04, 0, 100).cuda()
    optimizer = torch.optim.AdamW(utils.get_params_groups(student))
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = 0.0005 * batch / 256
        if i == 0:
            group["weight_decay"] = 0.04
    gen = torch.Generator().manual_seed(0)
    crops = [torch.randn(batch, 3, 224, 224, generator=gen).cuda() for _ in range(2)]
    crops += [torch.randn(batch, 3, 96, 96, generator=gen).cuda() for _ in range(8)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    value = 0.0
    for s in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16"):
            teacher_output = teacher(crops[:2])
            student_output = student(crops)
            loss = dino_loss(student_output, teacher_output, 1)
        optimizer.zero_grad()
        loss.backward()
        utils.clip_gradients(student, 3.0)
        utils.cancel_gradients_last_layer(1, student, 1)
        optimizer.step()
        with torch.no_grad():
            m = 0.996
            for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
        value = loss.item()
        if s >= 2:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    print(f"RESULT dino_step mode={mode} batch={batch} seconds={step:.5f} images_per_s={batch / step:.1f} "
          f"peak_mib={torch.cuda.max_memory_allocated() / 2**20:.0f} loss={value:.5f}", flush=True)


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    modes = sys.argv[3] if len(sys.argv) > 3 else "fp32,tf32,bf16"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    repo = os.environ.get("DINO_REPO") or os.path.join(root, ".devdeps", "dino")
    if not torch.cuda.is_available() or not os.path.exists(os.path.join(repo, "main_dino.py")):
        print(f"skipped: needs a GPU and the DINO reference files in {repo}")
        return
    import torch.distributed as dist
    backend = "nccl" if dist.is_nccl_available() else "gloo"  # DINOLoss all-reduces its centre
    dist.init_process_group(backend, init_method="file://" + os.path.join(tempfile.mkdtemp(), "pg"), rank=0,
                            world_size=1)
    sys.path.insert(0, repo)
    import main_dino
    import utils
    import vision_transformer as vits
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}: DINO ViT-B/16 step, batch {batch}")
    for mode in ("fp32", "tf32", "bf16"):
        if mode in modes:
            try:
                run(mode, steps, batch, main_dino, utils, vits)
            except Exception as e:  # noqa: BLE001 - one mode failing leaves the others
                print(f"RESULT dino_step mode={mode} failed: {e}", flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
