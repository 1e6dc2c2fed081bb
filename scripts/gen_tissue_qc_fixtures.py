#!/usr/bin/env python3
"""Reference values for tests/wsi/tissue_qc_test.cpp: slideflow's Gaussian blur QC
(slideflow/slide/qc/gaussian.py, Gaussian.__call__ on an image):

    gray = skimage.color.rgb2gray(rgb); lap = np.abs(skimage.filters.laplace(gray))
    g = skimage.filters.gaussian(lap, sigma=3); mask = g <= 0.02

computed here with scikit-image and scipy (`pip install --no-deps scikit-image scipy lazy_loader`),
on the repository's synthetic fixtures and, when ../shared/data/tiles is present, two shared tiles.
Writes tests/fixtures/wsi/blur_qc_expected.txt: per image its size, the mask's pixel count and FNV-1a
64 hash (uint8 0/255), and the response at every `step`-th pixel (row-major) to 17 digits.

    python3 scripts/gen_tissue_qc_fixtures.py
"""
import os

import numpy as np
import scipy
import skimage
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "wsi")
TILES = os.path.join(ROOT, "..", "shared", "data", "tiles")
IMAGES = [("fixture", "synth_shapes.png"), ("fixture", "synth_noise.png"), ("fixture", "synth_blobs50.png"),
          ("tile", "histolab-no-tissue-red-pen.png"), ("tile", "histolab-tcga-lung.png")]
SIGMA, THRESHOLD, SAMPLES = 3, 0.02, 400


def fnv(data: bytes) -> str:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def main():
    lines = ["# written by scripts/gen_tissue_qc_fixtures.py with scikit-image %s, scipy %s"
             % (skimage.__version__, scipy.__version__),
             "# image <fixture|tile> <name> <width> <height> <step> <mask count> <mask fnv>, then value lines: <index> <response>"]
    for kind, name in IMAGES:
        path = os.path.join(FIX if kind == "fixture" else TILES, name)
        if not os.path.exists(path):
            print("skipping", path)
            continue
        rgb = np.array(Image.open(path).convert("RGB"))
        gray = skimage.color.rgb2gray(rgb)
        g = skimage.filters.gaussian(np.abs(skimage.filters.laplace(gray)), sigma=SIGMA)
        mask = (g <= THRESHOLD).astype(np.uint8) * 255
        h, w = g.shape
        step = max(1, (h * w) // SAMPLES)
        lines.append("image %s %s %d %d %d %d %s" % (kind, name, w, h, step, int((mask > 0).sum()),
                                                     fnv(mask.tobytes())))
        flat = g.ravel()
        for i in range(0, h * w, step):
            lines.append("%d %.17g" % (i, flat[i]))
    with open(os.path.join(FIX, "blur_qc_expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
