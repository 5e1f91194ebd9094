#!/usr/bin/env python3
"""Packing speed: quantize and pack a weight matrix into the kernel layout.

    python bench/pack.py [--shape 6912x2560] [--threads 1,2]

Packing runs once per weight at load time; the C++ packer is timed alone and together
with the numpy quantizer in front of it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lutlm import _C
from lutlm.quant import Int4Weight, TernaryWeight, quantize_int4, ternarize


def best_of(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="6912x2560", help="NxK")
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    n, k = (int(v) for v in args.shape.split("x"))
    w = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32)
    t, scale = ternarize(w)
    q = np.random.default_rng(1).integers(0, 16, size=(n, k)).astype(np.uint8)
    d = np.ones((n, -(-k // 32)), np.float16)
    print(f"shape {n}x{k}")
    print("| threads | pack ternary | pack int4 | quantize+pack ternary | quantize+pack int4 |")
    print("|---|---|---|---|---|")
    for th in (int(v) for v in args.threads.split(",")):
        _C.set_num_threads(th)
        cells = [
            best_of(lambda: TernaryWeight.pack(t, scale)),
            best_of(lambda: Int4Weight.pack(q, d, None, 32)),
            best_of(lambda: TernaryWeight.pack(*ternarize(w))),
            best_of(lambda: quantize_int4(w, 32)),
        ]
        print(f"| {th} | " + " | ".join(f"{c * 1e3:.1f} ms" for c in cells) + " |")


if __name__ == "__main__":
    main()
