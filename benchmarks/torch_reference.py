"""The same work as the C++ benchmarks, through PyTorch, for the ratio columns.

  python3 torch_reference.py gemm N REPEATS THREADS        -> "gemm_seconds <median>"
  python3 torch_reference.py vit BATCH REPEATS THREADS     -> "vit_seconds <median>", "vit_peak_rss_mib <MiB>"
  python3 torch_reference.py timm MODEL BATCH REPEATS THREADS -> the same for a named timm model
  python3 torch_reference.py save MODEL DIR                 -> writes DIR/MODEL.{safetensors,pth} (random weights)
  python3 torch_reference.py load FILE REPEATS              -> "load_seconds <median>" (torch.load / safetensors)

ViT-S/16 is timm's vit_small_patch16_224 when timm is installed (the reference the models
are checked against), else the same architecture written here with torch.nn.functional.
"""
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def vit_small():
    try:
        import timm
        return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).eval(), "timm"
    except ImportError:
        pass

    class Plain(torch.nn.Module):
        def __init__(self, d=384, depth=12, heads=6):
            super().__init__()
            self.heads = heads
            self.patch = torch.nn.Conv2d(3, d, 16, 16)
            self.cls = torch.nn.Parameter(torch.zeros(1, 1, d))
            self.pos = torch.nn.Parameter(torch.zeros(1, 197, d))
            self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict(dict(
                n1=torch.nn.LayerNorm(d, eps=1e-6), qkv=torch.nn.Linear(d, 3 * d), proj=torch.nn.Linear(d, d),
                n2=torch.nn.LayerNorm(d, eps=1e-6), fc1=torch.nn.Linear(d, 4 * d), fc2=torch.nn.Linear(4 * d, d)))
                for _ in range(depth))
            self.norm = torch.nn.LayerNorm(d, eps=1e-6)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            B, N, D = x.shape
            for b in self.blocks:
                q, k, v = b["qkv"](b["n1"](x)).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
                x = x + b["proj"](F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))
                x = x + b["fc2"](F.gelu(b["fc1"](b["n2"](x))))
            return self.norm(x)[:, 0]

    return Plain().eval(), "torch"


def main():
    kind = sys.argv[1]
    torch.manual_seed(0)
    if kind in ("gemm", "vit"):
        size, repeats, threads = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        torch.set_num_threads(threads)
    if kind == "gemm":
        a, b = torch.randn(size, size), torch.randn(size, size)
        print("gemm_seconds", median_time(lambda: torch.mm(a, b), repeats))
    elif kind == "vit":
        model, source = vit_small()
        x = torch.randn(size, 3, 224, 224)
        with torch.inference_mode():
            print("vit_seconds", median_time(lambda: model(x), repeats))
        print("vit_peak_rss_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
        print("vit_source_timm", 1 if source == "timm" else 0)
    elif kind == "timm":
        import timm
        name, batch, repeats, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        torch.set_num_threads(threads)
        model = timm.create_model(name, pretrained=False, num_classes=0).eval()
        x = torch.randn(batch, 3, 224, 224)
        with torch.inference_mode():
            print("vit_seconds", median_time(lambda: model(x), repeats))
        print("vit_peak_rss_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    elif kind == "save":
        import os
        import timm
        from safetensors.torch import save_file
        name, folder = sys.argv[2], sys.argv[3]
        state = timm.create_model(name, pretrained=False, num_classes=0).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, name + ".safetensors"))
        torch.save(state, os.path.join(folder, name + ".pth"))
        print("saved_tensors", len(state))
    elif kind == "load":
        path, repeats = sys.argv[2], int(sys.argv[3])
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            # load_file memory-maps and copies every tensor out, as a user's load does.
            print("load_seconds", median_time(lambda: load_file(path), repeats))
        else:
            print("load_seconds", median_time(lambda: torch.load(path, map_location="cpu", weights_only=True), repeats))
            print("load_mmap_seconds", median_time(
                lambda: torch.load(path, map_location="cpu", weights_only=True, mmap=True), repeats))
        print("load_peak_rss_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    print("torch_threads", torch.get_num_threads())


if __name__ == "__main__":
    main()
