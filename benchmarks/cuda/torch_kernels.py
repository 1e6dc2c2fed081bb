#!/usr/bin/env python3
"""PyTorch's side of benchmarks/cuda/kernels_bench.cu: the same shapes, byte counts and output
lines (RESULT name ms GB/s %copy) for F.layer_norm, F.cross_entropy, DINO's soft-target loss as
main_dino.py writes it, and the EMA as DINO (per-tensor mul_/add_) and DINOv2 (_foreach_mul_ /
_foreach_add_) write it, so a script can divide the two programs' lines."""
import argparse
import statistics

import torch
import torch.nn.functional as F


def time_ms(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def time_cold_ms(fn, reps=20):
    """kernels_bench.cu's time_cold_ms: each call right after a 256 MiB memset (inputs out of L2,
    the host's launch latency hidden behind the memset)."""
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        flush.fill_(i & 0xFF)
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def report_both(name, fn, nbytes):
    report(name, time_ms(fn), nbytes)
    report(name + " cold", time_cold_ms(fn), nbytes)


COPY_GBS = None


def report(name, ms, nbytes):
    gbs = nbytes / (ms * 1e6)
    print(f"RESULT {name:<44} {ms:9.4f} ms {gbs:8.1f} GB/s {100.0 * gbs / COPY_GBS:6.1f} %copy", flush=True)


def tag(dtype):
    return "fp32" if dtype == torch.float32 else "bf16"


def bench_layer_norm(rows, cols, dtype):
    x = torch.randn(rows, cols, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(cols, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(cols, device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.randn(rows, cols, device="cuda", dtype=dtype)
    es, n = x.element_size(), rows * cols
    shape = f"{rows}x{cols} {tag(dtype)}"
    with torch.no_grad():
        report_both("layer_norm fwd " + shape, lambda: F.layer_norm(x, (cols,), w, b, 1e-6), 2 * n * es)
    y = F.layer_norm(x, (cols,), w, b, 1e-6)
    report_both("layer_norm bwd " + shape, lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True), 3 * n * es)


def bench_hard_ce(rows, classes, dtype):
    x = (4 * torch.randn(rows, classes, device="cuda", dtype=dtype)).requires_grad_()
    labels = (torch.arange(rows, device="cuda") * 7919) % classes
    es, n = x.element_size(), rows * classes
    shape = f"{rows}x{classes} {tag(dtype)}"
    with torch.no_grad():
        report_both("cross_entropy fwd " + shape, lambda: F.cross_entropy(x, labels), n * es)
    loss = F.cross_entropy(x, labels)
    report_both("cross_entropy bwd " + shape, lambda: torch.autograd.grad(loss, x, retain_graph=True), 2 * n * es)


def dino_loss(student, teacher, center, ts=0.1, tt=0.04):
    # main_dino.py DINOLoss.forward for one (teacher, student) pair, per row.
    q = F.softmax((teacher - center) / tt, dim=-1)
    return torch.sum(-q * F.log_softmax(student / ts, dim=-1), dim=-1)


def bench_dino_ce(rows, classes, dtype):
    s = torch.randn(rows, classes, device="cuda", dtype=dtype, requires_grad=True)
    t = torch.randn(rows, classes, device="cuda", dtype=dtype)
    c = 0.1 * torch.randn(classes, device="cuda", dtype=dtype)
    es, n = s.element_size(), rows * classes
    shape = f"{rows}x{classes} {tag(dtype)}"
    with torch.no_grad():
        report_both("dino_cross_entropy fwd " + shape, lambda: dino_loss(s, t, c), 2 * n * es)
    loss = dino_loss(s, t, c).mean()
    report_both("dino_cross_entropy bwd " + shape, lambda: torch.autograd.grad(loss, s, retain_graph=True), 3 * n * es)


def vit_b_sizes():
    d, mlp = 768, 3072
    sizes = [d * 3 * 16 * 16, d, d, 197 * d]
    for _ in range(12):
        sizes += [d, d, 3 * d * d, 3 * d, d * d, d, d, d, mlp * d, mlp, d * mlp, d]
    return sizes + [d, d]


def bench_ema(student_dtype):
    sizes = vit_b_sizes()
    total = sum(sizes)
    nbytes = total * (2 * 4 + torch.empty(0, dtype=student_dtype).element_size())
    name = f" ViT-B {len(sizes)} tensors {total // 1000000}M fp32<-{tag(student_dtype)}"
    teacher = [torch.randn(s, device="cuda") for s in sizes]
    student = [torch.randn(s, device="cuda", dtype=student_dtype) for s in sizes]
    m = 0.996

    @torch.no_grad()
    def dino():  # main_dino.py: param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
        for pk, pq in zip(teacher, student):
            pk.mul_(m).add_((1 - m) * pq)

    @torch.no_grad()
    def dinov2():  # ssl_meta_arch.py: _foreach_mul_ then _foreach_add_ with alpha
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, student, alpha=1 - m)

    report("ema per-tensor (DINO)" + name, time_ms(dino), nbytes)
    report("ema foreach (DINOv2)" + name, time_ms(dinov2), nbytes)


def main():
    global COPY_GBS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA device")
        return
    print("device:", torch.cuda.get_device_name(0))
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = time_ms(lambda: b.copy_(a))
    COPY_GBS = 2 * a.numel() / (ms * 1e6)
    print(f"RESULT {'device-to-device copy 1 GiB (read+write)':<44} {ms:9.4f} ms {COPY_GBS:8.1f} GB/s {100.0:6.1f} %copy")
    del a, b
    for cols in (768, 1024):
        bench_layer_norm(64 * 197, cols, torch.float32)
        bench_layer_norm(64 * 197, cols, torch.bfloat16)
    bench_dino_ce(2 * 64, 65536, torch.float32)
    bench_dino_ce(2 * 64, 65536, torch.bfloat16)
    bench_hard_ce(8192, 32000, torch.float32)
    bench_hard_ce(8192, 32000, torch.bfloat16)
    bench_ema(torch.float32)
    bench_ema(torch.bfloat16)


if __name__ == "__main__":
    main()
