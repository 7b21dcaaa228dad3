#!/usr/bin/env python3
"""Measures PIL's JPEG sizes (quality 95) for the probe images of rewards/probe-images.ts.

The DDPO reference code scores compressibility with PIL's `Image.save(buf, "JPEG", quality=95)`,
which writes 4:2:0 chroma subsampling; our reward uses jpeg-js, which always writes 4:4:4. This
script rebuilds the very same pixels as rewards/probe-images.ts (integer arithmetic only, no
numpy) and records PIL's size with its default subsampling (4:2:0) and with subsampling=0 (4:4:4)
into test/fixtures/jpeg-pil/sizes.json, which the tests compare jpeg-js against. CI never runs
this: it needs PIL (Debian: apt-get install -y python3-pil; run it with /usr/bin/python3).

Usage: python3 scripts/jpeg_pil_sizes.py [out.json]
"""
import io
import json
import os
import sys

from PIL import Image, __version__ as PIL_VERSION

M32 = 0xFFFFFFFF
CELL = 32
BLOCK = 16
NAMES = ["flat", "gradient", "smooth", "blocks", "smooth_noise", "noise"]
SIZES = [64, 256, 512]


def imul(a, b):
    return (a * b) & M32


def mulberry32(seed):
    state = [seed & M32]

    def nxt():
        state[0] = (state[0] + 0x6D2B79F5) & M32
        t = state[0]
        t = imul(t ^ (t >> 15), t | 1)
        t ^= (t + imul(t ^ (t >> 7), t | 61)) & M32
        return (t ^ (t >> 14)) & M32

    return nxt


def smooth_field(size, seed):
    nxt = mulberry32(seed)
    g = (size - 1) // CELL + 2
    grid = [nxt() >> 24 for _ in range(g * g * 3)]
    out = bytearray(size * size * 3)
    for y in range(size):
        gy, fy = divmod(y, CELL)
        for x in range(size):
            gx, fx = divmod(x, CELL)
            for c in range(3):
                def p(yy, xx):
                    return grid[(yy * g + xx) * 3 + c]
                v = (p(gy, gx) * (CELL - fx) * (CELL - fy) + p(gy, gx + 1) * fx * (CELL - fy)
                     + p(gy + 1, gx) * (CELL - fx) * fy + p(gy + 1, gx + 1) * fx * fy)
                out[(y * size + x) * 3 + c] = v // (CELL * CELL)
    return out


def probe_image(name, size):
    out = bytearray(size * size * 3)
    d = max(size - 1, 1)
    if name == "flat":
        for i in range(size * size):
            out[i * 3:i * 3 + 3] = bytes([128, 96, 64])
    elif name == "gradient":
        for y in range(size):
            for x in range(size):
                o = (y * size + x) * 3
                out[o:o + 3] = bytes([(255 * x) // d, (255 * y) // d, (255 * (x + y)) // (2 * d)])
    elif name == "noise":
        nxt = mulberry32(1)
        for i in range(len(out)):
            out[i] = nxt() >> 24
    elif name == "smooth":
        out = smooth_field(size, 2)
    elif name == "smooth_noise":
        base = smooth_field(size, 3)
        nxt = mulberry32(4)
        for i in range(len(out)):
            out[i] = min(255, max(0, base[i] + ((nxt() >> 24) % 17) - 8))
    elif name == "blocks":
        nxt = mulberry32(5)
        nb = -(-size // BLOCK)
        colours = [nxt() >> 24 for _ in range(nb * nb * 3)]
        for y in range(size):
            for x in range(size):
                b = ((y // BLOCK) * nb + x // BLOCK) * 3
                o = (y * size + x) * 3
                out[o:o + 3] = bytes(colours[b:b + 3])
    else:
        raise ValueError(name)
    return bytes(out)


def fnv1a(data):
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & M32
    return h


def jpeg_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.tell()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "test", "fixtures", "jpeg-pil", "sizes.json")
    rows = []
    for size in SIZES:
        for name in NAMES:
            raw = probe_image(name, size)
            img = Image.frombytes("RGB", (size, size), raw)
            rows.append({
                "name": name,
                "size": size,
                "fnv1a": fnv1a(raw),
                "pil_420": jpeg_bytes(img),  # PIL's default, as the DDPO code saves
                "pil_444": jpeg_bytes(img, subsampling=0),
            })
            print(f"{name:>13} {size:4d}px  PIL 4:2:0 {rows[-1]['pil_420']:7d} B  4:4:4 {rows[-1]['pil_444']:7d} B", file=sys.stderr)
    doc = {
        "generator": "scripts/jpeg_pil_sizes.py",
        "pil_version": PIL_VERSION,
        "quality": 95,
        "images": rows,
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
