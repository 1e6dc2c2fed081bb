#!/usr/bin/env python3
"""Fixtures for tests/io/image_test.cpp and tests/data/transforms_test.cpp.

Writes small PNG and JPEG files to tests/fixtures/images/ (every PNG colour type, bit depth,
filter, interlace and compression kind; JPEGs from Pillow at several qualities, subsamplings,
progressive, restarts, grey, RGB; and from a small encoder below for the sampling factors
Pillow cannot write: 4:4:0, 4:1:1, mixed factors, one scan per component), then

  decoded.safetensors     U8 [H, W, 3] per file: Image.open(f).convert("RGB") (Pillow, libjpeg-turbo)
  transforms.safetensors  F32 outputs of torchvision.transforms.v2.functional on float tensors
  transforms.txt          one case per line: name op source arguments...
  tiles.txt               name width height crc32 of the RGB bytes, for ../shared/data/tiles/*.png

Needs Pillow, torch and torchvision (pip install --no-deps torchvision==0.29.2 beside torch 2.15).
Run from the repository root: python3 scripts/gen_image_fixtures.py
"""
import glob
import os
import struct
import zlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "images")
TILES = os.path.join(ROOT, "..", "shared", "data", "tiles")
TILE = os.path.join(TILES, "hipt_he_256.png")
rng = np.random.default_rng(1234)


# ---------------------------------------------------------------- PNG writer (all formats)
def png_chunk(tag, body):
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def pack_row(samples, depth):
    """One row of samples (ints) as PNG bytes: big-endian 16-bit, or packed MSB-first below 8."""
    if depth == 16:
        return b"".join(struct.pack(">H", int(v)) for v in samples)
    if depth == 8:
        return bytes(int(v) for v in samples)
    per_byte = 8 // depth
    out = bytearray((len(samples) + per_byte - 1) // per_byte)
    for i, v in enumerate(samples):
        out[i // per_byte] |= int(v) << (8 - depth * (i % per_byte + 1))
    return bytes(out)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filter_row(kind, row, prior, bpp):
    out = bytearray(len(row))
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][kind]
        out[i] = (x - pred) & 0xFF
    return bytes([kind]) + bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(name, samples, colour_type, depth, interlace=False, palette=None, trns=None, level=6,
              strategy=zlib.Z_DEFAULT_STRATEGY, idat_pieces=1):
    """samples: int array [H, W, channels]. Rows use the five filters in turn."""
    h, w, ch = samples.shape
    bpp = max(1, ch * depth // 8)
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    row_index = 0
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        prior = None
        for r in range(sub.shape[0]):
            row = pack_row(sub[r].reshape(-1), depth)
            prior = prior or bytes(len(row))
            raw += filter_row(row_index % 5, row, prior, bpp)
            prior = row
            row_index += 1
    comp = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    data = comp.compress(bytes(raw)) + comp.flush()
    body = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, int(interlace)))
    if palette is not None:
        body += png_chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        body += png_chunk(b"tRNS", trns)
    body += png_chunk(b"tEXt", b"Comment\x00ancillary chunks are skipped")
    step = (len(data) + idat_pieces - 1) // idat_pieces
    for i in range(0, len(data), step):
        body += png_chunk(b"IDAT", data[i:i + step])
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b""))
    return name


# ---------------------------------------------------------------- minimal baseline JPEG encoder
ZIGZAG = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
          7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
          39, 46, 53, 60, 61, 54, 47, 55, 62, 63]
DCT = np.array([[np.sqrt((1 if k == 0 else 2) / 8) * np.cos((2 * n + 1) * k * np.pi / 16) for n in range(8)]
                for k in range(8)])
# Valid (not optimal) Huffman codes: every DC category has 4 bits, every AC run/size symbol 8 bits.
DC_SYMBOLS = list(range(12))
AC_SYMBOLS = [0x00, 0xF0] + [(r << 4) | s for r in range(16) for s in range(1, 11)]


def huffman_codes(symbols, length):
    return {s: (i, length) for i, s in enumerate(symbols)}


def dht(table_class, index, symbols, length):
    counts = [0] * 16
    counts[length - 1] = len(symbols)
    return bytes([table_class << 4 | index] + counts + symbols)


class BitWriter:
    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value, bits):
        for i in range(bits - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc, self.n = 0, 0

    def flush(self):
        while self.n:
            self.put(1, 1)
        return bytes(self.out)


def magnitude(v):
    s = int(abs(v)).bit_length()
    return s, (v if v >= 0 else v + (1 << s) - 1)


def encode_jpeg(name, rgb, factors, separate_scans=False):
    """Baseline JPEG of an RGB uint8 array with per-component (h, v) sampling factors."""
    H, W, _ = rgb.shape
    x = rgb.astype(np.float64)
    ycc = np.stack([0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2],
                    -0.168736 * x[..., 0] - 0.331264 * x[..., 1] + 0.5 * x[..., 2] + 128,
                    0.5 * x[..., 0] - 0.418688 * x[..., 1] - 0.081312 * x[..., 2] + 128], axis=0)
    hmax, vmax = max(f[0] for f in factors), max(f[1] for f in factors)
    mcus_w, mcus_h = -(-W // (8 * hmax)), -(-H // (8 * vmax))
    quant = np.array([1 + k // 4 for k in range(64)])  # in zig-zag order
    quant_natural = np.zeros(64)
    quant_natural[ZIGZAG] = quant
    blocks = []
    for c, (h, v) in enumerate(factors):
        fh, fv = hmax // h, vmax // v
        plane = ycc[c]
        ph, pw = -(-H // fv) * fv, -(-W // fh) * fh
        plane = np.pad(plane, ((0, ph - H), (0, pw - W)), mode="edge")
        plane = plane.reshape(ph // fv, fv, pw // fh, fh).mean(axis=(1, 3))
        bh, bw = mcus_h * v * 8, mcus_w * h * 8
        plane = np.pad(plane, ((0, bh - plane.shape[0]), (0, bw - plane.shape[1])), mode="edge") - 128
        coef = np.zeros((mcus_h * v, mcus_w * h, 64), dtype=np.int64)
        for by in range(mcus_h * v):
            for bx in range(mcus_w * h):
                d = DCT @ plane[by * 8:by * 8 + 8, bx * 8:bx * 8 + 8] @ DCT.T
                coef[by, bx] = np.round(d.reshape(64) / quant_natural)
        comp_w, comp_h = -(-W * h // hmax), -(-H * v // vmax)
        blocks.append((coef, -(-comp_w // 8), -(-comp_h // 8)))
    dc, ac = huffman_codes(DC_SYMBOLS, 4), huffman_codes(AC_SYMBOLS, 8)

    def encode_block(bits, block, prev):
        diff = int(block[0]) - prev
        s, v = magnitude(diff)
        bits.put(*dc[s])
        bits.put(v, s)
        run = 0
        for k in range(1, 64):
            coefficient = int(block[ZIGZAG[k]])
            if coefficient == 0:
                run += 1
                continue
            while run > 15:
                bits.put(*ac[0xF0])
                run -= 16
            s, v = magnitude(coefficient)
            bits.put(*ac[(run << 4) | s])
            bits.put(v, s)
            run = 0
        if run:
            bits.put(*ac[0x00])
        return int(block[0])

    def segment(marker, body):
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    out = b"\xff\xd8" + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    out += segment(0xDB, bytes([0]) + bytes(int(q) for q in quant))
    sof = struct.pack(">BHHB", 8, H, W, len(factors))
    for c, (h, v) in enumerate(factors):
        sof += bytes([c + 1, h << 4 | v, 0])
    out += segment(0xC0, sof)
    out += segment(0xC4, dht(0, 0, DC_SYMBOLS, 4) + dht(1, 0, AC_SYMBOLS, 8))
    scans = [[c] for c in range(len(factors))] if separate_scans else [list(range(len(factors)))]
    for scan in scans:
        out += segment(0xDA, bytes([len(scan)]) + b"".join(bytes([c + 1, 0]) for c in scan) + bytes([0, 63, 0]))
        bits, prev = BitWriter(), [0] * len(factors)
        if len(scan) == 1:
            coef, units_w, units_h = blocks[scan[0]]
            for by in range(units_h):
                for bx in range(units_w):
                    prev[0] = encode_block(bits, coef[by, bx], prev[0])
        else:
            for my in range(mcus_h):
                for mx in range(mcus_w):
                    for c, (h, v) in enumerate(factors):
                        for yy in range(v):
                            for xx in range(h):
                                prev[c] = encode_block(bits, blocks[c][0][my * v + yy, mx * h + xx], prev[c])
        out += bits.flush()
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(out + b"\xff\xd9")
    return name


# ---------------------------------------------------------------- the files
def make_pngs(tile):
    crop = tile[100:119, 60:89]  # 19 x 29: partial bytes at every low bit depth, odd Adam7 passes
    grey = (0.299 * crop[..., 0] + 0.587 * crop[..., 1] + 0.114 * crop[..., 2]).astype(np.int64)[..., None]
    h, w = grey.shape[:2]
    alpha = rng.integers(0, 256, (h, w, 1))
    names = []
    for depth in (1, 2, 4, 8):
        names.append(write_png(f"grey{depth}.png", grey >> (8 - depth), 0, depth))
    names.append(write_png("grey16.png", rng.integers(0, 600, (h, w, 1)), 0, 16))
    names.append(write_png("grey2_interlaced.png", grey >> 6, 0, 2, interlace=True))
    names.append(write_png("grey16_interlaced.png", rng.integers(0, 65536, (h, w, 1)), 0, 16, interlace=True))
    names.append(write_png("grey8_trns.png", grey, 0, 8, trns=struct.pack(">H", int(grey[0, 0, 0]))))
    names.append(write_png("rgb8.png", crop, 2, 8))
    names.append(write_png("rgb8_interlaced.png", crop, 2, 8, interlace=True))
    names.append(write_png("rgb8_trns.png", crop, 2, 8, trns=struct.pack(">HHH", *crop[0, 0])))
    names.append(write_png("rgb16.png", crop.astype(np.int64) * 256 + rng.integers(0, 256, crop.shape), 2, 16))
    names.append(write_png("grey_alpha8.png", np.concatenate([grey, alpha], 2), 4, 8))
    names.append(write_png("grey_alpha16.png", rng.integers(0, 65536, (h, w, 2)), 4, 16))
    names.append(write_png("rgba8.png", np.concatenate([crop, alpha], 2), 6, 8))
    names.append(write_png("rgba8_interlaced.png", np.concatenate([crop, alpha], 2), 6, 8, interlace=True))
    names.append(write_png("rgba16.png", rng.integers(0, 65536, (h, w, 4)), 6, 16))
    for depth in (1, 2, 4, 8):
        entries = 1 << depth
        palette = rng.integers(0, 256, (entries, 3))
        names.append(write_png(f"palette{depth}.png", rng.integers(0, entries, (h, w, 1)), 3, depth, palette=palette))
    palette = rng.integers(0, 256, (16, 3))
    names.append(write_png("palette4_interlaced_trns.png", rng.integers(0, 16, (h, w, 1)), 3, 4, interlace=True,
                           palette=palette, trns=bytes(rng.integers(0, 256, 16).tolist())))
    # indices past a 5-entry palette: Pillow shows them black
    names.append(write_png("palette8_short.png", rng.integers(0, 8, (h, w, 1)), 3, 8, palette=palette[:5]))
    names.append(write_png("stored.png", crop, 2, 8, level=0, idat_pieces=3))
    names.append(write_png("fixed_huffman.png", crop, 2, 8, strategy=zlib.Z_FIXED))
    names.append(write_png("many_idat.png", crop, 2, 8, idat_pieces=7))
    names.append(write_png("one_pixel.png", crop[:1, :1], 2, 8))
    names.append(write_png("tiny_interlaced.png", crop[:3, :5], 2, 8, interlace=True))  # Adam7 with empty passes
    Image.fromarray(tile[:24, :32]).save(os.path.join(OUT, "tile_small.png"))  # Pillow's own encoder
    names.append("tile_small.png")
    return names


def make_jpegs(tile):
    names = []
    crop = Image.fromarray(tile[30:51, 70:97])  # 27 x 21: partial MCUs in both directions
    for quality in (30, 75, 95):
        for subsampling in (0, 1, 2):
            name = f"q{quality}_s{subsampling}.jpg"
            crop.save(os.path.join(OUT, name), quality=quality, subsampling=subsampling)
            names.append(name)
    for subsampling in (0, 1, 2):
        name = f"progressive_s{subsampling}.jpg"
        crop.save(os.path.join(OUT, name), quality=80, subsampling=subsampling, progressive=True)
        names.append(name)
    crop.convert("L").save(os.path.join(OUT, "grey.jpg"), quality=85)
    crop.convert("L").save(os.path.join(OUT, "grey_progressive.jpg"), quality=85, progressive=True)
    crop.save(os.path.join(OUT, "restart.jpg"), quality=90, subsampling=2, restart_marker_blocks=3)
    crop.save(os.path.join(OUT, "restart_progressive.jpg"), quality=90, progressive=True, restart_marker_rows=1)
    crop.save(os.path.join(OUT, "optimized.jpg"), quality=70, optimize=True)
    crop.save(os.path.join(OUT, "adobe_rgb.jpg"), quality=90, keep_rgb=True)
    names += ["grey.jpg", "grey_progressive.jpg", "restart.jpg", "restart_progressive.jpg", "optimized.jpg",
              "adobe_rgb.jpg"]
    for name, size in (("one_pixel.jpg", (1, 1)), ("narrow_420.jpg", (2, 3)), ("odd_420.jpg", (17, 9))):
        crop.crop((0, 0) + size).save(os.path.join(OUT, name), quality=90, subsampling=2)
        names.append(name)
    rgb = tile[30:51, 70:97]
    names.append(encode_jpeg("sampling_440.jpg", rgb, [(1, 2), (1, 1), (1, 1)]))
    names.append(encode_jpeg("sampling_411.jpg", rgb, [(4, 1), (1, 1), (1, 1)]))
    names.append(encode_jpeg("sampling_mixed.jpg", rgb, [(2, 2), (1, 2), (1, 1)]))
    names.append(encode_jpeg("separate_scans_420.jpg", rgb, [(2, 2), (1, 1), (1, 1)], separate_scans=True))
    return names


# ---------------------------------------------------------------- transforms (torchvision on float tensors)
def to_tensor(path):
    return TF.to_tensor(Image.open(os.path.join(OUT, path)).convert("RGB"))  # uint8 / 255


BILINEAR, BICUBIC = InterpolationMode.BILINEAR, InterpolationMode.BICUBIC
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
HOPTIMUS = ([0.707223, 0.578729, 0.703617], [0.211883, 0.230117, 0.177517])


def make_transforms():
    cases, outputs = [], {}

    def add(line, tensor):
        cases.append(line)
        outputs[line.split()[0]] = tensor.contiguous().float()

    src = "tile_small.png"  # 24 x 32
    x = to_tensor(src)
    for interp, tag in ((BILINEAR, "bilinear"), (BICUBIC, "bicubic")):
        add(f"resize_{tag}_down resize {src} {tag} 17 - 1", TF.resize(x, [17], interp, antialias=True))
        add(f"resize_{tag}_up resize {src} {tag} 37 - 1", TF.resize(x, [37], interp, antialias=True))
        add(f"resize_{tag}_hw resizehw {src} {tag} 15 45 1", TF.resize(x, [15, 45], interp, antialias=True))
        add(f"resize_{tag}_noaa resize {src} {tag} 13 - 0", TF.resize(x, [13], interp, antialias=False))
    add(f"resize_max_size resize {src} bilinear 20 23 1", TF.resize(x, [20], BILINEAR, max_size=23, antialias=True))
    tall = to_tensor("q75_s2.jpg")  # 21 x 27
    add("resize_tall resize q75_s2.jpg bicubic 11 - 1", TF.resize(tall, [11], BICUBIC, antialias=True))
    add(f"crop_odd crop {src} 17 11", TF.center_crop(x, [17, 11]))
    add(f"crop_even crop {src} 10 20", TF.center_crop(x, [10, 20]))
    add(f"crop_pad crop {src} 29 37", TF.center_crop(x, [29, 37]))
    add(f"crop_pad_height crop {src} 27 15", TF.center_crop(x, [27, 15]))
    add(f"normalize normalize {src} imagenet", TF.normalize(x, *IMAGENET))
    for name, source, resize, crop, interp, tag, stats, stats_tag in (
            ("preprocess_imagenet", "q95_s0.jpg", 24, 20, BICUBIC, "bicubic", IMAGENET, "imagenet"),
            ("preprocess_hoptimus", src, 20, 18, BILINEAR, "bilinear", HOPTIMUS, "hoptimus")):
        y = TF.normalize(TF.center_crop(TF.resize(to_tensor(source), [resize], interp, antialias=True), [crop]), *stats)
        add(f"{name} preprocess {source} {tag} {resize} {crop} {stats_tag}", y)
    batch = torch.from_numpy(rng.random((2, 3, 13, 11), dtype=np.float32))
    outputs["batch_input"] = batch
    add("batch_bicubic resize batch_input bicubic 7 - 1", TF.resize(batch, [7], BICUBIC, antialias=True))
    add("batch_bilinear_up resizehw batch_input bilinear 20 17 1", TF.resize(batch, [20, 17], BILINEAR, antialias=True))
    save_file(outputs, os.path.join(OUT, "transforms.safetensors"))
    with open(os.path.join(OUT, "transforms.txt"), "w") as f:
        f.write("# name op source arguments (scripts/gen_image_fixtures.py; torchvision v2 on float tensors)\n")
        f.write("\n".join(cases) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "*")):
        os.remove(old)
    tile = np.asarray(Image.open(TILE).convert("RGB"))
    names = make_pngs(tile) + make_jpegs(tile)
    decoded = {n: torch.from_numpy(np.asarray(Image.open(os.path.join(OUT, n)).convert("RGB")).copy()) for n in names}
    save_file(decoded, os.path.join(OUT, "decoded.safetensors"))
    make_transforms()
    with open(os.path.join(OUT, "tiles.txt"), "w") as f:
        f.write("# name width height crc32(RGB bytes of Image.open(f).convert('RGB'))\n")
        for path in sorted(glob.glob(os.path.join(TILES, "*.png"))):
            rgb = np.asarray(Image.open(path).convert("RGB"))
            f.write(f"{os.path.basename(path)} {rgb.shape[1]} {rgb.shape[0]} {zlib.crc32(rgb.tobytes()) & 0xFFFFFFFF}\n")
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(OUT, "*")))
    print(f"{len(names)} images, {total / 1024:.0f} KB in {OUT}")


if __name__ == "__main__":
    main()
