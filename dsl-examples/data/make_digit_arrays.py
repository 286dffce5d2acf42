"""Writes the .npz files of the multi-array examples from the built-in digits.

    python3 dsl-examples/data/make_digit_arrays.py     (from the repository root)

Reads training/data/digits.csv.gz (the UCI handwritten digits, 8x8 pixel counts 0..16,
as scikit-learn ships them; see training/data/README.md) and writes, next to this script:

- digit_tasks.npz: `x` uint8 [1797, 64] the pixels; `digit` int32 [1797] the class;
  `rows` float32 [1797, 8] each pixel row's ink, its mean pixel count / 16 (a second,
  real-valued label for a multi-task model: multitask.strata).
- digit_pairs.npz: `a`, `b` uint8 [1200, 64] two digits; `same` int32 [1200], 1 when
  they show the same digit (half the pairs), else 0 (siamese.strata).

Only the standard library: the .npy members are written by hand (format 1.0) and zipped
deflated with zip64 headers, as numpy.savez_compressed does, with fixed timestamps so the
files are the same bytes on every run.
"""

import gzip
import io
import os
import random
import struct
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def npy(descr, shape, data):
    """A .npy file (format 1.0) of `shape` with raw little-endian `data`."""
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, dims)
    # numpy pads the header with spaces and a newline so the data starts on 64 bytes.
    total = 10 + len(header) + 1
    header += " " * ((64 - total % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def savez_compressed(path, arrays):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, payload in arrays:
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                f.write(payload)


def main():
    with gzip.open(os.path.join(ROOT, "training", "data", "digits.csv.gz"), "rt") as f:
        rows = [[int(float(v)) for v in line.split(",")] for line in f if line.strip()]
    pixels = [r[:64] for r in rows]
    digits = [r[64] for r in rows]
    n = len(rows)

    ink = []
    for p in pixels:
        ink.extend(sum(p[8 * i : 8 * i + 8]) / (8 * 16) for i in range(8))
    savez_compressed(
        os.path.join(HERE, "digit_tasks.npz"),
        [
            ("x", npy("|u1", (n, 64), bytes(v for p in pixels for v in p))),
            ("digit", npy("<i4", (n,), struct.pack("<%di" % n, *digits))),
            ("rows", npy("<f4", (n, 8), struct.pack("<%df" % (8 * n), *ink))),
        ],
    )

    rng = random.Random(0)
    by_digit = {d: [i for i in range(n) if digits[i] == d] for d in range(10)}
    pairs = 1200
    a, b, same = [], [], []
    for k in range(pairs):
        i = rng.randrange(n)
        if k % 2 == 0:
            j = rng.choice(by_digit[digits[i]])
        else:
            j = rng.choice([m for d, ms in by_digit.items() if d != digits[i] for m in ms])
        a.append(i)
        b.append(j)
        same.append(int(digits[i] == digits[j]))
    savez_compressed(
        os.path.join(HERE, "digit_pairs.npz"),
        [
            ("a", npy("|u1", (pairs, 64), bytes(v for i in a for v in pixels[i]))),
            ("b", npy("|u1", (pairs, 64), bytes(v for j in b for v in pixels[j]))),
            ("same", npy("<i4", (pairs,), struct.pack("<%di" % pairs, *same))),
        ],
    )


if __name__ == "__main__":
    main()
