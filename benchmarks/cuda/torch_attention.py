#!/usr/bin/env python3
"""PyTorch's side of benchmarks/cuda/attention_bench.cpp: the same shapes and RESULT lines for
torch.nn.functional.scaled_dot_product_attention with the default backend choice and with the
cuDNN backend forced (SDPBackend.CUDNN_ATTENTION). When attention_bench's log is found
(--ours, default $OUT/attention_bench.log) it also prints torch time / histograd time."""
import argparse
import os
import re
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, warmup=5, reps=25):
    for _ in range(warmup):
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


def time_backward_ms(q, k, v, dout, causal, warmup=5, reps=25):
    """Only the backward: the forward runs outside the timed events."""
    times = []
    for it in range(warmup + reps):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.autograd.grad(out, (q, k, v), dout)
        stop.record()
        stop.synchronize()
        if it >= warmup:
            times.append(start.elapsed_time(stop))
    return statistics.median(times)


def bench(impl, backend, dtype, tag, B, H, N, D, causal, results):
    name = f"attention {tag} D{D} N{N} B{B} H{H}" + (" causal" if causal else "")
    q, k, v, dout = (torch.rand(B, H, N, D, device="cuda", dtype=dtype) * 2 - 1 for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    try:
        ctx = sdpa_kernel(backend) if backend is not None else torch.enable_grad()
        with ctx:
            with torch.no_grad():
                fwd = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
            bwd = time_backward_ms(q, k, v, dout, causal)
    except RuntimeError as e:  # a backend that refuses the shape
        print(f"RESULT {impl} {name:<44} n/a ({str(e).splitlines()[0][:80]})", flush=True)
        return
    flops = 4.0 * B * H * N * N * D * (0.5 if causal else 1.0)
    print(f"RESULT {impl} {name:<44} fwd {fwd:8.4f} ms {flops / (fwd * 1e9):7.1f} TFLOP/s  "
          f"bwd {bwd:8.4f} ms {2.5 * flops / (bwd * 1e9):7.1f} TFLOP/s", flush=True)
    results[(impl, name)] = (fwd, bwd)


LINE = re.compile(r"RESULT (\S+) (attention .*?)\s+fwd\s+([\d.]+) ms .*bwd\s+([\d.]+) ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ours", default=os.path.join(os.environ.get("OUT", "gpu_out"), "attention_bench.log"))
    args = parser.parse_args()
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    shapes = [(64, 12, 197, False), (16, 12, 1024, False), (4, 12, 4096, False),
              (16, 12, 1024, True), (4, 12, 4096, True)]
    results = {}
    for D in (64, 128):
        for B, H, N, causal in shapes:
            for dtype, tag in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
                bench("torch_default", None, dtype, tag, B, H, N, D, causal, results)
                bench("torch_cudnn", SDPBackend.CUDNN_ATTENTION, dtype, tag, B, H, N, D, causal, results)
    if os.path.exists(args.ours):
        ours = {}
        for line in open(args.ours):
            m = LINE.match(line.strip())
            if m and m.group(1) == "histograd":
                ours[m.group(2).strip()] = (float(m.group(3)), float(m.group(4)))
        print("\nspeed-up of histograd (torch ms / histograd ms; > 1 means histograd is faster)")
        print(f"{'shape':<46} {'fwd/default':>11} {'bwd/default':>11} {'fwd/cudnn':>10} {'bwd/cudnn':>10}")
        for name, (f_ms, b_ms) in ours.items():
            cols = []
            for impl in ("torch_default", "torch_cudnn"):
                t = results.get((impl, name))
                cols += [f"{t[0] / f_ms:.2f}", f"{t[1] / b_ms:.2f}"] if t else ["n/a", "n/a"]
            print(f"{name:<46} {cols[0]:>11} {cols[1]:>11} {cols[2]:>10} {cols[3]:>10}")
    else:
        print(f"(no {args.ours}: run attention_bench first for the ratio table)")


if __name__ == "__main__":
    main()
