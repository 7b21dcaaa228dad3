#!/usr/bin/env python3
"""Writes the PIL fixtures for CLIP's image preprocessing (diffusion/models/clip-image-processor.ts).

ddpo-pytorch's aesthetic scorer hands uint8 images to transformers' CLIPImageProcessor, which
resizes the shortest edge with PIL (`Image.resize(..., resample=BICUBIC, reducing_gap=None)`),
converts back to uint8 and centre-crops. transformers is not needed here: its two size rules are
reproduced below (new long edge = int(shortest * long / short); crop offsets (size - crop) // 2),
and the pixels come from PIL itself. Inputs are the probe images of rewards/probe-images.ts
(rebuilt byte-identically by scripts/jpeg_pil_sizes.py), cropped to non-square sizes.

Output: test/fixtures/clip-preprocess/pil.json, each case's cropped uint8 result (HWC, base64)
and FNV-1a hashes of input and output. CI never runs this (it needs Debian's python3-pil and
python3-numpy; run with /usr/bin/python3).

Usage: /usr/bin/python3 scripts/clip_preprocess_pil.py [out.json]
"""
import base64
import json
import os
import sys

import numpy as np
from PIL import Image, __version__ as PIL_VERSION

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jpeg_pil_sizes import fnv1a, probe_image  # noqa: E402

# name, probe image, input height, width, shortest edge, crop height, crop width
CASES = [
    ("sd512_down", "smooth_noise", 512, 512, 224, 224, 224),  # SD's 512 px → CLIP's 224 (×1/2.29)
    ("down_wide", "noise", 97, 131, 40, 40, 40),
    ("down_tall", "blocks", 150, 90, 64, 64, 64),
    ("up_wide", "smooth", 23, 31, 40, 40, 40),
    ("up_tall", "noise", 30, 17, 48, 48, 48),
    ("same_size", "gradient", 40, 52, 40, 40, 40),  # shortest edge already right: PIL does not resample
    ("resize_only", "noise", 97, 131, 40, 40, 54),  # the crop keeps the whole resized image
    ("odd_crop", "smooth_noise", 61, 83, 45, 37, 44),
]


def resize_size(h, w, shortest):
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(shortest * long / short)
    return (new_long, shortest) if w <= h else (shortest, new_long)


def case_input(probe, h, w):
    side = max(h, w)
    full = np.frombuffer(probe_image(probe, side), dtype=np.uint8).reshape(side, side, 3)
    return np.ascontiguousarray(full[:h, :w])


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "test", "fixtures", "clip-preprocess", "pil.json")
    rows = []
    for name, probe, h, w, shortest, ch, cw in CASES:
        x = case_input(probe, h, w)
        rh, rw = resize_size(h, w, shortest)
        img = Image.fromarray(x, mode="RGB").resize((rw, rh), resample=Image.BICUBIC, reducing_gap=None)
        r = np.array(img)
        top, left = (rh - ch) // 2, (rw - cw) // 2
        y = np.ascontiguousarray(r[top:top + ch, left:left + cw])
        assert y.shape == (ch, cw, 3), (name, y.shape)
        rows.append({
            "name": name, "probe": probe, "height": h, "width": w, "shortest_edge": shortest,
            "crop_height": ch, "crop_width": cw, "resized": [rh, rw], "crop_offsets": [top, left],
            "input_fnv1a": fnv1a(x.tobytes()), "output_fnv1a": fnv1a(y.tobytes()),
            "output_hwc_base64": base64.b64encode(y.tobytes()).decode("ascii"),
        })
        print(f"{name:>12}: {h}x{w} -> {rh}x{rw} -> crop {ch}x{cw} at ({top}, {left})", file=sys.stderr)
    doc = {"generator": "scripts/clip_preprocess_pil.py", "pil_version": PIL_VERSION, "numpy_version": np.__version__,
           "resample": "BICUBIC", "cases": rows}
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
