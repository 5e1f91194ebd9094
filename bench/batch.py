#!/usr/bin/env python3
"""Batched decode on the engine alone (no server): tokens/s and step time at several
batch sizes, and where a step's time goes.

    python bench/batch.py [--model PATH] [--threads 2] [--batches 1,4,16] [--act-bits 16]

B requests of 12 random prompt tokens are prefilled, then decoded together for 64
tokens each (temperature 0.8, as bench/serve.py). The breakdown times each native call
from Python (wrapping lutlm._C before the model is built); "rest" is the step time
outside them and outside sampling (timed on its own): scheduling, batch building and
the Python between calls.
"""

from __future__ import annotations

import argparse
import collections
import platform
import shlex
import sys
import time

import numpy as np

from lutlm import _C

CALLS = (
    "gemm_int4",
    "gemm_int8",
    "paged_attention",
    "qkv_rope_cache",
    "gated_act",
    "add_rms_norm",
    "rms_norm",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--act-bits", type=int, default=16, choices=(8, 16))
    ap.add_argument("--decode", type=int, default=64)
    args = ap.parse_args()
    spent: collections.Counter = collections.Counter()
    for name in CALLS:  # before the model binds them
        fn = getattr(_C, name)

        def timed(*a, _fn=fn, _name=name):
            t = time.perf_counter()
            out = _fn(*a)
            spent[_name] += time.perf_counter() - t
            return out

        setattr(_C, name, timed)
    from lutlm.default_model import default_model_path
    from lutlm.engine.engine import LLMEngine
    from lutlm.engine.sampling_params import SamplingParams
    from lutlm.model import load_model

    _C.set_num_threads(args.threads)
    model = load_model(args.model or default_model_path(), act_bits=args.act_bits)
    rng = np.random.default_rng(0)
    print(
        f"- {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"act_bits {args.act_bits}; command: `python bench/batch.py {shlex.join(sys.argv[1:])}`"
    )
    print("\n| batch | tok/s | step ms | " + " | ".join(CALLS) + " | sampling | rest |")
    print("|---" * (len(CALLS) + 5) + "|")
    base = None
    for b in (int(v) for v in args.batches.split(",")):
        engine = LLMEngine(model, [], num_blocks=b * ((12 + args.decode) // 16 + 2))
        sample = engine.sampler.sample

        def timed_sample(*a, _sample=sample):
            t = time.perf_counter()
            out = _sample(*a)
            spent["sampling"] += time.perf_counter() - t
            return out

        engine.sampler.sample = timed_sample
        for i in range(b):
            engine.add_request(
                rng.integers(100, 20000, 12).tolist(),
                SamplingParams(max_tokens=args.decode, temperature=0.8, seed=i, ignore_eos=True),
            )
        engine.step()  # the prompts and every request's first token
        spent.clear()
        steps, tokens = 0, 0
        t0 = time.perf_counter()
        while engine.has_unfinished():
            tokens += sum(len(o.new_token_ids) for o in engine.step())
            steps += 1
        wall = time.perf_counter() - t0
        base = base or tokens / wall
        parts = [1e3 * spent[c] / steps for c in (*CALLS, "sampling")]
        rest = 1e3 * wall / steps - sum(parts)
        print(
            f"| {b} | {tokens / wall:.1f} ({tokens / wall / base:.2f}x) | "
            f"{1e3 * wall / steps:.1f} | "
            + " | ".join(f"{p:.2f}" for p in parts)
            + f" | {rest:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
