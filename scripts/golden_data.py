#!/usr/bin/env python3
"""Golden outputs of torchvision's tensor transforms for tests/data.rs.

For fixed images and fixed transform parameters (crop boxes, flips, jitter factors and order,
grayscale, blur sigma), record what torchvision.transforms.functional computes on float images
in [0, 1]. The Rust test builds the same per-sample records by hand, runs the GPU kernels and
compares, so the kernels are checked against torchvision itself, not only against their Rust
twins.

    python3 scripts/golden_data.py > tests/golden/data_torchvision.json

Needs torch and torchvision (made with torch 2.15.0, torchvision 0.29.2).
"""
import json

import torch
import torchvision
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

M32 = 0xFFFFFFFF


def pcg_hash(v):
    s = (v * 747796405 + 2891336453) & M32
    w = (((s >> ((s >> 28) + 4)) ^ s) * 277803737) & M32
    return ((w >> 22) ^ w) & M32


def image(c, h, w, seed):
    """Bytes with structure (a gradient) plus hashed noise, CHW."""
    out = []
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                g = (x * 255) // max(w - 1, 1) if ch % 2 == 0 else (y * 255) // max(h - 1, 1)
                n = pcg_hash((ch * h + y) * w + x + seed * 7919) >> 24
                out.append((g + n) // 2)
    return out


def to_tensor(b, c, h, w):
    return torch.tensor(b, dtype=torch.float64).reshape(c, h, w).float() / 255.0


def flat(t):
    return [round(float(v), 7) for v in t.reshape(-1).tolist()]


def main():
    cases = {"torch": torch.__version__, "torchvision": torchvision.__version__, "geometry": [], "color": [], "blur": []}
    c, h, w = 3, 12, 10
    src = image(c, h, w, 1)
    img = to_tensor(src, c, h, w)
    bil = InterpolationMode.BILINEAR
    geo = [
        # (kind, params, out size, flip)
        ("resized_crop", dict(top=2, left=1, height=7, width=5), 9, False),
        ("resized_crop", dict(top=0, left=3, height=12, width=7), 6, True),
        ("resized_crop", dict(top=5, left=4, height=3, width=3), 11, False),
        ("full", {}, 8, True),
        ("center", dict(resize=14), 9, False),
        ("center", dict(resize=10), 10, True),
        ("pad_crop", dict(padding=3, top=-3, left=1), 10, False),
        ("pad_crop", dict(padding=2, top=4, left=-2), 10, True),
    ]
    for kind, p, s, flip in geo:
        if kind == "resized_crop":
            out = F.resized_crop(img, p["top"], p["left"], p["height"], p["width"], [s, s], interpolation=bil, antialias=False)
        elif kind == "full":
            out = F.resize(img, [s, s], interpolation=bil, antialias=False)
        elif kind == "center":
            out = F.center_crop(F.resize(img, p["resize"], interpolation=bil, antialias=False), [s, s])
        else:
            pad = p["padding"]
            out = F.crop(F.pad(img, [pad, pad, pad, pad]), p["top"] + pad, p["left"] + pad, s, s)
        if flip:
            out = F.hflip(out)
        cases["geometry"].append(dict(kind=kind, params=p, size=s, flip=flip, c=c, h=h, w=w, src=src, out=flat(out)))

    ops = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    jit = [
        # (channels, factors (b, c, s, hue), order, grayscale)
        (3, (1.3, 0.7, 1.4, 0.08), (0, 1, 2, 3), False),
        (3, (0.6, 1.35, 0.65, -0.1), (3, 2, 1, 0), False),
        (3, (1.1, 0.6, 0.9, 0.05), (1, 3, 0, 2), True),
        (3, (0.9, 1.2, 1.5, -0.03), (2, 0, 3, 1), False),
        (3, (1.0, 1.0, 1.0, 0.0), (0, 1, 2, 3), True),
        (1, (1.4, 0.6, 1.3, 0.1), (2, 1, 3, 0), True),
        (1, (0.7, 1.4, 0.7, -0.1), (0, 3, 1, 2), False),
    ]
    for ch, f, order, gray in jit:
        b = image(ch, 9, 11, 2 + ch)
        x = to_tensor(b, ch, 9, 11)
        for k in order:
            x = ops[k](x, f[k])
        if gray:
            x = F.rgb_to_grayscale(x, num_output_channels=ch)
        cases["color"].append(dict(c=ch, h=9, w=11, factors=f, order=order, gray=gray, src=b, out=flat(x)))

    for ch, k, sigma in [(3, 5, 0.8), (1, 3, 0.3), (3, 7, 2.0), (1, 9, 1.3)]:
        b = image(ch, 10, 9, 5 + k)
        x = F.gaussian_blur(to_tensor(b, ch, 10, 9), [k, k], [sigma, sigma])
        cases["blur"].append(dict(c=ch, h=10, w=9, kernel=k, sigma=sigma, src=b, out=flat(x)))
    print(json.dumps(cases))


if __name__ == "__main__":
    main()
