#!/usr/bin/python3
"""Make the small real data sets under testdata/engine/data/.

Needs Debian's dataset-fashion-mnist and python3-sklearn (plus numpy):
    apt-get install dataset-fashion-mnist python3-sklearn
    /usr/bin/python3 testdata/engine/make_data.py

* fashion-mnist/: a stratified, seeded subset of Fashion-MNIST (Zalando,
  MIT licence) as gzipped IDX files, same names as the originals:
  TRAIN_PER_CLASS images of each class from the 60,000 training images and
  TEST_PER_CLASS of each class from the 10,000 test images, chosen with
  numpy.random.default_rng(SEED) class by class (choice without
  replacement), kept in their original order.
* digits.csv: all 1,797 8x8 images of scikit-learn's digits (BSD licence),
  one per row: label, then 64 pixel values 0..16 in row-major order.

The output is byte-for-byte reproducible (gzip mtime 0, no file name).
"""
import gzip
import os
import struct

import numpy as np

SEED = 1
TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100
SRC = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, kind, nd = struct.unpack(">HBB", data[:4])
    assert zero == 0 and kind == 0x08, path
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def write_idx(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(head + arr.tobytes())


def subset(labels, per_class, rng):
    idx = []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        idx.extend(rng.choice(members, size=per_class, replace=False).tolist())
    return np.sort(np.array(idx))


def main():
    rng = np.random.default_rng(SEED)
    os.makedirs(os.path.join(OUT, "fashion-mnist"), exist_ok=True)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        x = read_idx(os.path.join(SRC, split + "-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(SRC, split + "-labels-idx1-ubyte.gz"))
        idx = subset(y, per_class, rng)
        write_idx(os.path.join(OUT, "fashion-mnist", split + "-images-idx3-ubyte.gz"), x[idx])
        write_idx(os.path.join(OUT, "fashion-mnist", split + "-labels-idx1-ubyte.gz"), y[idx])
        print(split, len(idx), "images; first indices", idx[:5].tolist())

    from sklearn.datasets import load_digits
    d = load_digits()
    with open(os.path.join(OUT, "digits.csv"), "w") as f:
        f.write("label," + ",".join("p%d" % i for i in range(64)) + "\n")
        for img, label in zip(d.data.astype(int), d.target):
            f.write("%d,%s\n" % (label, ",".join(str(v) for v in img)))
    print("digits", len(d.target), "rows")


if __name__ == "__main__":
    main()
