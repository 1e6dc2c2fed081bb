"""The work of benchmarks/wsi_bench.cpp through the Python stack, for its ratio columns.

  python3 wsi_reference.py tile SLIDE REPEATS          -> "tile_seconds <median>", "tile_patches <N>"
  python3 wsi_reference.py features SLIDE BATCH THREADS -> "features_seconds <s>", "features_patches <N>"

tile: openslide-python opens the slide, reads the segmentation level whole, segments it the CLAM way
with cv2 (HSV saturation, medianBlur, threshold, closing, RETR_CCOMP contours filtered by area, CLAM's
bwh_biopsy preset), lays TRIDENT's global grid at 20x (256 px) and keeps patches by CLAM's four_pt
rule and hole test (cv2.pointPolygonTest), then reads every kept patch at the target size.
features: the same patches, each resized/cropped/normalised as DINO's eval transform (resize 256,
centre crop 224, ImageNet mean/std) and embedded by timm's vit_small_patch16_224 (random weights) in
batches, torch on THREADS threads, inference_mode.
"""
import statistics
import sys
import time

import cv2
import numpy as np
import openslide
from PIL import Image

# CLAM's bwh_biopsy preset (presets/bwh_biopsy.csv).
SEG = dict(sthresh=15, mthresh=11, close=2, a_t=1, a_h=1, max_n_holes=2)
TARGET_MPP, PATCH = 0.5, 256


def level0_mpp(slide):
    for key in ("openslide.mpp-x", "aperio.MPP"):
        if key in slide.properties:
            return float(slide.properties[key])
    raise SystemExit("no mpp")


def segment(slide):
    level = slide.get_best_level_for_downsample(64)
    w, h = slide.level_dimensions[level]
    ds_x, ds_y = slide.dimensions[0] / w, slide.dimensions[1] / h
    rgba = np.array(slide.read_region((0, 0), level, (w, h)))
    hsv = cv2.cvtColor(rgba[:, :, :3], cv2.COLOR_RGB2HSV)
    med = cv2.medianBlur(hsv[:, :, 1], SEG["mthresh"])
    _, mask = cv2.threshold(med, SEG["sthresh"], 255, cv2.THRESH_BINARY)
    if SEG["close"] > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((SEG["close"], SEG["close"]), np.uint8))
    ref = int(512 ** 2 / (ds_x * ds_y))
    a_t, a_h = SEG["a_t"] * ref, SEG["a_h"] * ref
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    regions = []
    if hierarchy is None:
        return regions
    hierarchy = hierarchy[0][:, 2:]
    for i in np.flatnonzero(hierarchy[:, 1] == -1):
        holes = [contours[j] for j in np.flatnonzero(hierarchy[:, 1] == i)]
        area = cv2.contourArea(contours[i]) - sum(cv2.contourArea(hh) for hh in holes)
        if area == 0 or area <= a_t:
            continue
        holes = sorted(holes, key=cv2.contourArea, reverse=True)[: SEG["max_n_holes"]]
        holes = [hh for hh in holes if cv2.contourArea(hh) > a_h]
        scale = np.array([ds_x, ds_y])
        regions.append(((contours[i] * scale).astype(np.int32), [(hh * scale).astype(np.int32) for hh in holes]))
    return regions


def grid(slide, regions):
    mpp = level0_mpp(slide)
    size0 = round(PATCH * TARGET_MPP / mpp)
    w0, h0 = slide.dimensions
    shift = (size0 // 2) // 2
    kept = []
    for y in range(0, h0, size0):
        for x in range(0, w0, size0):
            cx, cy = x + size0 // 2, y + size0 // 2
            pts = [(cx - shift, cy - shift), (cx + shift, cy + shift), (cx + shift, cy - shift), (cx - shift, cy + shift)]
            for outline, holes in regions:
                if not any(cv2.pointPolygonTest(outline, (float(px), float(py)), False) >= 0 for px, py in pts):
                    continue
                c = (x + size0 / 2, y + size0 / 2)
                if any(cv2.pointPolygonTest(hh, c, False) > 0 for hh in holes):
                    continue
                kept.append((x, y))
                break
    return kept, size0


def read_patch(slide, x, y, size0):
    rgba = slide.read_region((x, y), 0, (size0, size0))
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return cv2.resize(np.asarray(rgb), (PATCH, PATCH), interpolation=cv2.INTER_AREA)


def tile(path, repeats):
    def run():
        slide = openslide.OpenSlide(path)
        regions = segment(slide)
        coords, size0 = grid(slide, regions)
        for x, y in coords:
            read_patch(slide, x, y, size0)
        slide.close()
        return len(coords)

    n = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print("tile_seconds", statistics.median(times))
    print("tile_patches", n)


def features(path, batch, threads):
    import timm
    import torch

    torch.set_num_threads(threads)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    start = time.perf_counter()
    slide = openslide.OpenSlide(path)
    coords, size0 = grid(slide, segment(slide))
    out = []
    with torch.inference_mode():
        for b in range(0, len(coords), batch):
            imgs = [read_patch(slide, x, y, size0) for x, y in coords[b : b + batch]]
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
            x = torch.nn.functional.interpolate(x, size=(256, 256), mode="bicubic", antialias=True, align_corners=False)
            x = x[:, :, 16:240, 16:240]
            out.append(model((x - mean) / std))
    feats = torch.cat(out)
    print("features_seconds", time.perf_counter() - start)
    print("features_patches", feats.shape[0])


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "tile":
        tile(sys.argv[2], int(sys.argv[3]))
    elif mode == "features":
        features(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
