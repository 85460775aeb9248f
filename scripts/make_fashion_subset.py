#!/usr/bin/env python3
"""Make the bundled Fashion-MNIST subset in data/fashion-mnist-subset/.

Stratified and deterministic: the first TRAIN_PER_CLASS images of each class in the original
training file order, and the first TEST_PER_CLASS of each class in the original test file order,
kept in their original relative order. Written as IDX files with the original names, gzip level 9
with a zero timestamp and no file name, so the output is byte-for-byte reproducible.

Usage (from the repository root):
    python3 scripts/make_fashion_subset.py [SRC_DIR] [OUT_DIR]
SRC_DIR defaults to /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist),
OUT_DIR to data/fashion-mnist-subset. Needs only the Python standard library.
"""
import gzip
import io
import os
import struct
import sys

TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def write_idx(path, magic, dims, payload):
    header = struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as f:
        f.write(header + payload)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def subset(src, out, prefix, per_class):
    (n, h, w), images = read_idx(os.path.join(src, prefix + "-images-idx3-ubyte.gz"))
    (nl,), labels = read_idx(os.path.join(src, prefix + "-labels-idx1-ubyte.gz"))
    assert n == nl, (n, nl)
    counts = {}
    keep = []
    for i in range(n):
        c = labels[i]
        if counts.get(c, 0) < per_class:
            counts[c] = counts.get(c, 0) + 1
            keep.append(i)
    size = h * w
    img = b"".join(images[i * size:(i + 1) * size] for i in keep)
    lab = bytes(labels[i] for i in keep)
    write_idx(os.path.join(out, prefix + "-images-idx3-ubyte.gz"), 0x803, (len(keep), h, w), img)
    write_idx(os.path.join(out, prefix + "-labels-idx1-ubyte.gz"), 0x801, (len(keep),), lab)
    print(f"{prefix}: {len(keep)} images, per class {dict(sorted(counts.items()))}")


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = sys.argv[2] if len(sys.argv) > 2 else "data/fashion-mnist-subset"
    os.makedirs(out, exist_ok=True)
    subset(src, out, "train", TRAIN_PER_CLASS)
    subset(src, out, "t10k", TEST_PER_CLASS)


if __name__ == "__main__":
    main()
