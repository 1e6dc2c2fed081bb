"""Generate PyTorch reference fixtures for tests/ops/interpolate_test.cpp and tests/ops/conv_test.cpp.

Bicubic resizing in both of PyTorch's variants (MODELS.md §0.2) and one conv2d with every
hyper-parameter switched on. Each tensor is a raw little-endian float32 file; a one-line-per-case
index.txt holds the parameters the C++ test needs to rebuild the call:

  tests/fixtures/interpolate/index.txt:  name N C H W out_h out_w align_corners antialias scale_h scale_w
      (scale '-' = none; files <name>.{x,y,gy,gx}.bin: input, output, a random output gradient, the input gradient)
  tests/fixtures/conv/index.txt:         name N C H W O kh kw sh sw ph pw dh dw groups
      (files <name>.{x,w,b,y,gy,gx,gw,gb}.bin)

Run: python3 scripts/gen_interp_fixtures.py   (needs torch; writes ~80 KB)
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def save(folder, name, tensor):
    array = tensor.detach().to(torch.float32).contiguous().numpy().astype("<f4")
    array.tofile(os.path.join(folder, name + ".bin"))


def interpolate_cases():
    # (name, N, C, H, W, out_h, out_w, align_corners, antialias, scale_h, scale_w)
    s = 16.1 / 14  # DINO's interpolate_offset: scale_factor = (w0 + 0.1) / M for 14 -> 16
    return [
        ("dino_up_14_to_16", 1, 3, 14, 14, 16, 16, False, False, s, s),
        ("down_16_to_14", 1, 2, 16, 16, 14, 14, False, False, None, None),
        ("down_37_to_23", 1, 1, 37, 37, 23, 23, False, False, None, None),
        ("aa_down_37_to_23", 1, 1, 37, 37, 23, 23, False, True, None, None),
        ("aa_up_23_to_37", 1, 1, 23, 23, 37, 37, False, True, None, None),
        ("align_corners_7x9_to_12x15", 2, 2, 7, 9, 12, 15, True, False, None, None),
        ("aa_align_corners_14_to_9", 1, 2, 14, 14, 9, 9, True, True, None, None),
        ("nonsquare_10x6_to_5x13", 2, 1, 10, 6, 5, 13, False, False, None, None),
        ("aa_nonsquare_10x6_to_5x13", 2, 1, 10, 6, 5, 13, False, True, None, None),
        ("aa_width_only_8x12_to_8x5", 1, 2, 8, 12, 8, 5, False, True, None, None),
    ]


def write_interpolate(folder):
    os.makedirs(folder, exist_ok=True)
    lines = ["# name N C H W out_h out_w align_corners antialias scale_h scale_w ('-' = no scale factor)"]
    for name, n, c, h, w, oh, ow, ac, aa, sh, sw in interpolate_cases():
        x = torch.randn(n, c, h, w, requires_grad=True)
        if sh is not None:
            y = F.interpolate(x, scale_factor=(sh, sw), mode="bicubic", align_corners=ac, antialias=aa)
        else:
            y = F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=ac, antialias=aa)
        assert tuple(y.shape) == (n, c, oh, ow), (name, y.shape)
        gy = torch.randn_like(y)
        (gx,) = torch.autograd.grad(y, x, gy)
        for suffix, t in (("x", x), ("y", y), ("gy", gy), ("gx", gx)):
            save(folder, f"{name}.{suffix}", t)
        scale = lambda v: "-" if v is None else repr(v)
        lines.append(f"{name} {n} {c} {h} {w} {oh} {ow} {int(ac)} {int(aa)} {scale(sh)} {scale(sw)}")
    with open(os.path.join(folder, "index.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_conv(folder):
    os.makedirs(folder, exist_ok=True)
    # name, N, C, H, W, O, kh, kw, stride, padding, dilation, groups
    cases = [("stride2_pad1_dil2_groups2", 2, 6, 9, 9, 4, 3, 3, (2, 2), (1, 1), (2, 2), 2),
             ("rect_stride2x1_pad0x2", 1, 3, 8, 7, 5, 2, 3, (2, 1), (0, 2), (1, 1), 1)]
    lines = ["# name N C H W O kh kw sh sw ph pw dh dw groups"]
    for name, n, c, h, w, o, kh, kw, stride, padding, dilation, groups in cases:
        x = torch.randn(n, c, h, w, requires_grad=True)
        weight = (torch.randn(o, c // groups, kh, kw) * 0.3).requires_grad_()
        bias = torch.randn(o, requires_grad=True)
        y = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
        gy = torch.randn_like(y)
        gx, gw, gb = torch.autograd.grad(y, (x, weight, bias), gy)
        for suffix, t in (("x", x), ("w", weight), ("b", bias), ("y", y), ("gy", gy), ("gx", gx), ("gw", gw), ("gb", gb)):
            save(folder, f"{name}.{suffix}", t)
        lines.append(f"{name} {n} {c} {h} {w} {o} {kh} {kw} {stride[0]} {stride[1]} {padding[0]} {padding[1]} "
                     f"{dilation[0]} {dilation[1]} {groups}")
    with open(os.path.join(folder, "index.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    np.random.seed(0)
    write_interpolate(os.path.join(ROOT, "interpolate"))
    write_conv(os.path.join(ROOT, "conv"))
    print("wrote", os.path.normpath(os.path.join(ROOT, "interpolate")), "and", os.path.normpath(os.path.join(ROOT, "conv")))
