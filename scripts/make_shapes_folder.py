#!/usr/bin/env python3
"""Write a small image folder to try `--data folder:DIR` and the page's "Your data" tab on,
with nothing to download: one subfolder per class (circle, square, triangle, cross) of RGB
PNG images, each a shape of random size, position and colour on a noisy background.

    python3 scripts/make_shapes_folder.py shapes            # 4 classes x 100 images, 32 px
    python3 scripts/make_shapes_folder.py shapes --per-class 300 --size 40 --seed 1
    python3 scripts/make_shapes_folder.py shapes --bad      # also a broken .png (error paths)

Only the Python standard library (zlib writes the PNGs), deterministic for a seed.
"""
import argparse
import math
import os
import random
import struct
import zlib

CLASSES = ["circle", "cross", "square", "triangle"]


def png_bytes(w, h, rgb_rows):
    """An 8-bit RGB PNG from rows of (r, g, b) tuples."""
    raw = b"".join(b"\x00" + bytes(v for px in row for v in px) for row in rgb_rows)

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def inside(kind, x, y, cx, cy, r, angle):
    # Rotate the point into the shape's frame.
    dx, dy = x - cx, y - cy
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    if kind == "circle":
        return u * u + v * v <= r * r
    if kind == "square":
        return abs(u) <= r * 0.8 and abs(v) <= r * 0.8
    if kind == "cross":
        t = r * 0.3
        return (abs(u) <= t and abs(v) <= r) or (abs(v) <= t and abs(u) <= r)
    # Triangle: pointing up in its frame, inscribed in the circle of radius r.
    if v < -r * 0.5 or v > r:
        return False
    half = (r - v) / math.sqrt(3)
    return abs(u) <= half


def image(kind, size, rng):
    bg = [rng.randrange(0, 90) for _ in range(3)]
    fg = [rng.randrange(140, 256) for _ in range(3)]
    r = rng.uniform(0.22, 0.38) * size
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    angle = rng.uniform(0, 2 * math.pi) if kind != "circle" else 0.0
    rows = []
    for y in range(size):
        row = []
        for x in range(size):
            # 2x2 supersampling for soft edges.
            cover = sum(inside(kind, x + 0.25 + 0.5 * i, y + 0.25 + 0.5 * j, cx, cy, r, angle) for i in (0, 1) for j in (0, 1)) / 4
            noise = rng.randrange(-12, 13)
            row.append(tuple(max(0, min(255, int(b + (f - b) * cover) + noise)) for b, f in zip(bg, fg)))
        rows.append(row)
    return png_bytes(size, size, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder to create (one subfolder per class)")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classes", type=int, default=len(CLASSES), help=f"how many of {', '.join(CLASSES)}")
    ap.add_argument("--bad", action="store_true", help="add a truncated PNG to the first class (to see the error)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    for kind in CLASSES[: a.classes]:
        d = os.path.join(a.out, kind)
        os.makedirs(d, exist_ok=True)
        for i in range(a.per_class):
            with open(os.path.join(d, f"{kind}_{i:04d}.png"), "wb") as f:
                f.write(image(kind, a.size, rng))
    if a.bad:
        with open(os.path.join(a.out, CLASSES[0], "broken.png"), "wb") as f:
            f.write(image(CLASSES[0], a.size, rng)[:60])
    print(f"wrote {a.classes} classes x {a.per_class} images ({a.size} px) to {a.out}")


if __name__ == "__main__":
    main()
