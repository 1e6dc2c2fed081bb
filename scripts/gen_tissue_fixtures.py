#!/usr/bin/env python3
"""Reference values for tests/wsi/tissue_test.cpp and tests/wsi/contours_test.cpp.

OpenCV (cv2, opencv-python-headless) is the reference for every image operation, and
`clam_segment` below re-implements CLAM's WholeSlideImage.segmentTissue + _filter_contours
(mahmoodlab/CLAM, wsi_core/WholeSlideImage.py) with cv2, as WSI.md A1 describes it.
Writes small synthetic PNGs and tests/fixtures/wsi/tissue_expected.txt (FNV-1a 64 hashes of
whole images/point lists plus counts and areas, so the real tiles need not be copied).

    python3 scripts/gen_tissue_fixtures.py   # needs cv2, numpy, PIL; ../shared/data/tiles for the tiles
"""
import os
import sys

import cv2
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "wsi")
TILES = os.path.join(ROOT, "..", "shared", "data", "tiles")
TILE_NAMES = [
    "hipt_he_256.png", "tia_he_1000.png", "histolab-tcga-lung.png",
    "histolab-tissue-level0-4302-10273-4814-10785.png", "histolab-medium-nuclei-score-level1.png",
    "histolab-no-tissue.png", "histolab-almost-white-1.png", "histolab-no-tissue-red-pen.png",
]

PRESETS = {  # CLAM presets/*.csv: sthresh, mthresh, close, a_t, a_h, max_n_holes
    "clam": (8, 7, 4, 100, 16, 8),
    "tcga": (8, 7, 4, 16, 4, 8),
    "bwh_biopsy": (15, 11, 2, 1, 1, 2),
    "bwh_resection": (15, 11, 4, 100, 16, 8),
}
# (preset, ds_x, ds_y, use_otsu, filter_pen) cases run on every image
CASES = [("clam", 64, 64, False, False), ("clam", 64, 64, True, False), ("tcga", 16, 16, False, False),
         ("bwh_biopsy", 8, 8, False, False), ("bwh_resection", 32, 32, False, False),
         ("clam", 40.5, 36.25, False, False), ("clam", 64, 64, False, True)]

RED = [(150, 80, 90), (110, 20, 30), (185, 65, 105), (195, 85, 125), (220, 115, 145), (125, 40, 70),
       (100, 50, 65), (85, 25, 45)]
GREEN = [(150, 160, 140), (70, 110, 110), (45, 115, 100), (30, 75, 60), (195, 220, 210), (225, 230, 225),
         (170, 210, 200), (20, 30, 20), (50, 60, 40), (30, 50, 35), (65, 70, 60), (100, 110, 105),
         (165, 180, 180), (140, 140, 150), (185, 195, 195)]
BLUE = [(60, 120, 190), (120, 170, 200), (175, 210, 230), (145, 180, 210), (37, 95, 160), (30, 65, 130),
        (130, 155, 180), (40, 35, 85), (30, 20, 65), (90, 90, 140), (60, 60, 120), (110, 110, 175)]


def fnv(data: bytes) -> str:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def fnv_np(a) -> str:
    # numpy-vectorised FNV is awkward; images here are small enough for the byte loop except the
    # tiles, so hash those through a faster path: bytes -> python loop in chunks.
    return fnv(np.ascontiguousarray(a).tobytes())


def pts_bytes(c):
    return np.ascontiguousarray(c.reshape(-1, 2).astype("<i4")).tobytes()


def pen_mask(rgb):
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    ink = np.zeros(r.shape, bool)
    for R, G, B in RED:
        ink |= (r >= R) & (g <= G) & (b <= B)
    for R, G, B in GREEN:
        ink |= (r <= R) & (g >= G) & (b >= B)
    for R, G, B in BLUE:
        ink |= (r <= R) & (g <= G) & (b >= B)
    return ink


def clam_segment(rgb, ds, preset, use_otsu, filter_pen):
    """CLAM segmentTissue/_filter_contours/scaleContourDim, level-0 int32 contours."""
    sthresh, mthresh, close, a_t, a_h, max_n_holes = PRESETS[preset]
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat = hsv[:, :, 1].copy()
    if filter_pen:
        sat[pen_mask(rgb)] = 0
    med = cv2.medianBlur(sat, mthresh)
    if use_otsu:
        _, m = cv2.threshold(med, 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
    else:
        _, m = cv2.threshold(med, sthresh, 255, cv2.THRESH_BINARY)
    if close > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))
    scaled_ref_patch_area = int(512 ** 2 / (ds[0] * ds[1]))
    a_t = a_t * scaled_ref_patch_area
    a_h = a_h * scaled_ref_patch_area
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:  # CLAM itself crashes here (np.squeeze of None); no tissue
        return [], []
    hierarchy = np.squeeze(hierarchy, axis=(0,))[:, 2:]
    filtered, all_holes = [], []
    for cont_idx in np.flatnonzero(hierarchy[:, 1] == -1):
        holes = np.flatnonzero(hierarchy[:, 1] == cont_idx)
        a = cv2.contourArea(contours[cont_idx])
        a = a - np.array([cv2.contourArea(contours[h]) for h in holes]).sum()
        if a == 0:
            continue
        if tuple((a_t,)) < tuple((a,)):
            filtered.append(cont_idx)
            all_holes.append(holes)
    fg = [contours[i] for i in filtered]
    hole_contours = []
    for hole_ids in all_holes:
        unf = sorted([contours[i] for i in hole_ids], key=cv2.contourArea, reverse=True)[:max_n_holes]
        hole_contours.append([h for h in unf if cv2.contourArea(h) > a_h])
    scale = np.array(ds, dtype=np.float64)
    fg = [np.array(c * scale, dtype="int32") for c in fg]
    hole_contours = [[np.array(h * scale, dtype="int32") for h in hs] for hs in hole_contours]
    return fg, hole_contours


def synthetic_images():
    """Small RGB pictures with the shapes that break border followers."""
    rng = np.random.default_rng(6)
    imgs = {}
    # tissue-like shapes on white: a block with holes (one touching another hole), a ring touching
    # the image border, an island inside a hole, one-pixel dots and lines, a diagonal band.
    a = np.full((90, 120, 3), 245, np.uint8)
    pink = (220, 120, 190)
    a[10:50, 10:60] = pink
    a[20:30, 20:30] = 245
    a[20:28, 40:52] = 245
    a[35:45, 25:50] = 245
    a[39:41, 36:39] = pink  # island in a hole
    a[0:25, 95:120] = pink
    a[5:15, 105:114] = 245
    a[60, 10] = pink
    a[70:71, 5:60] = pink
    a[62:88, 30:31] = pink
    for k in range(25):
        a[55 + k, 70 + k:78 + k] = pink
    a[89, 0:120:3] = pink
    imgs["synth_shapes"] = a
    # noisy saturation everywhere for median/Otsu, with ties and flat patches
    b = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    b[10:20, 10:30] = (200, 100, 150)
    imgs["synth_noise"] = b
    # random binary blobs (rendered pink/white) for border following on many tangled components
    for dens, name in ((0.5, "synth_blobs50"), (0.3, "synth_blobs30"), (0.7, "synth_blobs70")):
        m = rng.random((37, 53)) < dens
        c = np.full((37, 53, 3), 250, np.uint8)
        c[m] = pink
        imgs[name] = c
    return imgs


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = []
    images = {}
    for name, img in synthetic_images().items():
        Image.fromarray(img).save(os.path.join(OUT, name + ".png"))
        images[name] = ("fixture", img)
    for name in TILE_NAMES:
        path = os.path.join(TILES, name)
        if not os.path.exists(path):
            sys.exit("missing " + path)
        images[name] = ("tile", np.array(Image.open(path).convert("RGB")))

    for name, (kind, rgb) in images.items():
        h, w = rgb.shape[:2]
        lines.append(f"image {kind} {name} {w} {h}")
        sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 1]
        lines.append(f"saturation {fnv_np(sat)}")
        lines.append(f"pen {fnv_np(pen_mask(rgb).astype(np.uint8) * 255)} {int(pen_mask(rgb).sum())}")
        for k in (3, 5, 7, 11):
            lines.append(f"median {k} {fnv_np(cv2.medianBlur(sat, k))}")
        med = cv2.medianBlur(sat, 7)
        t, _ = cv2.threshold(med, 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
        lines.append(f"otsu_sat {int(cv2.threshold(sat, 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)[0])}")
        lines.append(f"otsu_med7 {int(t)}")
        for th in (0, 8, 15):
            lines.append(f"threshold {th} {fnv_np(cv2.threshold(med, th, 255, cv2.THRESH_BINARY)[1])}")
        _, bin8 = cv2.threshold(med, 8, 255, cv2.THRESH_BINARY)
        for k in (1, 2, 3, 4, 5):
            ker = np.ones((k, k), np.uint8)
            lines.append(f"dilate {k} {fnv_np(cv2.dilate(med, ker))}")
            lines.append(f"erode {k} {fnv_np(cv2.erode(med, ker))}")
            lines.append(f"close {k} {fnv_np(cv2.morphologyEx(bin8, cv2.MORPH_CLOSE, ker))}")
        # contours of the binary image (sat > 8 after median 7, closed with 4): the CLAM mask
        mask = cv2.morphologyEx(bin8, cv2.MORPH_CLOSE, np.ones((4, 4), np.uint8))
        masks = [("clammask", mask)]
        if kind == "fixture" or name == "hipt_he_256.png":  # many small borders; kept small elsewhere
            masks.append(("rawsat", (sat > 40).astype(np.uint8) * 255))
        for label, m in masks:
            cs, hier = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
            hier = hier[0] if hier is not None else np.zeros((0, 4), int)
            lines.append(f"contours {label} {len(cs)}")
            for i, c in enumerate(cs):
                p = c.reshape(-1, 2)
                nx, pv, ch, par = (int(v) for v in hier[i])
                lines.append(f"c {nx} {pv} {ch} {par} {len(p)} {p[0][0]} {p[0][1]} "
                             f"{cv2.contourArea(c)!r} {fnv(pts_bytes(c))}")
        for preset, dsx, dsy, otsu, pen in CASES:
            fg, holes = clam_segment(rgb, (dsx, dsy), preset, otsu, pen)
            lines.append(f"clam {preset} {dsx!r} {dsy!r} {int(otsu)} {int(pen)} {len(fg)}")
            for c, hs in zip(fg, holes):
                lines.append(f"r {len(c.reshape(-1, 2))} {cv2.contourArea(c)!r} {fnv(pts_bytes(c))} {len(hs)}"
                             + "".join(f" {cv2.contourArea(x)!r} {fnv(pts_bytes(x))}" for x in hs))
        print(name, "done", file=sys.stderr)

    # pointPolygonTest on the synthetic shapes' contours at integer and half-integer points
    m = cv2.threshold(cv2.cvtColor(images["synth_shapes"][1], cv2.COLOR_RGB2HSV)[:, :, 1], 8, 255,
                      cv2.THRESH_BINARY)[1]
    cs, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    for i, c in enumerate(cs):
        x, y, bw, bh = cv2.boundingRect(c)
        res = bytearray()
        for yy in np.arange(y - 2, y + bh + 2, 0.5):
            for xx in np.arange(x - 2, x + bw + 2, 0.5):
                res.append(int(cv2.pointPolygonTest(c, (float(xx), float(yy)), False)) + 1)
        lines.append(f"ppt {i} {x} {y} {bw} {bh} {fnv(bytes(res))}")

    with open(os.path.join(OUT, "tissue_expected.txt"), "w") as f:
        f.write("# written by scripts/gen_tissue_fixtures.py with OpenCV " + cv2.__version__ + "\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
