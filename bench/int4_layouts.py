#!/usr/bin/env python3
"""INT4 GEMM on SmolLM2-135M's layer shapes: LUT over bit planes against MAD over
nibbles (the layout model layers use), per batch size and activation precision.

    python bench/int4_layouts.py [--threads 2] [--ms 1,4,16] [--repeats 400]

Each figure is the median time of one call on a matrix that stays in cache (the same
matrix over and over), so it measures the kernels' compute, not DRAM; bench/e2e.py
measures the whole model. "planes" uses Method auto (LUT up to the ISA's crossover,
MAD above); "nibbles" is MAD only.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time

import numpy as np

import lutlm
from lutlm import _C
from lutlm.quant import quantize_int4

# q,k,v fused / o / gate,up fused / down: (N, K)
SHAPES = {"qkv": (960, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536)}


def median_us(w, x: np.ndarray, act_bits: int, repeats: int) -> float:
    for _ in range(10):
        w.matmul(x, act_bits=act_bits)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        w.matmul(x, act_bits=act_bits)
        times.append(time.perf_counter() - t)
    return 1e6 * float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ms", default="1,4,16")
    ap.add_argument("--repeats", type=int, default=400)
    args = ap.parse_args()
    _C.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    dense = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    info = lutlm.cpu_info()
    print(
        f"- cpu: {info['model']}, isa {info['isa']}, {args.threads} threads; {platform.platform()}"
    )
    print(f"- command: `python bench/int4_layouts.py {shlex.join(sys.argv[1:])}`")
    print("- per layer = qkv + o + gate_up + down (µs, median); SmolLM2 has 30 layers\n")
    print("| M | act_bits | planes (auto) µs | nibbles (MAD) µs | planes / nibbles |")
    print("|---|---|---|---|---|")
    for m in (int(v) for v in args.ms.split(",")):
        for act_bits in (8, 16):
            total = {}
            for layout in ("planes", "nibbles"):
                t = 0.0
                for w in dense.values():
                    packed = quantize_int4(w, 32, symmetric=False, layout=layout)
                    x = rng.standard_normal((m, w.shape[1])).astype(np.float32)
                    t += median_us(packed, x, act_bits, args.repeats)
                total[layout] = t
            ratio = total["planes"] / total["nibbles"]
            print(
                f"| {m} | {act_bits} | {total['planes']:.0f} | {total['nibbles']:.0f} | "
                f"{ratio:.2f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
