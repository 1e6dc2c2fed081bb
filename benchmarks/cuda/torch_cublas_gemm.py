"""torch.matmul on the shapes of cublas_gemm_bench.cpp (x @ W.T), same RESULT lines, for ratios."""
import torch

def median_ms(fn, runs=20):
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record(); fn(); end.record(); end.synchronize()
        times.append(begin.elapsed_time(end))
    return sorted(times)[len(times) // 2]

def run(dtype, name, m, n, k, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(n, k, device="cuda", dtype=dtype)
    ms = median_ms(lambda: torch.matmul(a, w.t()))
    print(f"RESULT gemm {name}{'-tf32' if tf32 else ''} {m}x{n}x{k} ms={ms:.4f} tflops={2*m*n*k/(ms*1e-3)/1e12:.1f}")

tokens = 64 * 197
shapes = [(tokens, 2304, 768), (tokens, 3072, 768), (tokens, 768, 3072), (8192, 8192, 8192)]
print("device:", torch.cuda.get_device_name())
for s in shapes:
    run(torch.bfloat16, "bf16", *s, False)
for s in shapes:
    run(torch.float32, "fp32", *s, True)
run(torch.float32, "fp32", tokens, 2304, 768, False)
